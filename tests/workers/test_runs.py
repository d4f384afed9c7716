"""One execution path for one document or many (workers/context.py, workers/drive.py):
a single document is a run of one, and the duties a run keeps — hand-over, lease
loss, ending an attempt — follow the same rule whatever its size."""

from __future__ import annotations

import sys
from collections import Counter
from typing import Any

import pytest
from structlog.testing import capture_logs

from ingestd.shared.db import documents, jobs
from ingestd.shared.db.connect import connect
from ingestd.shared.embedders.hashing import HashEmbedder
from ingestd.shared.errors import InvalidInput, LeaseLost
from ingestd.shared.states import Status
from ingestd.shared.telemetry.metrics import Metrics
from ingestd.workers.base import Worker
from ingestd.workers.context import Member, StageContext
from ingestd.workers.drive import drive
from ingestd.workers.loop import close_runner
from ingestd.workers.stages import STAGES
from tests.workers.support import ingest_texts, run_worker

OWNER = "runs:1:0:0"


class CountingMetrics(Metrics):
    def __init__(self) -> None:
        super().__init__(None, role="worker")
        self.counts: Counter[str] = Counter()

    def incr(self, name: str, count: int = 1, rate: float = 1.0) -> None:
        self.counts[name] += count
        super().incr(name, count, rate)


def _notes(n: int) -> dict[str, bytes]:
    return {
        f"note{i}.md": (
            f"# Note {i}\n\n"
            + " ".join(f"Line {j} of note {i} carries its own words." for j in range(60))
        ).encode()
        for i in range(n)
    }


def _run_of(conn: Any, settings: Any, n: int, *, metrics: Metrics | None = None) -> StageContext:
    """``n`` freshly claimed documents as one run, in ``parsing``."""
    claimed = jobs.claim(conn, OWNER, limit=n, lease_seconds=60)
    assert len(claimed) == n
    rows = documents.leased(conn, [c.id for c in claimed], OWNER, Status.PARSING)
    return StageContext(
        conn=conn,
        settings=settings,
        owner=OWNER,
        status=Status.PARSING,
        metrics=metrics or Metrics(None, role="worker"),
        members=[Member(rows[c.id], Status.PARSING) for c in claimed],
        together=n > 1,
    )


def _parsed(n: int) -> dict[str, Any]:
    return {"parsed_segments": n, "parsed_chars": 10 * n, "pages": None}


def _status(conn: Any, doc_id: Any) -> tuple[str, str | None]:
    row = conn.execute(
        "SELECT status::text, lease_owner FROM documents WHERE id = %s", (doc_id,)
    ).fetchone()
    return row["status"], row["lease_owner"]


# -- the result does not depend on the size of the run ---------------------------------


def _outcome(c: Any, doc_id: Any) -> dict[str, Any]:
    doc = c.execute(
        "SELECT status::text, parsed_segments, parsed_chars, chunker_settings, chunks_total,"
        " tokens_total, chunks_embedded, embed_tokens, cost_usd, error_class"
        " FROM documents WHERE id = %s",
        (doc_id,),
    ).fetchone()
    chunk_rows = [
        (r["ordinal"], r["text"], r["token_count"], r["heading"], r["embedding"].to_list())
        for r in c.execute(
            "SELECT ordinal, text, token_count, heading, embedding FROM chunks"
            " WHERE document_id = %s ORDER BY ordinal",
            (doc_id,),
        )
    ]
    events = [
        (r["event"], r["from_status"], r["to_status"], r["details"])
        for r in c.execute(
            "SELECT event, from_status::text, to_status::text, details FROM document_events"
            " WHERE document_id = %s ORDER BY id",
            (doc_id,),
        )
    ]
    return {"doc": dict(doc), "chunks": chunk_rows, "events": events}


def test_a_group_of_n_and_runs_of_one_give_identical_documents(
    conn, db_url, fresh_db_url, make_settings
) -> None:
    texts = _notes(6)
    settings = dict(chunk_target_tokens=64, chunk_overlap_tokens=8)
    together = ingest_texts(conn, texts)
    run_worker(make_settings(**settings), db_url)

    other_url = fresh_db_url(migrated=True)
    with connect(other_url, autocommit=True) as other:
        alone = ingest_texts(other, texts)
        run_worker(make_settings(database_url=other_url, claim_batch=1, **settings), other_url)
        for name in texts:
            grouped, single = _outcome(conn, together[name]), _outcome(other, alone[name])
            assert grouped["doc"]["status"] == "complete", grouped["doc"]
            assert len(grouped["chunks"]) > 1
            # Same rows, same vectors, same recorded totals, same history and details.
            assert grouped == single, name


