"""Small documents claimed together run the stages as one group (workers/drive.py):
the same results as one by one, fewer requests, errors kept with their document,
and a crash mid-group resumed by anyone."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from ingestd.shared.db.connect import connect
from ingestd.shared.embedders.setup import build_embedder
from tests.workers.support import ingest_texts, run_worker
from tests.workers.test_resume import kill_victim_when, release_victim, rescue


def _texts(n: int) -> dict[str, bytes]:
    return {
        f"note{i}.md": (
            f"# Note {i}\n\n"
            + " ".join(f"Sentence {j} of note {i} says something distinct." for j in range(40))
            + f"\n\n## Details {i}\n\nMore words for note {i}, enough for a second chunk."
        ).encode()
        for i in range(n)
    }


def _chunks(conn: Any, doc_id: Any) -> list[tuple[int, str, int, str | None]]:
    return [
        (r["ordinal"], r["text"], r["token_count"], r["heading"])
        for r in conn.execute(
            "SELECT ordinal, text, token_count, heading FROM chunks WHERE document_id = %s"
            " ORDER BY ordinal",
            (doc_id,),
        )
    ]


def _whole(conn: Any, doc_id: Any) -> None:
    doc = conn.execute("SELECT * FROM documents WHERE id = %s", (doc_id,)).fetchone()
    assert doc["status"] == "complete", (doc["status"], doc["error_message"])
    row = conn.execute(
        "SELECT count(*) AS n, count(DISTINCT ordinal) AS d, count(embedding) AS e,"
        " min(vector_norm(embedding)) AS minnorm, sum(token_count) AS tokens"
        " FROM chunks WHERE document_id = %s",
        (doc_id,),
    ).fetchone()
    assert row["n"] == row["d"] == row["e"] == doc["chunks_total"] == doc["chunks_embedded"] > 0
    assert row["minnorm"] > 0.99
    assert row["tokens"] == doc["tokens_total"]
    assert doc["embed_tokens"] > 0 and doc["parser"] and doc["completed_at"] is not None


def test_a_group_gives_the_same_chunks_as_one_by_one_with_fewer_requests(
    conn, db_url, fresh_db_url, openai_settings, openai_emulator
) -> None:
    texts = _texts(12)
    ids = ingest_texts(conn, texts)
    grouped = openai_settings(chunk_target_tokens=64, chunk_overlap_tokens=8)
    run_worker(grouped, db_url, build_embedder(grouped))
    grouped_requests = openai_emulator.stats.count(200)
    for doc_id in ids.values():
        _whole(conn, doc_id)
    # Chunks of many documents share a request: far fewer requests than documents.
    assert grouped_requests == 1

    # The same documents one by one, in another database.
    other_url = fresh_db_url(migrated=True)
    with connect(other_url, autocommit=True) as other:
        other_ids = ingest_texts(other, texts)
        one_by_one = openai_settings(
            database_url=other_url, claim_batch=1, chunk_target_tokens=64, chunk_overlap_tokens=8
        )
        run_worker(one_by_one, other_url, build_embedder(one_by_one))
        assert openai_emulator.stats.count(200) - grouped_requests == len(texts)
        for name, doc_id in ids.items():
            assert _chunks(conn, doc_id) == _chunks(other, other_ids[name]), name
            _whole(other, other_ids[name])
        # Both paths tell the same history, status by status.
        for name, doc_id in ids.items():
            paths = [
                [
                    (r["event"], r["from_status"], r["to_status"])
                    for r in c.execute(
                        "SELECT event, from_status::text, to_status::text FROM document_events"
                        " WHERE document_id = %s ORDER BY id",
                        (i,),
                    )
                ]
                for c, i in ((conn, doc_id), (other, other_ids[name]))
            ]
            assert paths[0] == paths[1], name


def test_a_bad_member_fails_alone(conn, db_url, make_settings) -> None:
    texts = _texts(4)
    texts["broken.md"] = "# Broken\n\nUTF-8 ✓ with a corrupt byte: ".encode() + b"\xc3\x28\n"
    texts["blank.md"] = b"   \n\n \t \n"
    ids = ingest_texts(conn, texts)
    run_worker(make_settings(), db_url)
    for name, doc_id in ids.items():
        doc = conn.execute("SELECT * FROM documents WHERE id = %s", (doc_id,)).fetchone()
        if name in ("broken.md", "blank.md"):
            assert (doc["status"], doc["error_class"]) == ("failed", "invalid_input"), name
            assert doc["error_message"]
            assert (
                conn.execute(
                    "SELECT count(*) AS n FROM chunks WHERE document_id = %s", (doc_id,)
                ).fetchone()["n"]
                == 0
            )
        else:
            _whole(conn, doc_id)


def test_an_error_no_member_can_be_blamed_for_splits_the_group(conn, db_url, make_settings) -> None:
    ids = ingest_texts(conn, _texts(5))
    victim = ids["note2.md"]
    # Its bytes vanish: the group's one read of every blob fails, for everyone.
    conn.execute("SELECT lo_unlink(blob_oid) FROM documents WHERE id = %s", (victim,))
    run_worker(make_settings(retry_base_seconds=600), db_url)
    for doc_id in ids.values():
        if doc_id != victim:
            _whole(conn, doc_id)
    doc = conn.execute("SELECT * FROM documents WHERE id = %s", (victim,)).fetchone()
    # Gone one by one, the culprit alone is charged: an internal error, retried later.
    assert (doc["status"], doc["error_class"], doc["attempts"]) == ("queued", "internal", 1)
    assert "large object" in doc["error_message"]


def test_sigkill_mid_group_is_resumed_by_another_worker(
    conn, db_url, openai_settings, openai_emulator
) -> None:
    settings = openai_settings(
        batch_max_inputs=8, embed_concurrency=1, chunk_target_tokens=64, chunk_overlap_tokens=8
    )
    ids = ingest_texts(conn, _texts(10))
    openai_emulator.config.latency = 0.2  # so the kill lands between batches

    def some_vectors() -> bool:
        n = conn.execute("SELECT count(embedding) AS n FROM chunks").fetchone()["n"]
        return n >= 8

    kill_victim_when(settings, some_vectors)
    openai_emulator.config.latency = 0.0

    statuses = {
        r["status"]
        for r in conn.execute(
            "SELECT status::text FROM documents WHERE id = ANY(%s)", (list(ids.values()),)
        )
    }
    assert statuses == {"embedding"}, statuses
    embedded_before = conn.execute("SELECT count(embedding) AS n FROM chunks").fetchone()["n"]
    total = conn.execute("SELECT sum(chunks_total) AS n FROM documents").fetchone()["n"]
    assert 0 < embedded_before < total
    # A group writes each chunk row together with its vector: nothing bare is left.
    assert conn.execute("SELECT count(*) AS n FROM chunks").fetchone()["n"] == embedded_before

    released = release_victim(conn)
    assert sorted(d for d, _ in released) == sorted(ids.values())
    conn.execute("UPDATE documents SET run_after = now()")

    served_before = openai_emulator.stats.inputs_served
    rescue(settings, db_url)

    assert openai_emulator.stats.inputs_served - served_before == total - embedded_before, (
        "the API is asked only for the chunks that had no vector"
    )
    for doc_id in ids.values():
        _whole(conn, doc_id)
        attempts = conn.execute(
            "SELECT attempts FROM documents WHERE id = %s", (doc_id,)
        ).fetchone()["attempts"]
        assert attempts == 1  # the crash was counted, once


@contextlib.contextmanager
def refusing_chunks_of(conn: Any, victim: Any) -> Iterator[None]:
    """The database refuses the victim's chunk rows while this lasts."""
    conn.execute(
        "CREATE FUNCTION refuse_victim() RETURNS trigger LANGUAGE plpgsql AS $$"
        f" BEGIN IF NEW.document_id = '{victim}' THEN RAISE EXCEPTION 'refused by test';"
        " END IF; RETURN NEW; END $$"
    )
    conn.execute(
        "CREATE TRIGGER refuse_victim BEFORE INSERT ON chunks"
        " FOR EACH ROW EXECUTE FUNCTION refuse_victim()"
    )
    try:
        yield
    finally:
        conn.execute("DROP TRIGGER refuse_victim ON chunks")
        conn.execute("DROP FUNCTION refuse_victim()")


