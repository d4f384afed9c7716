"""Structured logs: JSON lines, bound context, scrubbing, files, fork."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from ingestd.shared.errors import InvalidInput
from ingestd.shared.telemetry import context, logs
from ingestd.shared.telemetry.logs import configure_logging, get_logger, reopen_log_files
from ingestd.shared.telemetry.scrub import clear_secrets, register_secret

SECRET = "sk-test-0123456789abcdefSECRET"
TEXT = "The quarterly report says revenue grew by 12% in the northern region."


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    yield
    for handler in logs._installed_handlers:
        root.removeHandler(handler)
        handler.close()
    logs._installed_handlers.clear()
    root.setLevel(level)
    clear_secrets()
    context._role = context._slot = None


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def lines(buf: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in buf.getvalue().splitlines() if line]


def test_every_line_is_a_json_object_with_the_standard_fields() -> None:
    buf = io.StringIO()
    configure_logging("worker", 2, stream=buf)
    log = get_logger("ingestd.test")
    log.info("stage finished", chunks=12)
    logging.getLogger("some.library").warning("library says %s", "hello")

    first, second = lines(buf)
    assert first["event"] == "stage finished"
    assert first["chunks"] == 12
    for line in (first, second):
        assert line["role"] == "worker"
        assert line["slot"] == 2
        assert line["pid"] == os.getpid()
        assert line["correlation_id"] is None
        assert line["document_id"] is None
        assert line["stage"] is None
        assert line["timestamp"].endswith("Z")
        stamp = datetime.fromisoformat(line["timestamp"].replace("Z", "+00:00"))
        assert stamp.utcoffset() == timedelta(0)
    assert first["level"] == "info"
    assert first["logger"] == "ingestd.test"
    assert second == second | {"level": "warning", "logger": "some.library"}
    assert second["event"] == "library says hello"


def test_bound_document_and_stage_appear_and_are_restored() -> None:
    buf = io.StringIO()
    configure_logging("worker", 0, stream=buf)
    log = get_logger("t")
    with context.bind_document("doc-1", "corr-1"):
        with context.bind_stage("embedding"):
            log.info("inner")
        log.info("outer")
    log.info("after")
    inner, outer, after = lines(buf)
    assert (inner["document_id"], inner["correlation_id"], inner["stage"]) == (
        "doc-1",
        "corr-1",
        "embedding",
    )
    assert (outer["document_id"], outer["stage"]) == ("doc-1", None)
    assert after["document_id"] is after["correlation_id"] is None


def test_concurrent_tasks_each_log_their_own_document() -> None:
    buf = io.StringIO()
    configure_logging("worker", 1, stream=buf)
    log = get_logger("t")

    async def work(doc: str, first: asyncio.Event, second: asyncio.Event) -> None:
        with context.bind_document(doc, f"corr-{doc}"), context.bind_stage("chunking"):
            log.info("start")
            first.set()
            await second.wait()  # interleave the two tasks deterministically
            log.info("end")

    async def main() -> None:
        a_started, b_started = asyncio.Event(), asyncio.Event()
        await asyncio.gather(work("a", a_started, b_started), work("b", b_started, a_started))

    asyncio.run(main())
    records = lines(buf)
    assert len(records) == 4
    for record in records:
        assert record["correlation_id"] == f"corr-{record['document_id']}"
    # Both documents were bound at the same time (both started before either ended).
    assert [(r["event"], r["document_id"]) for r in records[:2]] == [("start", "a"), ("start", "b")]
    assert {r["document_id"] for r in records[2:]} == {"a", "b"}


def test_secrets_never_reach_the_output() -> None:
    register_secret(SECRET)
    buf = io.StringIO()
    configure_logging("supervisor", stream=buf)
    log = get_logger("t")

    class Holder:
        def __repr__(self) -> str:
            return f"Holder(key={SECRET})"

    log.info("calling api", api_key=SECRET, token_count=812, prompt_tokens=5)
    log.info("headers", headers={"Authorization": f"Bearer {SECRET}", "X-Request-Id": "r1"})
    log.info(f"message mentioning {SECRET}")
    log.info("object", holder=Holder())
    log.info("misc", password="hunter2hunter2", access_token="abc", webhook_secret="x" * 10)
    logging.getLogger("openai").info("retrying with key %s", SECRET)
    try:
        raise RuntimeError(f"401 for key {SECRET}")
    except RuntimeError:
        log.exception("request failed")

    output = buf.getvalue()
    assert SECRET not in output
    assert "hunter2hunter2" not in output
    records = lines(buf)
    assert records[0]["api_key"] == "[REDACTED]"
    assert records[0]["token_count"] == 812  # a count, not a secret
    assert records[0]["prompt_tokens"] == 5
    assert records[1]["headers"] == {"Authorization": "[REDACTED]", "X-Request-Id": "r1"}
    assert records[2]["event"] == "message mentioning [REDACTED]"
    assert records[3]["holder"] == "Holder(key=[REDACTED])"
    assert records[4]["access_token"] == records[4]["webhook_secret"] == "[REDACTED]"
    assert records[5]["event"] == "retrying with key [REDACTED]"
    assert "RuntimeError: 401 for key [REDACTED]" in records[6]["exception"]


def test_text_fields_are_replaced_by_their_size() -> None:
    buf = io.StringIO()
    configure_logging("worker", 0, stream=buf)
    log = get_logger("t")
    log.info("chunk", text=TEXT, content=TEXT, body=TEXT.encode(), payload={"x": TEXT})
    log.info("batch", input=[TEXT, TEXT], request={"model": "m", "input": [TEXT]})
    logging.getLogger("aiohttp.client").info("sent", extra={"body": TEXT})

    assert TEXT not in buf.getvalue()
    chunk, batch, foreign = lines(buf)
    assert chunk["text"] == chunk["content"] == f"[withheld: {len(TEXT)} chars]"
    assert chunk["body"] == f"[withheld: {len(TEXT.encode())} bytes]"
    assert chunk["payload"] == "[withheld: 1 items]"
    assert batch["input"] == "[withheld: 2 items]"
    assert batch["request"] == {"model": "m", "input": "[withheld: 1 items]"}
    assert foreign["body"] == f"[withheld: {len(TEXT)} chars]"


def test_long_values_are_truncated() -> None:
    buf = io.StringIO()
    configure_logging("worker", 0, stream=buf)
    get_logger("t").info("big", detail="x" * 10_000)
    (record,) = lines(buf)
    assert len(record["detail"]) < 2100
    assert record["detail"].endswith("[truncated 7952 chars]")


def test_console_rendering_on_a_tty_and_json_on_request() -> None:
    tty = FakeTTY()
    configure_logging("http", stream=tty)
    get_logger("t").info("hello console", text=TEXT)
    out = tty.getvalue()
    assert "hello console" in out
    assert TEXT not in out
    with pytest.raises(json.JSONDecodeError):
        json.loads(out.splitlines()[0])

    tty2 = FakeTTY()
    configure_logging("http", stream=tty2, json=True)
    get_logger("t").info("forced json")
    assert lines(tty2)[0]["event"] == "forced json"


def test_console_lines_carry_only_what_is_set_json_lines_every_key() -> None:
    tty = FakeTTY()
    configure_logging("supervisor", stream=tty)
    get_logger("t").info("quiet line", kept="yes", unset=None)
    out = tty.getvalue()
    assert "kept" in out
    assert "None" not in out  # no correlation_id=None, slot=None, unset=None ...

    buf = io.StringIO()
    configure_logging("supervisor", stream=buf)
    get_logger("t").info("machine line", unset=None)
    (record,) = lines(buf)
    assert record["unset"] is None and record["correlation_id"] is None


def test_a_groups_id_lists_are_for_machines_not_the_terminal() -> None:
    members = {"document_ids": ["d-one", "d-two"], "correlation_ids": ["c-one", "c-two"]}
    tty = FakeTTY()
    configure_logging("worker", 0, stream=tty)
    get_logger("t").info("stage finished", documents=2, **members)
    out = tty.getvalue()
    assert "documents" in out and "d-one" not in out and "c-one" not in out  # colours between

    buf = io.StringIO()
    configure_logging("worker", 0, stream=buf)
    get_logger("t").info("stage finished", documents=2, **members)
    (record,) = lines(buf)
    assert record["document_ids"] == ["d-one", "d-two"]
    assert record["correlation_ids"] == ["c-one", "c-two"]


@pytest.mark.parametrize(("level", "shown"), [("INFO", False), ("DEBUG", True)])
def test_the_embedded_servers_info_chatter_shows_only_when_debugging(
    level: str, shown: bool
) -> None:
    buf = io.StringIO()
    configure_logging("supervisor", stream=buf, level=level)
    logging.getLogger("pgserver").info("Running commandline: pg_ctl -D ... start")
    logging.getLogger("pgserver").warning("the server's log says something")
    events = [r["event"] for r in lines(buf)]
    assert ("Running commandline: pg_ctl -D ... start" in events) is shown
    assert "the server's log says something" in events


def test_level_filtering_and_reconfiguration_replaces_the_handler() -> None:
    first, second = io.StringIO(), io.StringIO()
    log = get_logger("t")  # created before configuration: must follow it
    configure_logging("worker", 0, stream=first, level="WARNING")
    log.info("dropped")
    log.warning("kept")
    configure_logging("worker", 5, stream=second)
    log.info("to second")
    assert [r["event"] for r in lines(first)] == ["kept"]
    (record,) = lines(second)
    assert (record["event"], record["slot"]) == ("to second", 5)


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="role"):
        configure_logging("janitor", stream=io.StringIO())
    with pytest.raises(ValueError, match="slot"):
        configure_logging("worker", stream=io.StringIO())
    with pytest.raises(ValueError, match="level"):
        configure_logging("worker", 1, stream=io.StringIO(), level="LOUD")
    with pytest.raises(ValueError, match="not both"):
        configure_logging("worker", 1, stream=io.StringIO(), log_file=tmp_path / "x.log")
    with pytest.raises(ValueError, match="stage"), context.bind_stage("embed"):
        pass


def test_log_file_is_reopened_after_rotation(tmp_path: Path) -> None:
    path = tmp_path / "ingestd.log"
    configure_logging("supervisor", log_file=path)
    log = get_logger("t")
    log.info("before rotation")
    path.rename(tmp_path / "ingestd.log.1")  # what logrotate does
    log.info("still to the old file")
    assert reopen_log_files() == 1
    log.info("after rotation")

    def events(p: Path) -> list[str]:
        return [json.loads(line)["event"] for line in p.read_text().splitlines()]

    assert events(tmp_path / "ingestd.log.1") == ["before rotation", "still to the old file"]
    assert events(path) == ["after rotation"]


def test_child_reconfigures_after_fork(tmp_path: Path) -> None:
    path = tmp_path / "ingestd.log"
    configure_logging("supervisor", log_file=path)
    log = get_logger("t")
    log.info("parent before fork")
    pid = os.fork()
    if pid == 0:  # child: only os._exit, never return into pytest
        code = 1
        try:
            configure_logging("worker", 4, log_file=path)
            with context.bind_document("doc-9", "corr-9"):
                log.info("child working")
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    log.info("parent after fork")  # the child closing its copy left ours open

    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["event"], r["role"], r["slot"], r["pid"]) for r in records] == [
        ("parent before fork", "supervisor", None, os.getpid()),
        ("child working", "worker", 4, pid),
        ("parent after fork", "supervisor", None, os.getpid()),
    ]
    assert records[1]["document_id"] == "doc-9"


def test_error_messages_of_classified_errors_are_logged_scrubbed() -> None:
    register_secret(SECRET)
    buf = io.StringIO()
    configure_logging("worker", 0, stream=buf)
    exc = InvalidInput(f"unsupported file; key {SECRET} rejected")
    get_logger("t").warning("document failed", error=str(exc), error_class=str(exc.error_class))
    (record,) = lines(buf)
    assert record["error"] == "invalid_input: unsupported file; key [REDACTED] rejected"
    assert record["error_class"] == "invalid_input"


def test_short_secrets_are_refused() -> None:
    with pytest.raises(ValueError, match="shorter"):
        register_secret("abc")


def test_redirecting_away_from_a_closed_stream_does_not_fail() -> None:
    import io
    import os

    from ingestd.shared.telemetry import logs

    gone = open(os.devnull, "w")  # noqa: SIM115  (a real file: its flush checks closed)
    logs.configure_logging("supervisor", None, json=True, stream=gone)
    gone.close()  # e.g. a terminal that went away, a test's captured stderr
    target = io.StringIO()
    logs.redirect_console(target)
    try:
        logs.get_logger("ingestd.test").warning("still logging")
        assert "still logging" in target.getvalue()
    finally:
        logs.redirect_console(None)