# -- hand-over: one rule for one or many --------------------------------------------------


@pytest.mark.parametrize("n", [1, 3])
def test_a_finished_stage_goes_on_under_the_kept_lease(conn, make_settings, n) -> None:
    ingest_texts(conn, _notes(n))
    ctx = _run_of(conn, make_settings(), n)
    with conn.transaction():
        ctx.advance(Status.PARSED, {i: _parsed(1) for i in ctx.ids})
    assert [m.status for m in ctx.members] == [Status.CHUNKING] * n
    assert ctx.left == []
    for m in ctx.members:
        assert _status(conn, m.id) == ("chunking", OWNER)
        assert m.doc["parsed_segments"] == 1  # the held row follows what was recorded


@pytest.mark.parametrize("n", [1, 3])
def test_a_stop_request_lets_the_documents_rest_and_leave_the_run(conn, make_settings, n) -> None:
    ingest_texts(conn, _notes(n))
    ctx = _run_of(conn, make_settings(), n)
    ctx.stop.request("shutdown")
    with conn.transaction():
        ctx.advance(Status.PARSED, {i: _parsed(1) for i in ctx.ids})
    assert ctx.members == []
    assert [m.status for m in ctx.left] == [Status.PARSED] * n
    for m in ctx.left:
        assert _status(conn, m.id) == ("parsed", None)


# -- a lost lease: the member goes, the others stay ---------------------------------------


def test_a_member_that_changed_hands_leaves_the_group_alone(conn, make_settings) -> None:
    ingest_texts(conn, _notes(3))
    metrics = CountingMetrics()
    ctx = _run_of(conn, make_settings(), 3, metrics=metrics)
    stolen = ctx.ids[1]
    conn.execute("UPDATE documents SET lease_owner = 'thief:1:0:0' WHERE id = %s", (stolen,))
    with conn.transaction():
        ctx.advance(Status.PARSED, {i: _parsed(1) for i in ctx.ids})
    assert stolen not in ctx.ids and len(ctx.ids) == 2
    assert metrics.counts["leases.lost"] == 1
    assert _status(conn, stolen) == ("parsing", "thief:1:0:0")
    for i in ctx.ids:
        assert _status(conn, i) == ("chunking", OWNER)


def test_a_run_of_one_that_changed_hands_is_over_and_writes_nothing(conn, make_settings) -> None:
    ingest_texts(conn, _notes(1))
    metrics = CountingMetrics()
    ctx = _run_of(conn, make_settings(), 1, metrics=metrics)
    (doc_id,) = ctx.ids
    conn.execute("UPDATE documents SET lease_owner = 'thief:1:0:0' WHERE id = %s", (doc_id,))
    with pytest.raises(LeaseLost), conn.transaction():
        ctx.transition(Status.PARSED, fields=_parsed(1))
    assert ctx.members == [] and metrics.counts["leases.lost"] == 1
    row = conn.execute("SELECT parsed_segments FROM documents WHERE id = %s", (doc_id,)).fetchone()
    assert row["parsed_segments"] == 0


def test_a_group_refreshed_after_losing_a_member_keeps_the_others(conn, make_settings) -> None:
    ingest_texts(conn, _notes(3))
    ctx = _run_of(conn, make_settings(), 3)
    gone = ctx.ids[0]
    conn.execute("UPDATE documents SET lease_owner = 'thief:1:0:0' WHERE id = %s", (gone,))
    ctx.refresh()
    assert gone not in ctx.ids and len(ctx.ids) == 2


# -- an error ends only its own member's attempt -----------------------------------------


def test_an_error_in_one_member_ends_only_that_members_attempt(conn, make_settings) -> None:
    ingest_texts(conn, _notes(3))
    ctx = _run_of(conn, make_settings(), 3)
    bad = ctx.ids[1]
    seen: list[Any] = []

    def work(m: Member) -> None:
        seen.append(m.id)
        if m.id == bad:
            raise InvalidInput("not a document")

    ctx.per_member(work)
    assert len(seen) == 3, "the others still had their turn"
    assert bad not in ctx.ids and len(ctx.ids) == 2
    doc = conn.execute(
        "SELECT status::text, error_class, lease_owner FROM documents WHERE id = %s", (bad,)
    ).fetchone()
    assert (doc["status"], doc["error_class"], doc["lease_owner"]) == (
        "failed",
        "invalid_input",
        None,
    )
    for i in ctx.ids:
        assert _status(conn, i) == ("parsing", OWNER)


