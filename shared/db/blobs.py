"""Original document bytes as PostgreSQL large objects.

Every worker on every host can read them, as a stream: a large object is
written and read in pieces, so a 100 MB upload is never one value in memory.
Deleting a document unlinks its object (trigger ``documents_unlink_blob``). Small
documents are written many at a time, by the server (``lo_from_bytea`` in
``jobs.add_small_documents``); large ones are streamed here with ``write_blob``.
"""

from __future__ import annotations

import hashlib
import io
from typing import Any, BinaryIO

import psycopg

PIECE = 1 << 20  # 1 MiB per round trip


def write_blob(conn: psycopg.Connection[Any], stream: BinaryIO) -> tuple[int, str, int]:
    """Copy ``stream`` into a new large object; return (oid, sha256 hex, size).

    Call inside a transaction: rolling it back removes the object too.
    """
    oid = conn.execute("SELECT lo_create(0) AS oid").fetchone()["oid"]  # type: ignore[index]
    digest = hashlib.sha256()
    offset = 0
    while piece := stream.read(PIECE):
        digest.update(piece)
        conn.execute("SELECT lo_put(%s, %s, %s)", (oid, offset, piece))
        offset += len(piece)
    return oid, digest.hexdigest(), offset


def unlink_blobs(conn: psycopg.Connection[Any], oids: list[int]) -> None:
    """Remove large objects that no document refers to (one statement)."""
    conn.execute("SELECT lo_unlink(o) FROM unnest(%s::oid[]) o", (oids,))


class BlobReader(io.RawIOBase):
    """A seekable, read-only file over a large object, fetching byte ranges on demand.

    Uses ``lo_get(oid, offset, length)``, which needs no open descriptor, so the
    reader survives across transactions on an autocommit connection.
    """

    def __init__(self, conn: psycopg.Connection[Any], oid: int, size: int) -> None:
        super().__init__()
        self._conn = conn
        self._oid = oid
        self._size = size
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self._size + offset
        else:
            raise ValueError(f"bad whence {whence}")
        if pos < 0:
            raise ValueError("negative seek position")
        self._pos = pos
        return pos

    def readinto(self, buffer: Any) -> int:
        want = min(len(buffer), self._size - self._pos)
        if want <= 0:
            return 0
        row = self._conn.execute(
            "SELECT lo_get(%s, %s, %s) AS data", (self._oid, self._pos, want)
        ).fetchone()
        data = row["data"] if isinstance(row, dict) else row[0]  # type: ignore[index]
        n = len(data)
        buffer[:n] = data
        self._pos += n
        return n

    @property
    def size(self) -> int:
        return self._size


def read_whole(conn: psycopg.Connection[Any], oids: list[int]) -> dict[int, bytes]:
    """Several small objects in one round trip. Only for sizes the caller bounded
    (a group of small documents); anything else is streamed with ``open_blob``."""
    rows = conn.execute(
        "SELECT o AS oid, lo_get(o) AS data FROM unnest(%s::oid[]) o", (oids,)
    ).fetchall()
    return {r["oid"]: bytes(r["data"]) for r in rows}


def open_blob(conn: psycopg.Connection[Any], oid: int, size: int) -> io.BufferedReader:
    return io.BufferedReader(BlobReader(conn, oid, size), buffer_size=PIECE)
