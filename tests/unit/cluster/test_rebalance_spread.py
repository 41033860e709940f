"""The rebalancer and the repair worker against the spread rule, on a real metadata store with crafted layouts.

No shard is written here: the rebalancer only plans (repair-queue rows), and the repair worker's target
choice is a pure step. That moves really happen, and reads survive a node lost afterwards, is
tests/cluster/test_node_drain.py's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter

import pytest

from apollo.cli import admin_cluster
from apollo.client.context import ClientContext
from apollo.cluster import admin, rebalance
from apollo.cluster.duties import STATUS_SETTING, ManagerDuties
from apollo.cluster.lifecycle import DriveLifecycle
from apollo.cluster.passes import request_setting
from apollo.cluster.rebalance import Rebalancer
from apollo.cluster.repair import DriveView, RepairWorker
from apollo.cluster.tuning import SETTING_PREFIX
from apollo.meta.service import MetaService
from apollo.meta.store import SqlStore
from apollo.proto.layout import Scheme, SegmentLayout
from apollo.proto.placement import Candidate, rank

NODES = {"a": 3, "b": 3, "c": 3}


def drive(name: str) -> str:
    """A drive id of the real form, named for the test: "a1" is node a's drive 1, aaaaaaaaaaaaaaa1."""
    return name[0] * 15 + name[1]


def drives(*names: str) -> tuple[str, ...]:
    return tuple(drive(n) for n in names)


DRIVES = [drive(f"{node}{i}") for node, n in NODES.items() for i in range(n)]
CROWDED = drives("a0", "a1", "a2", "b0", "b1", "c0")  # 3,2,1: losing node a loses three shards of a 4+2 segment


class Drives:
    """The ``ManagedDrives`` the duties read: one view the test changes at will."""

    domain_unit = "failure domains"

    def __init__(self, meta: MetaService) -> None:
        self.lifecycle = DriveLifecycle(meta)
        self.records: dict = {}
        self.offline: set[str] = set()

    def view(self) -> DriveView:
        up = [d for d in DRIVES if d not in self.offline]
        return DriveView(
            states={d: "offline" if d in self.offline else "online" for d in DRIVES}, writable=set(up),
            replaced_by={}, candidates=[Candidate(d, d[0]) for d in up], domain_of={d: d[0] for d in DRIVES},
        )  # fmt: skip


@pytest.fixture
def meta(tmp_path):
    store = SqlStore(tmp_path / "meta.db")
    now = time.time()
    for node, n in NODES.items():  # a cluster's rows, so `apollo admin status` sees live nodes
        store.register_node(node, f"http://{node}", "", [(drive(f"{node}{i}"), f"/{node}/{i}") for i in range(n)], now)
    service = MetaService(store)
    yield service
    service.close()


def add_segment(store: SqlStore, placed: tuple[str, ...], n: int) -> SegmentLayout:
    """A committed 4+2 segment of three stripes on ``placed``, written straight into the segments table."""
    layout = SegmentLayout(f"{n:032x}", 0, 4 * 65536 * 3, Scheme.parse("4+2"), 65536, n % 64, placed)
    with store.tx() as db:
        db.execute("INSERT INTO segments (data_id, seq, segment_id, offset_bytes, length, layout, pg) "
                   "VALUES (?, 0, ?, 0, ?, ?, ?)",
                   (f"data{n}", layout.segment_id, layout.length, json.dumps(layout.to_json()), layout.pg))  # fmt: skip
    return layout


def layout_of(store: SqlStore, segment_id: str) -> tuple[str, ...]:
    return tuple(json.loads(store.one("SELECT layout FROM segments WHERE segment_id = ?", (segment_id,))["layout"])
                 ["drives"])  # fmt: skip


async def run_pass(rebalancer: Rebalancer) -> dict:
    """Step the rebalancer until the pass it starts (or is in) is over; its final state."""
    await rebalancer.step()
    while rebalancer.state.get("current"):
        await rebalancer.step()
    return rebalancer.state["last"]


def status_text(meta: MetaService, capsys) -> str:
    """What `apollo admin status --database` prints, with the console's line wrapping undone."""
    admin_cluster.cmd_status(argparse.Namespace(database=str(meta.store.path), meta_dir=None))
    return " ".join(capsys.readouterr().out.split())


