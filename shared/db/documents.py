"""A worker's reads of the ``documents`` rows it holds, and its session's settings.

Status changes live in ``jobs``; this module only looks at what a worker leased
and sets up the connections a worker uses.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

import psycopg

from ingestd.shared.states import Status

WORK_CHANNEL = "ingestd_work"


def leased(
    conn: psycopg.Connection[Any], ids: Sequence[UUID], owner: str, status: Status
) -> dict[UUID, dict[str, Any]]:
    """The rows of ``ids`` that are in ``status`` under ``owner``'s lease, by id, in one
    query; a document missing from the result is no longer this worker's to work on."""
    rows = conn.execute(
        "SELECT * FROM documents WHERE id = ANY(%s) AND lease_owner = %s AND status = %s",
        (list(ids), owner, str(status)),
    ).fetchall()
    return {r["id"]: r for r in rows}


def leased_statuses(
    conn: psycopg.Connection[Any], ids: Sequence[UUID], owner: str
) -> dict[UUID, Status]:
    """Where each of ``ids`` still leased by ``owner`` is, as the database says."""
    rows = conn.execute(
        "SELECT id, status FROM documents WHERE id = ANY(%s) AND lease_owner = %s",
        (list(ids), owner),
    ).fetchall()
    return {r["id"]: Status(r["status"]) for r in rows}


def relax_commits(conn: psycopg.Connection[Any]) -> None:
    """Make the session's commits asynchronous.

    Every intermediate stage commit is redone idempotently if a server crash loses
    it (a stage's data and its status change commit together, so they are lost
    together). The commit that makes a document ``complete`` is made durable with
    ``durable_commit``.
    """
    conn.execute("SET synchronous_commit = off")


def durable_commit(conn: psycopg.Connection[Any]) -> None:
    """Inside a transaction: this commit waits for the WAL flush (``complete`` is a
    promise to the user)."""
    conn.execute("SET LOCAL synchronous_commit = on")


def listen_for_work(conn: psycopg.Connection[Any]) -> None:
    """Subscribe the session to the notifications sent when work arrives."""
    conn.execute(f"LISTEN {WORK_CHANNEL}")
