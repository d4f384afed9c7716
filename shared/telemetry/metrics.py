"""statsd metrics, and the catalogue of every metric ingestd emits.

statsd has no tags: dimensions live in the metric path, so every variable path
segment is one of a small, known set of values (a stage, an error class, a service,
a worker slot…). ``CATALOGUE`` lists every metric with its path pattern, type and
meaning; ``Metrics`` checks each name it emits against it, so the documentation
(``render_catalogue_markdown``) cannot drift from the code. In strict mode (tests,
``INGESTD_METRICS_STRICT=1``) an unknown name or a wrong type raises
``UnknownMetric``; otherwise it is logged once as an error and not sent, so a bug
in instrumentation neither kills a worker nor floods Graphite with junk paths.

The ``statsd`` client owns a UDP socket, so each process creates its own *after*
fork (``Metrics.from_settings`` in the child); a client used in another process than
the one that created it raises. ``host=None`` is the explicit "metrics off"
configuration: nothing is sent, names are still validated.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import StrEnum

import statsd

from ingestd.shared.errors import ErrorClass
from ingestd.shared.states import Status
from ingestd.shared.telemetry.context import ROLES, STAGES

__all__ = [
    "CATALOGUE",
    "PLACEHOLDERS",
    "MetricSpec",
    "MetricType",
    "Metrics",
    "MetricsBatch",
    "UnknownMetric",
    "metric_segment",
    "render_catalogue_markdown",
]

_log = logging.getLogger(__name__)


class MetricType(StrEnum):
    COUNTER = "counter"
    GAUGE = "gauge"
    TIMER = "timer"


class UnknownMetric(ValueError):
    """A metric name (or type) that is not in the catalogue."""


@dataclass(frozen=True)
class Placeholder:
    regex: str
    meaning: str


def _one_of(values: tuple[str, ...] | list[str]) -> str:
    return "(?:" + "|".join(re.escape(v) for v in values) + ")"


# Must equal shared.resilience.breaker.BreakerState (a test checks); not imported here
# because the resilience package reports through this module.
BREAKER_STATES: tuple[str, ...] = ("closed", "open", "half_open")

_IDENT = r"[a-z][a-z0-9_]{0,31}"

PLACEHOLDERS: dict[str, Placeholder] = {
    "stage": Placeholder(_one_of(STAGES), "active stage: " + ", ".join(STAGES)),
    "error_class": Placeholder(
        _one_of([str(c) for c in ErrorClass]), ", ".join(str(c) for c in ErrorClass)
    ),
    "status": Placeholder(_one_of([str(s) for s in Status]), ", ".join(str(s) for s in Status)),
    "service": Placeholder(_IDENT, "remote service (lower-case word): openai, llamaparse"),
    "code": Placeholder(r"[1-5][0-9][0-9]", "HTTP status code"),
    "state": Placeholder(_one_of(BREAKER_STATES), "breaker state: " + ", ".join(BREAKER_STATES)),
    "model": Placeholder(
        r"[a-z0-9][a-z0-9_-]{0,63}",
        "embedding model, through metric_segment() (e.g. text-embedding-3-small)",
    ),
    "slot": Placeholder(r"[0-9]{1,3}", "worker slot number"),
    "reason": Placeholder(
        _IDENT, "why a worker was replaced: crash, memory, heartbeat, deadline, recycle, ..."
    ),
}

_PLACEHOLDER_RE = re.compile(r"<([a-z_]+)>")


@dataclass(frozen=True)
class MetricSpec:
    pattern: str
    type: MetricType
    unit: str
    meaning: str
    regex: re.Pattern[str] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        parts = []
        pos = 0
        for m in _PLACEHOLDER_RE.finditer(self.pattern):
            parts.append(re.escape(self.pattern[pos : m.start()]))
            parts.append(PLACEHOLDERS[m.group(1)].regex)
            pos = m.end()
        parts.append(re.escape(self.pattern[pos:]))
        object.__setattr__(self, "regex", re.compile("".join(parts)))


C, G, T = MetricType.COUNTER, MetricType.GAUGE, MetricType.TIMER

CATALOGUE: tuple[MetricSpec, ...] = (
    # Documents through the pipeline.
    MetricSpec("documents.ingested", C, "documents", "documents accepted for ingestion"),
    MetricSpec("documents.completed", C, "documents", "documents that reached `complete`"),
    MetricSpec(
        "documents.failed.<stage>.<error_class>",
        C,
        "documents",
        "documents failed permanently (bad input, auth, quota) in a stage",
    ),
    MetricSpec(
        "documents.dead.<error_class>",
        C,
        "documents",
        "documents whose retries ran out, by the class of the last error",
    ),
    MetricSpec(
        "documents.retried.<stage>.<error_class>",
        C,
        "documents",
        "stage attempts that ended in a scheduled retry",
    ),
    MetricSpec("stage.<stage>.duration", T, "ms", "wall time of one stage attempt"),
    MetricSpec(
        "group.documents",
        C,
        "documents",
        "documents that ended a stage inside a group; mean group size = "
        "`divideSeries(group.documents, group.stages)`",
    ),
    MetricSpec("group.stages", C, "stages", "stages run by a group (one per group per stage)"),
    MetricSpec(
        "group.split",
        C,
        "groups",
        "groups whose stage crashed and whose members went on one by one",
    ),
    # Embedding batches.
    MetricSpec(
        "embed.requests",
        C,
        "requests",
        "embedding requests whose vectors were stored (one per batch; retries are in "
        "`api.<service>.retries`)",
    ),
    MetricSpec(
        "embed.inputs",
        C,
        "inputs",
        "texts embedded; inputs per request = `divideSeries(embed.inputs, embed.requests)`",
    ),
    MetricSpec(
        "embed.tokens_estimated",
        C,
        "tokens",
        "tokens embedded as counted locally (tiktoken) before sending; tokens per request = "
        "`divideSeries(embed.tokens_estimated, embed.requests)`; billed: `tokens.<model>`",
    ),
    # Remote APIs.
    MetricSpec("api.<service>.latency", T, "ms", "latency of one HTTP request to the service"),
    MetricSpec("api.<service>.status.<code>", C, "requests", "responses by HTTP status code"),
    MetricSpec(
        "api.<service>.errors.<error_class>",
        C,
        "requests",
        "requests that got no usable response (timeout, connection error, malformed reply)",
    ),
    MetricSpec("api.<service>.retries", C, "requests", "requests retried after a failure"),
    MetricSpec("api.<service>.rate_limited", C, "requests", "429 rate-limit responses"),
    MetricSpec(
        "api.<service>.breaker.<state>", C, "transitions", "circuit breaker entered this state"
    ),
    MetricSpec(
        "ratelimit.<service>.wait", T, "ms", "time spent waiting for the client-side rate limiter"
    ),
    MetricSpec("tokens.<model>", C, "tokens", "tokens billed by the embedding API (usage)"),
    MetricSpec("cost.<model>.microusd", C, "µUSD", "estimated spend, millionths of a US dollar"),
    # Processes.
    MetricSpec(
        "worker.<slot>.uss", G, "bytes", "unique set size of the worker (what killing it frees)"
    ),
    MetricSpec("worker.restarts.<reason>", C, "restarts", "worker processes replaced, by reason"),
    MetricSpec("workers.alive", G, "processes", "worker processes currently running"),
    # Queue.
    MetricSpec("queue.depth.<status>", G, "documents", "documents in each status"),
    MetricSpec(
        "queue.oldest_runnable_age",
        G,
        "seconds",
        "age of the oldest document waiting to be claimed (0 when none)",
    ),
    MetricSpec("leases.expired", C, "documents", "leases reclaimed from workers that went silent"),
    MetricSpec(
        "leases.lost", C, "documents", "documents a worker let go because another had taken them"
    ),
    MetricSpec(
        "db.reconnects", C, "outages", "times a worker lost its database connection and waited"
    ),
    # The HTTP API's guards (supervisor.http.auth, .limits).
    MetricSpec(
        "http.refused.<reason>",
        C,
        "requests",
        "HTTP requests or connections refused: unauthenticated, forbidden, rate_limited, "
        "body_deadline, header_deadline, per_ip, total",
    ),
)

del C, G, T

_PREFIX_RE = re.compile(r"[a-z][a-z0-9_-]*(?:\.[a-z][a-z0-9_-]*)*")
_SEGMENT_BAD = re.compile(r"[^a-z0-9_-]+")


def metric_segment(value: str) -> str:
    """Make a free-form value (a model name) safe as one path segment: lower case, and
    every run of characters other than ``[a-z0-9_-]`` (dots included) becomes ``_``."""
    segment = _SEGMENT_BAD.sub("_", value.lower()).strip("_")
    if not segment:
        raise ValueError(f"{value!r} has no characters usable in a metric path")
    return segment


def lookup(name: str) -> MetricSpec | None:
    for spec in CATALOGUE:
        if spec.regex.fullmatch(name):
            return spec
    return None


def render_catalogue_markdown() -> str:
    """The catalogue as a Markdown table (for the README), followed by the placeholders."""
    lines = [
        "| metric | type | unit | meaning |",
        "|---|---|---|---|",
        *(
            f"| `{spec.pattern}` | {spec.type} | {spec.unit} | {spec.meaning} |"
            for spec in CATALOGUE
        ),
        "",
        "| placeholder | values |",
        "|---|---|",
        *(f"| `<{name}>` | {p.meaning} |" for name, p in PLACEHOLDERS.items()),
        "",
    ]
    return "\n".join(lines)


def _strict_from_env() -> bool:
    return os.environ.get("INGESTD_METRICS_STRICT", "").lower() in {"1", "true", "yes"}


_MAX_REPORTED = 1000


class Metrics:
    """Emit catalogued metrics to statsd. Construct with ``from_settings`` in each process."""

    def __init__(
        self,
        client: statsd.StatsClient | None,
        *,
        role: str,
        slot: int | None = None,
        strict: bool | None = None,
    ) -> None:
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; expected one of {', '.join(ROLES)}")
        self._client = client
        self.role = role
        self.slot = slot
        self.strict = _strict_from_env() if strict is None else strict
        self._pid = os.getpid()
        self._known: dict[str, MetricType] = {}
        self._reported: set[str] = set()

    @classmethod
    def from_settings(
        cls,
        host: str | None,
        port: int = 8125,
        prefix: str = "ingestd",
        role: str = "supervisor",
        slot: int | None = None,
        *,
        strict: bool | None = None,
    ) -> Metrics:
        """A client for this process. ``host=None`` configures metrics off (validation only)."""
        if not _PREFIX_RE.fullmatch(prefix):
            raise ValueError(f"invalid statsd prefix {prefix!r}: dot-separated lower-case words")
        if host is None:
            return cls(None, role=role, slot=slot, strict=strict)
        client = statsd.StatsClient(host, port, prefix=prefix, ipv6=":" in host)
        return cls(client, role=role, slot=slot, strict=strict)

    @property
    def enabled(self) -> bool:
        return self._client is not None

    # -- validation ---------------------------------------------------------

    def _check(self, name: str, kind: MetricType) -> bool:
        if os.getpid() != self._pid:
            raise RuntimeError(
                f"Metrics created in process {self._pid} used in process {os.getpid()}: "
                "create the statsd client after fork"
            )
        known = self._known.get(name)
        if known is None:
            spec = lookup(name)
            if spec is not None:
                known = self._known[name] = spec.type
        if known is kind:
            return True
        problem = (
            f"metric {name!r} is not in the catalogue (shared/telemetry/metrics.py)"
            if known is None
            else f"metric {name!r} is a {known}, not a {kind}"
        )
        if self.strict:
            raise UnknownMetric(problem)
        if name not in self._reported and len(self._reported) < _MAX_REPORTED:
            self._reported.add(name)
            _log.error("%s; not sent", problem)
        return False

    # -- emitting -----------------------------------------------------------

    def incr(self, name: str, count: int = 1, rate: float = 1.0) -> None:
        if self._check(name, MetricType.COUNTER) and self._client is not None:
            self._client.incr(name, count, rate)

    def gauge(self, name: str, value: float, *, delta: bool = False) -> None:
        if self._check(name, MetricType.GAUGE) and self._client is not None:
            self._client.gauge(name, value, delta=delta)

    def timing(self, name: str, value: float, rate: float = 1.0) -> None:
        """Record a duration in milliseconds. Counts are counters (``incr``), never
        timers: statsd and Graphite treat every timer sample as milliseconds."""
        if self._check(name, MetricType.TIMER) and self._client is not None:
            self._client.timing(name, value, rate)

    @contextmanager
    def timer(self, name: str) -> Iterator[None]:
        """Time the block (also when it raises) and send it as ``name`` in ms."""
        ok = self._check(name, MetricType.TIMER)
        start = time.perf_counter()
        try:
            yield
        finally:
            if ok and self._client is not None:
                self._client.timing(name, (time.perf_counter() - start) * 1000.0)

    @contextmanager
    def pipeline(self) -> Iterator[MetricsBatch]:
        """Collect several metrics and send them packed into as few datagrams as possible
        when the block ends (also when it raises)."""
        batch = MetricsBatch(self)
        try:
            yield batch
        finally:
            batch.send()

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


class MetricsBatch:
    """Metrics collected by ``Metrics.pipeline``; validated as they are added."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._pipe = metrics._client.pipeline() if metrics._client is not None else None

    def incr(self, name: str, count: int = 1, rate: float = 1.0) -> None:
        if self._metrics._check(name, MetricType.COUNTER) and self._pipe is not None:
            self._pipe.incr(name, count, rate)

    def gauge(self, name: str, value: float, *, delta: bool = False) -> None:
        if self._metrics._check(name, MetricType.GAUGE) and self._pipe is not None:
            self._pipe.gauge(name, value, delta=delta)

    def timing(self, name: str, value: float, rate: float = 1.0) -> None:
        if self._metrics._check(name, MetricType.TIMER) and self._pipe is not None:
            self._pipe.timing(name, value, rate)

    def send(self) -> None:
        if self._pipe is not None:
            self._pipe.send()
