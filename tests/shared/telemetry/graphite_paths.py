"""Graphite paths in Grafana targets, resolved against the metric catalogue.

Stock statsd writes a counter ``c`` as ``stats.<prefix>.c`` (rate per second) and
``stats_counts.<prefix>.c`` (count per flush), a gauge ``g`` as ``stats.gauges.<prefix>.g``
and a timer ``t`` as ``stats.timers.<prefix>.t.<aggregate>``. A path in a dashboard or an
alert names a metric only if it resolves, through its ``*``/``?``/``[…]``/``{a,b}`` globs,
to catalogue entries of the type its statsd namespace implies.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

from ingestd.shared.telemetry.metrics import CATALOGUE, PLACEHOLDERS, MetricSpec, MetricType

_SEGMENT = r"(?:[A-Za-z0-9_\-*?$]|\{[^{}]*\}|\[[^\]]*\])+"
# A path starts at a statsd root not preceded by a name character (so `xstats.` is not one).
PATH_RE = re.compile(rf"(?<![\w.$])(?:stats_counts|stats)(?:\.{_SEGMENT})+")
# What a metric path looks like if it is not under a statsd root: left over, it is unchecked.
_STRAY_PATH_RE = re.compile(r"[A-Za-z_$][\w*{}$-]*\.[A-Za-z_*{$]")

# Stock statsd's timer aggregates (percentThreshold adds the _<N> forms).
TIMER_AGGREGATE_RE = re.compile(
    r"count|count_ps|lower|upper|mean|median|std|sum|sum_squares"
    r"|(?:upper|mean|sum|sum_squares)_[0-9]{1,2}"
)

_NAMESPACES: tuple[tuple[str, MetricType], ...] = (
    ("stats.timers.", MetricType.TIMER),
    ("stats.gauges.", MetricType.GAUGE),
    ("stats_counts.", MetricType.COUNTER),
    ("stats.", MetricType.COUNTER),
)


@dataclass(frozen=True)
class Resolved:
    path: str
    kind: MetricType
    specs: tuple[MetricSpec, ...]


class UnresolvedPath(ValueError):
    """A Graphite path (or a target) that does not name catalogued metrics."""


def substitute(target: str, variables: dict[str, str]) -> str:
    """Grafana's ``$name``, ``${name}`` and ``[[name]]`` forms replaced by their values."""
    for name, value in variables.items():
        n = re.escape(name)
        target = re.sub(rf"\$\{{{n}\}}|\${n}\b|\[\[{n}\]\]", lambda _, v=value: v, target)
    return target


def paths_in(target: str) -> list[str]:
    """Every statsd path in a Graphite target; raises if the target has none or holds a
    dotted name outside them (a path this check would otherwise silently skip)."""
    paths = PATH_RE.findall(target)
    if not paths:
        raise UnresolvedPath(f"no stats.* path in target {target!r}")
    rest = PATH_RE.sub(" ", target)
    rest = re.sub(r"'[^']*'|\"[^\"]*\"", "''", rest)  # aliases are free text
    stray = _STRAY_PATH_RE.search(rest)
    if stray:
        raise UnresolvedPath(f"{stray.group(0)!r}… in {target!r} is not under a statsd root")
    return paths


def expand_braces(path: str) -> list[str]:
    """Graphite's ``{a,b}`` alternatives, one path each (Graphite does not nest them)."""
    m = re.search(r"\{([^{}]*)\}", path)
    if m is None:
        return [path]
    return [
        expanded
        for choice in m.group(1).split(",")
        for expanded in expand_braces(path[: m.start()] + choice + path[m.end() :])
    ]


def _spec_segments(spec: MetricSpec) -> list[str]:
    return spec.pattern.split(".")


def _segment_matches(glob: str, spec_segment: str) -> bool:
    placeholder = re.fullmatch(r"<([a-z_]+)>", spec_segment)
    wild = any(c in glob for c in "*?[")
    if placeholder is None:
        return fnmatch.fnmatchcase(spec_segment, glob) if wild else glob == spec_segment
    if wild:
        return True  # ranges over the placeholder's values
    return re.fullmatch(PLACEHOLDERS[placeholder.group(1)].regex, glob) is not None


def specs_matching(name_glob: str) -> tuple[MetricSpec, ...]:
    """Catalogue entries that a glob over metric names (prefix removed) can match."""
    segments = name_glob.split(".")
    return tuple(
        spec
        for spec in CATALOGUE
        if len(_spec_segments(spec)) == len(segments)
        and all(_segment_matches(g, s) for g, s in zip(segments, _spec_segments(spec), strict=True))
    )


def resolve(path: str, prefix: str) -> list[Resolved]:
    """Resolve one statsd path (braces expanded); raise ``UnresolvedPath`` unless every
    alternative names at least one catalogued metric of the namespace's type."""
    kind, rest = next((k, path[len(ns) :]) for ns, k in _NAMESPACES if path.startswith(ns))
    if "$" in path:
        raise UnresolvedPath(f"{path!r}: unresolved template variable")
    resolved = []
    for alternative in expand_braces(rest):
        if not alternative.startswith(prefix + "."):
            raise UnresolvedPath(f"{path!r}: not under the statsd prefix {prefix!r}")
        name = alternative[len(prefix) + 1 :]
        if kind is MetricType.TIMER:
            name, _, aggregate = name.rpartition(".")
            if not TIMER_AGGREGATE_RE.fullmatch(aggregate):
                raise UnresolvedPath(f"{path!r}: {aggregate!r} is not a statsd timer aggregate")
        specs = specs_matching(name)
        if not specs:
            raise UnresolvedPath(f"{path!r}: {name!r} is not in the metric catalogue")
        # Only metrics of the namespace's type exist under it: a glob that could also
        # match another type's pattern (worker.*.uss, worker.restarts.<reason>) is fine.
        of_kind = tuple(s for s in specs if s.type is kind)
        if not of_kind:
            names = ", ".join(f"{s.pattern} ({s.type})" for s in specs)
            raise UnresolvedPath(f"{path!r}: its namespace holds {kind}s, not {names}")
        resolved.append(Resolved(alternative, kind, of_kind))
    return resolved


def resolve_target(
    target: str, prefix: str, variables: dict[str, str] | None = None
) -> list[Resolved]:
    """Every path in a Graphite target, resolved; raises on the first that does not."""
    target = substitute(target, variables or {})
    return [r for path in paths_in(target) for r in resolve(path, prefix)]
