"""The ``ingestd`` command line."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ingestd.shared import exitcodes
from ingestd.shared.errors import ConfigError, IngestError, NotFound, first_line
from ingestd.shared.jsonout import dumps
from ingestd.shared.settings import Settings, load_settings
from ingestd.supervisor.terminal import printable

# How the global options reach the settings, and how an error names them.
_OPTION_NAMES = {
    "log_level": "--log-level/-v/-q",
    "log_json": "--log-format",
    "workers": "--workers",
}


def _log_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The settings the global logging options set (none given: none overridden)."""
    levels = [
        name
        for name, given in (
            ("--log-level", args.log_level is not None),
            ("-v/--verbose", args.verbose),
            ("-q/--quiet", args.quiet),
        )
        if given
    ]
    if len(levels) > 1:
        raise UsageError(f"give one of {', '.join(levels)}, not several")
    level = args.log_level or ("DEBUG" if args.verbose else "WARNING" if args.quiet else None)
    json = None if args.log_format is None else args.log_format == "json"
    return {"log_level": level, "log_json": json}


def settings_for(args: argparse.Namespace, **overrides: Any) -> Settings:
    """The command's settings: command line > environment > file > defaults."""
    return load_settings(
        args.config, option_names=_OPTION_NAMES, **_log_overrides(args), **overrides
    )


def _settings(args: argparse.Namespace, **overrides: Any) -> Settings:
    """The command's settings, and its logging configured from them (stderr only: the
    daemon's log file is the daemon's)."""
    from ingestd.shared.telemetry.logs import configure_logging

    settings = settings_for(args, **overrides)
    level = settings.log_level
    if args.command != "run" and "log_level" not in settings.model_fields_set:
        # A one-shot command's output is its answer; its INFO lines (the embedded server
        # starting, migrations current) are noise there unless a level was asked for.
        level = "WARNING"
    configure_logging("supervisor", None, json=settings.log_json, level=level)
    return settings


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
    from ingestd.supervisor.live import wanted

    settings = _settings(args, workers=args.workers)
    # A reload (SIGHUP) re-reads the file and environment under the same options.
    given = {"workers": args.workers, **_log_overrides(args)}
    overrides = {k: v for k, v in given.items() if v is not None} or None
    live = wanted(no_live=args.no_live, log_json=settings.log_json, stream=sys.stderr)
    return Arbiter(
        settings, config_path=args.config, drain=args.drain, reload_overrides=overrides, live=live
    ).run()


INGEST_GROUP = 200  # files per transaction: one durable commit per group, not per file


def cmd_ingest(args: argparse.Namespace) -> int:
    from itertools import islice

    from ingestd.shared.ingest import IngestResult, ingest_files, iter_paths

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
        # One transaction per group; a bad file is refused on its own (see ingest_files),
        # and results are reported once committed.
        with conn.transaction():
            done = ingest_files(conn, group)
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
    from ingestd.supervisor import local_api

    settings = _settings(args)
    try:
        # The daemon keeps the embedder loaded: ms per query instead of a model load.
        hits = local_api.search(settings, args.query, args.k)
    except local_api.NoDaemon as exc:
        from ingestd.shared.search import search
        from ingestd.shared.telemetry.logs import get_logger

        # Same results, only slower: said at INFO (`-v`), so the answer stays the output.
        get_logger("ingestd.cli").info(
            "no daemon on the local socket; embedding the query in this process", socket=str(exc)
        )
        try:
            hits = search(_db(settings, migrate=False), settings, args.query, k=args.k)
        except IngestError as error:
            raise ServiceError("the embedding API", error) from error
    except local_api.ApiError as exc:
        print(
            f"ingestd search: the daemon refused the search ({exc.status}): {exc.detail}",
            file=sys.stderr,
        )
        refused = {400: exitcodes.EXIT_USAGE, 503: exitcodes.EXIT_UNREACHABLE}
        return refused.get(exc.status, exitcodes.EXIT_FAILED)
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
    from ingestd.supervisor import dbcmd

    return dbcmd.run(args, _settings(args))


def cmd_retry(args: argparse.Namespace) -> int:
    from ingestd.workers.admin import retry_documents

    if not args.document_ids and not args.all_failed:
        raise UsageError("give the document ids to requeue, or --all-failed")
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


