"""Sentry events sent by the real SDK to a local HTTP endpoint standing in for Sentry ingest."""

from __future__ import annotations

import gzip
import json
import logging
import queue
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import sentry_sdk

from ingestd.shared.errors import InvalidInput, QuotaExhausted
from ingestd.shared.telemetry import context, logs
from ingestd.shared.telemetry.logs import configure_logging, get_logger
from ingestd.shared.telemetry.scrub import clear_secrets, register_secret
from ingestd.shared.telemetry.sentry import (
    capture_document_error,
    capture_worker_death,
    flush,
    init_sentry,
)

SECRET = "sk-proj-SENTRYTEST-9876543210abcdef"
TEXT = "Confidential: the merger with Northwind closes on the 14th."
DOC = "6f1c4a3e-8a0e-5d57-9a4f-0c6d2b1e7f10"
CORR = "0b7c2f8e-2222-4444-8888-123456789abc"
TIMEOUT = 10.0  # safety net only


@dataclass
class Envelope:
    raw: bytes  # decompressed body, exactly as sent
    items: list[tuple[dict[str, Any], dict[str, Any]]]

    def events(self) -> list[dict[str, Any]]:
        return [payload for header, payload in self.items if header.get("type") == "event"]


def parse_envelope(body: bytes) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Envelope: a header line, then per item a header line and a payload (with
    ``length`` bytes when the item header gives one, else up to the next newline)."""
    pos = body.index(b"\n") + 1
    items = []
    while pos < len(body):
        end = body.find(b"\n", pos)
        header = json.loads(body[pos : end if end != -1 else None])
        pos = end + 1
        length = header.get("length")
        if length is None:
            end = body.find(b"\n", pos)
            end = len(body) if end == -1 else end
            payload, pos = body[pos:end], end + 1
        else:
            payload, pos = body[pos : pos + length], pos + length + 1
        items.append((header, json.loads(payload)))
    return items


class Ingest:
    def __init__(self) -> None:
        self.received: queue.Queue[tuple[str, Envelope]] = queue.Queue()
        ingest = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                encoding = self.headers.get("Content-Encoding")
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                elif encoding is not None:
                    raise AssertionError(f"unexpected Content-Encoding {encoding}")
                ingest.received.put((self.path, Envelope(body, parse_envelope(body))))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def next_event(self) -> tuple[Envelope, dict[str, Any]]:
        while True:
            path, envelope = self.received.get(timeout=TIMEOUT)
            assert path == "/api/1/envelope/"
            events = envelope.events()
            if events:
                (event,) = events
                return envelope, event

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def ingest(monkeypatch: pytest.MonkeyPatch) -> Iterator[Ingest]:
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    server = Ingest()
    register_secret(SECRET)
    init_sentry(
        f"http://public@127.0.0.1:{server.port}/1", "test", "worker", 2, release="ingestd@test"
    )
    yield server
    sentry_sdk.get_client().close(timeout=2)
    sentry_sdk.get_global_scope().set_client(None)
    sentry_sdk.get_global_scope().remove_tag("role")
    sentry_sdk.get_global_scope().remove_tag("worker_slot")
    clear_secrets()
    server.close()


def _fail_embedding(chunk_text: str) -> None:
    api_key = SECRET  # a local that must not be reported
    request = {"model": "text-embedding-3-small", "input": [chunk_text], "key": api_key}
    raise QuotaExhausted(f"quota exhausted (request {len(request)} fields, key {api_key})")


def test_document_error_is_tagged_fingerprinted_and_scrubbed(ingest: Ingest) -> None:
    buf_logger = get_logger("ingestd.worker")
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.INFO)  # let log lines become breadcrumbs
    try:
        with context.bind_document(DOC, CORR), context.bind_stage("embedding"):
            buf_logger.info("embedding batch", text=TEXT, api_key=SECRET, inputs_count=1)
            sentry_sdk.add_breadcrumb(category="http", data={"body": TEXT, "url": "/v1"})
            sentry_sdk.set_context("payload_info", {"content": TEXT, "size": len(TEXT)})
            try:
                _fail_embedding(TEXT)
            except QuotaExhausted as exc:
                event_id = capture_document_error(exc, stage="embedding", error_class="quota")
        flush(TIMEOUT)
    finally:
        root.setLevel(level)

    envelope, event = ingest.next_event()
    assert event["event_id"] == event_id
    assert event["fingerprint"] == ["ingestd", "document", "embedding", "quota"]
    assert event["tags"] == event["tags"] | {
        "role": "worker",
        "worker_slot": "2",
        "stage": "embedding",
        "error_class": "quota",
        "document_id": DOC,
        "correlation_id": CORR,
    }
    assert event["environment"] == "test"
    assert event["release"] == "ingestd@test"

    # Neither the secret nor the document text is anywhere in what was sent.
    assert SECRET.encode() not in envelope.raw
    assert TEXT.encode() not in envelope.raw
    for value in event["exception"]["values"]:
        for frame in value["stacktrace"]["frames"]:
            assert "vars" not in frame
    (exc_value,) = event["exception"]["values"]
    assert exc_value["type"] == "QuotaExhausted"
    assert exc_value["value"].endswith("key [REDACTED])")
    crumbs = event["breadcrumbs"]["values"]
    log_crumb = next(c for c in crumbs if c.get("message") == "embedding batch")
    assert log_crumb["data"]["text"] == f"[withheld: {len(TEXT)} chars]"
    assert log_crumb["data"]["api_key"] == "[REDACTED]"
    assert log_crumb["data"]["inputs_count"] == 1
    http_crumb = next(c for c in crumbs if c.get("category") == "http")
    assert http_crumb["data"] == {"body": f"[withheld: {len(TEXT)} chars]", "url": "/v1"}
    assert event["contexts"]["payload_info"]["content"] == f"[withheld: {len(TEXT)} chars]"


def test_bad_input_pages_nobody(ingest: Ingest) -> None:
    with context.bind_document(DOC, CORR):
        skipped = capture_document_error(
            InvalidInput("not valid UTF-8"), stage="parsing", error_class="invalid_input"
        )
        sent = capture_document_error(
            QuotaExhausted("quota exhausted"), stage="parsing", error_class="quota"
        )
    flush(TIMEOUT)
    assert skipped is None and sent is not None
    _, event = ingest.next_event()  # events arrive in order: the first one is the quota's
    assert event["event_id"] == sent


def test_worker_death_is_reported_by_the_supervisor(ingest: Ingest) -> None:
    capture_worker_death(3, 4242, "memory", DOC, CORR, stage="embedding")
    flush(TIMEOUT)
    _, event = ingest.next_event()
    assert event["fingerprint"] == ["ingestd", "worker-death", "memory"]
    assert event["level"] == "error"
    assert event["tags"] == event["tags"] | {
        "worker_slot": "3",
        "worker_pid": "4242",
        "reason": "memory",
        "document_id": DOC,
        "correlation_id": CORR,
        "stage": "embedding",
    }
    message = event.get("logentry", {}).get("message") or event.get("message")
    assert message == "worker slot 3 (pid 4242) died: memory"


def test_unexpected_exception_groups_by_stage_and_keeps_bugs_apart(ingest: Ingest) -> None:
    with context.bind_document(DOC, CORR), context.bind_stage("chunking"):
        try:
            {}["missing"]  # a bug, on purpose
        except KeyError:
            sentry_sdk.capture_exception()
    flush(TIMEOUT)
    _, event = ingest.next_event()
    assert event["fingerprint"] == ["ingestd", "exception", "chunking", "internal", "{{ default }}"]
    assert event["tags"]["error_class"] == "internal"
    assert event["tags"]["document_id"] == DOC


def test_error_log_lines_do_not_become_events(ingest: Ingest) -> None:
    logs_buf = logging.getLogger("ingestd.quiet")
    logs_buf.error("an error line, not a page: %s", TEXT)
    capture_worker_death(0, 1, "crash", None, None)
    flush(TIMEOUT)
    _, event = ingest.next_event()  # the first event is the worker death, not the log line
    assert event["fingerprint"] == ["ingestd", "worker-death", "crash"]
    assert ingest.received.empty()


def test_disabled_without_dsn() -> None:
    assert init_sentry(None, "test", "worker", 1) is False
    assert not sentry_sdk.get_client().is_active()
    # Capturing with Sentry off is a no-op, not an error.
    assert capture_worker_death(1, 2, "crash", None, None) is None
    flush(0.1)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="stage"):
        capture_document_error(RuntimeError("x"), stage="embed", error_class="transient")
    with pytest.raises(ValueError):
        capture_document_error(RuntimeError("x"), stage="embedding", error_class="cosmic")
    with pytest.raises(ValueError, match="role"):
        init_sentry("http://public@127.0.0.1:9/1", "test", "janitor", None)


@pytest.fixture(autouse=True)
def _logging_configured() -> Iterator[None]:
    configure_logging("worker", 2, stream=_NullStream())
    yield
    root = logging.getLogger()
    for handler in logs._installed_handlers:
        root.removeHandler(handler)
    logs._installed_handlers.clear()
    context._role = context._slot = None


class _NullStream:
    def write(self, _: str) -> int:
        return 0

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False
