"""Every operation that changes a document's status, in one place.

A document's status changes only through these functions, each one statement
(or one transaction) that also writes the event-history row explaining it: its
creation (``add_document``, or ``add_small_documents`` for many), claims and stage
transitions, the end of a failed attempt (the rule is ``shared.db.attempts``), leases
reaped or released, the parser's result or failure arriving for a parked document, and
the operator's requeues (retry, re-embed). No other module writes ``documents.status`` or a
``document_events`` row.

Every change made by a worker is conditioned on that worker still holding the
lease: if another worker reclaimed the document, the update matches nothing and
``LeaseLost`` tells the caller to let go.
"""

from __future__ import annotations

import functools
import json
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from ingestd.shared.db.attempts import (
    SQL_FUNCTION,
    Clock,
    Decision,
    Ending,
    clock,
    decide,
    next_try_within,
)
from ingestd.shared.db.blobs import unlink_blobs
from ingestd.shared.db.reports import leased_by
from ingestd.shared.errors import ErrorClass, IngestError, LeaseLost
from ingestd.shared.resilience.backoff import document_backoff
from ingestd.shared.states import ACTIVE, ACTIVE_OF, RESTING_OF, RUNNABLE, Status, is_handover


def _case(column: str, mapping: Mapping[Status, Status]) -> sql.Composed:
    whens = sql.SQL(" ").join(
        sql.SQL("WHEN {} THEN {}::document_status").format(sql.Literal(str(a)), sql.Literal(str(b)))
        for a, b in mapping.items()
    )
    return sql.SQL("CASE {} {} END").format(sql.SQL(column), whens)


def _in(statuses: Iterable[Status]) -> sql.Composed:
    return sql.SQL(", ").join(sql.Literal(str(s)) for s in statuses)


@dataclass(frozen=True)
class Claimed:
    id: UUID
    status: Status  # the active status the claim moved it to
    claimed_from: Status
    attempts: int
    correlation_id: UUID
    lease_expires_at: datetime
    size_bytes: int = 0


# -- claiming -----------------------------------------------------------------

_REAP = sql.SQL("""
WITH expired AS (
    SELECT id, status, lease_owner FROM documents
    WHERE lease_owner IS NOT NULL AND lease_expires_at < now()
      AND status IN ({active})
    ORDER BY lease_expires_at
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), upd AS (
    UPDATE documents d SET
        status = CASE {attempt_end}(%(retryable)s, d.attempts + %(counts)s, %(max_attempts)s,
                                    0, 'Infinity')
                      WHEN 'dead' THEN 'dead'::document_status
                      WHEN 'failed' THEN 'failed'::document_status
                      ELSE {resting} END,
        attempts = d.attempts + %(counts)s,
        waiting_since = NULL, waiting_for = NULL,
        lease_owner = NULL, lease_expires_at = NULL, run_after = now(),
        error_class = 'lease_expired',
        error_message = 'lease held by ' || expired.lease_owner
                        || ' expired during ' || expired.status
    FROM expired WHERE d.id = expired.id
    RETURNING d.id, d.status, d.attempts, d.correlation_id,
              expired.status AS from_status, expired.lease_owner AS worker
)
INSERT INTO document_events
    (document_id, event, stage, from_status, to_status, attempt, worker, correlation_id,
     error_class, message)
SELECT id, 'lease_expired', from_status::text, from_status, status, attempts, worker,
       correlation_id, 'lease_expired', 'lease expired; ' ||
       CASE status WHEN 'dead' THEN 'attempts exhausted' WHEN 'failed' THEN 'failed'
                   ELSE 'requeued' END
FROM upd
""").format(
    active=_in(ACTIVE),
    resting=_case("expired.status", RESTING_OF),
    attempt_end=sql.Identifier(SQL_FUNCTION),
)