def cmd_doctor(args: argparse.Namespace) -> int:
    from ingestd.supervisor.doctor.command import run_doctor
    from ingestd.supervisor.doctor.runner import Options

    options = Options(
        timeout=args.timeout,
        deep=args.deep,
        send_test_event=args.send_test_event,
        min_free_mb=args.min_free_mb,
        unit=Path(args.unit) if args.unit else None,
    )
    return run_doctor(_settings(args), options, json_out=args.json, wide=args.wide)


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


class ServiceError(Exception):
    """A service the command needs failed it (exit 3), or refused our key or our input
    (exit 2: the configuration or the command line must change, not the service)."""

    def __init__(self, service: str, error: IngestError) -> None:
        from ingestd.shared.errors import ErrorClass

        refused = error.error_class in (ErrorClass.AUTH, ErrorClass.INVALID_INPUT)
        self.exit_code = exitcodes.EXIT_USAGE if refused else exitcodes.EXIT_UNREACHABLE
        super().__init__(f"{service} {'refused' if refused else 'failed'}: {error}")


def _whole_number(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number of at least ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is not {minimum} or more")
        return value

    return parse


_positive_int = _whole_number(1)
_slot = _whole_number(0)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"{value} is not more than 0")
    return value


def _query(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("the query is empty")
    return text


def _add_global_options(parser: argparse.ArgumentParser, *, after_command: bool) -> None:
    """The options every command takes, before or after its name. After it they default
    to SUPPRESS, so a value given before the command stands when none is given after."""

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if after_command else value

    parser.add_argument(
        "--config", default=default(None), help="TOML settings file (or INGESTD_CONFIG)"
    )
    parser.add_argument(
        "--log-level",
        type=str.upper,
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        default=default(None),
        help="lowest level logged (or INGESTD_LOG_LEVEL)",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", default=default(False), help="--log-level DEBUG"
    )
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=default(False),
        help="--log-level WARNING; `ingest` also leaves out its line per file",
    )
    parser.add_argument(
        "--log-format",
        choices=["console", "json"],
        default=default(None),
        help="log lines for people or one JSON object per line (or INGESTD_LOG_JSON); "
        "default: console on a terminal, else JSON",
    )


def subcommand(sub: Any, name: str, help_: str) -> argparse.ArgumentParser:
    """A (sub-)subcommand that takes the global options too (``sub``: an
    ``add_subparsers``), so `ingestd db status -v` works like `ingestd -v db status`."""
    sp: argparse.ArgumentParser = sub.add_parser(name, help=help_, description=help_)
    _add_global_options(sp, after_command=True)
    return sp