def test_the_rebalancer_counts_a_segment_at_risk_moves_it_to_2_2_2_and_then_counts_none(meta, capsys):
    store = meta.store
    crowded = add_segment(store, CROWDED, 0)
    for n in range(1, 6):
        add_segment(store, drives("a0", "a1", "b0", "b1", "c0", "c1"), n)
    managed = Drives(meta)
    rebalancer = Rebalancer(meta, managed.view)
    store.set_setting(SETTING_PREFIX + "rebalance_tolerance", "100")  # usage never asks for a move: the spread does
    duties = ManagerDuties(ClientContext(meta, {}), managed, "holder", lease_ttl_s=30)
    duties.add_pass(rebalancer)

    async def scenario() -> None:
        await duties.publish_status()
        assert json.loads(store.get_setting(STATUS_SETTING))["at_risk"] is None  # not measured yet
        first = await run_pass(rebalancer)
        assert (first["at_risk"], first["fixes"], first["moves"], first["again"]) == (1, 1, 1, True)
        await duties.publish_status()
        assert admin.status(store).repair["at_risk"] == 1
        [move] = store.all("SELECT * FROM repair_queue")
        assert (move["segment_id"], move["reason"]) == (crowded.segment_id, "rebalance")
        assert move["drive_id"][0] == "a" and move["target"] in drives("c1", "c2")
        # what the repair worker does once it has copied the shard
        assert store.commit_repair(crowded.segment_id, CROWDED, {move["shard_index"]: move["target"]})
        second = await run_pass(rebalancer)  # asked for by the first (``again``), without any request
        assert (second["at_risk"], second["moves"], second.get("again", False)) == (0, 0, False)
        assert second["request"] == first["request"] == 0.0
        await duties.publish_status()

    asyncio.run(scenario())
    assert sorted(Counter(d[0] for d in layout_of(store, crowded.segment_id)).values()) == [2, 2, 2]
    assert admin.status(store).repair["at_risk"] == 0
    assert "spread: 0 segments at risk" in status_text(meta, capsys)


def test_status_says_how_many_are_at_risk_and_warns_when_the_domains_are_too_few(meta, capsys):
    add_segment(meta.store, CROWDED, 0)
    managed = Drives(meta)
    rebalancer = Rebalancer(meta, managed.view)
    meta.store.set_setting(SETTING_PREFIX + "rebalance_tolerance", "100")
    duties = ManagerDuties(ClientContext(meta, {}), managed, "holder", lease_ttl_s=30)
    duties.add_pass(rebalancer)

    async def scenario() -> None:
        await run_pass(rebalancer)
        await duties.publish_status()

    asyncio.run(scenario())
    out = status_text(meta, capsys)
    assert "spread: 1 segments at risk (more shards in one failure domain than the live domains force, being " \
           "moved off their crowded domains)" in out
    assert "WARNING: 3 live failure domains for 6-wide segments: up to 2 shards of a segment share one" in out


def test_the_rebalancer_waits_out_an_offline_drive_and_keeps_the_request(meta, monkeypatch):
    """A pass while a drive is offline within its grace plans nothing (the drive may come back with every
    shard), and neither ends nor forgets the request it serves: once the drive is back, it measures afresh."""
    monkeypatch.setattr(rebalance, "OFFLINE_POLL_S", 0.0)
    add_segment(meta.store, CROWDED, 0)
    managed = Drives(meta)
    rebalancer = Rebalancer(meta, managed.view)
    rebalancer.tolerance = 100.0
    managed.offline = {drive("b2")}
    requested = time.time()
    meta.store.set_setting(request_setting("rebalance"), repr(requested))

    async def scenario() -> dict:
        for _ in range(5):
            await rebalancer.step()
        current = rebalancer.state["current"]
        assert current["waiting"] == [drive("b2")] and current["request"] == requested
        assert meta.store.repair_backlog() == 0
        managed.offline = set()
        return await run_pass(rebalancer)

    last = asyncio.run(scenario())
    assert last["request"] == requested and (last["at_risk"], last["fixes"]) == (1, 1)
    assert meta.store.queued_moves() == 1


