"""The lease holder's duties: tuned before they start, run only by the holder, reported, stopped and handed on."""

from __future__ import annotations

import asyncio
import json

import pytest

from apollo.client.context import ClientContext
from apollo.cluster.duties import STATUS_SETTING, ManagerDuties
from apollo.cluster.passes import PeriodicPass
from apollo.cluster.rebalance import Rebalancer
from apollo.cluster.remote_drives import ClusterDrives
from apollo.cluster.scrub import Scrubber
from apollo.cluster.tuning import SETTING_PREFIX
from apollo.meta.service import MetaService
from apollo.meta.store import SqlStore
from apollo.proto.cluster_map import ClusterMap

KNOBS = {"scrub_bytes_per_s": "1000", "scrub_mode": "shallow", "scrub_interval_s": "60",
         "rebalance_tolerance": "0.2", "rebalance_interval_s": "90", "drive_offline_grace_s": "7",
         "repair_parallel": "3", "repair_paused": "1"}  # fmt: skip


async def _empty_map() -> ClusterMap:
    return ClusterMap(epoch=-1)


def _duties(meta: MetaService, holder: str, **options) -> ManagerDuties:
    return ManagerDuties(ClientContext(meta, {}), ClusterDrives(meta, _empty_map), holder, lease_ttl_s=30, **options)


def test_only_the_holder_runs_its_duties_tuned_from_the_settings_and_reports_repair(tmp_path):
    store = SqlStore(tmp_path / "meta.db")
    for name, value in KNOBS.items():
        store.set_setting(SETTING_PREFIX + name, value)
    meta = MetaService(store)
    events: list[str] = []

    async def duty() -> None:
        events.append("started")
        try:
            await asyncio.Event().wait()
        finally:
            events.append("cancelled")

    async def scenario() -> None:
        roles: list[bool] = []
        first, second = _duties(meta, "holder-a", on_change=roles.append), _duties(meta, "holder-b")
        scrub, rebalance = Scrubber(ClientContext(meta, {}), set), Rebalancer(meta, first.repair.drives)
        first.add_pass(scrub)
        first.add_pass(rebalance)
        first.add(duty)
        await first.claim()
        await second.claim()
        assert first.held and not second.held
        assert (scrub.budget.rate, scrub.mode, scrub.interval_s) == (1000, "shallow", 60)
        assert (rebalance.tolerance, rebalance.interval_s) == (0.2, 90)
        assert first.lifecycle.offline_grace_s == 7
        assert (first.repair.parallel, first.repair.paused) == (3, True)
        assert scrub.retune == first.retune  # a pass rereads the knobs before it starts
        await asyncio.sleep(0.1)
        status = json.loads(await meta.get_setting(STATUS_SETTING))
        assert (status["backlog"], status["degraded_groups"], status["bytes_total"]) == (0, 0, 0)
        await first.claim()  # the lease is renewed, not taken again: the duties run once
        assert events == ["started"]
        await first.stop()
        assert events == ["started", "cancelled"] and not first.held and roles == [True, False]
        await second.claim()  # stopping released the lease: no wait for its expiry
        assert second.held
        await second.stop()

    try:
        asyncio.run(scenario())
    finally:
        meta.close()


def test_a_pass_without_known_knobs_is_refused_rather_than_run_untuned(tmp_path):
    class Unknown(PeriodicPass):
        name = "unknown"

        async def begin(self) -> dict:
            return {}

        async def advance(self, current: dict) -> bool:
            return True

    meta = MetaService(SqlStore(tmp_path / "meta.db"))
    try:
        with pytest.raises(ValueError, match="unknown"):
            _duties(meta, "holder").add_pass(Unknown(meta, 60))
    finally:
        meta.close()
