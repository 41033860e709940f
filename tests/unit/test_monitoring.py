"""The shipped Prometheus alert rules and Grafana dashboard (deploy/): promtool checks and unit-tests the
rules, and every metric a rule or a panel queries must be one apollo.metrics defines, so renaming a
metric cannot silently blank a panel or mute an alert.

promtool comes from Debian's ``prometheus`` package: installed here when missing and running as root
(``./run tests`` installs it too); a missing promtool fails in CI and skips elsewhere, as PostgreSQL does.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from apollo import metrics
from apollo.client.context import ClientContext
from apollo.cluster.scrub import Scrubber
from apollo.meta.service import MetaService
from apollo.meta.store import SqlStore
from apollo.roles.storage import StorageConfig, StorageProcess
from apollo.storage.drive import Drive, format_drive

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES = DEPLOY / "prometheus" / "apollo-alerts.yml"
RULE_TESTS = DEPLOY / "prometheus" / "apollo-alerts.test.yml"
DASHBOARD = DEPLOY / "grafana" / "apollo-dashboard.json"
METRIC_NAME = re.compile(r"\bapollo_[a-z0-9_]+")
# The series names a metric family is exposed under, by type (prometheus_client names counters without _total).
SERIES_SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
# Grafana's variables, replaced by values Prometheus parses, to check the panels' PromQL with promtool.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$job": ".*", "$instance": ".*"}
# What the operations issue asks the dashboard to show: each of these must be queried by some panel.
DASHBOARD_MUST_SHOW = {
    "apollo_s3_requests_total", "apollo_s3_request_seconds_bucket", "apollo_s3_bytes_in_total",
    "apollo_s3_bytes_out_total", "apollo_drives", "apollo_drive_free_bytes", "apollo_repair_backlog",
    "apollo_degraded_groups", "apollo_segments_at_risk", "apollo_scrub_progress_ratio",
    "apollo_stalled_connections_total", "apollo_meta_rpc_total", "apollo_meta_rpc_seconds_bucket", "apollo_build_info",
}  # fmt: skip


def defined_series() -> set[str]:
    """Every series name apollo.metrics exposes, labelled or not (a labelled metric has no samples until used)."""
    names = set()
    for family in metrics.registry.collect():
        names.update(family.name + suffix for suffix in SERIES_SUFFIXES.get(family.type, ("",)))
    return names


def unknown_metrics(exprs: list[str]) -> set[str]:
    return {name for expr in exprs for name in METRIC_NAME.findall(expr)} - defined_series()


def dashboard_panels(dashboard: dict) -> Iterator[dict]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # a collapsed row holds its panels


def dashboard_exprs(dashboard: dict) -> list[str]:
    return [target["expr"] for panel in dashboard_panels(dashboard) for target in panel.get("targets", [])]


def alert_rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-qq", "prometheus"]
        if subprocess.run(install, env=env, capture_output=True).returncode != 0:  # a stale package list
            subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True)
            subprocess.run(install, env=env, capture_output=True)
        path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing in CI and could not be installed: apt-get install prometheus "
                        "(./run tests does, as root)")  # fmt: skip
        pytest.skip("promtool not installed (apt-get install prometheus)")
    return path


def run_promtool(promtool: str, *args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([promtool, *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=120)


# -- alert rules ---------------------------------------------------------------------------------------------


def test_alert_rules_pass_promtool_check(promtool: str) -> None:
    result = run_promtool(promtool, "check", "rules", RULES)
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_pass_their_unit_tests(promtool: str) -> None:
    result = run_promtool(promtool, "test", "rules", RULE_TESTS.name, cwd=RULE_TESTS.parent)
    assert result.returncode == 0, result.stdout + result.stderr


def test_rule_tests_fail_when_an_expected_alert_changes(promtool: str, tmp_path: Path) -> None:
    """The unit tests can fail: the same tests with one expected label changed, or one alert no longer
    expected, must not pass (promtool would also pass a test file that checks nothing)."""
    shutil.copy(RULES, tmp_path / RULES.name)
    tests = RULE_TESTS.read_text()
    mutants = {
        "label": tests.replace("{severity: critical, state: failed,", "{severity: warning, state: failed,", 1),
        "missing": tests.replace("- exp_labels: {severity: warning, instance: \"stuck:9000\"",
                                 "- exp_labels: {severity: warning, instance: \"fresh:9000\"", 1),
    }  # fmt: skip
    for name, text in mutants.items():
        assert text != tests, f"mutant {name} did not change the tests: update this test"
        (tmp_path / f"{name}.test.yml").write_text(text)
        result = run_promtool(promtool, "test", "rules", f"{name}.test.yml", cwd=tmp_path)
        assert result.returncode != 0, f"promtool passed the {name} mutant:\n{result.stdout}"
        assert "FAILED" in result.stdout + result.stderr


def test_every_alert_is_unit_tested_and_tells_what_to_do() -> None:
    tested = set(re.findall(r"alertname:\s*(\w+)", RULE_TESTS.read_text()))
    for rule in alert_rules():
        assert rule["alert"] in tested, f"{rule['alert']} has no case in {RULE_TESTS.name}"
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        description = rule["annotations"]["description"]
        assert rule["annotations"]["summary"] and description, rule["alert"]
        assert "apollo admin" in description or "systemctl" in description, (
            f"{rule['alert']}: the description should name the command to run next"
        )


def test_alert_rules_query_only_defined_metrics() -> None:
    assert not unknown_metrics([rule["expr"] for rule in alert_rules()])


# -- dashboard -----------------------------------------------------------------------------------------------


def test_dashboard_panels_query_only_defined_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = dashboard_exprs(dashboard)
    assert exprs, "the dashboard has no queries"
    assert not unknown_metrics(exprs)
    shown = {name for expr in exprs for name in METRIC_NAME.findall(expr)}
    assert shown >= DASHBOARD_MUST_SHOW, f"not on the dashboard: {sorted(DASHBOARD_MUST_SHOW - shown)}"


def test_metric_check_catches_an_unknown_name() -> None:
    """The check above can fail: a misspelt or removed metric, or a histogram queried without its suffix."""
    assert unknown_metrics(["rate(apollo_s3_requests_total[5m])", "apollo_drive_free_bytes"]) == set()
    assert unknown_metrics(["rate(apollo_s3_request_total[5m])"]) == {"apollo_s3_request_total"}
    assert unknown_metrics(["apollo_s3_request_seconds"]) == {"apollo_s3_request_seconds"}


def test_dashboard_imports_anywhere() -> None:
    """Every panel and query takes its data source from the ${DS_PROMETHEUS} variable, ids are unique, and
    every panel has a place on the grid."""
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    panels = list(dashboard_panels(dashboard))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    for panel in panels:
        assert {"h", "w", "x", "y"} <= panel["gridPos"].keys(), panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
    for name in ("job", "instance"):
        assert variables[name]["datasource"]["uid"] == "${DS_PROMETHEUS}"


def test_dashboard_queries_are_valid_promql(promtool: str, tmp_path: Path) -> None:
    """promtool parses each panel query, Grafana's variables replaced, as a recording rule."""
    exprs = dashboard_exprs(json.loads(DASHBOARD.read_text()))
    for variable, value in GRAFANA_VARIABLES.items():
        exprs = [expr.replace(variable, value) for expr in exprs]
    assert not [expr for expr in exprs if "$" in expr], "a Grafana variable this test does not know"
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": f"panel:query{i}", "expr": expr}
                                                        for i, expr in enumerate(exprs)]}]}  # fmt: skip
    (tmp_path / "panels.yml").write_text(yaml.safe_dump(rules))
    result = run_promtool(promtool, "check", "rules", tmp_path / "panels.yml")
    assert result.returncode == 0, result.stdout + result.stderr


