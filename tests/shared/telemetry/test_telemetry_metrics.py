"""Metrics over a real UDP socket standing in for statsd, and the catalogue contract."""

from __future__ import annotations

import logging
import os
import re
import socket
from pathlib import Path

import pytest

from ingestd.shared.errors import ErrorClass
from ingestd.shared.resilience.breaker import BreakerState
from ingestd.shared.states import Status
from ingestd.shared.telemetry.context import STAGES
from ingestd.shared.telemetry.metrics import (
    BREAKER_STATES,
    CATALOGUE,
    Metrics,
    MetricType,
    UnknownMetric,
    lookup,
    metric_segment,
    render_catalogue_markdown,
)
from tests.shared.telemetry.statsd_sink import client, recv


def test_counter_gauge_timer_wire_format(statsd_server: socket.socket) -> None:
    m = client(statsd_server)
    assert m.enabled
    m.incr("documents.completed")
    assert recv(statsd_server) == "ingestd.documents.completed:1|c"
    m.incr("documents.failed.embedding.invalid_input", 3)
    assert recv(statsd_server) == "ingestd.documents.failed.embedding.invalid_input:3|c"
    m.gauge("queue.depth.queued", 42)
    assert recv(statsd_server) == "ingestd.queue.depth.queued:42|g"
    m.gauge("worker.3.uss", 123456789)
    assert recv(statsd_server) == "ingestd.worker.3.uss:123456789|g"
    m.timing("api.openai.latency", 12.5)
    assert recv(statsd_server) == "ingestd.api.openai.latency:12.500000|ms"
    m.incr("embed.inputs", 2048)
    assert recv(statsd_server) == "ingestd.embed.inputs:2048|c"
    m.incr(f"tokens.{metric_segment('text-embedding-3-small')}", 1500)
    assert recv(statsd_server) == "ingestd.tokens.text-embedding-3-small:1500|c"
    m.close()


def test_timer_context_manager_records_even_when_the_block_raises(
    statsd_server: socket.socket,
) -> None:
    m = client(statsd_server)
    with m.timer("stage.chunking.duration"):
        pass
    line = recv(statsd_server)
    assert re.fullmatch(r"ingestd\.stage\.chunking\.duration:\d+\.\d{6}\|ms", line), line
    with pytest.raises(KeyError), m.timer("stage.parsing.duration"):
        raise KeyError("boom")
    assert recv(statsd_server).startswith("ingestd.stage.parsing.duration:")


def test_pipeline_packs_metrics_into_one_datagram(statsd_server: socket.socket) -> None:
    m = client(statsd_server)
    with m.pipeline() as batch:
        batch.incr("documents.completed")
        batch.incr("tokens.text-embedding-3-small", 10)
        batch.incr("cost.text-embedding-3-small.microusd", 200)
        batch.gauge("queue.oldest_runnable_age", 7)
        batch.timing("stage.embedding.duration", 3)
    assert recv(statsd_server).split("\n") == [
        "ingestd.documents.completed:1|c",
        "ingestd.tokens.text-embedding-3-small:10|c",
        "ingestd.cost.text-embedding-3-small.microusd:200|c",
        "ingestd.queue.oldest_runnable_age:7|g",
        "ingestd.stage.embedding.duration:3.000000|ms",
    ]


def test_strict_mode_rejects_unknown_names_and_wrong_types(statsd_server: socket.socket) -> None:
    m = client(statsd_server)
    with pytest.raises(UnknownMetric, match="not in the catalogue"):
        m.incr("documents.exploded")
    with pytest.raises(UnknownMetric, match="not in the catalogue"):
        m.incr("documents.failed.embed.transient")  # stage names are the active statuses
    with pytest.raises(UnknownMetric, match="not in the catalogue"):
        m.incr("documents.dead.cosmic_rays")
    with pytest.raises(UnknownMetric, match="not in the catalogue"):
        m.incr("tokens.text-embedding.3")  # a raw dotted model name would split the path
    with pytest.raises(UnknownMetric, match="is a gauge, not a counter"):
        m.incr("queue.depth.queued")
    with pytest.raises(UnknownMetric, match="is a counter, not a timer"):
        m.timing("embed.inputs", 2048)  # a count sent as a timer would read as ms
    with (
        pytest.raises(UnknownMetric, match="is a counter, not a timer"),
        m.timer("documents.completed"),
    ):
        pass
    with pytest.raises(UnknownMetric), m.pipeline() as batch:
        batch.gauge("api.openai.latency", 1)
    # Nothing above reached the wire: the next datagram is this one.
    m.incr("leases.expired")
    assert recv(statsd_server) == "ingestd.leases.expired:1|c"


def test_non_strict_mode_logs_once_and_does_not_send(
    statsd_server: socket.socket, caplog: pytest.LogCaptureFixture
) -> None:
    m = client(statsd_server, strict=False)
    with caplog.at_level(logging.ERROR, logger="ingestd.shared.telemetry.metrics"):
        m.incr("documents.9f1c2a.completed")
        m.incr("documents.9f1c2a.completed")
    errors = [r for r in caplog.records if "documents.9f1c2a.completed" in r.getMessage()]
    assert len(errors) == 1
    m.incr("documents.ingested")
    assert recv(statsd_server) == "ingestd.documents.ingested:1|c"


def test_strict_default_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INGESTD_METRICS_STRICT", "1")
    assert Metrics.from_settings(None, role="supervisor").strict
    monkeypatch.setenv("INGESTD_METRICS_STRICT", "0")
    assert not Metrics.from_settings(None, role="supervisor").strict