def test_a_bug_in_one_member_is_recorded_as_internal_and_retried(conn, make_settings) -> None:
    ingest_texts(conn, _notes(2))
    ctx = _run_of(conn, make_settings(retry_base_seconds=600), 2)
    bad = ctx.ids[0]

    def work(m: Member) -> None:
        if m.id == bad:
            raise KeyError("surprise")

    ctx.per_member(work)
    doc = conn.execute(
        "SELECT status::text, error_class, attempts, error_message FROM documents WHERE id = %s",
        (bad,),
    ).fetchone()
    assert (doc["status"], doc["error_class"], doc["attempts"]) == ("queued", "internal", 1)
    assert "KeyError" in doc["error_message"]
    assert bad not in ctx.ids and len(ctx.ids) == 1


# -- a group sent back goes on alone -------------------------------------------------------


def test_a_group_member_sent_back_by_finalize_goes_on_alone_and_completes(
    conn, make_settings, monkeypatch
) -> None:
    ingest_texts(conn, _notes(3))
    embedder = HashEmbedder(dimensions=384)
    metrics = CountingMetrics()
    settings = make_settings(chunk_target_tokens=64, chunk_overlap_tokens=8)
    ctx = _run_of(conn, settings, 3, metrics=metrics)
    ctx.embedder_factory = lambda: embedder
    victim = ctx.ids[1]
    real_finalize = STAGES[Status.FINALIZING]

    def finalize_with_a_vector_lost(c: StageContext) -> Status:
        if victim in c.ids and c.together:
            conn.execute(
                "UPDATE chunks SET embedding = NULL, embedding_model = NULL"
                " WHERE document_id = %s AND ordinal = 0",
                (victim,),
            )
        return real_finalize(c)

    monkeypatch.setitem(STAGES, Status.FINALIZING, finalize_with_a_vector_lost)
    ids = list(ctx.ids)
    try:
        drive(ctx, set_title=lambda _t: None)
    finally:
        close_runner(embedder)
    assert sorted(m.id for m in ctx.left) == sorted(ids)
    # Not a crash of the group: the rule sent the member on alone.
    assert metrics.counts["group.split"] == 0
    assert metrics.counts["documents.completed"] == 3
    for doc_id in ids:
        doc = conn.execute(
            "SELECT status::text, chunks_total, chunks_embedded, lease_owner FROM documents"
            " WHERE id = %s",
            (doc_id,),
        ).fetchone()
        assert (doc["status"], doc["lease_owner"]) == ("complete", None)
        assert doc["chunks_embedded"] == doc["chunks_total"] > 1
    history = [
        (r["event"], r["from_status"], r["to_status"])
        for r in conn.execute(
            "SELECT event, from_status::text, to_status::text FROM document_events"
            " WHERE document_id = %s AND event LIKE 'stage_%%' ORDER BY id",
            (victim,),
        )
    ]
    # Sent back to chunked, straight on into embedding under the kept lease, alone.
    assert history[-5:] == [
        ("stage_finished", "finalizing", "chunked"),
        ("stage_started", "chunked", "embedding"),
        ("stage_finished", "embedding", "embedded"),
        ("stage_started", "embedded", "finalizing"),
        ("stage_finished", "finalizing", "complete"),
    ]
    missing = conn.execute(
        "SELECT count(*) AS n FROM chunks WHERE embedding IS NULL AND document_id = ANY(%s)",
        (ids,),
    ).fetchone()["n"]
    assert missing == 0


# -- a profile request on a host without memray --------------------------------------------


def test_a_worker_without_memray_says_so_and_still_processes_the_document(
    conn, db_url, make_settings, tmp_path, monkeypatch
) -> None:
    (doc_id,) = ingest_texts(conn, _notes(1)).values()
    monkeypatch.setitem(sys.modules, "memray", None)  # as if the extra were not installed
    settings = make_settings()
    embedder = HashEmbedder(dimensions=384)
    worker = Worker(settings, url=db_url, owner=OWNER, embedder_factory=lambda: embedder)
    worker.profile_next = tmp_path / "profile.bin"
    try:
        with capture_logs() as logs:
            worker.run(until_idle=True)
    finally:
        close_runner(embedder)
        worker.close()
    assert _status(conn, doc_id) == ("complete", None)
    assert worker.profile_next is None, "the request was taken, not left pending"
    assert not (tmp_path / "profile.bin").exists()
    errors = [e for e in logs if e["log_level"] == "error"]
    assert len(errors) == 1 and "ingestd[profile]" in errors[0]["event"]
