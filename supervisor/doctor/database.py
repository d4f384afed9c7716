"""The database: reachable, which one, its version, pgvector, the schema, its disk."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import conninfo

from ingestd.shared.db import server_info
from ingestd.shared.db.migrate import available, current_version, latest_version
from ingestd.shared.errors import named_first_line
from ingestd.supervisor.doctor.disk import free_space
from ingestd.supervisor.doctor.findings import Result, fail, ok, skip, warn
from ingestd.supervisor.doctor.runner import Context

MIN_SERVER_VERSION = 150_000  # PostgreSQL 15 (see the database_url setting)
MIN_PGVECTOR = (0, 5, 0)  # HNSW indexes (shared/db/vector_index.py)
_KEYWORD_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
_QUERY_PASSWORD = re.compile(r"(^|&)(password=)[^&]*", re.IGNORECASE)


def mask_url(url: str) -> str:
    """``url`` with its password, if any, shown as ``***`` (URL or keyword form)."""
    if "://" not in url:
        return _KEYWORD_PASSWORD.sub(r"\1***", url)
    parts = urlsplit(url)
    netloc = parts.netloc
    userinfo, at, hostport = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.split(':', 1)[0]}:***@{hostport}"
    query = _QUERY_PASSWORD.sub(r"\1\2***", parts.query)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def check_database(ctx: Context) -> Result:
    from ingestd.shared.db.connect import connect
    from ingestd.shared.db.embedded import embedded_url

    settings = ctx.settings
    if settings.database_url:
        url = settings.database_url
        where = f"URL {mask_url(url)}"
    else:
        ctx.embedded = True
        where = f"embedded (pgserver) in {settings.home / 'pg'}"
        url = embedded_url(settings.home)  # a start failure is a ConfigError naming the log
    ctx.db_url = url
    try:
        # make_conninfo reads both forms; connect_timeout bounds the TCP connect.
        target = conninfo.make_conninfo(url, connect_timeout=max(1, int(ctx.options.timeout)))
        ctx.conn = connect(target, autocommit=True, application_name="ingestd-doctor")
    except psycopg.ProgrammingError as exc:  # a malformed URL
        return fail(
            f"{where} is not a valid connection URL: {named_first_line(exc)}",
            "correct INGESTD_DATABASE_URL (postgresql://user:password@host:5432/dbname)",
            kind="url",
        )
    except psycopg.OperationalError as exc:
        return fail(
            f"cannot connect to {where}: {named_first_line(exc)}",
            "start PostgreSQL, or correct INGESTD_DATABASE_URL (host, port, user, password)",
            kind="embedded" if ctx.embedded else "url",
        )
    return ok(f"connected: {where}", kind="embedded" if ctx.embedded else "url")


def check_server_version(ctx: Context) -> Result:
    num, text = server_info.server_version(ctx.conn)
    if num < MIN_SERVER_VERSION:
        return fail(
            f"PostgreSQL {text}; ingestd needs 15 or later",
            "upgrade the server, or unset INGESTD_DATABASE_URL for the embedded one",
            version=text,
        )
    return ok(f"PostgreSQL {text}", version=text)


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


def check_pgvector(ctx: Context) -> Result:
    found = server_info.pgvector_versions(ctx.conn)
    facts = {"installed": found.installed, "available": found.available}
    if found.installed is None:
        if found.available is None:
            return fail(
                "pgvector is not on the server",
                "install pgvector for this PostgreSQL (e.g. apt install postgresql-16-pgvector)",
                **facts,
            )
        return warn(
            f"pgvector {found.available} is on the server but not created in this database",
            "run `ingestd db migrate` (it creates the extension), as a role that may",
            **facts,
        )
    if _version_tuple(found.installed) < MIN_PGVECTOR:
        return fail(
            f"pgvector {found.installed}: HNSW indexes need 0.5.0 or later",
            "install a newer pgvector, then: ALTER EXTENSION vector UPDATE",
            **facts,
        )
    newer = found.available is not None and _version_tuple(found.available) > _version_tuple(
        found.installed
    )
    if newer:
        return ok(
            f"pgvector {found.installed} (the server has {found.available}: "
            "ALTER EXTENSION vector UPDATE to use it)",
            **facts,
        )
    return ok(f"pgvector {found.installed}", **facts)


def check_migrations(ctx: Context) -> Result:
    current, latest = current_version(ctx.conn), latest_version()
    facts = {"current": current, "latest": latest}
    if current == 0:
        return fail(
            "the schema is not created yet",
            "run `ingestd db migrate` (the daemon also migrates when it starts)",
            **facts,
        )
    if current < latest:
        pending = [m.version for m in available() if m.version > current]
        return fail(
            f"schema at version {current}, this ingestd needs {latest} ({len(pending)} pending)",
            "run `ingestd db migrate` (the daemon also migrates when it starts)",
            **facts,
        )
    if current > latest:
        return fail(
            f"schema at version {current} is newer than this ingestd knows ({latest})",
            "upgrade ingestd on this host to the version that migrated the database",
            **facts,
        )
    return ok(f"schema current (version {current})", **facts)


def check_database_disk(ctx: Context) -> Result:
    if ctx.embedded:
        path = ctx.settings.home / "pg"
    else:
        shown = server_info.data_directory(ctx.conn)
        if shown is None:
            return skip("this role may not read the data directory (pg_read_all_settings)")
        host = ctx.conn.info.host or ""
        local = host.startswith("/") or host in ("localhost", "127.0.0.1", "::1")
        path = Path(shown)
        if not (local and path.is_dir()):
            return skip(f"the data directory {shown} is on the database host: check it there")
    return free_space(path, ctx.options.min_free_mb, what="the data directory")