def add_command(
    sub: Any, name: str, fn: Callable[[argparse.Namespace], int], help_: str
) -> argparse.ArgumentParser:
    """A subcommand that takes the global options too (``sub``: an ``add_subparsers``)."""
    sp = subcommand(sub, name, help_)
    sp.set_defaults(func=fn)
    return sp


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ingestd", description=__doc__)
    p.add_argument("--version", action="version", version=f"ingestd {_version()}")
    _add_global_options(p, after_command=False)
    sub = p.add_subparsers(dest="command", required=True)

    def add(
        name: str, fn: Callable[[argparse.Namespace], int], help_: str
    ) -> argparse.ArgumentParser:
        return add_command(sub, name, fn, help_)

    sp = add("run", cmd_run, "run the daemon: a supervisor and its workers")
    sp.add_argument(
        "--workers", type=_positive_int, help="number of worker processes (INGESTD_WORKERS)"
    )
    sp.add_argument(
        "--drain", action="store_true", help="exit 0 once nothing is runnable or in flight"
    )
    sp.add_argument("--no-live", action="store_true", help="no live view on a terminal")

    sp = add("ingest", cmd_ingest, "enqueue files and directories (recursively)")
    sp.add_argument("paths", nargs="+")
    sp.add_argument("--wait", action="store_true", help="block until every document is terminal")
    sp.add_argument("--json", action="store_true", help="one JSON object per line")

    sp = add("status", cmd_status, "documents by status, workers, throughput")
    sp.add_argument("--json", action="store_true")
    sp.add_argument("--watch", action="store_true", help="live view in a terminal")
    sp.add_argument(
        "--interval", type=_positive_float, default=1.0, help="seconds between refreshes"
    )
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

    sp = add("db", cmd_db, "the database: migrate, url, shell, start, stop, status")
    from ingestd.supervisor import dbcmd

    dbcmd.add_arguments(sp, subcommand)

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

    sp = add("doctor", cmd_doctor, "check this host's configuration and services; say how to fix")
    sp.add_argument("--json", action="store_true", help="one JSON object (fields: README)")
    sp.add_argument("--wide", action="store_true", help="the table at full width")
    sp.add_argument("--timeout", type=_positive_float, default=10.0, help="seconds per check")
    sp.add_argument(
        "--deep", action="store_true", help="load the local model (slow: imports torch)"
    )
    sp.add_argument("--send-test-event", action="store_true", help="send one Sentry event")
    sp.add_argument("--min-free-mb", type=_positive_int, default=1024, help="warn below")
    sp.add_argument("--unit", help="check this unit file instead of the installed one")
    sp = add("token", cmd_token, "API tokens of the HTTP API: create, list, revoke")
    tsub = sp.add_subparsers(dest="token_command", required=True)
    tp = subcommand(tsub, "create", "make a token and print it, once, alone on stdout")
    tp.add_argument("--name", required=True, help="unique among live tokens, e.g. ci-uploader")
    tp.add_argument("--scope", choices=["read", "write", "admin"], default="read")
    tp.add_argument("--expires", help="30d, 12h, 2w or a date (2026-12-31); default: never")
    tp.add_argument("--max-upload-mb", type=_positive_int, help="below the server's max_upload_mb")
    tp.add_argument("--json", action="store_true", help="the whole record, token included")
    tp = subcommand(tsub, "list", "every token, without its secret")
    tp.add_argument("--json", action="store_true", help="one JSON object per line")
    tp = subcommand(tsub, "revoke", "refuse a token from now on")
    tp.add_argument("ref", metavar="NAME|ID")

    sp = add("profile", cmd_profile, "record a running worker's next document with memray")
    sp.add_argument("--slot", type=_slot, default=0, help="the worker's slot (0 or more)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; every way out is an exit code from ``shared.exitcodes`` with, on
    failure, one line on stderr: no traceback for bad input or a service that is away."""
    args = build_parser().parse_args(argv)  # a bad command line exits 2 here (argparse)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return exitcodes.EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader of our output went away (`ingestd status | head -1`): what a Unix
        # tool does then is stop quietly with 128 + SIGPIPE. stdout is pointed at
        # /dev/null first, so the interpreter's own flush at exit cannot raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return exitcodes.EXIT_BROKEN_PIPE
    except Exception as exc:
        code, message = _failure(exc)
        print(f"ingestd {args.command}: {message}", file=sys.stderr)
        if code == exitcodes.EXIT_CRASH:
            # A bug, not the operator's doing: the traceback is one -v away, not hidden.
            from ingestd.shared.telemetry.logs import get_logger

            get_logger("ingestd.cli").debug("command crashed", exc_info=exc)
        return code


def _failure(exc: Exception) -> tuple[int, str]:
    """The exit code and the one-line message for an exception a command raised."""
    import psycopg

    from ingestd.supervisor.control import SupervisorNotRunning

    if isinstance(exc, NotFound):
        return exitcodes.EXIT_FAILED, str(exc)
    if isinstance(exc, SupervisorNotRunning):
        return exitcodes.EXIT_UNREACHABLE, str(exc)
    if isinstance(exc, UsageError | ConfigError):
        # A configuration error may list several keys, one a line: kept as they are.
        return exitcodes.EXIT_USAGE, str(exc)
    if isinstance(exc, ServiceError):
        return exc.exit_code, str(exc)
    if isinstance(exc, psycopg.OperationalError):
        return exitcodes.EXIT_UNREACHABLE, f"cannot reach the database: {first_line(exc)}"
    if isinstance(exc, psycopg.Error):
        return exitcodes.EXIT_FAILED, f"database error: {first_line(exc)}"
    if isinstance(exc, OSError):
        # A file the command needs (INGESTD_HOME, a pid file, a profile) is out of reach.
        return exitcodes.EXIT_FAILED, str(exc)
    return (
        exitcodes.EXIT_CRASH,
        f"internal error: {type(exc).__name__}: {first_line(exc)} (run with -v for the traceback)",
    )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
