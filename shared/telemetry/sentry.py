"""Error reporting to Sentry, scrubbed of secrets and document text.

Every process calls ``init_sentry`` after fork (the SDK's sending thread does not
survive a fork) and ``flush`` before it exits: a child leaving through ``os._exit``
would otherwise lose what it queued. ``dsn=None`` is the explicit "Sentry off"
configuration; the capture functions then do nothing.

What pages someone is chosen, not incidental: ``capture_document_error`` for a
document that failed for good (permanent failure or retries exhausted),
``capture_worker_death`` for a worker the supervisor lost, and unhandled
exceptions. Error-level log lines do not become events (they would duplicate
these and carry unscrubbed structlog fields); log lines are kept as breadcrumbs.

Events are grouped by stage and error class (``fingerprint``), and tagged with
``role``, ``worker_slot``, ``stage``, ``error_class``, ``correlation_id`` and
``document_id``. ``before_send`` removes request bodies, cookies, local variables,
secret-named keys and registered secret values, replaces text-named fields by their
size, and truncates long strings.
"""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Mapping
from typing import Any

import sentry_sdk
from sentry_sdk.integrations.logging import LoggingIntegration

from ingestd.shared.errors import ErrorClass, IngestError
from ingestd.shared.telemetry import context
from ingestd.shared.telemetry.scrub import scrub_mapping, scrub_string, scrub_value

__all__ = [
    "before_breadcrumb",
    "before_send",
    "capture_document_error",
    "capture_worker_death",
    "flush",
    "init_sentry",
]

MAX_STRING_CHARS = 1024
MAX_MESSAGE_CHARS = 512
_TAGS_FROM_CONTEXT = ("correlation_id", "document_id", "stage")


def init_sentry(
    dsn: str | None,
    environment: str,
    role: str,
    slot: int | None,
    release: str | None = None,
) -> bool:
    """Start reporting from this process; returns whether Sentry is on."""
    if dsn is None:
        return False
    if role not in context.ROLES:
        raise ValueError(f"unknown role {role!r}; expected one of {', '.join(context.ROLES)}")
    if release is None:
        release = installed_release()
    sentry_sdk.init(
        dsn=dsn,
        # Auto-enabled integrations import every library they could hook (openai among
        # them): ~2.6 s of CPU per process after fork, and hooks we don't want.
        auto_enabling_integrations=False,
        environment=environment,
        release=release,
        before_send=before_send,
        before_breadcrumb=before_breadcrumb,
        # send_default_pii stays at its default, False (no IPs, cookies, user data).
        include_local_variables=False,
        max_request_body_size="never",
        max_breadcrumbs=50,
        integrations=[LoggingIntegration(level=logging.INFO, event_level=None)],
    )
    scope = sentry_sdk.get_global_scope()
    scope.set_tag("role", role)
    if slot is None:
        scope.remove_tag("worker_slot")
    else:
        scope.set_tag("worker_slot", str(slot))
    return True


def installed_release() -> str | None:
    """``ingestd@<version>`` of the installed distribution: events say which code sent them."""
    try:
        return f"ingestd@{importlib.metadata.version('ingestd')}"
    except importlib.metadata.PackageNotFoundError:  # a source tree never installed
        return None


def flush(timeout: float = 2.0) -> None:
    """Send what is queued, waiting at most ``timeout`` seconds. Call before exiting."""
    client = sentry_sdk.get_client()
    if client.is_active():
        client.flush(timeout=timeout)


def _fingerprint(kind: str, stage: str | None, error_class: str) -> list[str]:
    fingerprint = ["ingestd", kind, stage or "no-stage", error_class]
    if error_class == ErrorClass.INTERNAL:
        # A bug: keep distinct bugs apart instead of one "internal" issue per stage.
        fingerprint.append("{{ default }}")
    return fingerprint


def capture_document_error(
    exc: BaseException, *, stage: str, error_class: ErrorClass | str
) -> str | None:
    """Report a document that failed for good. Document and correlation ids come from
    the bound context (``context.bind_document``). Returns the event id, if sent.

    Bad input is the sender's problem, not an incident: it is recorded on the document,
    counted (``documents.failed.<stage>.invalid_input``) and logged, but pages nobody.
    """
    stage = context.check_stage(stage)
    klass = str(ErrorClass(error_class))
    if klass == ErrorClass.INVALID_INPUT:
        return None
    with sentry_sdk.new_scope() as scope:
        scope.set_tag("stage", stage)
        scope.set_tag("error_class", klass)
        scope.fingerprint = _fingerprint("document", stage, klass)
        return sentry_sdk.capture_exception(exc)


