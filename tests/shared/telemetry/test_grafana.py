"""The shipped Grafana dashboard and alert rules: structurally valid, and every Graphite
path they query names a catalogued metric of the right type.

No Grafana binary can be installed here, so this is structural validation: the keys
Grafana's importer and file provisioning require, and the metric paths."""

from __future__ import annotations

import itertools
import json
import re
from importlib.resources import files
from typing import Any

import pytest
import yaml

from ingestd.shared.settings import Settings
from ingestd.shared.telemetry.metrics import CATALOGUE, MetricType
from tests.shared.telemetry.graphite_paths import (
    UnresolvedPath,
    expand_braces,
    paths_in,
    resolve,
    resolve_target,
)

GRAFANA = files("ingestd.shared.telemetry") / "grafana"
PREFIX = "ingestd"
DASHBOARD_VARIABLES = {"prefix": PREFIX}
ROWS = ["Throughput", "Latency", "Embedding", "Remote APIs", "Queue", "Processes"]
MIB = 1024 * 1024
# Catalogued but on no panel, each for a reason.
NOT_CHARTED = {
    "leases.expired": "catalogued, but nothing sends it (leases are reclaimed in SQL)",
}


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return json.loads((GRAFANA / "dashboard.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def alerts_text() -> str:
    return (GRAFANA / "alerts.yaml").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def alerts(alerts_text: str) -> dict[str, Any]:
    return yaml.safe_load(alerts_text)


def _rules(alerts: dict[str, Any]) -> list[dict[str, Any]]:
    return [rule for group in alerts["groups"] for rule in group["rules"]]


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def _dashboard_targets(dashboard: dict[str, Any]) -> list[str]:
    targets = [t["target"] for p in _panels(dashboard) for t in p["targets"]]
    for annotation in dashboard["annotations"]["list"]:
        if annotation.get("datasource", {}).get("type") == "graphite":
            targets.append(annotation["target"]["target"])
    return targets


def _alert_targets(alerts: dict[str, Any]) -> list[str]:
    return [
        d["model"]["target"]
        for rule in _rules(alerts)
        for d in rule["data"]
        if d["datasourceUid"] != "__expr__"
    ]


# -- the dashboard ------------------------------------------------------------------


def test_dashboard_has_the_schema_essentials(dashboard: dict[str, Any]) -> None:
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", dashboard["uid"])
    assert dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 36
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    assert all(isinstance(i, int) for i in ids)
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert set(grid) == {"h", "w", "x", "y"} and all(isinstance(v, int) for v in grid.values())
        assert grid["w"] >= 1 and grid["h"] >= 1 and grid["x"] >= 0 and grid["x"] + grid["w"] <= 24
        assert panel["title"]
    for panel in _panels(dashboard):
        assert panel["type"] == "timeseries"
        assert panel["datasource"] == {"type": "graphite", "uid": "${DS_GRAPHITE}"}
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]
        assert all(t["target"] and t["datasource"] == panel["datasource"] for t in panel["targets"])
        assert "unit" in panel["fieldConfig"]["defaults"], panel["title"]


def test_panels_do_not_overlap(dashboard: dict[str, Any]) -> None:
    def cells(panel: dict[str, Any]) -> set[tuple[int, int]]:
        g = panel["gridPos"]
        return {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }

    for a, b in itertools.combinations(dashboard["panels"], 2):
        assert not cells(a) & cells(b), f"{a['title']!r} overlaps {b['title']!r}"


def test_rows_in_order_each_with_panels(dashboard: dict[str, Any]) -> None:
    rows = [p for p in dashboard["panels"] if p["type"] == "row"]
    assert [r["title"] for r in rows] == ROWS
    ys = [r["gridPos"]["y"] for r in rows] + [10**6]
    for row, (top, bottom) in zip(rows, itertools.pairwise(ys), strict=True):
        inside = [p for p in _panels(dashboard) if top < p["gridPos"]["y"] < bottom]
        assert inside, f"row {row['title']!r} has no panel"


def test_datasource_input_and_prefix_variable(dashboard: dict[str, Any]) -> None:
    (ds_input,) = dashboard["__inputs"]
    assert ds_input["name"] == "DS_GRAPHITE"
    assert (ds_input["type"], ds_input["pluginId"]) == ("datasource", "graphite")
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    # The same name as a datasource variable: file provisioning does not substitute
    # __inputs, and then ${DS_GRAPHITE} resolves to this variable instead.
    assert variables["DS_GRAPHITE"]["type"] == "datasource"
    assert variables["DS_GRAPHITE"]["query"] == "graphite"
    prefix = variables["prefix"]
    assert prefix["query"] == PREFIX and prefix["current"]["value"] == PREFIX
    # Every path goes through the variable, so another STATSD_PREFIX needs no edit.
    for target in _dashboard_targets(dashboard):
        for path in paths_in(target):
            assert ".$prefix." in path, path


def test_every_dashboard_path_is_a_catalogued_metric_of_its_type(
    dashboard: dict[str, Any],
) -> None:
    for target in _dashboard_targets(dashboard):
        assert resolve_target(target, PREFIX, DASHBOARD_VARIABLES), target


def test_every_catalogued_metric_is_charted_or_excused(dashboard: dict[str, Any]) -> None:
    charted = {
        spec.pattern
        for target in _dashboard_targets(dashboard)
        for r in resolve_target(target, PREFIX, DASHBOARD_VARIABLES)
        for spec in r.specs
    }
    assert {s.pattern for s in CATALOGUE} - charted == set(NOT_CHARTED)


def test_memory_thresholds_are_the_settings_defaults(dashboard: dict[str, Any]) -> None:
    (uss,) = [p for p in _panels(dashboard) if "worker.*.uss" in p["targets"][0]["target"]]
    steps = [s["value"] for s in uss["fieldConfig"]["defaults"]["thresholds"]["steps"]]
    fields = Settings.model_fields
    assert steps == [
        None,
        fields["memory_soft_mb"].default * MIB,
        fields["memory_hard_mb"].default * MIB,
    ]


# -- the alert rules ----------------------------------------------------------------

EXPRESSION_TYPES = {"reduce", "threshold", "math", "classic_conditions", "resample"}


def test_alert_file_has_the_provisioning_keys(alerts: dict[str, Any]) -> None:
    assert alerts["apiVersion"] == 1
    assert alerts["groups"]
    for group in alerts["groups"]:
        assert {"orgId", "name", "folder", "interval", "rules"} <= set(group)
        assert re.fullmatch(r"[0-9]+[smh]", group["interval"])
    rules = _rules(alerts)
    uids = [r["uid"] for r in rules]
    assert len(uids) == len(set(uids))
    assert len({r["title"] for r in rules}) == len(rules)
    for rule in rules:
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,40}", rule["uid"]), rule["uid"]
        assert re.fullmatch(r"[0-9]+[smh]", rule["for"]), rule["title"]
        assert rule["noDataState"] in {"NoData", "Alerting", "OK"}
        assert rule["execErrState"] in {"Error", "Alerting", "OK"}
        assert rule["labels"]["severity"] in {"page", "ticket"}
        assert rule["annotations"]["summary"]
        refs = [d["refId"] for d in rule["data"]]
        assert len(refs) == len(set(refs)) and rule["condition"] in refs, rule["title"]
        for d in rule["data"]:
            model = d["model"]
            assert model["refId"] == d["refId"]
            if d["datasourceUid"] == "__expr__":
                assert model["type"] in EXPRESSION_TYPES
                used = (
                    [c["query"]["params"][0] for c in model["conditions"]]
                    if model["type"] == "classic_conditions"
                    else [model["expression"]]
                )
                assert set(used) <= set(refs) - {d["refId"]}, rule["title"]
            else:
                assert d["datasourceUid"] == "graphite"
                window = d["relativeTimeRange"]
                assert window["from"] > window["to"] >= 0
                assert isinstance(model["target"], str)


