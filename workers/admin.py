"""Operator actions on documents: retry, re-embed."""

from __future__ import annotations

from typing import Any

import psycopg

from ingestd.shared.db import jobs
from ingestd.shared.db.reports import find_document_id
from ingestd.shared.db.space import current_space, switch_space
from ingestd.shared.embedders.setup import space_for
from ingestd.shared.errors import ConfigError, NotFound
from ingestd.shared.settings import Settings


def retry_documents(conn: psycopg.Connection[Any], refs: list[str], *, all_failed: bool) -> int:
    ids = []
    for ref in refs:
        doc_id = find_document_id(conn, ref)
        if doc_id is None:
            raise NotFound(f"no document matches {ref!r}")
        ids.append(doc_id)
    return jobs.requeue_failed(conn, None if all_failed else ids)


def reembed(conn: psycopg.Connection[Any], settings: Settings, *, confirm: bool) -> int:
    new = space_for(settings)
    have = current_space(conn)
    if have is not None and (have.model, have.dimensions) == (new.model, new.dimensions):
        raise ConfigError(f"vectors are already {new.model} ({new.dimensions} dims): nothing to do")
    if not confirm:
        raise ConfigError("re-embedding drops every stored vector; run again with --yes to confirm")
    return switch_space(conn, new)
