"""Operator actions on documents: retry, re-embed."""

from __future__ import annotations

from typing import Any

import psycopg

from ingestd.shared.db.reports import find_document_id
from ingestd.shared.db.space import current_space, switch_space
from ingestd.shared.embedders.setup import space_for
from ingestd.shared.errors import ConfigError
from ingestd.shared.settings import Settings


def retry_documents(conn: psycopg.Connection[Any], refs: list[str], *, all_failed: bool) -> int:
    ids = []
    for ref in refs:
        doc_id = find_document_id(conn, ref)
        if doc_id is None:
            raise ConfigError(f"no document matches {ref!r}")
        ids.append(doc_id)
    where = "status IN ('failed', 'dead')" + ("" if all_failed else " AND id = ANY(%s)")
    params: tuple[Any, ...] = () if all_failed else (ids,)
    with conn.transaction():
        rows = conn.execute(
            f"UPDATE documents SET status = 'queued', attempts = 0, run_after = now(),"
            f" error_class = NULL, error_message = NULL WHERE {where} RETURNING id, correlation_id",
            params,
        ).fetchall()
        for r in rows:
            conn.execute(
                "INSERT INTO document_events (document_id, event, to_status, correlation_id)"
                " VALUES (%s, 'operator_retry', 'queued', %s)",
                (r["id"], r["correlation_id"]),
            )
    return len(rows)


def reembed(conn: psycopg.Connection[Any], settings: Settings, *, confirm: bool) -> int:
    new = space_for(settings)
    have = current_space(conn)
    if have is not None and (have.model, have.dimensions) == (new.model, new.dimensions):
        raise ConfigError(f"vectors are already {new.model} ({new.dimensions} dims): nothing to do")
    if not confirm:
        raise ConfigError("re-embedding drops every stored vector; run again with --yes to confirm")
    return switch_space(conn, new)
