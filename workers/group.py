"""Small documents, together: every stage runs once for a whole group.

Per document, the stage-by-stage path costs about fifty round trips to
PostgreSQL and one small embedding request; for an 8 KB document that is most
of its cost. A group takes the documents of one multi-document claim (all
freshly claimed, parsed locally, each within the claim's byte budget) through
the same stages with the same commits at the same boundaries — only once for
all of them: one blob read, one COPY of segments, embedding requests that pack
chunks of several documents, one status change (and its event rows) per stage
for the whole group.

Chunk rows are written once, each with its vector, by one COPY per embedding
batch: no row written bare and updated later (chunks.copy_embedded_many). The
chunk stage records each member's chunk count, tokens and chunker settings.

Recovery: each stage's data commits together with every member's status change,
so a crash leaves each document in the resting status of its last committed
stage, from which any worker resumes it alone. A member resumed in the embed
stage first restores the chunk rows not written yet by chunking its parsed
segments again with the recorded settings (the chunker is deterministic), so
the batches already written stay written and only the missing chunks are sent
to the API.

Errors stay with the document they belong to. Bad input found while parsing or
chunking fails that member only. An error of the shared embedding stream (the
API refused, rate limits outlasted the retries) is recorded on each member
still waiting for vectors. Anything else (a bug, a lost connection) cannot be
pinned on one member: the group is split and each member goes on alone through
the per-document path, which isolates the culprit.
"""

from __future__ import annotations

import io
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any
from uuid import UUID

import numpy as np

from ingestd.shared.batching import BatchItem, pack
from ingestd.shared.db import blobs, chunks, jobs, segments
from ingestd.shared.db.chunks import ChunkRow
from ingestd.shared.embedders.pricing import cost_usd
from ingestd.shared.embedders.setup import input_limit
from ingestd.shared.errors import IngestError, LeaseLost, TransientError, unexpected
from ingestd.shared.parsers import iter_blocks
from ingestd.shared.settings import Settings
from ingestd.shared.states import ACTIVE_OF, Status
from ingestd.shared.telemetry import context
from ingestd.shared.telemetry.logs import get_logger
from ingestd.workers.context import StopRequested
from ingestd.workers.stages import chunk as chunk_stage
from ingestd.workers.stages import finalize as finalize_stage
from ingestd.workers.stages import parse as parse_stage
from ingestd.workers.stages.chunk import make_chunker
from ingestd.workers.stages.embed import embed_batches, limits_for, worker_runner

if TYPE_CHECKING:
    from ingestd.workers.base import Worker

log = get_logger("ingestd.worker.group")


@dataclass
class Member:
    claimed: jobs.Claimed
    doc: dict[str, Any]
    blocks: list[str] = field(default_factory=list)
    chunks: list[ChunkRow] = field(default_factory=list)
    # What the current stage records on the document and in its event.
    fields: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    embedded: int = 0
    embed_tokens: int = 0
    cost: float = 0.0

    @property
    def id(self) -> UUID:
        return self.claimed.id


def groupable(s: Settings, claimed: jobs.Claimed) -> bool:
    """Whether a claimed document may join a group (else it goes on alone)."""
    return (
        claimed.status is Status.PARSING
        and claimed.claimed_from is Status.QUEUED
        and s.parser == "local"
        and claimed.size_bytes <= s.claim_max_bytes
    )


