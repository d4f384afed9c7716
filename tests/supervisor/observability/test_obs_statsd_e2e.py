"""statsd, end to end: a real ``ingestd run --drain`` (supervisor and worker) sends its
metrics to a UDP socket standing in for statsd; every name is in the catalogue, with the
catalogue's type, and the documented metrics of a run with a retry and a bad document
all arrive."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ingestd.shared.exitcodes import EXIT_OK
from ingestd.shared.ingest import IngestResult
from ingestd.shared.telemetry.metrics import MetricType, lookup, metric_segment
from tests.emulators.openai_api import DEFAULT_API_KEY, OpenAIFault
from tests.supervisor.observability.obs_support import Daemon, StatsdSink

MODEL = "text-embedding-3-small"
GOOD = "\n\n".join(
    f"# Section {i}\n\nThe harbour crane lifts container number {i} onto the quay."
    for i in range(6)
).encode()
BAD = b"A report that starts well and then \x00\x00\x00 turns binary.\n"

WIRE_TYPE = {MetricType.COUNTER: "c", MetricType.GAUGE: "g", MetricType.TIMER: "ms"}


def test_statsd_metrics_of_a_run_are_catalogued_and_complete(
    daemon_env: dict[str, str],
    start_daemon: Callable[..., Daemon],
    statsd_sink: StatsdSink,
    openai_emulator: Any,
    ingest_bytes: Callable[..., IngestResult],
) -> None:
    good = ingest_bytes(GOOD, "good.md", "text/markdown")
    bad = ingest_bytes(BAD, "bad.txt", "text/plain")
    assert good.created and bad.created
    # The first embeddings request gets a 503: the client retries it.
    openai_emulator.inject(OpenAIFault.UNAVAILABLE)

    env = {
        **daemon_env,
        "INGESTD_WORKERS": "1",
        "INGESTD_EMBEDDER": "openai",
        "INGESTD_EMBEDDING_MODEL": MODEL,
        "INGESTD_EMBEDDING_DIMENSIONS": "256",
        "OPENAI_API_KEY": DEFAULT_API_KEY,
        "OPENAI_BASE_URL": openai_emulator.base_url,
        "STATSD_HOST": "127.0.0.1",
        "STATSD_PORT": str(statsd_sink.port),
    }
    daemon = start_daemon(env)
    assert daemon.wait_exit() == EXIT_OK, daemon.tail()
    assert openai_emulator.stats.count(503) == 1
    assert openai_emulator.stats.count(200) >= 1

    samples = statsd_sink.samples()
    assert samples, "no datagram reached the statsd socket"

    # Every name received is catalogued, and sent with the catalogue's type.
    for s in samples:
        spec = lookup(s.name)
        assert spec is not None, f"{s.line!r}: not in the catalogue"
        assert s.type == WIRE_TYPE[spec.type], f"{s.line!r}: catalogue says {spec.type}"
        float(s.value)  # a number, whatever the type

    received: dict[str, set[str]] = {}
    for s in samples:
        received.setdefault(s.name, set()).add(s.type)
    model = metric_segment(MODEL)
    expected = {
        # the worker
        "documents.completed": "c",
        "documents.failed.parsing.invalid_input": "c",
        "stage.parsing.duration": "ms",
        "stage.chunking.duration": "ms",
        "stage.embedding.duration": "ms",
        "stage.finalizing.duration": "ms",
        "embed.requests": "c",
        "embed.inputs": "c",
        "embed.tokens_estimated": "c",
        "api.openai.latency": "ms",
        "api.openai.status.200": "c",
        "api.openai.retries": "c",
        f"tokens.{model}": "c",
        f"cost.{model}.microusd": "c",
        # the supervisor
        "worker.0.uss": "g",
        "workers.alive": "g",
        "queue.depth.queued": "g",
        "queue.depth.complete": "g",
        "queue.oldest_runnable_age": "g",
    }
    missing = {name: t for name, t in expected.items() if t not in received.get(name, set())}
    assert not missing, f"metrics not received: {missing}\nreceived: {sorted(received)}"

    def total(name: str) -> float:
        return sum(float(s.value) for s in samples if s.name == name and s.type == "c")

    assert total("documents.completed") == 1
    assert total("documents.failed.parsing.invalid_input") == 1
    assert total("api.openai.retries") == 1
    # One embedding request per stored batch; the retried 503 is not a second request.
    assert total("embed.requests") == openai_emulator.stats.count(200)
    assert total("embed.inputs") == openai_emulator.stats.inputs_served
    # The tokens counted are the tokens the API billed.
    assert total(f"tokens.{model}") == openai_emulator.stats.tokens_served
    # The 503 was a response: per the catalogue ("responses by HTTP status code") it is
    # counted by its code, like the 200s and 429s.
    assert total("api.openai.status.503") == 1, (
        "a 503 reply is not counted as api.openai.status.503; received: "
        f"{sorted(n for n in received if n.startswith('api.'))}"
    )
    # ...and not as a request that got no usable response.
    assert total("api.openai.errors.transient") == 0