# -- the metrics the alerts added ----------------------------------------------------------------------------


def test_scrubber_publishes_when_the_next_pass_is_due(tmp_path: Path) -> None:
    """ApolloScrubBehindSchedule compares this with the time: the pass's start plus the interval."""
    meta = MetaService(SqlStore(tmp_path / "meta.db"))
    scrub = Scrubber(ClientContext(meta, {}), set)
    scrub.tune(0, "shallow", interval_s=3600)
    try:
        before = time.time()
        assert asyncio.run(scrub.step())  # an empty namespace: the pass starts and ends in one step
        started = scrub.state["last"]["started"]
        assert before <= started <= time.time()
        assert metrics.registry.get_sample_value("apollo_scrub_next_pass_due_timestamp_seconds") == started + 3600
        scrub.tune(0, "shallow", interval_s=60)  # `apollo admin scrub --interval 60`: due sooner
        assert asyncio.run(scrub.step()) is False
        assert metrics.registry.get_sample_value("apollo_scrub_next_pass_due_timestamp_seconds") == started + 60
    finally:
        meta.close()


def test_storage_node_publishes_its_drives_space_and_health(tmp_path: Path) -> None:
    """ApolloDriveNearlyFull divides free by total bytes, in a cluster as on one server."""
    format_drive(tmp_path / "d1", "deployment")
    drive = Drive(tmp_path / "d1", "deployment")
    process = StorageProcess(StorageConfig([], "http://meta.invalid:9100", "key", "secret"))
    process.node.attach(drive)

    def sample(name: str) -> float | None:
        return metrics.registry.get_sample_value(name, {"drive": drive.drive_id})

    health, free, total, filesystem = process._probe()[drive.drive_id]
    assert health == "ok" and 0 < free <= total and filesystem == f"{os.stat(tmp_path / 'd1').st_dev:x}"
    assert (sample("apollo_drive_up"), sample("apollo_drive_free_bytes"), sample("apollo_drive_total_bytes")) == (
        1, free, total,
    )  # fmt: skip
    for child in (tmp_path / "d1").iterdir():  # wiped: the format file is gone
        if child.is_file():
            child.unlink()
    assert process._probe()[drive.drive_id][0] == "gone"
    assert (sample("apollo_drive_up"), sample("apollo_drive_free_bytes"), sample("apollo_drive_total_bytes")) == (
        0, 0, 0,
    )  # fmt: skip