class Group:
    def __init__(self, worker: Worker, members: list[Member]) -> None:
        self.w = worker
        self.members = members
        self.status = Status.PARSING
        self.id = uuid.uuid4()
        self.chunker = make_chunker(worker.settings, input_limit(worker.settings))
        self._lease_renewed = time.monotonic()

    @property
    def ids(self) -> list[UUID]:
        return [m.id for m in self.members]

    # -- the loop -----------------------------------------------------------------

    def run(self) -> None:
        w = self.w
        stages: list[tuple[Status, Callable[[], None]]] = [
            (Status.PARSING, self.parse),
            (Status.CHUNKING, self.chunk),
            (Status.EMBEDDING, self.embed),
            (Status.FINALIZING, self.finalize),
        ]
        log.info("group started", documents=len(self.members))
        for status, stage in stages:
            if not self.members or self.status is not status:
                return  # everyone finished, failed or rests (a stop was requested)
            w.channel.stage = str(status)
            w.channel.beat(event="stage")
            w._set_title(f"group={len(self.members)} stage={status}")
            started = time.perf_counter()
            try:
                with context.bind_stage(str(status)):
                    stage()
                    self._finished(status, started)
            except StopRequested as stop:
                for m in self.members:
                    jobs.release(w.conn, m.id, w.owner, reason=str(stop))
                log.info("group stopped at checkpoint", reason=str(stop))
                return
            except LeaseLost as lost:
                log.warning("lease lost; abandoning group", detail=str(lost))
                return
            except IngestError as err:
                # Only the embedding stream raises one for the whole group.
                for m in self.members:
                    self._end(m, err, err)
                return
            except Exception:
                log.exception("group stage crashed; members go on one by one", stage=str(status))
                w.metrics.incr("group.split")
                self._split()
                return
        for m in self.members:
            with context.bind_document(m.id, m.claimed.correlation_id):
                log.info("document complete", chunks=len(m.chunks))
        w.metrics.incr("documents.completed", len(self.members))

    def _finished(self, status: Status, started: float) -> None:
        elapsed = time.perf_counter() - started
        self.w.metrics.timing(f"stage.{status}.duration", elapsed * 1000)
        self.w.metrics.timing("group.documents", len(self.members))
        log.info(
            "group stage finished",
            to_status=str(self.status),
            documents=len(self.members),
            seconds=round(elapsed, 3),
        )

    def _split(self) -> None:
        """Hand each member to the per-document path, from the stage it is in."""
        members, self.members = self.members, []
        # The database, not ``self.status``, says where each one is: the failed
        # transaction may have rolled back a status change this object already saw.
        rows = self.w.conn.execute(
            "SELECT id, status FROM documents WHERE id = ANY(%s) AND lease_owner = %s",
            ([m.id for m in members], self.w.owner),
        ).fetchall()
        where = {r["id"]: Status(r["status"]) for r in rows}
        for m in members:
            status = where.get(m.id)
            if status is None:
                continue  # no longer ours: someone else goes on with it
            if status in ACTIVE_OF.values():
                self.w.process(replace(m.claimed, status=status))
            else:  # resting under our lease: can't happen, but never leave it stuck
                jobs.release(self.w.conn, m.id, self.w.owner, reason="group split")

    def _end(self, m: Member, err: IngestError, exc: BaseException) -> None:
        with context.bind_document(m.id, m.claimed.correlation_id):
            self.w.end_attempt(m.id, self.status, err, exc)

    def _fail_member(self, m: Member, exc: Exception) -> None:
        with context.bind_document(m.id, m.claimed.correlation_id):
            if isinstance(exc, IngestError):
                self.w.end_attempt(m.id, self.status, exc, exc)
                return
            log.exception("stage crashed", error_class="internal")
            self.w.end_attempt(m.id, self.status, unexpected(exc), exc)

    def checkpoint(self, *, stoppable: bool = True) -> None:
        w = self.w
        w.channel.beat()
        now = time.monotonic()
        if now - self._lease_renewed > w.settings.lease_seconds / 3:
            kept = jobs.extend_leases(
                w.conn, self.ids, w.owner, lease_seconds=w.settings.lease_seconds
            )
            self._keep(kept)
            self._lease_renewed = now
        if stoppable and w.stop.graceful:
            raise StopRequested(w.stop.reason)

    def _keep(self, kept: set[UUID]) -> None:
        lost = [m for m in self.members if m.id not in kept]
        if lost:
            self.w.metrics.incr("leases.lost", len(lost))
            log.warning("lease lost; letting documents go", documents=[str(m.id) for m in lost])
            self.members = [m for m in self.members if m.id in kept]
            if not self.members:
                raise LeaseLost("every member of the group changed hands")

    def advance(
        self,
        to: Status,
        changes: dict[UUID, dict[str, Any]],
        details: dict[UUID, dict[str, Any]],
    ) -> None:
        """``StageContext.transition`` for the group: call inside the stage's transaction."""
        w = self.w
        kept, self.status = jobs.finish_stage(
            w.conn,
            w.owner,
            from_status=self.status,
            to_status=to,
            changes=changes,
            details=details,
            go_on=to in ACTIVE_OF and not w.stop.graceful,
            lease_seconds=w.settings.lease_seconds,
        )
        self._keep(kept)
        self._lease_renewed = time.monotonic()

    # -- stages -------------------------------------------------------------------

    def parse(self) -> None:
        conn = self.w.conn
        data = blobs.read_whole(conn, [m.doc["blob_oid"] for m in self.members])

        def parse_one(m: Member) -> None:
            blocks = iter_blocks(io.BytesIO(data.pop(m.doc["blob_oid"])), m.doc["mime_type"])
            m.blocks = [b for b in blocks if b]
            m.fields, m.details = parse_stage.parsed(
                m.doc["mime_type"],
                len(m.blocks),
                sum(len(b) for b in m.blocks),
                getattr(blocks, "pages", None),
            )

        if not self._per_member(parse_one):
            return
        self.checkpoint()
        with conn.transaction():
            segments.clear(conn, self.ids)
            segments.write_many(
                conn, ((m.id, seq, b) for m in self.members for seq, b in enumerate(m.blocks))
            )
            self._advance_recorded(Status.PARSED)

    def chunk(self) -> None:
        conn = self.w.conn
        chunker = self.chunker

        def chunk_one(m: Member) -> None:
            blocks, m.blocks = m.blocks, []  # the text is not needed past this point
            m.chunks = list(chunk_stage.rows(chunker, blocks))
            m.fields, m.details = chunk_stage.chunked(
                chunker, len(m.chunks), sum(c.token_count for c in m.chunks)
            )

        if not self._per_member(chunk_one):
            return
        self.checkpoint()
        with conn.transaction():
            # The rows are written in the embed stage, each with its vector (one write
            # per row instead of two); a member resumed alone before that restores them
            # from its parsed segments (workers/stages/chunk.py: restore).
            chunks.delete_for_chunking(conn, self.ids, chunker.NAME, chunker.VERSION)
            self._advance_recorded(Status.CHUNKED)

    def _per_member(self, work: Callable[[Member], None]) -> bool:
        """Do a stage's own work for each member; one that raises fails alone and
        leaves the group. Returns whether any member is left."""
        done = []
        for m in self.members:
            try:
                work(m)
            except Exception as exc:
                self._fail_member(m, exc)
                continue
            done.append(m)
        self.members = done
        return bool(done)

    def _advance_recorded(self, to: Status) -> None:
        """``advance`` with what each member's stage recorded."""
        self.advance(
            to, {m.id: m.fields for m in self.members}, {m.id: m.details for m in self.members}
        )

    def embed(self) -> None:
        w = self.w
        assert w.embedder_factory is not None, "the worker provides an embedder"
        embedder = w.embedder_factory()
        model = embedder.model
        by_id = {m.id: m for m in self.members}
        name, version = self.chunker.NAME, self.chunker.VERSION

        def items() -> Iterator[BatchItem]:
            for m in self.members:
                for c in m.chunks:
                    yield BatchItem((m.id, c.ordinal), c.text, c.token_count)

        def row(key: tuple[UUID, int]) -> tuple[UUID, ChunkRow]:
            doc_id, ordinal = key
            return doc_id, by_id[doc_id].chunks[ordinal]

        def store(batch: list[BatchItem], vectors: np.ndarray) -> int:
            tokens: dict[UUID, int] = {}
            for b in batch:
                tokens[b.key[0]] = tokens.get(b.key[0], 0) + b.token_count
            price = {i: cost_usd(model, t) for i, t in tokens.items()}
            with w.conn.transaction():
                written = chunks.copy_embedded_many(
                    w.conn, name, version, model, [row(b.key) for b in batch], vectors
                )
                chunks.record_embedded(
                    w.conn,
                    w.owner,
                    model,
                    {i: (written.get(i, 0), tokens[i], price[i]) for i in tokens},
                )
            for i in tokens:
                m = by_id[i]
                m.embedded += written.get(i, 0)
                m.embed_tokens += tokens[i]
                m.cost += price[i]
            return sum(written.values())

        worker_runner().run(
            embed_batches(
                pack(items(), limits_for(w.settings, embedder)),
                embedder,
                concurrency=w.settings.embed_concurrency,
                correlation_id=str(self.id),
                store=store,
                checkpoint=self.checkpoint,
                metrics=w.metrics,
            )
        )
        with w.conn.transaction():
            self.advance(
                Status.EMBEDDED,
                {m.id: {} for m in self.members},
                {m.id: {"vectors_written": m.embedded} for m in self.members},
            )

    def finalize(self) -> None:
        conn = self.w.conn
        broken: list[tuple[Member, TransientError]] = []
        with conn.transaction():
            # "complete" is a promise to the user: make it durable before saying it.
            conn.execute("SET LOCAL synchronous_commit = on")
            counts = chunks.embedding_counts_many(
                conn, self.ids, self.chunker.NAME, self.chunker.VERSION
            )
            done, missing = [], []
            for m in self.members:
                total, embedded = counts.get(m.id, (0, 0))
                try:
                    whole = finalize_stage.whole(total, embedded, len(m.chunks))
                except TransientError as err:
                    broken.append((m, err))
                    continue
                (done if whole else missing).append((m, embedded))
            if missing:
                # Not papered over: back to ``chunked`` so the missing vectors are embedded.
                moved = jobs.transition_many(
                    conn,
                    self.w.owner,
                    from_status=Status.FINALIZING,
                    to_status=Status.CHUNKED,
                    changes={m.id: {"chunks_embedded": e} for m, e in missing},
                    details={m.id: {"missing_vectors": len(m.chunks) - e} for m, e in missing},
                )
                log.warning("vectors missing at the final check", documents=len(moved))
            self.members = [m for m, _ in done]
            for m, embedded in done:
                m.fields = finalize_stage.complete_fields(embedded)
                m.details = {
                    "chunks": len(m.chunks),
                    "tokens": sum(c.token_count for c in m.chunks),
                    "embed_tokens": m.embed_tokens,
                    "cost_usd": round(m.cost, 8),
                }
            if done:
                self._advance_recorded(Status.COMPLETE)
        for m, err in broken:
            self._end(m, err, err)


def run_group(worker: Worker, claimed: list[jobs.Claimed]) -> None:
    """Run freshly claimed small documents through every stage as one group."""
    rows = worker.conn.execute(
        "SELECT * FROM documents WHERE id = ANY(%s) AND lease_owner = %s AND status = 'parsing'",
        ([c.id for c in claimed], worker.owner),
    ).fetchall()
    docs = {r["id"]: r for r in rows}
    members = [Member(c, docs[c.id]) for c in claimed if c.id in docs]
    group = Group(worker, members)
    worker.channel.document_id = str(members[0].id) if members else None
    try:
        with context.bind_group(group.id, ((m.id, m.claimed.correlation_id) for m in members)):
            group.run()
    finally:
        worker.finished(len(members))