def capture_worker_death(
    slot: int | None,
    pid: int,
    reason: str,
    document_id: context.Id | None,
    correlation_id: context.Id | None,
    *,
    stage: str | None = None,
) -> str | None:
    """Report (from the supervisor) a worker process that died or had to be killed;
    ``slot`` None: the HTTP child."""
    with sentry_sdk.new_scope() as scope:
        if slot is not None:
            scope.set_tag("worker_slot", str(slot))
        scope.set_tag("worker_pid", str(pid))
        scope.set_tag("reason", reason)
        if document_id is not None:
            scope.set_tag("document_id", str(document_id))
        if correlation_id is not None:
            scope.set_tag("correlation_id", str(correlation_id))
        if stage is not None:
            scope.set_tag("stage", context.check_stage(stage))
        scope.fingerprint = ["ingestd", "worker-death", reason]
        who = "the http child" if slot is None else f"worker slot {slot}"
        return sentry_sdk.capture_message(f"{who} (pid {pid}) died: {reason}", level="error")


# -- scrubbing ------------------------------------------------------------------


def _drop_frame_vars(container: Mapping[str, Any] | None) -> None:
    for value in (container or {}).get("values") or []:
        for frame in ((value.get("stacktrace") or {}).get("frames")) or []:
            frame.pop("vars", None)


def _structlog_fields(record: logging.LogRecord) -> tuple[str, dict[str, Any]] | None:
    """A record logged through structlog carries its raw event dict as ``msg``."""
    if not isinstance(record.msg, dict):
        return None
    fields = {
        k: v
        for k, v in record.msg.items()
        if k not in ("event", "exc_info") and not str(k).startswith("_")
    }
    return str(record.msg.get("event", "")), fields


def before_send(event: dict[str, Any], hint: dict[str, Any]) -> dict[str, Any]:
    tags: dict[str, Any] = dict(event.get("tags") or {})
    ctx = context.current()
    for key in _TAGS_FROM_CONTEXT:
        if tags.get(key) is None and ctx[key] is not None:
            tags[key] = ctx[key]
    if tags.get("role") is None and ctx["role"] is not None:
        tags["role"] = ctx["role"]

    if not event.get("fingerprint") and event.get("exception"):
        exc = (hint.get("exc_info") or (None, None, None))[1]
        klass = str(exc.error_class) if isinstance(exc, IngestError) else str(ErrorClass.INTERNAL)
        tags.setdefault("error_class", klass)
        event["fingerprint"] = _fingerprint("exception", tags.get("stage"), tags["error_class"])
    event["tags"] = {k: str(v) for k, v in tags.items() if v is not None}

    record = hint.get("log_record")
    if isinstance(record, logging.LogRecord):
        parsed = _structlog_fields(record)
        if parsed is not None:
            message, fields = parsed
            event["logentry"] = {"message": message, "params": []}
            event.pop("message", None)
            event["extra"] = {**(event.get("extra") or {}), **fields}

    request = event.get("request")
    if isinstance(request, dict):
        for key in ("data", "cookies", "env"):
            request.pop(key, None)
        if isinstance(request.get("query_string"), str):
            request["query_string"] = scrub_string(request["query_string"], MAX_STRING_CHARS)

    _drop_frame_vars(event.get("exception"))
    _drop_frame_vars(event.get("threads"))

    breadcrumbs = event.get("breadcrumbs")
    if isinstance(breadcrumbs, dict):
        breadcrumbs["values"] = [_scrub_crumb(c) for c in breadcrumbs.get("values") or []]

    # Then everything, whatever integration put it there: secret-named keys, text-named
    # keys, registered secrets inside any string, long strings.
    scrubbed: dict[str, Any] = scrub_mapping(event, max_chars=MAX_STRING_CHARS, depth=16)
    return scrubbed


def _scrub_crumb(crumb: dict[str, Any]) -> dict[str, Any]:
    crumb = dict(crumb)
    if isinstance(crumb.get("message"), str):
        crumb["message"] = scrub_string(crumb["message"], MAX_MESSAGE_CHARS)
    if isinstance(crumb.get("data"), Mapping):
        crumb["data"] = scrub_mapping(crumb["data"], max_chars=MAX_MESSAGE_CHARS)
    return crumb


def before_breadcrumb(crumb: dict[str, Any], hint: dict[str, Any] | None) -> dict[str, Any]:
    record = (hint or {}).get("log_record")
    if isinstance(record, logging.LogRecord):
        parsed = _structlog_fields(record)
        if parsed is not None:
            # The default message is repr(event dict) with raw, unscrubbed fields.
            crumb["message"], crumb["data"] = parsed
    if crumb.get("data") is not None and not isinstance(crumb["data"], Mapping):
        crumb["data"] = {"value": scrub_value(crumb["data"], max_chars=MAX_MESSAGE_CHARS)}
    return _scrub_crumb(crumb)
