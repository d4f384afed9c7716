"""The ``ingestd`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ingestd.shared.errors import ConfigError
from ingestd.shared.jsonout import dumps
from ingestd.shared.settings import Settings, load_settings
from ingestd.supervisor.terminal import printable


def _settings(args: argparse.Namespace, **overrides: Any) -> Settings:
    return load_settings(args.config, **overrides)


def _db(settings: Settings, *, migrate: bool = True) -> Any:
    """A connection for a command. Commands that write migrate first; read-only
    commands only check the schema, so they work against a read-only replica."""
    from ingestd.shared.db.connect import connect, database_url
    from ingestd.shared.db.migrate import current_version, latest_version
    from ingestd.shared.db.migrate import migrate as run_migrations

    url = database_url(settings)
    if migrate:
        run_migrations(url)
    conn = connect(url, autocommit=True, application_name="ingestd-cli")
    if not migrate and current_version(conn) < latest_version():
        conn.close()
        raise ConfigError(
            "the database schema is not current: run `ingestd db migrate` (or start the daemon)"
        )
    return conn


# -- commands -------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from ingestd.supervisor.arbiter import Arbiter

    settings = _settings(args, workers=args.workers)
    overrides = {"workers": args.workers} if args.workers else None
    return Arbiter(
        settings, config_path=args.config, drain=args.drain, reload_overrides=overrides
    ).run()


INGEST_GROUP = 200  # files per transaction: one durable commit per group, not per file


def cmd_ingest(args: argparse.Namespace) -> int:
    from itertools import islice

    from ingestd.shared.ingest import IngestResult, ingest_file, iter_paths

    settings = _settings(args)
    conn = _db(settings)
    results: list[IngestResult] = []
    rejected = 0
    metrics = None
    if settings.statsd_host:
        from ingestd.shared.telemetry.metrics import Metrics

        metrics = Metrics.from_settings(
            settings.statsd_host, settings.statsd_port, settings.statsd_prefix, role="supervisor"
        )
    paths = iter_paths([Path(p) for p in args.paths])
    while group := list(islice(paths, INGEST_GROUP)):
        done: list[IngestResult] = []
        # Each file is a savepoint inside the group's transaction, so one bad file
        # (or a duplicate) rolls back alone; results are reported once committed.
        with conn.transaction():
            for path, error in group:
                if error is not None:
                    done.append(IngestResult(str(path), "rejected", error=error))
                else:
                    done.append(ingest_file(conn, path))
        for result in done:
            rejected += result.status == "rejected"
            if args.json:
                print(dumps(result.as_json()), flush=True)
            elif result.status == "rejected":
                print(f"rejected  {printable(result.path)}: {result.error}", file=sys.stderr)
            elif not args.quiet:
                verb = "queued" if result.created else f"exists ({result.status})"
                print(f"{verb:<10}{result.document_id}  {printable(result.path)}")
        results.extend(done)
        created = sum(r.created for r in done)
        if created and metrics is not None:
            metrics.incr("documents.ingested", created)
    if not results:
        print("nothing to ingest: no files found", file=sys.stderr)
        return 1
    if args.wait:
        from ingestd.supervisor.progress import wait_for_documents

        ids = [r.document_id for r in results if r.document_id is not None]
        ok = wait_for_documents(
            conn, ids, show_progress=not args.json and sys.stderr.isatty(), emit_json=args.json
        )
        return 0 if ok and not rejected else 1
    return 1 if rejected else 0


def cmd_status(args: argparse.Namespace) -> int:
    from ingestd.supervisor.status import gather_status, render_status, watch_status

    settings = _settings(args)
    conn = _db(settings, migrate=False)
    if args.watch:
        return watch_status(conn, interval=args.interval, wide=args.wide)
    status = gather_status(conn)
    if args.json:
        print(dumps(status))
    else:
        render_status(status, wide=args.wide)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from ingestd.shared.db import reports
    from ingestd.supervisor.status import render_document

    settings = _settings(args)
    conn = _db(settings, migrate=False)
    doc_id = reports.find_document_id(conn, args.document_id)
    doc = reports.document(conn, doc_id) if doc_id else None
    if doc is None:
        print(f"no document matches {args.document_id!r}", file=sys.stderr)
        return 1
    history = reports.events(conn, doc["id"])
    if args.json:
        print(dumps({"document": doc, "events": history}))
    else:
        render_document(doc, history, wide=args.wide)
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from ingestd.workers.search import search

    settings = _settings(args)
    conn = _db(settings, migrate=False)
    hits = search(conn, settings, args.query, k=args.k)
    if args.json:
        for hit in hits:
            print(dumps(hit))
    else:
        for i, hit in enumerate(hits, 1):
            print(
                f"{i:>2}. {hit['distance']:.4f}  {printable(hit['filename'])} #{hit['ordinal']}"
                f"  ({hit['document_id']})"
            )
            print(f"      {printable(hit['snippet'])}")
        if not hits:
            print("no results (has anything been ingested and completed?)", file=sys.stderr)
    return 0


def cmd_db(args: argparse.Namespace) -> int:
    from ingestd.shared.db.connect import database_url
    from ingestd.shared.db.migrate import migrate

    settings = _settings(args)
    url = database_url(settings)
    if args.db_command == "url":
        print(url)
        return 0
    applied = migrate(url)
    print(f"applied migrations: {applied}" if applied else "database schema is current")
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    from ingestd.workers.admin import retry_documents

    if not args.document_ids and not args.all_failed:
        raise UsageError("retry: give the document ids to requeue, or --all-failed")
    settings = _settings(args)
    conn = _db(settings)
    n = retry_documents(conn, args.document_ids, all_failed=args.all_failed)
    print(f"requeued {n} document(s)")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    from ingestd.shared.db import jobs, reports

    settings = _settings(args)
    conn = _db(settings)
    missing = 0
    for ref in args.document_ids:
        doc_id = reports.find_document_id(conn, ref)
        deleted = doc_id is not None and jobs.delete_document(conn, doc_id)
        if deleted:
            print(f"deleted {doc_id}")
        else:
            missing += 1
            print(f"no document matches {ref!r}", file=sys.stderr)
    return 1 if missing else 0


def cmd_reembed(args: argparse.Namespace) -> int:
    from ingestd.workers.admin import reembed

    settings = _settings(args)
    conn = _db(settings)
    n = reembed(conn, settings, confirm=args.yes)
    print(f"{n} document(s) queued for re-embedding with {settings.embedder}")
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    from ingestd.supervisor.control import request_profile

    try:
        import memray  # noqa: F401  (only checked: the worker records)
    except ImportError:
        raise ConfigError(
            "ingestd profile records with memray, which is not installed: "
            "pip install 'ingestd[profile]' on this host (the workers need it too)"
        ) from None
    settings = _settings(args)
    path = request_profile(settings, slot=args.slot)
    print(f"worker {args.slot} will record its next document with memray: {path}")
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    from ingestd.supervisor import tokens

    conn = _db(_settings(args), migrate=args.token_command == "create")
    try:
        if args.token_command == "create":
            return tokens.create(
                conn, args.name, args.scope, args.expires, args.max_upload_mb, as_json=args.json
            )
        if args.token_command == "list":
            return tokens.list_tokens(conn, as_json=args.json)
        return tokens.revoke(conn, args.ref)
    except ValueError as exc:
        raise UsageError(f"token {args.token_command}: {exc}") from None


# -- parser ---------------------------------------------------------------------


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ingestd")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


class UsageError(Exception):
    """A command line that argparse accepts but that asks for nothing (exit 2)."""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not 1 or more")
    return value


def _query(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("the query is empty")
    return text


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ingestd", description=__doc__)
    p.add_argument("--version", action="version", version=f"ingestd {_version()}")
    p.add_argument("--config", help="TOML settings file (or INGESTD_CONFIG)")
    sub = p.add_subparsers(dest="command", required=True)

    def add(
        name: str, fn: Callable[[argparse.Namespace], int], help_: str
    ) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.set_defaults(func=fn)
        # Also after the subcommand (`ingestd run --config f`); SUPPRESS keeps a value
        # given before it when none is given after.
        sp.add_argument("--config", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        return sp

    sp = add("run", cmd_run, "run the daemon: a supervisor and its workers")
    sp.add_argument("--workers", type=int, help="number of worker processes (INGESTD_WORKERS)")
    sp.add_argument(
        "--drain", action="store_true", help="exit 0 once nothing is runnable or in flight"
    )

    sp = add("ingest", cmd_ingest, "enqueue files and directories (recursively)")
    sp.add_argument("paths", nargs="+")
    sp.add_argument("--wait", action="store_true", help="block until every document is terminal")
    sp.add_argument("--json", action="store_true", help="one JSON object per line")
    sp.add_argument("-q", "--quiet", action="store_true")

    sp = add("status", cmd_status, "documents by status, workers, throughput")
    sp.add_argument("--json", action="store_true")
    sp.add_argument("--watch", action="store_true", help="live view in a terminal")
    sp.add_argument("--interval", type=float, default=1.0)
    sp.add_argument(
        "--wide", action="store_true", help="every column at full width, however wide the lines"
    )

    sp = add("show", cmd_show, "one document: its timeline, errors, tokens and cost")
    sp.add_argument("document_id")
    sp.add_argument("--json", action="store_true")
    sp.add_argument(
        "--wide", action="store_true", help="every column at full width, however wide the lines"
    )

    sp = add("search", cmd_search, "nearest chunks to a query")
    sp.add_argument("query", type=_query)
    sp.add_argument("-k", type=_positive_int, default=5, help="how many chunks (1 or more)")
    sp.add_argument("--json", action="store_true")

    sp = add("db", cmd_db, "database administration")
    sp.add_argument("db_command", choices=["migrate", "url"])

    sp = add("retry", cmd_retry, "requeue failed or dead documents")
    sp.add_argument("document_ids", nargs="*")
    sp.add_argument("--all-failed", action="store_true", help="every failed and dead document")

    sp = add("delete", cmd_delete, "delete documents, their chunks and their bytes")
    sp.add_argument("document_ids", nargs="+")

    sp = add(
        "reembed",
        cmd_reembed,
        "switch the embedding model: drop all vectors and re-embed every document",
    )
    sp.add_argument("--yes", action="store_true", help="confirm dropping existing vectors")

    sp = add("token", cmd_token, "API tokens of the HTTP API: create, list, revoke")
    tsub = sp.add_subparsers(dest="token_command", required=True)
    tp = tsub.add_parser("create", help="make a token and print it, once, alone on stdout")
    tp.add_argument("--name", required=True, help="unique among live tokens, e.g. ci-uploader")
    tp.add_argument("--scope", choices=["read", "write", "admin"], default="read")
    tp.add_argument("--expires", help="30d, 12h, 2w or a date (2026-12-31); default: never")
    tp.add_argument("--max-upload-mb", type=_positive_int, help="below the server's max_upload_mb")
    tp.add_argument("--json", action="store_true", help="the whole record, token included")
    tp = tsub.add_parser("list", help="every token, without its secret")
    tp.add_argument("--json", action="store_true", help="one JSON object per line")
    tp = tsub.add_parser("revoke", help="refuse a token from now on")
    tp.add_argument("ref", metavar="NAME|ID")

    sp = add("profile", cmd_profile, "record a running worker's next document with memray")
    sp.add_argument("--slot", type=int, default=0)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    import psycopg

    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except UsageError as exc:
        print(f"ingestd {exc}", file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(f"ingestd: {exc}", file=sys.stderr)
        return 2
    except psycopg.OperationalError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"ingestd: cannot reach the database: {first}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