def test_disabled_metrics_still_validate() -> None:
    m = Metrics.from_settings(None, 8125, "ingestd", "supervisor", None, strict=True)
    assert not m.enabled
    m.incr("documents.completed")
    m.gauge("workers.alive", 2)
    with m.timer("ratelimit.openai.wait"):
        pass
    with m.pipeline() as batch:
        batch.incr("api.openai.status.429")
    with pytest.raises(UnknownMetric):
        m.incr("no.such.metric")


def test_invalid_prefix_is_refused() -> None:
    with pytest.raises(ValueError, match="prefix"):
        Metrics.from_settings(None, prefix="Ingest D")


def test_client_created_before_fork_refuses_to_work_in_the_child(
    statsd_server: socket.socket,
) -> None:
    parent_client = client(statsd_server)
    pid = os.fork()
    if pid == 0:  # child: only os._exit, never return into pytest
        code = 1
        try:
            parent_client.incr("documents.completed")
        except RuntimeError:
            # The right way: a client of its own, created after fork.
            client(statsd_server).incr("worker.restarts.crash")
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert recv(statsd_server) == "ingestd.worker.restarts.crash:1|c"


def test_metric_segment() -> None:
    assert metric_segment("text-embedding-3-small") == "text-embedding-3-small"
    assert metric_segment("sentence-transformers/all-MiniLM-L6-v2") == (
        "sentence-transformers_all-minilm-l6-v2"
    )
    assert metric_segment("gpt.4o") == "gpt_4o"
    with pytest.raises(ValueError):
        metric_segment("...")


# One concrete name per catalogue entry, exercising every placeholder value set.
EXAMPLES = {
    "documents.ingested": "documents.ingested",
    "documents.completed": "documents.completed",
    "documents.failed.<stage>.<error_class>": "documents.failed.parsing.auth",
    "documents.dead.<error_class>": "documents.dead.memory",
    "documents.retried.<stage>.<error_class>": "documents.retried.embedding.rate_limited",
    "stage.<stage>.duration": "stage.finalizing.duration",
    "group.documents": "group.documents",
    "group.stages": "group.stages",
    "group.split": "group.split",
    "embed.requests": "embed.requests",
    "embed.inputs": "embed.inputs",
    "embed.tokens_estimated": "embed.tokens_estimated",
    "api.<service>.latency": "api.llamaparse.latency",
    "api.<service>.status.<code>": "api.openai.status.503",
    "api.<service>.errors.<error_class>": "api.openai.errors.transient",
    "api.<service>.retries": "api.openai.retries",
    "api.<service>.rate_limited": "api.openai.rate_limited",
    "api.<service>.breaker.<state>": "api.openai.breaker.half_open",
    "ratelimit.<service>.wait": "ratelimit.openai.wait",
    "tokens.<model>": "tokens.text-embedding-3-large",
    "cost.<model>.microusd": "cost.text-embedding-ada-002.microusd",
    "worker.<slot>.uss": "worker.12.uss",
    "worker.restarts.<reason>": "worker.restarts.heartbeat",
    "workers.alive": "workers.alive",
    "queue.depth.<status>": "queue.depth.awaiting_parse",
    "queue.oldest_runnable_age": "queue.oldest_runnable_age",
    "leases.expired": "leases.expired",
    "leases.lost": "leases.lost",
    "db.reconnects": "db.reconnects",
    "http.refused.<reason>": "http.refused.rate_limited",
}


def test_every_catalogue_entry_matches_exactly_its_examples() -> None:
    assert set(EXAMPLES) == {spec.pattern for spec in CATALOGUE}
    for spec in CATALOGUE:
        name = EXAMPLES[spec.pattern]
        matching = [s.pattern for s in CATALOGUE if s.regex.fullmatch(name)]
        assert matching == [spec.pattern], (name, matching)


def test_placeholder_value_sets_follow_the_code() -> None:
    for stage in STAGES:
        assert lookup(f"stage.{stage}.duration") is not None
    for klass in ErrorClass:
        assert lookup(f"documents.dead.{klass}") is not None
    for status in Status:
        assert lookup(f"queue.depth.{status}").type is MetricType.GAUGE  # type: ignore[union-attr]
    assert tuple(str(s) for s in BreakerState) == BREAKER_STATES
    assert lookup("api.openai.status.42") is None
    assert lookup("worker.a.uss") is None


def test_catalogue_markdown_documents_every_metric() -> None:
    md = render_catalogue_markdown()
    lines = md.splitlines()
    assert lines[0] == "| metric | type | unit | meaning |"
    for spec in CATALOGUE:
        row = next(line for line in lines if line.startswith(f"| `{spec.pattern}` |"))
        assert f"| {spec.type} |" in row
    assert "| `<stage>` | active stage: parsing, chunking, embedding, finalizing |" in lines


def test_timers_are_durations_in_milliseconds() -> None:
    # statsd and Graphite read every timer sample as milliseconds: a count sent as a
    # timer gets wrong aggregates (stats.timers.*.sum_ps, .upper_95 in "ms").
    for spec in CATALOGUE:
        if spec.type is MetricType.TIMER:
            assert spec.unit == "ms", f"{spec.pattern} is a timer of {spec.unit}"


def test_readme_metrics_table_is_the_rendered_catalogue() -> None:
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text(encoding="utf-8")
    assert render_catalogue_markdown() in readme, (
        "README's metrics table differs from the catalogue; paste the output of "
        "python -c 'from ingestd.shared.telemetry.metrics import render_catalogue_markdown as r; "
        "print(r())'"
    )
