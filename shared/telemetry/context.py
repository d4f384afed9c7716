"""Who is logging and on behalf of which document: the context every log line,
metric and Sentry event is stamped with.

Two levels:

- process level (set once per process, after fork): ``role`` (supervisor, worker,
  http) and the worker ``slot``. Plain module state, because a process has one role.
- task level, in ``contextvars`` so that concurrent asyncio tasks in one worker each
  see their own document: ``correlation_id``, ``document_id`` and ``stage``.

Stage names are the document's *active* statuses (``parsing``, ``chunking``,
``embedding``, ``finalizing``), the same strings the event history stores in its
``stage`` column, so a log line, a metric path and an event row say the same thing.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Literal

from ingestd.shared.states import ACTIVE

Role = Literal["supervisor", "worker", "http"]
ROLES: tuple[str, ...] = ("supervisor", "worker", "http")
STAGES: tuple[str, ...] = tuple(str(status) for status in ACTIVE)

Id = uuid.UUID | str

_correlation_id: ContextVar[str | None] = ContextVar("ingestd_correlation_id", default=None)
_document_id: ContextVar[str | None] = ContextVar("ingestd_document_id", default=None)
_stage: ContextVar[str | None] = ContextVar("ingestd_stage", default=None)
# A group of small documents worked on together: (document_id, correlation_id) pairs.
_members: ContextVar[tuple[tuple[str, str], ...] | None] = ContextVar(
    "ingestd_group_members", default=None
)

_role: str | None = None
_slot: int | None = None


def set_process(role: str, slot: int | None = None) -> None:
    """Record this process's role and worker slot. Call again in a child after fork."""
    global _role, _slot
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
    if slot is not None and (isinstance(slot, bool) or not isinstance(slot, int) or slot < 0):
        raise ValueError(f"worker slot must be a non-negative integer, got {slot!r}")
    if role == "worker" and slot is None:
        raise ValueError("a worker process needs its slot number")
    _role, _slot = role, slot


def role() -> str | None:
    return _role


def slot() -> int | None:
    return _slot


def new_correlation_id() -> str:
    return str(uuid.uuid4())


def _id(value: Id | None, what: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, str) and value:
        return value
    raise ValueError(f"{what} must be a UUID or a non-empty string, got {type(value).__name__}")


def check_stage(stage: str) -> str:
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; expected one of {', '.join(STAGES)}")
    return stage


@contextmanager
def bind_document(document_id: Id, correlation_id: Id | None) -> Iterator[None]:
    """Work on behalf of one document; restores the previous binding on exit.

    ``correlation_id`` is the document's (it follows the document from submission
    through every stage); ``None`` means the document has none known here.
    """
    doc_token = _document_id.set(_id(document_id, "document_id"))
    corr_token = _correlation_id.set(_id(correlation_id, "correlation_id"))
    try:
        yield
    finally:
        _correlation_id.reset(corr_token)
        _document_id.reset(doc_token)


@contextmanager
def bind_group(group_id: Id, members: Iterable[tuple[Id, Id]]) -> Iterator[None]:
    """Work on behalf of several documents at once (workers/drive.py).

    A line written for the whole group (a shared embedding request, the group's
    stage timings) names every member: ``document_ids`` and ``correlation_ids``,
    in the same order, so searching for one document's correlation id finds it.
    ``correlation_id`` is the group's own id, the one its API requests send.
    """
    pairs = tuple((str(_id(d, "document_id")), str(_id(c, "correlation_id"))) for d, c in members)
    tokens = (
        _correlation_id.set(_id(group_id, "correlation_id")),
        _document_id.set(None),
        _members.set(pairs),
    )
    try:
        yield
    finally:
        _members.reset(tokens[2])
        _document_id.reset(tokens[1])
        _correlation_id.reset(tokens[0])


@contextmanager
def bind_correlation(correlation_id: Id) -> Iterator[None]:
    """Bind only a correlation id, e.g. for an HTTP request before a document exists."""
    token = _correlation_id.set(_id(correlation_id, "correlation_id"))
    try:
        yield
    finally:
        _correlation_id.reset(token)


@contextmanager
def bind_stage(stage: str) -> Iterator[None]:
    token = _stage.set(check_stage(stage))
    try:
        yield
    finally:
        _stage.reset(token)


def current() -> dict[str, Any]:
    """The full context as a flat dict (keys always present, values may be None)."""
    members = _members.get() if _document_id.get() is None else None
    return {
        "role": _role,
        "slot": _slot,
        "correlation_id": _correlation_id.get(),
        "document_id": _document_id.get(),
        "stage": _stage.get(),
        "document_ids": [d for d, _ in members] if members else None,
        "correlation_ids": [c for _, c in members] if members else None,
    }
