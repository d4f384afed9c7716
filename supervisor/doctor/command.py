"""``ingestd doctor``: which checks run, in which order, and what is printed."""

from __future__ import annotations

import contextlib
import sys
from collections import Counter
from typing import Any

from rich.console import Console

from ingestd.shared import exitcodes
from ingestd.shared.jsonout import dumps
from ingestd.shared.settings import Settings
from ingestd.supervisor.doctor import database, embedder, parser, telemetry, unit
from ingestd.supervisor.doctor.disk import free_space
from ingestd.supervisor.doctor.findings import Finding, Result, Status, skip
from ingestd.supervisor.doctor.runner import Context, NamedCheck, Options, run_checks
from ingestd.supervisor.terminal import Col, FittedTable, OutputConsole, markup_safe

# initdb and the first start of the embedded server take longer than one request.
EMBEDDED_START_S = 60.0
# --deep: importing torch and loading the local model takes tens of seconds.
MODEL_LOAD_S = 120.0

# The table's and the JSON's order: what everything else stands on comes first.
ORDER = (
    "database",
    "postgresql",
    "pgvector",
    "migrations",
    "embedder",
    "parser",
    "webhooks",
    "statsd",
    "sentry",
    "home disk",
    "db disk",
    "systemd unit",
)
_STYLE = {Status.OK: "green", Status.WARN: "yellow", Status.FAIL: "bold red", Status.SKIP: "dim"}


def _home_disk(ctx: Context) -> Result:
    return free_space(ctx.settings.home, ctx.options.min_free_mb, what="INGESTD_HOME")


def gather(settings: Settings, options: Options) -> list[Finding]:
    ctx = Context(settings, options)
    independent = [
        NamedCheck(
            "database",
            database.check_database,
            min_timeout=0.0 if settings.database_url else EMBEDDED_START_S,
        ),
        NamedCheck(
            "embedder", embedder.check_embedder, min_timeout=MODEL_LOAD_S if options.deep else 0.0
        ),
        NamedCheck("parser", parser.check_parser),
        NamedCheck("webhooks", parser.check_webhook),
        NamedCheck("statsd", telemetry.check_statsd),
        NamedCheck("sentry", telemetry.check_sentry),
        NamedCheck("home disk", _home_disk),
        NamedCheck("systemd unit", unit.check_unit),
    ]
    on_database = [
        NamedCheck("postgresql", database.check_server_version),
        NamedCheck("pgvector", database.check_pgvector),
        NamedCheck("migrations", database.check_migrations),
        NamedCheck("db disk", database.check_database_disk),
    ]
    findings = run_checks(independent, ctx)
    reached = ctx.conn is not None and findings[0].result.status is Status.OK
    if reached:
        findings += run_checks(on_database, ctx, parallel=False)
    else:
        findings += [Finding(c.name, skip("the database is unreachable"), 0.0) for c in on_database]
    if reached and all(f.answered for f in findings):
        with contextlib.suppress(Exception):  # closing is best effort: the process ends next
            ctx.conn.close()
    return sorted(findings, key=lambda f: ORDER.index(f.name))


def exit_code(findings: list[Finding]) -> int:
    failed = any(f.result.status is Status.FAIL for f in findings)
    return exitcodes.EXIT_FAILED if failed else exitcodes.EXIT_OK


def as_json(findings: list[Finding]) -> dict[str, Any]:
    counts = Counter(str(f.result.status) for f in findings)
    code = exit_code(findings)
    return {
        "ok": code == 0,
        "exit_code": code,
        "summary": {str(s): counts.get(str(s), 0) for s in Status},
        "checks": [f.as_json() for f in findings],
    }


def _finding_cell(result: Result) -> str:
    text = markup_safe(result.finding)
    if result.fix:
        text += f"\n[dim]fix:[/] {markup_safe(result.fix)}"
    return text


def render(findings: list[Finding], *, wide: bool = False, console: Console | None = None) -> None:
    console = console or OutputConsole()
    table = FittedTable(
        "ingestd doctor",
        [
            Col("check", [markup_safe(f.name) for f in findings], keep=3),
            Col(
                "status",
                [f"[{_STYLE[f.result.status]}]{f.result.status}[/]" for f in findings],
                keep=4,
            ),
            Col("finding", [_finding_cell(f.result) for f in findings], keep=5, wrap=True),
        ],
        wide=wide,
    )
    console.print(table, crop=not wide)
    counts = Counter(f.result.status for f in findings)
    summary = ", ".join(f"{counts[s]} {s}" for s in Status if counts[s])
    console.print(f"{len(findings)} checks: {summary}")


def run_doctor(settings: Settings, options: Options, *, json_out: bool, wide: bool) -> int:
    findings = gather(settings, options)
    if json_out:
        print(dumps(as_json(findings)))
    else:
        render(findings, wide=wide)
    sys.stdout.flush()
    return exit_code(findings)
