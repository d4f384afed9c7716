"""One execution path for one document or many: a run goes through the stages, and
every way it can end is handled here, once.

A run is the documents of one claim that travel together: small fresh documents held
in memory from stage to stage (``together``: one blob read, one COPY of segments,
embedding requests that pack chunks of several documents, one status change per
stage), or one document, streamed stage by stage so its size does not matter. The
stage bodies differ where memory needs them to (workers/stages/*); lease renewal,
checkpoints, hand-over and the end of an attempt are the same for both
(workers/context.py).

Endings: success; a stop request (every member released at a checkpoint); a lost
lease (the member let go); a classified error (recorded on the member it belongs to:
bad input found while parsing or chunking a group fails that member only, an error
of the shared embedding stream is recorded on each member still waiting); or a bug.
A bug in a run of one ends its attempt; in a group it cannot be pinned on one
member, so the group splits and each member goes on alone from where the database
says it is, which isolates the culprit.

Recovery: each stage's data commits together with its members' status change, so a
crash leaves each document in the resting status of its last committed stage, from
which any worker resumes it alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import Enum

from ingestd.shared.db import documents, jobs
from ingestd.shared.errors import IngestError, LeaseLost
from ingestd.shared.settings import Settings
from ingestd.shared.states import Status
from ingestd.shared.telemetry import context
from ingestd.shared.telemetry.logs import get_logger
from ingestd.workers.context import StageContext, StopRequested
from ingestd.workers.stages import STAGES

log = get_logger("ingestd.worker")

ORDER = list(STAGES)


def groupable(s: Settings, claimed: jobs.Claimed) -> bool:
    """Whether a claimed document may travel in a group (else it goes alone).

    Only a document that never failed an attempt: a worker that dies holding a group
    (SIGKILL, memory, no heartbeat) charges every member, since none can be blamed, so
    its members go on alone afterwards. Grouped again, the innocent would be killed with
    the culprit until all ended dead; alone, the culprit is found in one more death."""
    return (
        claimed.status is Status.PARSING
        and claimed.claimed_from is Status.QUEUED
        and claimed.attempts == 0
        and s.parser == "local"
        and claimed.size_bytes <= s.claim_max_bytes
    )


def drive(ctx: StageContext, *, set_title: Callable[[str], None]) -> None:
    """Take the run's documents through every stage they can go on to."""
    with _bound(ctx):
        _drive(ctx, set_title)
    completed = [m for m in ctx.left if m.status is Status.COMPLETE]
    for m in completed:
        with context.bind_document(m.id, m.correlation_id):
            log.info("document complete", chunks=m.doc.get("chunks_total"))
    if completed:
        ctx.metrics.incr("documents.completed", len(completed))


@contextmanager
def _bound(ctx: StageContext) -> Iterator[None]:
    if ctx.together:
        with context.bind_group(ctx.id, ((m.id, m.correlation_id) for m in ctx.members)):
            yield
    else:
        (m,) = ctx.members
        with context.bind_document(m.id, m.correlation_id):
            yield


class _Next(Enum):
    STAGE = "the next stage"
    OVER = "the run is over"
    SPLIT = "each member goes on alone"


def _drive(ctx: StageContext, set_title: Callable[[str], None]) -> None:
    previous: Status | None = None
    while ctx.members:
        statuses = {m.status for m in ctx.members}
        status = min(statuses, key=ORDER.index)
        if ctx.together and (
            len(statuses) > 1
            or (previous is not None and ORDER.index(status) <= ORDER.index(previous))
        ):
            # Held in memory, a group only goes forward together; sent back, its
            # members go on alone, streamed from what the database holds.
            _split(ctx, set_title)
            return
        ctx.status = status
        step = _run_stage(ctx, set_title, first=previous is None)
        if step is _Next.SPLIT:
            _split(ctx, set_title)
        if step is not _Next.STAGE:
            return
        previous = status


def _run_stage(ctx: StageContext, set_title: Callable[[str], None], *, first: bool) -> _Next:
    """Run the stage the members are in, and say what comes next."""
    stage = str(ctx.status)
    documents_in = len(ctx.members)
    ctx.channel.stage = stage
    ctx.start_budget()  # the floor until the rows are read; never the last stage's
    ctx.channel.beat(event="stage")
    set_title(
        f"group={documents_in} stage={stage}"
        if ctx.together
        else f"doc={str(ctx.members[0].id)[:8]} stage={stage}"
    )
    started = time.perf_counter()
    with context.bind_stage(stage):
        try:
            if first or not ctx.together:
                # A streamed document is read afresh before each stage; a group's rows
                # are read once and kept up to date by its status changes.
                ctx.refresh()
            ctx.start_budget()
            STAGES[ctx.status](ctx)
        except StopRequested as stop:
            released = [
                jobs.release(ctx.conn, m.id, ctx.owner, reason=str(stop)) for m in ctx.members
            ]
            ctx.members = []
            log.info("stopped at checkpoint", reason=str(stop), released=sum(released))
            return _Next.OVER
        except LeaseLost as lost:
            log.warning("lease lost; abandoning the run", detail=str(lost))
            if ctx.members:
                ctx.metrics.incr("leases.lost", len(ctx.members))
            ctx.members = []
            return _Next.OVER
        except Exception as exc:
            if not ctx.members:  # every document had left the run: nobody to charge
                log.exception("stage failed after its documents left the run")
                return _Next.OVER
            if ctx.together and not isinstance(exc, IngestError):
                # A bug no member can be blamed for: alone, the culprit is found.
                log.exception("group stage crashed; members go on one by one")
                ctx.metrics.incr("group.split")
                return _Next.SPLIT
            # Raised for the whole run: by a stage of one document, or by a group's
            # shared embedding stream.
            for m in list(ctx.members):
                ctx.end_attempt(m, exc)
            return _Next.OVER
        elapsed = time.perf_counter() - started
        ctx.metrics.timing(f"stage.{stage}.duration", elapsed * 1000)
        if ctx.together:
            ctx.metrics.incr("group.stages")
            ctx.metrics.incr("group.documents", documents_in)
        now = ctx.members or ctx.left
        log.info(
            "stage finished",
            to_status=str(now[-1].status) if now else stage,
            documents=documents_in,
            seconds=round(elapsed, 3),
        )
    return _Next.STAGE


def _split(ctx: StageContext, set_title: Callable[[str], None]) -> None:
    """Each member goes on alone, from the stage the database says it is in: a failed
    transaction may have rolled back a status change the run already saw."""
    members, ctx.members = ctx.members, []
    where = documents.leased_statuses(ctx.conn, [m.id for m in members], ctx.owner)
    for m in members:
        status = where.get(m.id)
        if status is None:
            continue  # no longer ours: someone else goes on with it
        if not status.active:  # resting under our lease: can't happen, but never leave it stuck
            jobs.release(ctx.conn, m.id, ctx.owner, reason="group split")
            continue
        m.status = status
        alone = ctx.alone(m)
        with context.bind_document(m.id, m.correlation_id):
            _drive(alone, set_title)
        ctx.left += alone.left