def test_a_split_in_a_later_stage_resumes_each_member_where_the_database_says(
    conn, db_url, make_settings
) -> None:
    ids = ingest_texts(conn, _texts(4))
    victim = ids["note1.md"]
    # The group's COPY of chunk rows with their vectors fails after parsing and
    # chunking were committed for everyone.
    with refusing_chunks_of(conn, victim):
        run_worker(make_settings(retry_base_seconds=600), db_url)
    for doc_id in ids.values():
        if doc_id != victim:
            _whole(conn, doc_id)
    doc = conn.execute("SELECT * FROM documents WHERE id = %s", (victim,)).fetchone()
    # Parsing and chunking were kept; only the embed stage is retried, for the victim
    # alone, which will restore its chunk rows from its segments first.
    assert (doc["status"], doc["error_class"], doc["attempts"]) == ("chunked", "internal", 1)
    assert "refused by test" in doc["error_message"]
    assert doc["parsed_segments"] > 0 and doc["chunks_total"] > 0
    assert doc["chunker_settings"] == {
        "target_tokens": 512,
        "overlap_tokens": 64,
        "max_tokens": 8191,
    }
    n = conn.execute("SELECT count(*) AS n FROM chunks WHERE document_id = %s", (victim,))
    assert n.fetchone()["n"] == 0
    # With the database willing again, the retry restores the rows and completes it.
    conn.execute("UPDATE documents SET run_after = now() WHERE id = %s", (victim,))
    run_worker(make_settings(retry_base_seconds=600), db_url)
    _whole(conn, victim)