def test_alert_file_has_no_dollar_sign(alerts_text: str) -> None:
    # Grafana expands $NAME in provisioning files as an environment variable, so a
    # Grafana template variable or math expression ($B > 0) would be silently mangled.
    assert "$" not in alerts_text


def test_every_alert_path_is_a_catalogued_metric_of_its_type(alerts: dict[str, Any]) -> None:
    for target in _alert_targets(alerts):
        assert resolve_target(target, PREFIX), target


def test_memory_alert_is_ninety_percent_of_the_soft_ceiling(alerts: dict[str, Any]) -> None:
    (rule,) = [r for r in _rules(alerts) if r["uid"] == "ingestd-memory-creeping"]
    (threshold,) = [d for d in rule["data"] if d["model"].get("type") == "threshold"]
    (value,) = threshold["model"]["conditions"][0]["evaluator"]["params"]
    assert value == round(0.9 * Settings.model_fields["memory_soft_mb"].default * MIB)


# -- the path check itself ----------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "problem"),
    [
        ("stats.$prefix.documents.exploded", "not in the metric catalogue"),
        ("sumSeries(stats_counts.$prefix.documents.{completed,vanished})", "not in the"),
        ("stats.$prefix.queue.depth.queued", "holds counters"),  # a gauge
        ("stats.gauges.$prefix.documents.completed", "holds gauges"),  # a counter
        ("stats.timers.$prefix.embed.inputs.mean", "holds timers"),  # counts are counters
        ("stats.timers.$prefix.stage.parsing.duration.p99", "not a statsd timer aggregate"),
        ("stats.gauges.$prefix.queue.depth.{queued,queud}", "not in the"),
        ("stats.gauges.$prefix.worker.x.uss", "not in the"),
        ("stats.$other.documents.completed", "template variable"),
        ("stats.elsewhere.documents.completed", "not under the statsd prefix"),
        ("alias(ingestd.documents.completed, 'x')", "no stats.* path"),
        ("sumSeries(stats.$prefix.documents.completed, ingestd.documents.x)", "statsd root"),
    ],
)
def test_path_check_refuses(target: str, problem: str) -> None:
    with pytest.raises(UnresolvedPath, match=re.escape(problem)):
        resolve_target(target, PREFIX, DASHBOARD_VARIABLES)


def test_path_check_accepts_globs_and_dotted_prefixes() -> None:
    (r,) = resolve("stats.timers.a.b.stage.*.duration.upper_90", "a.b")
    assert r.kind is MetricType.TIMER
    assert [s.pattern for s in r.specs] == ["stage.<stage>.duration"]
    resolved = resolve_target(
        "groupByNodes(stats.$prefix.documents.failed.*.{auth,quota}, 'sum', -2, -1)",
        PREFIX,
        DASHBOARD_VARIABLES,
    )
    assert [r.path for r in resolved] == [
        "ingestd.documents.failed.*.auth",
        "ingestd.documents.failed.*.quota",
    ]
    assert expand_braces("a.{b,c}.{d,e}") == ["a.b.d", "a.b.e", "a.c.d", "a.c.e"]