_CLAIM = sql.SQL("""
WITH picked AS (
    SELECT id, status, size_bytes, run_after FROM documents
    WHERE status IN ({runnable}) AND run_after <= now()
    ORDER BY run_after
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
), fits AS (
    -- A multi-document claim takes documents only while their bytes fit the
    -- budget (the first always): one worker must not sit on many large documents
    -- while the others starve. The rows left out are unlocked at commit.
    SELECT id, status FROM (
        SELECT id, status, row_number() OVER w AS n, sum(size_bytes) OVER w AS running
        FROM picked WINDOW w AS (ORDER BY run_after, id)
    ) p WHERE n = 1 OR running <= %(max_bytes)s
), upd AS (
    UPDATE documents d SET
        status = {active},
        lease_owner = %(owner)s,
        lease_expires_at = now() + make_interval(secs => %(lease)s),
        started_at = coalesce(d.started_at, now())
    FROM fits picked WHERE d.id = picked.id
    RETURNING d.id, d.status, picked.status AS claimed_from, d.attempts, d.correlation_id,
              d.lease_expires_at, d.size_bytes
), ev AS (
    INSERT INTO document_events
        (document_id, event, stage, from_status, to_status, attempt, worker, correlation_id)
    SELECT id, 'claimed', status::text, claimed_from, status, attempts, %(owner)s, correlation_id
    FROM upd
)
SELECT * FROM upd
""").format(runnable=_in(RUNNABLE), active=_case("picked.status", ACTIVE_OF))


# The statement above clears the wait clock and passes no wait: right for a class that
# counts an attempt (``attempts.clock`` is CLEAR for it; a test pins that).
_REAPED = ErrorClass.LEASE_EXPIRED


def reap_expired(conn: psycopg.Connection[Any], *, max_attempts: int, limit: int = 100) -> int:
    """Requeue (or kill) documents whose worker stopped renewing its lease.

    Set-based, so the attempt's end is decided in the statement by the SQL form of
    ``shared.db.attempts``' rule, for the ``lease_expired`` class."""
    with conn.transaction():
        cur = conn.execute(
            _REAP,
            {
                "limit": limit,
                "max_attempts": max_attempts,
                "retryable": _REAPED.retryable,
                "counts": int(_REAPED.counts_attempt),
            },
        )
        return cur.rowcount


def claim(
    conn: psycopg.Connection[Any],
    owner: str,
    *,
    limit: int = 1,
    lease_seconds: float,
    max_bytes: int | None = None,
) -> list[Claimed]:
    """Claim up to ``limit`` runnable documents under a lease.

    One statement, so one transaction even on an autocommit connection: the
    rows are locked, stamped with our lease and logged before anyone else can
    see them. ``max_bytes`` bounds the summed size of the
    documents taken, the first excepted.
    """
    params = {
        "limit": limit,
        "owner": owner,
        "lease": lease_seconds,
        "max_bytes": max_bytes if max_bytes is not None else 2**62,
    }
    # One statement is its own transaction on an autocommit connection. Workers run
    # their sessions with asynchronous commit, which is safe for a claim: if the
    # server crashes before it is flushed, the claim is simply lost and the document
    # is runnable again, and any later synchronous commit by the claimant flushes
    # the WAL up to and including the claim first.
    if conn.autocommit:
        cur = conn.execute(_CLAIM, params)
    else:
        with conn.transaction():
            cur = conn.execute(_CLAIM, params)
    return [_claimed(r) for r in cur.fetchall()]


def _claimed(r: Mapping[str, Any]) -> Claimed:
    return Claimed(
        id=r["id"],
        status=Status(r["status"]),
        claimed_from=Status(r["claimed_from"]),
        attempts=r["attempts"],
        correlation_id=r["correlation_id"],
        lease_expires_at=r["lease_expires_at"],
        size_bytes=r["size_bytes"],
    )


def extend_lease(
    conn: psycopg.Connection[Any], doc_id: UUID, owner: str, *, lease_seconds: float
) -> None:
    with conn.transaction():
        kept = extend_leases(conn, [doc_id], owner, lease_seconds=lease_seconds)
    if doc_id not in kept:
        raise LeaseLost(f"document {doc_id} is no longer leased by {owner}")


def extend_leases(
    conn: psycopg.Connection[Any], ids: Sequence[UUID], owner: str, *, lease_seconds: float
) -> set[UUID]:
    """Renew the lease of several documents at once; return those still ours."""
    rows = conn.execute(
        "UPDATE documents SET lease_expires_at = now() + make_interval(secs => %s)"
        " WHERE id = ANY(%s) AND lease_owner = %s RETURNING id",
        (lease_seconds, list(ids), owner),
    ).fetchall()
    return {r["id"] for r in rows}