def test_chunks_that_do_not_come_back_identical_are_not_guessed(
    conn, db_url, make_settings
) -> None:
    ids = ingest_texts(conn, _texts(3))
    victim = ids["note1.md"]
    with refusing_chunks_of(conn, victim):
        run_worker(make_settings(retry_base_seconds=600), db_url)
    # What was recorded no longer matches what the segments chunk to.
    conn.execute(
        "UPDATE documents SET tokens_total = tokens_total + 1, run_after = now() WHERE id = %s",
        (victim,),
    )
    run_worker(make_settings(retry_base_seconds=600), db_url)
    doc = conn.execute("SELECT * FROM documents WHERE id = %s", (victim,)).fetchone()
    assert (doc["status"], doc["error_class"], doc["attempts"]) == ("chunked", "internal", 2)
    assert "re-chunking gave" in doc["error_message"]
    n = conn.execute("SELECT count(*) AS n FROM chunks WHERE document_id = %s", (victim,))
    assert n.fetchone()["n"] == 0


def test_only_a_document_that_never_failed_an_attempt_travels_in_a_group(
    make_settings: Any,
) -> None:
    # A worker that died holding a group charged every member (none could be blamed):
    # afterwards each goes alone, so the innocent are not killed again with the culprit.
    import uuid
    from datetime import UTC, datetime

    from ingestd.shared.db.jobs import Claimed
    from ingestd.shared.states import Status
    from ingestd.workers.drive import groupable

    settings = make_settings()

    def claimed(attempts: int) -> Claimed:
        return Claimed(
            id=uuid.uuid4(),
            status=Status.PARSING,
            claimed_from=Status.QUEUED,
            attempts=attempts,
            correlation_id=uuid.uuid4(),
            lease_expires_at=datetime.now(UTC),
            size_bytes=100,
        )

    assert groupable(settings, claimed(0))
    assert not groupable(settings, claimed(1))
