"""Accepting documents: bytes into a large object, one ``documents`` row, one event.

Idempotent by construction: the document id is derived from the content hash,
so the same bytes ingested twice return the existing document and create
nothing new.
"""

from __future__ import annotations

import hashlib
import os
import stat
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
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
        if not self._head:
            return self._rest.read(n)
        out, self._head = self._head[:n], self._head[n:]
        if len(out) < n:  # as a file would: the sniffed head must not depend on the split
            out += self._rest.read(n - len(out))
        return out


def ingest_file(
    conn: psycopg.Connection[Any], path: Path, *, source: str | None = None
) -> IngestResult:
    """Store one file, streamed whatever its size (``ingest_files`` batches small ones)."""
    outcome = _read_or_stream(conn, path, {}, source=source, stream=True)
    assert isinstance(outcome, IngestResult)  # streamed: stored, or rejected
    return outcome


# -- many files at once ----------------------------------------------------------------

# A file up to this size is read whole, hashed here and written with the other small files
# of its batch in one statement; a larger one is streamed in pieces (``ingest_stream``).
SMALL_FILE_BYTES = 1 << 20
# Small files' bytes held before they are written. It bounds the command's memory, at
# about five times this (the statement's parameters are copied twice by psycopg and once
# into libpq's buffer); 4 MiB is already hundreds of typical files per round trip.
BATCH_BYTES = 4 << 20


@dataclass(frozen=True)
class _SmallFile:
    shown: str
    doc: jobs.NewDocument


def ingest_files(
    conn: psycopg.Connection[Any], entries: Iterable[tuple[Path, str | None]]
) -> list[IngestResult]:
    """``ingest_file`` for each path (or the rejection ``iter_paths`` gave it), in order.

    Call inside a transaction. Small files are read, checked and hashed first and then
    written many per statement, so a file that cannot be read or named is rejected before
    any of them reaches the database and nothing needs undoing; a large file is streamed
    as ``ingest_file`` does, in a savepoint of its own.
    """
    results: list[IngestResult | _SmallFile] = []
    resolved_dirs: dict[Path, Path] = {}
    pending: list[_SmallFile] = []
    held = 0
    for path, error in entries:
        outcome = (
            IngestResult(str(path), "rejected", error=error)
            if error is not None
            else _read_or_stream(conn, path, resolved_dirs)
        )
        results.append(outcome)
        if isinstance(outcome, _SmallFile):
            pending.append(outcome)
            held += len(outcome.doc.data)
            if held >= BATCH_BYTES:
                _store_small(conn, pending, results)
                pending, held = [], 0
    _store_small(conn, pending, results)
    return [r for r in results if isinstance(r, IngestResult)]


def _read_or_stream(
    conn: psycopg.Connection[Any],
    path: Path,
    resolved_dirs: dict[Path, Path],
    *,
    source: str | None = None,
    stream: bool = False,
) -> IngestResult | _SmallFile:
    """A small file read whole (to be written with its batch), or a large one, or any
    with ``stream``, streamed into the database now; or why it was rejected."""
    shown = str(path)
    opened = _open_regular(path)
    if isinstance(opened, IngestResult):
        return opened
    with opened as fh:
        try:
            source = source or str(_resolve(path, resolved_dirs))
            if not _is_utf8(source + path.name):
                return _badly_named(shown)
            data = None if stream else _read_small(fh)
            if data is None:
                result = ingest_stream(conn, fh, source=source, filename=path.name)
                return replace(result, path=shown)
        except OSError as exc:
            return _unreadable(shown, exc)
    if not data:
        return IngestResult(shown, "rejected", error="file is empty")
    sha = hashlib.sha256(data).hexdigest()
    return _SmallFile(
        shown,
        jobs.NewDocument(
            doc_id=document_id_for(sha),
            content_sha256=sha,
            source=source,
            filename=path.name,
            mime_type=sniff_mime(path.name, data[:SNIFF_BYTES]),
            data=data,
            correlation_id=uuid.uuid4(),
        ),
    )


def _read_small(fh: BinaryIO) -> bytes | None:
    """The whole file if it is small, else None with ``fh`` at its start, to be streamed.

    The size is a hint only (a file may grow while read; procfs says 0 for files that have
    content), so what is read decides; asking for what the size says (plus one, to see the
    end) spares allocating the limit for every file."""
    size = os.fstat(fh.fileno()).st_size
    if size <= SMALL_FILE_BYTES:
        data = fh.read(size + 1)
        if len(data) > size:  # it grew since: read on to the limit
            data += fh.read(SMALL_FILE_BYTES + 1 - len(data))
        if len(data) <= SMALL_FILE_BYTES:
            return data
    fh.seek(0)
    return None


def _resolve(path: Path, resolved_dirs: dict[Path, Path]) -> Path:
    """``path.resolve()``, with each directory resolved once: a file of a tree costs one
    ``lstat`` instead of one per component of its path."""
    if path.is_symlink():
        return path.resolve()
    parent = resolved_dirs.get(path.parent)
    if parent is None:
        parent = resolved_dirs[path.parent] = path.parent.resolve()
    return parent / path.name


def _store_small(
    conn: psycopg.Connection[Any],
    pending: list[_SmallFile],
    results: list[IngestResult | _SmallFile],
) -> None:
    """Write ``pending`` and put each one's result in its place in ``results``. The same
    bytes twice in a batch are one document: the later file finds it, as it would have
    had the files been ingested one by one."""
    if not pending:
        return
    first = {f.doc.content_sha256: f.doc for f in reversed(pending)}
    added = jobs.add_small_documents(conn, list(first.values()))
    claimed: set[str] = set()
    for i, r in enumerate(results):
        if not isinstance(r, _SmallFile):
            continue
        sha = r.doc.content_sha256
        created, status = added[sha]
        created = created and sha not in claimed
        claimed.add(sha)
        results[i] = IngestResult(r.shown, status, r.doc.doc_id, created=created)


def _open_regular(path: Path) -> BinaryIO | IngestResult:
    """``path`` opened for reading if it is a regular file, else why it is refused."""
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
        return _unreadable(shown, exc)
    try:
        # A device, FIFO or socket never ends or never starts: /dev/zero would be read
        # into a large object until the disk is full.
        refused = _not_regular(os.fstat(fd).st_mode)
        if refused is None:
            os.set_blocking(fd, True)
            return os.fdopen(fd, "rb")
    except OSError as exc:
        refused = f"cannot read file: {exc.strerror or exc}"
    os.close(fd)
    return IngestResult(shown, "rejected", error=refused)


def _unreadable(shown: str, exc: OSError) -> IngestResult:
    return IngestResult(shown, "rejected", error=f"cannot read file: {exc.strerror or exc}")


def _badly_named(shown: str) -> IngestResult:
    # The database keeps text as UTF-8: a name that is not cannot be stored as given, and
    # a name changed to fit would no longer find the file.
    return IngestResult(shown, "rejected", error="file name is not valid UTF-8")


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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