# -- ending an attempt ----------------------------------------------------------


def add_event(
    conn: psycopg.Connection[Any],
    doc_id: UUID,
    event: str,
    *,
    stage: str | None = None,
    from_status: Status | None = None,
    to_status: Status | None = None,
    attempt: int | None = None,
    worker: str | None = None,
    error_class: str | None = None,
    message: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> None:
    conn.execute(
        "INSERT INTO document_events (document_id, event, stage, from_status, to_status, attempt,"
        " worker, correlation_id, error_class, message, details)"
        " SELECT id, %s, %s, %s, %s, coalesce(%s, attempts), %s, correlation_id, %s, %s, %s"
        " FROM documents WHERE id = %s",
        (
            event,
            stage,
            from_status and str(from_status),
            to_status and str(to_status),
            attempt,
            worker,
            error_class,
            message,
            Jsonb(dict(details)) if details else None,
            doc_id,
        ),
    )


def transition(
    conn: psycopg.Connection[Any],
    doc_id: UUID,
    owner: str,
    *,
    from_status: Status,
    to_status: Status,
    fields: Mapping[str, Any] | None = None,
    keep_lease: bool = False,
    lease_seconds: float = 60.0,
    event: str = "stage_finished",
    details: Mapping[str, Any] | None = None,
) -> None:
    """Move a leased document from ``from_status`` to ``to_status``.

    Call it inside the transaction that wrote the stage's results, so the
    status never claims more than the data shows.
    """
    moved = transition_many(
        conn,
        owner,
        from_status=from_status,
        to_status=to_status,
        changes={doc_id: fields or {}},
        details={doc_id: details} if details else None,
        keep_lease=keep_lease,
        lease_seconds=lease_seconds,
        event=event,
    )
    if doc_id not in moved:
        raise LeaseLost(f"document {doc_id} is not {from_status} under {owner}'s lease")


def transition_many(
    conn: psycopg.Connection[Any],
    owner: str,
    *,
    from_status: Status,
    to_status: Status,
    changes: Mapping[UUID, Mapping[str, Any]],
    details: Mapping[UUID, Mapping[str, Any]] | None = None,
    keep_lease: bool = False,
    lease_seconds: float = 60.0,
    event: str = "stage_finished",
    then: Status | None = None,
) -> set[UUID]:
    """``transition`` for a group of documents, in one statement.

    ``changes`` maps each document to the columns it sets; every document must
    set the same columns. Values are typed by the ``documents`` row type, so a
    column needs no cast here. Returns the documents moved: one missing from
    the result was not ``from_status`` under our lease (the caller lets it go).

    ``then``: the stage to start straight after ``to_status``, under the lease
    kept (``shared.states.HANDOVER``). The row changes once, to ``then``; the
    history records both steps, ``event`` into ``to_status`` and then
    ``stage_started`` out of it, exactly as two transitions would.
    """
    if not changes:
        return set()
    columns = sorted({k for fields in changes.values() for k in fields})
    for doc_id, fields in changes.items():
        if sorted(fields) != columns:
            raise ValueError(f"document {doc_id} sets {sorted(fields)}, expected {columns}")
    payload = [
        {
            **fields,
            "id": str(doc_id),
            "details": dict((details or {}).get(doc_id) or {}) or None,
        }
        for doc_id, fields in changes.items()
    ]
    if then is not None and not (keep_lease and is_handover(from_status, then)):
        raise ValueError(f"{from_status} cannot go on to {then} through {to_status}")
    # A stage finished: its service answered, so the document no longer waits on it.
    sets = [sql.SQL("status = %(final)s, waiting_since = NULL, waiting_for = NULL")]
    sets += [sql.SQL("{0} = v.{0}").format(sql.Identifier(c)) for c in columns]
    if to_status is Status.COMPLETE and "completed_at" not in columns:
        sets.append(sql.SQL("completed_at = now()"))
    sets.append(
        sql.SQL("lease_expires_at = now() + make_interval(secs => %(lease)s)")
        if keep_lease
        else sql.SQL("lease_owner = NULL, lease_expires_at = NULL")
    )
    rows = conn.execute(
        sql.SQL(
            "WITH v AS (SELECT r.*, x->'details' AS event_details"
            " FROM jsonb_array_elements(%(rows)s) x,"
            " LATERAL jsonb_populate_record(NULL::documents, x) r),"
            " upd AS (UPDATE documents d SET {sets} FROM v"
            " WHERE d.id = v.id AND d.lease_owner = %(owner)s AND d.status = %(from)s"
            " RETURNING d.id, d.attempts, d.correlation_id, v.event_details)"
            " INSERT INTO document_events (document_id, event, stage, from_status, to_status,"
            " attempt, worker, correlation_id, details)"
            " SELECT id, e.event, e.from_status, e.from_status, e.to_status, attempts,"
            " %(owner)s, correlation_id, CASE WHEN e.step = 1"
            " THEN nullif(event_details, 'null'::jsonb) END"
            " FROM upd, (VALUES (1, %(event)s, %(from)s::document_status, %(to)s::document_status),"
            " (2, 'stage_started', %(to)s, %(final)s)) e (step, event, from_status, to_status)"
            " WHERE e.step = 1 OR %(final)s <> %(to)s"
            # Identity values follow this order: each document's steps in sequence.
            " ORDER BY id, e.step"
            " RETURNING document_id"
        ).format(sets=sql.SQL(", ").join(sets)),
        {
            "rows": Jsonb(payload, dumps=_dumps),
            "owner": owner,
            "from": str(from_status),
            "to": str(to_status),
            "final": str(then or to_status),
            "lease": lease_seconds,
            "event": event,
        },
    ).fetchall()
    return {r["document_id"] for r in rows}


def _json_default(value: Any) -> str:
    # Typed back by ``jsonb_populate_record`` from the column, so the text form is enough.
    if isinstance(value, datetime | UUID | Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not a documents column value")


_dumps = functools.partial(json.dumps, default=_json_default)


def finish_stage(
    conn: psycopg.Connection[Any],
    owner: str,
    *,
    from_status: Status,
    to_status: Status,
    changes: Mapping[UUID, Mapping[str, Any]],
    details: Mapping[UUID, Mapping[str, Any]] | None = None,
    go_on: bool,
    lease_seconds: float,
) -> tuple[set[UUID], Status]:
    """End an active stage for documents: ``to_status``, then, with ``go_on``,
    straight into the next active stage under the same lease, so no other worker
    can take them in between and no claim round trip is spent.

    Call inside the transaction that wrote the stage's results. Returns the
    documents still ours and the status they are now in.
    """
    then = ACTIVE_OF[to_status] if go_on else None
    moved = transition_many(
        conn,
        owner,
        from_status=from_status,
        to_status=to_status,
        changes=changes,
        details=details,
        keep_lease=go_on,
        lease_seconds=lease_seconds,
        then=then,
    )
    return moved, then or to_status


def retry_delay(
    attempts: int,
    *,
    base: float,
    cap: float,
    rng: random.Random | None = None,
    retry_after: float | None = None,
) -> float:
    """Exponential backoff with full jitter, never sooner than the server asked."""
    return document_backoff(base, cap).delay(attempts, rng, retry_after=retry_after)


@dataclass(frozen=True)
class Outcome:
    status: Status
    attempts: int
    run_after: datetime | None
    waited_out: bool = False  # dead because it waited on its service past the horizon


def end_attempt(
    conn: psycopg.Connection[Any],
    doc_id: UUID,
    *,
    owner: str | None,
    active_status: Status | None,
    error: IngestError,
    max_attempts: int,
    retry_base: float,
    retry_cap: float,
    worker: str | None = None,
    horizon: float = math.inf,
) -> Outcome:
    """Record a failed attempt: retry later, fail permanently, or declare it dead
    (``shared.db.attempts.decide``).

    ``owner=None`` (the supervisor releasing a dead worker's document) matches any
    lease holder named ``worker``; otherwise the lease must be ours. ``horizon``: how
    long the document may wait on an unavailable service (``service_wait_horizon_seconds``).
    """
    with conn.transaction():
        cond = sql.SQL("id = %s AND lease_owner = %s")
        params: list[Any] = [doc_id, owner if owner is not None else worker]
        if active_status is not None:
            cond = sql.SQL("{} AND status = %s").format(cond)
            params.append(str(active_status))
        row = conn.execute(
            sql.SQL(
                "SELECT status, attempts, extract(epoch FROM now() - waiting_since)::float8"
                " AS waited FROM documents WHERE {} FOR UPDATE"
            ).format(cond),
            params,
        ).fetchone()
        if row is None:
            raise LeaseLost(f"document {doc_id} is not leased by {owner or worker}")
        current = Status(row["status"])
        return _end_attempt(
            conn,
            doc_id,
            current=current,
            resting=RESTING_OF.get(current, current),
            decision=decide(
                error.error_class,
                row["attempts"],
                max_attempts,
                waiting_for=row["waited"],
                horizon=horizon,
            ),
            error=error,
            retry_base=retry_base,
            retry_cap=retry_cap,
            worker=owner or worker,
        )


_EVENT_OF = {Ending.RETRY: "retry_scheduled", Ending.FAILED: "failed", Ending.DEAD: "dead"}
# The wait clock as the attempt's end leaves it (``shared.db.attempts.clock``).
_CLOCK = {
    Clock.START: sql.SQL(
        "waiting_since = coalesce(waiting_since, now()),"
        " waiting_for = coalesce(%(service)s, waiting_for, 'unknown service')"
    ),
    Clock.CLEAR: sql.SQL("waiting_since = NULL, waiting_for = NULL"),
    Clock.KEEP: sql.SQL("waiting_since = waiting_since"),
}


def _end_attempt(
    conn: psycopg.Connection[Any],
    doc_id: UUID,
    *,
    current: Status,
    resting: Status,
    decision: Decision,
    error: IngestError,
    retry_base: float,
    retry_cap: float,
    worker: str | None,
    forget_parse_job: bool = False,
    details: Mapping[str, Any] | None = None,
) -> Outcome:
    """Write the decided end of an attempt on a row the caller has locked: status,
    attempts, error, wait clock, no lease, and the backed-off ``run_after`` of a retry."""
    target = {Ending.FAILED: Status.FAILED, Ending.DEAD: Status.DEAD}.get(decision.ending, resting)
    retrying = decision.ending is Ending.RETRY
    delay = 0.0
    if retrying:
        delay = retry_delay(
            decision.attempts, base=retry_base, cap=retry_cap, retry_after=error.retry_after
        )
        delay = next_try_within(decision, delay)
    message = error.message[:2000]
    if decision.waited_out:
        message = (
            f"waited {decision.waited:.0f} s for {error.service or 'its service'}, past the "
            f"{decision.horizon:g} s horizon; last error: {message}"
        )[:2000]
    # The asynchronous parser's job id is dropped when its failure ends the attempt:
    # the next attempt uploads afresh.
    forget = sql.SQL(", parse_job_id = NULL") if forget_parse_job else sql.SQL("")
    upd = conn.execute(
        sql.SQL(
            "UPDATE documents SET status = %(status)s, attempts = %(attempts)s,"
            " error_class = %(class)s, error_message = %(message)s, lease_owner = NULL,"
            " lease_expires_at = NULL{forget}, {clock},"
            " run_after = now() + make_interval(secs => %(delay)s)"
            " WHERE id = %(id)s RETURNING run_after"
        ).format(forget=forget, clock=_CLOCK[clock(error.error_class)]),
        {
            "status": str(target),
            "attempts": decision.attempts,
            "class": str(error.error_class),
            "message": message,
            "delay": delay,
            "service": error.service,
            "id": doc_id,
        },
    ).fetchone()
    event_details = dict(details or {})
    if retrying:
        event_details["retry_in_seconds"] = round(delay, 3)
    add_event(
        conn,
        doc_id,
        _EVENT_OF[decision.ending],
        stage=str(current),
        from_status=current,
        to_status=target,
        attempt=decision.attempts,
        worker=worker,
        error_class=str(error.error_class),
        message=message,
        details=event_details or None,
    )
    return Outcome(
        target, decision.attempts, upd["run_after"] if retrying else None, decision.waited_out
    )


def release_worker_leases(
    conn: psycopg.Connection[Any],
    worker: str,
    *,
    error_class: ErrorClass,
    message: str,
    max_attempts: int,
    retry_base: float,
    retry_cap: float,
    only: UUID | None = None,
) -> list[tuple[UUID, Outcome]]:
    """Release every document a dead worker held (``only`` that one, when the death is
    its fault alone), counting the attempt at once."""
    held = [d for d in leased_by(conn, worker) if only is None or d == only]
    if not conn.autocommit:
        conn.commit()
    released = []
    for doc_id in held:
        try:
            outcome = end_attempt(
                conn,
                doc_id,
                owner=None,
                active_status=None,
                error=IngestError(message, error_class=error_class),
                max_attempts=max_attempts,
                retry_base=min(retry_base, 1.0),
                retry_cap=retry_cap,
                worker=worker,
            )
        except LeaseLost:
            continue  # reclaimed or finished meanwhile
        released.append((doc_id, outcome))
    return released


def release_owned(conn: psycopg.Connection[Any], owner: str, *, reason: str) -> int:
    """Give back, without counting an attempt, every document ``owner`` still leases
    (a live worker whose connection broke mid-run: the cause is not the document)."""
    return sum(release(conn, doc_id, owner, reason=reason) for doc_id in leased_by(conn, owner))


def release(conn: psycopg.Connection[Any], doc_id: UUID, owner: str, *, reason: str) -> bool:
    """Give a document back without counting an attempt (graceful stop at a checkpoint).

    Work already committed stays; the next worker resumes from the resting status.
    """
    with conn.transaction():
        row = conn.execute(
            "SELECT status FROM documents WHERE id = %s AND lease_owner = %s FOR UPDATE",
            (doc_id, owner),
        ).fetchone()
        if row is None:
            return False
        current = Status(row["status"])
        target = RESTING_OF.get(current, current)
        conn.execute(
            "UPDATE documents SET status = %s, lease_owner = NULL, lease_expires_at = NULL,"
            " run_after = now() WHERE id = %s",
            (str(target), doc_id),
        )
        add_event(
            conn,
            doc_id,
            "released",
            stage=str(current),
            from_status=current,
            to_status=target,
            worker=owner,
            message=reason,
        )
    return True


# -- a document's first status, and its removal -------------------------------------------


def add_document(
    conn: psycopg.Connection[Any],
    doc_id: UUID,
    *,
    content_sha256: str,
    source: str,
    filename: str,
    mime_type: str,
    size_bytes: int,
    blob_oid: int,
    correlation_id: UUID,
) -> bool:
    """Insert a ``queued`` document and its ``ingested`` event, in one statement.

    False when a document with the same content already exists (nothing is written).
    """
    row = conn.execute(
        "WITH ins AS (INSERT INTO documents (id, content_sha256, source, filename, mime_type,"
        " size_bytes, blob_oid, correlation_id) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
        " ON CONFLICT (content_sha256) DO NOTHING RETURNING id, status, correlation_id)"
        " INSERT INTO document_events (document_id, event, to_status, attempt, correlation_id,"
        " details) SELECT id, 'ingested', status, 0, correlation_id, %s FROM ins"
        " RETURNING document_id",
        (
            doc_id,
            content_sha256,
            source,
            filename,
            mime_type,
            size_bytes,
            blob_oid,
            correlation_id,
            Jsonb({"size_bytes": size_bytes, "mime_type": mime_type, "source": source}),
        ),
    ).fetchone()
    return row is not None


@dataclass(frozen=True)
class NewDocument:
    """A small document read whole by the client, for ``add_small_documents``."""

    doc_id: UUID
    content_sha256: str
    source: str
    filename: str
    mime_type: str
    data: bytes
    correlation_id: UUID


# Documents not there yet get their bytes (``lo_from_bytea``: the large object is made by
# the server, no round trip per file), their row and their ``ingested`` event, all in one
# statement. Content already stored is skipped before any object is made; a concurrent
# writer of the same content that wins the unique index leaves this statement an object
# without a row (``orphan_oid``), unlinked by the caller.
_ADD_SMALL = (
    "WITH input AS (SELECT * FROM unnest(%(ids)s::uuid[], %(shas)s::text[], %(sources)s::text[],"
    " %(filenames)s::text[], %(mimes)s::text[], %(corr)s::uuid[], %(data)b::bytea[])"
    " AS t(id, content_sha256, source, filename, mime_type, correlation_id, data)),"
    " known AS (SELECT d.content_sha256, d.status FROM documents d"
    " JOIN input USING (content_sha256)),"
    " fresh AS MATERIALIZED (SELECT i.id, i.content_sha256, i.source, i.filename, i.mime_type,"
    " length(i.data)::bigint AS size_bytes, i.correlation_id, lo_from_bytea(0, i.data) AS blob_oid"
    " FROM input i WHERE NOT EXISTS"
    " (SELECT 1 FROM known k WHERE k.content_sha256 = i.content_sha256)),"
    " ins AS (INSERT INTO documents (id, content_sha256, source, filename, mime_type,"
    " size_bytes, blob_oid, correlation_id) SELECT id, content_sha256, source, filename,"
    " mime_type, size_bytes, blob_oid, correlation_id FROM fresh"
    " ON CONFLICT (content_sha256) DO NOTHING"
    " RETURNING id, content_sha256, status, correlation_id, source, mime_type, size_bytes),"
    " ev AS (INSERT INTO document_events (document_id, event, to_status, attempt,"
    " correlation_id, details) SELECT id, 'ingested', status, 0, correlation_id,"
    " jsonb_build_object('size_bytes', size_bytes, 'mime_type', mime_type, 'source', source)"
    " FROM ins)"
    " SELECT i.content_sha256, k.status::text AS known_status, s.status::text AS new_status,"
    " CASE WHEN s.id IS NULL THEN f.blob_oid END AS orphan_oid"
    " FROM input i LEFT JOIN known k USING (content_sha256)"
    " LEFT JOIN fresh f USING (content_sha256) LEFT JOIN ins s USING (content_sha256)"
)


def add_small_documents(
    conn: psycopg.Connection[Any], docs: Sequence[NewDocument]
) -> dict[str, tuple[bool, str]]:
    """``add_document`` for many small documents at once: by content hash, whether this
    call created the document and its status. ``docs`` must have distinct hashes.

    Call inside a transaction (the large objects and rows commit or roll back together).
    """
    if not docs:
        return {}
    rows = conn.execute(
        _ADD_SMALL,
        {
            "ids": [d.doc_id for d in docs],
            "shas": [d.content_sha256 for d in docs],
            "sources": [d.source for d in docs],
            "filenames": [d.filename for d in docs],
            "mimes": [d.mime_type for d in docs],
            "corr": [d.correlation_id for d in docs],
            "data": [d.data for d in docs],
        },
    ).fetchall()
    out: dict[str, tuple[bool, str]] = {}
    lost: list[str] = []
    orphans: list[int] = []
    for r in rows:
        if r["new_status"] is not None:
            out[r["content_sha256"]] = (True, r["new_status"])
        elif r["known_status"] is not None:
            out[r["content_sha256"]] = (False, r["known_status"])
        else:
            lost.append(r["content_sha256"])
            orphans.append(r["orphan_oid"])
    if lost:
        unlink_blobs(conn, orphans)
        # The winner committed before our insert went on (ON CONFLICT waits for it), so
        # a new statement sees its row.
        found = conn.execute(
            "SELECT content_sha256, status::text AS status FROM documents"
            " WHERE content_sha256 = ANY(%s)",
            (lost,),
        ).fetchall()
        statuses = {r["content_sha256"]: r["status"] for r in found}
        # Deleted again meanwhile: as ``ingest_stream`` says of a duplicate it cannot find.
        out.update({sha: (False, statuses.get(sha, "unknown")) for sha in lost})
    return out


def delete_document(conn: psycopg.Connection[Any], doc_id: UUID) -> bool:
    """Delete a document with its chunks, segments and history (foreign keys cascade)."""
    row = conn.execute("DELETE FROM documents WHERE id = %s RETURNING id", (doc_id,)).fetchone()
    return row is not None


# -- the operator's requeues --------------------------------------------------------------


def requeue_failed(conn: psycopg.Connection[Any], ids: Sequence[UUID] | None) -> int:
    """Put failed and dead documents (``ids``, or all of them with None) back in the
    queue with a fresh attempt budget. Returns how many were requeued."""
    where = sql.SQL("status IN ('failed', 'dead')")
    params: tuple[Any, ...] = ()
    if ids is not None:
        where = sql.SQL("{} AND id = ANY(%s)").format(where)
        params = (list(ids),)
    with conn.transaction():
        cur = conn.execute(
            sql.SQL(
                "WITH upd AS (UPDATE documents SET status = 'queued', attempts = 0,"
                " run_after = now(), error_class = NULL, error_message = NULL,"
                " waiting_since = NULL, waiting_for = NULL WHERE {where}"
                " RETURNING id, correlation_id)"
                " INSERT INTO document_events (document_id, event, to_status, correlation_id)"
                " SELECT id, 'operator_retry', 'queued', correlation_id FROM upd ORDER BY id"
            ).format(where=where),
            params,
        )
        return cur.rowcount


def requeue_for_reembed(conn: psycopg.Connection[Any], details: Mapping[str, Any]) -> int:
    """Send every unleased embedded or complete document back to ``chunked`` to be
    embedded again (the embedding space changed). Returns how many."""
    cur = conn.execute(
        "WITH upd AS (UPDATE documents SET status = 'chunked', chunks_embedded = 0,"
        " run_after = now(), embedding_model = NULL"
        " WHERE status IN ('embedded', 'complete') AND lease_owner IS NULL"
        " RETURNING id, correlation_id)"
        " INSERT INTO document_events (document_id, event, to_status, correlation_id, details)"
        " SELECT id, 'reembed', 'chunked', correlation_id, %s FROM upd ORDER BY id",
        (Jsonb(dict(details)),),
    )
    return cur.rowcount


# -- an asynchronous parser's answer for a parked document ---------------------------------


def parse_result_arrived(
    conn: psycopg.Connection[Any],
    doc_id: UUID,
    *,
    segments: int,
    chars: int,
    pages: int | None,
    parser: str,
    details: Mapping[str, Any],
) -> None:
    """awaiting_parse -> parsed with the parser's text written. The caller has locked
    the row in ``awaiting_parse`` with no lease, in this transaction."""
    conn.execute(
        "UPDATE documents SET status = 'parsed', parsed_segments = %s, parsed_chars = %s,"
        " pages = %s, parser = %s, run_after = now(), error_class = NULL,"
        " error_message = NULL, waiting_since = NULL, waiting_for = NULL WHERE id = %s",
        (segments, chars, pages, parser, doc_id),
    )
    add_event(
        conn,
        doc_id,
        "parse_result",
        stage=str(Status.AWAITING_PARSE),
        from_status=Status.AWAITING_PARSE,
        to_status=Status.PARSED,
        details=details,
    )


def end_parked_attempt(
    conn: psycopg.Connection[Any],
    doc_id: UUID,
    *,
    attempts: int,
    error: IngestError,
    max_attempts: int,
    retry_base: float,
    retry_cap: float,
    details: Mapping[str, Any],
) -> Outcome:
    """The parser failed the job of a document parked in ``awaiting_parse`` (locked by
    the caller, with ``attempts`` used): the attempt ends by the same rule as a
    worker's. A retry rests in ``awaiting_parse`` with no job id, so the worker that
    claims it uploads afresh (``awaiting_parse -> queued`` is not a legal edge)."""
    return _end_attempt(
        conn,
        doc_id,
        current=Status.AWAITING_PARSE,
        resting=Status.AWAITING_PARSE,
        decision=decide(error.error_class, attempts, max_attempts),
        error=error,
        retry_base=retry_base,
        retry_cap=retry_cap,
        worker=None,
        forget_parse_job=True,
        details=details,
    )
