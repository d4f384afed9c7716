"""Accepting documents: bytes into a large object, one ``documents`` row, one event.

Idempotent by construction: the document id is derived from the content hash,
so the same bytes ingested twice return the existing document and create
nothing new.
"""

from __future__ import annotations

import os
import stat
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import psycopg

from ingestd.shared.db import jobs, reports
from ingestd.shared.db.blobs import write_blob
from ingestd.shared.errors import IngestError

# Fixed namespace: document ids are stable across installations.
DOCUMENT_NAMESPACE = uuid.UUID("5b2f6f0e-3c1a-4d7e-9a55-1e0c8f7d2a61")
SNIFF_BYTES = 4096


def document_id_for(sha256_hex: str) -> uuid.UUID:
    return uuid.uuid5(DOCUMENT_NAMESPACE, sha256_hex)


@dataclass(frozen=True)
class IngestResult:
    path: str
    status: str  # the document's status, or "rejected"
    document_id: uuid.UUID | None = None
    created: bool = False
    error: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "document_id": str(self.document_id) if self.document_id else None,
            "status": self.status,
            "created": self.created,
            "error": self.error,
        }


def sniff_mime(filename: str, head: bytes) -> str:
    """The parser library's detection; an undetectable type is stored as octet-stream
    so the parse stage records the classified error on the document."""
    from ingestd.shared.parsers import detect_mime

    try:
        return detect_mime(filename, head)
    except IngestError:
        return "application/octet-stream"


def ingest_stream(
    conn: psycopg.Connection[Any],
    stream: BinaryIO,
    *,
    source: str,
    filename: str,
    mime_type: str | None = None,
) -> IngestResult:
    """Store one document. ``conn`` must not be inside a transaction."""
    head = stream.read(SNIFF_BYTES)
    if not head:
        return IngestResult(source, "rejected", error="file is empty")
    mime = mime_type or sniff_mime(filename, head)
    stream = _Prepended(head, stream)  # type: ignore[assignment]
    correlation_id = uuid.uuid4()
    try:
        return _store(
            conn, stream, source=source, filename=filename, mime=mime, correlation_id=correlation_id
        )
    except _Duplicate as dup:
        status = reports.status_of(conn, dup.doc_id)
        return IngestResult(source, str(status) if status else "unknown", dup.doc_id)


def _store(
    conn: psycopg.Connection[Any],
    stream: Any,
    *,
    source: str,
    filename: str,
    mime: str,
    correlation_id: uuid.UUID,
) -> IngestResult:
    with conn.transaction():
        oid, sha, size = write_blob(conn, stream)  # type: ignore[arg-type]
        doc_id = document_id_for(sha)
        created = jobs.add_document(
            conn,
            doc_id,
            content_sha256=sha,
            source=source,
            filename=filename,
            mime_type=mime,
            size_bytes=size,
            blob_oid=oid,
            correlation_id=correlation_id,
        )
        if not created:
            # Same bytes already stored: drop the copy we just wrote.
            raise _Duplicate(doc_id)
    return IngestResult(source, "queued", doc_id, created=True)


class _Duplicate(Exception):
    def __init__(self, doc_id: uuid.UUID) -> None:
        self.doc_id = doc_id


class _Prepended:
    """A stream that yields ``head`` first, then the rest of ``rest``."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self._head = head
        self._rest = rest

    def read(self, n: int) -> bytes:
        if self._head:
            out, self._head = self._head[:n], self._head[n:]
            return out
        return self._rest.read(n)


def ingest_file(
    conn: psycopg.Connection[Any], path: Path, *, source: str | None = None
) -> IngestResult:
    shown = str(path)
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer. What was opened is
        # checked, not the name, so a file swapped for a device meanwhile is refused too.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return IngestResult(shown, "rejected", error="no such file")
    except IsADirectoryError:
        return IngestResult(shown, "rejected", error="is a directory")
    except PermissionError:
        return IngestResult(shown, "rejected", error="permission denied")
    except OSError as exc:
        return IngestResult(shown, "rejected", error=f"cannot read file: {exc.strerror or exc}")
    with os.fdopen(fd, "rb") as fh:
        refused = _not_regular(os.fstat(fd).st_mode)
        if refused is not None:
            # A device, FIFO or socket never ends or never starts: /dev/zero would be
            # read into a large object until the disk is full.
            return IngestResult(shown, "rejected", error=refused)
        os.set_blocking(fd, True)
        try:
            result = ingest_stream(
                conn, fh, source=source or str(path.resolve()), filename=path.name
            )
        except OSError as exc:
            return IngestResult(shown, "rejected", error=f"cannot read file: {exc.strerror or exc}")
    return IngestResult(shown, result.status, result.document_id, result.created, result.error)


def _not_regular(mode: int) -> str | None:
    """Why a file of this mode is refused, or None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "is a directory"
    if stat.S_ISFIFO(mode):
        kind = "a FIFO"
    elif stat.S_ISSOCK(mode):
        kind = "a socket"
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        kind = "a device"
    else:
        kind = "of an unknown kind"
    return f"not a regular file ({kind})"


def iter_paths(paths: list[Path]) -> Iterator[tuple[Path, str | None]]:
    """Files under ``paths`` (directories recursively, hidden entries skipped),
    or (path, error) for a path that cannot be used.

    A path named on the command line is taken as given, symlink or not. Inside a
    directory, a symlink is followed only when it stays inside that directory: otherwise
    ``ln -s /etc/passwd dir/x.txt`` would put a file the operator never named into the
    searchable index. Symlinked directories are not descended into (no loops).
    """
    for root in paths:
        if not root.exists() and not root.is_symlink():
            yield root, "no such file or directory"
        elif root.is_dir():
            inside = root.resolve()
            for dirpath, dirnames, filenames in os.walk(root, onerror=None):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                for name in sorted(filenames):
                    if name.startswith("."):
                        continue
                    path = Path(dirpath) / name
                    if path.is_symlink() and not path.resolve().is_relative_to(inside):
                        yield path, f"symlink leads outside {root}"
                    else:
                        yield path, None
        elif root.is_file():
            yield root, None
        else:
            try:
                yield root, _not_regular(root.stat().st_mode)
            except OSError as exc:  # e.g. a symlink whose target is gone
                yield root, f"cannot read file: {exc.strerror or exc}"