@pytest.mark.parametrize("queued", ["repair", "move"])
@pytest.mark.parametrize("paused", [False, True], ids=["repairing", "repair-paused"])
def test_the_rebalancer_waits_for_repairs_and_moves_unless_repair_is_paused(meta, paused, queued):
    """Repairs go first, and a pass measures what the previous pass's moves left: with one queued, the
    rebalancer waits before measuring, unless an operator paused repair (which makes the moves too); then
    nothing would end meanwhile and the count of segments at risk is wanted now (CI runs saw the count wait
    on a repair queued while repair was paused, and on moves a pass planned just before the pause)."""
    crowded = add_segment(meta.store, CROWDED, 0)
    if queued == "repair":
        meta.store.report_damage(crowded.segment_id, 5, CROWDED[5], "a shard went missing", time.time())
    else:
        meta.store.queue_moves([(crowded.segment_id, 0, CROWDED[0], drive("c1"))], time.time())
    assert meta.store.repair_backlog() == 1
    managed = Drives(meta)
    rebalancer = Rebalancer(meta, managed.view, lambda: paused)
    rebalancer.tolerance = 100.0

    async def scenario() -> dict:
        for _ in range(3):
            await rebalancer.step()
        return rebalancer.state.get("current") or rebalancer.state["last"]

    state = asyncio.run(scenario())
    if paused:
        assert state["at_risk"] == 1 and "measured" in state
    else:
        assert state["segments"] == 0 and "measured" not in state


def test_usage_moves_keep_the_spread_legal():
    """Balancing usage never makes a segment at risk: a move leaves a domain only for one with room."""
    rebalancer = Rebalancer(None, lambda: None)
    view = Drives(None).view()
    domains = view.failure_domains()
    layout = SegmentLayout(f"{1:032x}", 0, 4 * 65536, Scheme.parse("4+2"), 65536, 1,
                           drives("a0", "a1", "b0", "b1", "c0", "c1"))  # fmt: skip
    usage = dict.fromkeys(DRIVES, 0) | {drive("a0"): 10**9, drive("a2"): -(10**9)}  # a0 far above its share
    targets = dict.fromkeys(DRIVES, 0.0)
    [(_, index, source, target)] = rebalancer._plan(layout, usage, targets, view.writable, domains)
    assert (index, source) == (0, drive("a0")) and target in drives("a2", "b2", "c2")
    moved = list(layout.drives)
    moved[index] = target
    assert not domains.at_risk(moved)


def drain_view(leaving: str) -> DriveView:
    """Nodes a, b, c online with three drives each; node ``leaving``'s three drives draining."""
    candidates = [Candidate(drive(f"{n}{i}"), n) for n in "abc" for i in range(3)]
    draining = drives(*(f"{leaving}{i}" for i in range(3)))
    return DriveView(
        states={c.drive_id: "online" for c in candidates} | dict.fromkeys(draining, "draining"),
        writable={c.drive_id for c in candidates}, replaced_by={}, candidates=candidates,
        domain_of={c.drive_id: c.domain for c in candidates} | dict.fromkeys(draining, leaving),
    )  # fmt: skip


def test_repair_targets_follow_the_rule_where_the_ranking_alone_would_crowd_a_node(meta):
    """Node d drains after a move inside a node: every drained shard must land where 2,2,2 results, in every
    placement group (the ranking alone would put some on the node that already holds two)."""
    view = drain_view("d")
    worker = RepairWorker(ClientContext(meta, {}), lambda: view)
    for pg in range(100):
        ranked = [c.drive_id for c in rank(pg, view.candidates)]
        layout = [ranked[0], ranked[1], ranked[2], drive("d0")]
        layout.append(next(d for d in ranked[3:] if d[0] == layout[0][0]))  # a second shard on the first node
        layout.append(drive("d1"))
        seg = SegmentLayout(f"{pg:032x}", 0, 65536 * 4, Scheme.parse("4+2"), 65536, pg, tuple(layout))
        targets = worker._choose_targets(seg, [3, 5], view, {}, lost=set())
        result = [targets.get(i, d) for i, d in enumerate(layout)]
        assert sorted(Counter(d[0] for d in result).values()) == [2, 2, 2], (pg, layout, targets)


