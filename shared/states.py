"""The document state machine: every status and every legal transition.

This table is the single source of truth. Migration 0001 copies it into the
``document_transitions`` table, and a trigger makes PostgreSQL refuse any status
change that is not listed here, whoever issues it.

A document *rests* in a runnable status until a worker claims it; the claim moves
it to the matching *active* status under a lease. An active stage ends in the
next resting status (or a terminal one), or, when its worker keeps the lease,
passes through it straight into the next stage (``HANDOVER``). A retry or a released lease moves it
back to the resting status it was claimed from.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    QUEUED = "queued"
    PARSING = "parsing"
    AWAITING_PARSE = (
        "awaiting_parse"  # submitted to an asynchronous parser, waiting for its callback
    )
    PARSED = "parsed"
    CHUNKING = "chunking"
    CHUNKED = "chunked"
    EMBEDDING = "embedding"
    EMBEDDED = "embedded"
    FINALIZING = "finalizing"
    COMPLETE = "complete"
    FAILED = "failed"  # permanent: bad input, auth, quota
    DEAD = "dead"  # retries exhausted

    @property
    def terminal(self) -> bool:
        return self in TERMINAL

    @property
    def active(self) -> bool:
        return self in ACTIVE_OF.values()


S = Status

# Claiming a resting status starts this active status.
ACTIVE_OF: dict[Status, Status] = {
    S.QUEUED: S.PARSING,
    S.AWAITING_PARSE: S.PARSING,  # the callback is late: poll the parser ourselves
    S.PARSED: S.CHUNKING,
    S.CHUNKED: S.EMBEDDING,
    S.EMBEDDED: S.FINALIZING,
}

# Where an active status goes back to when its attempt ends without success.
RESTING_OF: dict[Status, Status] = {
    S.PARSING: S.QUEUED,
    S.CHUNKING: S.PARSED,
    S.EMBEDDING: S.CHUNKED,
    S.FINALIZING: S.EMBEDDED,
}

# Where a successful active stage goes.
SUCCESS_OF: dict[Status, tuple[Status, ...]] = {
    S.PARSING: (S.PARSED, S.AWAITING_PARSE),
    S.CHUNKING: (S.CHUNKED,),
    S.EMBEDDING: (S.EMBEDDED,),
    # Vectors found missing at the final check: embed them, don't paper over it.
    S.FINALIZING: (S.COMPLETE, S.CHUNKED),
}

# A stage that succeeds into a resting status goes straight on into the next stage
# when its worker keeps the lease: one change of the row instead of two (the
# history still records the resting status passed through). Not into a wait for an
# asynchronous parser, which is a resting status to leave, not to pass through.
HANDOVER: frozenset[tuple[Status, Status]] = frozenset(
    (active, ACTIVE_OF[rest])
    for active, rests in SUCCESS_OF.items()
    for rest in rests
    if rest in ACTIVE_OF and rest is not S.AWAITING_PARSE
)

RUNNABLE: tuple[Status, ...] = tuple(ACTIVE_OF)
ACTIVE: tuple[Status, ...] = tuple(RESTING_OF)
TERMINAL: frozenset[Status] = frozenset({S.COMPLETE, S.FAILED, S.DEAD})

# Operator actions: retry a failed/dead document, re-chunk or re-embed a complete one.
OPERATOR: dict[Status, tuple[Status, ...]] = {
    S.FAILED: (S.QUEUED,),
    S.DEAD: (S.QUEUED,),
    S.COMPLETE: (S.QUEUED, S.PARSED, S.CHUNKED),
}


def _build() -> frozenset[tuple[Status, Status]]:
    edges: set[tuple[Status, Status]] = set()
    edges |= set(ACTIVE_OF.items())
    edges |= set(RESTING_OF.items())
    for active, nexts in SUCCESS_OF.items():
        edges |= {(active, n) for n in nexts}
    edges |= HANDOVER
    for status in Status:
        if not status.terminal:
            edges.add((status, S.FAILED))
            edges.add((status, S.DEAD))
    # A waiting document whose parser reports back (webhook) goes straight to parsed.
    edges.add((S.AWAITING_PARSE, S.PARSED))
    # The queued→queued style no-op is not a transition; a late webhook on a
    # re-queued document is refused.
    for src, dsts in OPERATOR.items():
        edges |= {(src, d) for d in dsts}
    # Re-embedding or re-chunking also starts from intermediate resting states.
    edges |= {(S.CHUNKED, S.PARSED), (S.EMBEDDED, S.PARSED), (S.EMBEDDED, S.CHUNKED)}
    return frozenset(edges)


TRANSITIONS: frozenset[tuple[Status, Status]] = _build()


def is_legal(src: Status, dst: Status) -> bool:
    return (src, dst) in TRANSITIONS


def is_handover(src: Status, dst: Status) -> bool:
    return (src, dst) in HANDOVER
