"""Preparing a configuration for the supervisor: at start, and on SIGHUP.

A reload sets up everything that can fail (the database and its schema, the embedding
space, the log file, a new metrics client) before anything is switched, so a reload
that fails leaves the running configuration untouched. ``load`` raises
``ReloadFailed`` with a message for the operator; the arbiter then switches to the
``Prepared`` result and replaces its children one by one, in ``to_replace``'s order.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from ingestd.shared.db.connect import database_url
from ingestd.shared.db.migrate import migrate
from ingestd.shared.errors import ConfigError, first_line
from ingestd.shared.settings import Settings, load_settings
from ingestd.shared.telemetry.logs import configure_logging as _configure_logging
from ingestd.shared.telemetry.metrics import Metrics
from ingestd.supervisor.children import Child, Kind, Reason
from ingestd.supervisor.database import check_embedding_space
from ingestd.supervisor.watch import unclaimed


class ReloadFailed(Exception):
    """The new configuration cannot be used; the running one stays."""


@dataclass(frozen=True)
class Prepared:
    settings: Settings
    url: str
    metrics: Metrics | None  # a new client when the statsd address changed, else None


def load(
    config_path: str | Path | None,
    overrides: Mapping[str, Any],
    old: Settings,
    current_url: str,
) -> Prepared:
    try:
        new = load_settings(config_path, **overrides)
    except ConfigError as exc:
        raise ReloadFailed(str(exc)) from exc
    return prepare(old, new, current_url)


def prepare(old: Settings, new: Settings, current_url: str) -> Prepared:
    try:
        url = database_url(new)
        if url != current_url:
            migrate(url)
        check_embedding_space(url, new)
        configure_logging(new)
        metrics = None
        if _statsd(new) != _statsd(old):
            metrics = make_metrics(new)
    except (ConfigError, OSError, ValueError, psycopg.Error) as exc:
        configure_logging(old)
        raise ReloadFailed(first_line(exc)) from exc
    return Prepared(new, url, metrics)


def configure_logging(s: Settings) -> None:
    _configure_logging("supervisor", None, json=s.log_json, level=s.log_level, log_file=s.log_file)


def make_metrics(s: Settings) -> Metrics:
    return Metrics.from_settings(s.statsd_host, s.statsd_port, s.statsd_prefix, role="supervisor")


def _statsd(s: Settings) -> tuple[str | None, int, str]:
    return (s.statsd_host, s.statsd_port, s.statsd_prefix)


def to_replace(children: Iterable[Child], target: int, version: int) -> list[Child] | None:
    """The children still running an older configuration, in the order they are replaced
    (workers by slot, the HTTP child last); None while the last replacement is under way
    (its predecessor still stopping, or itself not heartbeating yet): one at a time, so
    the supervisor never runs short of workers."""
    children = list(children)
    if any(c.stop_reason is Reason.RELOAD for c in children):
        return None
    for slot in range(target):
        child = next((c for c in children if c.kind is Kind.WORKER and c.slot == slot), None)
        if child is None or (child.settings_version == version and child.heartbeats == 0):
            return None
    return sorted(
        (c for c in children if c.settings_version < version and unclaimed(c)),
        key=lambda c: (c.kind is Kind.HTTP, c.slot),
    )