def test_a_lost_shard_with_no_legal_drive_is_rebuilt_anyway_and_a_moving_one_waits(meta):
    online = drives("a0", "a1", "a2", "b0", "b1", "b2", "c0", "c1")
    view = DriveView(states=dict.fromkeys(online, "online") | {drive("c2"): "failed"},
                     writable=set(online) - {drive("c1")},  # c1 is full
                     replaced_by={}, candidates=[Candidate(d, d[0]) for d in online],
                     domain_of={d: d[0] for d in (*online, drive("c2"))})  # fmt: skip
    worker = RepairWorker(ClientContext(meta, {}), lambda: view)
    seg = SegmentLayout(f"{3:032x}", 0, 65536 * 4, Scheme.parse("4+2"), 65536, 3,
                        drives("a0", "a1", "b0", "b1", "c0", "c2"))  # fmt: skip
    lost = worker._choose_targets(seg, [5], view, {}, lost={5})
    assert lost[5] in drives("a2", "b2")  # 3,2,1 beats 2,2,1 with a shard missing; the rebalancer fixes it later
    assert worker._choose_targets(seg, [5], view, {}, lost=set()) == {}  # a move waits for a legal drive


def test_the_lease_holder_warns_when_the_live_domains_are_too_few_and_says_when_they_are_enough(meta, caplog):
    managed = Drives(meta)
    duties = ManagerDuties(ClientContext(meta, {}), managed, "holder", lease_ttl_s=30)

    async def checks(n: int) -> None:
        for _ in range(n):
            await duties.check_domains()

    caplog.set_level("INFO", logger="apollo.manager")
    asyncio.run(checks(3))  # three nodes for 4+2: said once, after two checks agree
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == ["4+2 segments: 3 live failure domains for 6-wide segments: up to 2 shards of a segment share "
                        "one, so only 1 of them may fail at once, not 2 (surviving any 2 takes 6 failure domains)"]
    managed.offline = {drive("c0"), drive("c1"), drive("c2")}  # node c is away: two domains left
    asyncio.run(checks(2))
    assert "losing any one of them can make data unreadable" in caplog.records[-1].getMessage()
    meta.store.set_setting("scheme", "rep3")  # three replicas fit three nodes
    managed.offline = set()
    asyncio.run(checks(2))
    assert caplog.records[-1].getMessage() == "rep3 segments: 3 live failure domains, one shard of a segment in " \
                                              "each: any 2 may fail"


def test_a_drain_is_refused_in_the_same_words_unless_forced(meta):
    store = meta.store
    store.register_node("d", "http://d", "", [(drive(f"d{i}"), f"/d/{i}") for i in range(3)], time.time())
    with pytest.raises(admin.AdminError) as refused:
        admin.drain_node(store, "d")
    assert str(refused.value).startswith(
        "draining d leaves 3 live failure domains for 6-wide segments: up to 2 shards of a segment share one, so "
        "only 1 of them may fail at once, not 2 (surviving any 2 takes 6 failure domains); add a node first, or "
        "--force")  # fmt: skip
    assert {r.state for r in admin.drain_node(store, "d", force=True)} == {"draining"}


def test_one_server_counts_its_drives_as_the_domains(tmp_path):
    from apollo.proto.cluster_map import NODE_NAME, DriveRecord

    store = SqlStore(tmp_path / "one.db")
    for n in range(6):
        store.put_drive(DriveRecord(f"{n:016x}", NODE_NAME, f"/d{n}", "online", 1.0), time.time())
    store.set_setting("scheme", "4+2")
    refusal = ("leaves 5 live drives for 6-wide segments: each holds one shard of a segment and 1 finds no drive, "
               r"so only 1 of them may fail at once, not 2 \(surviving any 2 takes 6 drives\); add a drive first")
    with pytest.raises(admin.AdminError, match=refusal):
        admin.drain_drive(store, f"{0:016x}")
    store.set_setting("scheme", "3+2")
    assert admin.drain_drive(store, f"{0:016x}").state == "draining"  # five drives left for five shards
    store.close()
