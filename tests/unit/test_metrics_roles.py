"""Each cluster role exports the metrics it owns (apollo.metrics.OWNED_BY_ROLE); nothing is owned by nobody."""

from __future__ import annotations

from apollo import metrics

ALL_IN_ONE_ONLY = {"apollo_meta_journal_errors"}  # the drive journal protects a SQLite database


def _families() -> set[str]:
    return {family.name for family in metrics.registry.collect()}


def test_every_metric_is_owned_by_a_role_or_is_the_all_in_one_servers():
    owned = set().union(*metrics.OWNED_BY_ROLE.values())
    assert _families() - owned == ALL_IN_ONE_ONLY
    assert owned <= _families(), owned - _families()  # no stale name in the table


def test_a_role_exports_only_what_it_owns(monkeypatch):
    monkeypatch.setattr(metrics, "_owned", None)
    everything = metrics.exposition().decode()
    assert "apollo_repair_backlog" in everything and "apollo_shard_requests_total" in everything
    metrics.serve_role("storage")
    try:
        text = metrics.exposition().decode()
    finally:
        monkeypatch.setattr(metrics, "_owned", None)
    assert "apollo_repair_backlog" not in text and "apollo_s3_requests_total" not in text
    assert "apollo_build_info" in text and "# TYPE apollo_drive_io_bytes_total counter" in text
