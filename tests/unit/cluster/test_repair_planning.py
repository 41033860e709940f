"""The repair worker's pure steps (``apollo.cluster.repair``): where each bad shard goes (``_choose_targets``) and
how its cells are rebuilt from the survivors (``ShardGeometry.rebuild_records``). No process, no drive, no database; the
spread rule itself is tests/unit/cluster/test_spread_rule.py's and test_rebalance_spread.py's."""

from __future__ import annotations

import random

import pytest

from apollo.client.context import ClientContext
from apollo.cluster.repair import DriveView, RepairWorker
from apollo.errors import InsufficientFragments
from apollo.proto.layout import Scheme, SegmentLayout
from apollo.proto.placement import Candidate, rank
from apollo.storage.geometry import ShardGeometry
from apollo.testing.layouts import segment_id
from apollo.testing.shardfiles import cell_records, shard_files


def drive(name: str) -> str:
    """A drive id of the real form named for the test: "b2" is node b's drive 2, bbbbbbbbbbbbbbb2."""
    return name[0] * 15 + name[1]


NODES = "abcdef"
ALL = [drive(f"{node}{i}") for node in NODES for i in range(3)]  # six nodes of three drives


def view(failed: tuple[str, ...] = (), full: tuple[str, ...] = (), replaced_by: dict | None = None) -> DriveView:
    failed_ids, full_ids = {drive(d) for d in failed}, {drive(d) for d in full}
    online = [d for d in ALL if d not in failed_ids]
    return DriveView(states={d: "failed" if d in failed_ids else "online" for d in ALL},
                     writable=set(online) - full_ids, replaced_by=replaced_by or {},
                     candidates=[Candidate(d, d[0]) for d in online], domain_of={d: d[0] for d in ALL})  # fmt: skip


def layout_on(*names: str, pg: int = 5, length: int = 3 * 4096 + 100) -> SegmentLayout:
    return SegmentLayout(segment_id(f"repair-{pg}"), 0, length, Scheme.parse("4+2"), 1024, pg,
                         tuple(drive(n) for n in names))  # fmt: skip


@pytest.fixture
def worker():
    ctx = ClientContext(None, {})  # type: ignore[arg-type]  # target choice reads no metadata
    yield RepairWorker(ctx, view)
    ctx.cpu.shutdown()


LAYOUT = layout_on("a0", "b0", "c0", "d0", "e0", "f0")  # one shard per node


def test_a_damaged_shard_on_a_healthy_drive_is_rewritten_in_place(worker):
    assert worker._choose_targets(LAYOUT, [2], view(), {}, lost={2}) == {2: drive("c0")}


def test_a_planned_move_goes_where_the_rebalancer_planned(worker):
    assert worker._choose_targets(LAYOUT, [2], view(), {2: drive("c1")}, lost=set()) == {2: drive("c1")}


def test_a_failed_drive_s_shard_goes_to_its_replacement(worker):
    ranked = [c.drive_id for c in rank(LAYOUT.pg, view(failed=("c0",)).candidates)]
    second = max(drive("c1"), drive("c2"), key=ranked.index)  # the one the ranking alone would not take
    current = view(failed=("c0",), replaced_by={drive("c0"): second})
    assert worker._choose_targets(LAYOUT, [2], current, {}, lost={2}) == {2: second}


def test_otherwise_the_group_s_ranking_picks_a_writable_drive_that_keeps_the_spread(worker):
    current = view(failed=("c0",))
    ranked = [c.drive_id for c in rank(LAYOUT.pg, current.candidates)]
    targets = worker._choose_targets(LAYOUT, [2], current, {}, lost={2})
    assert targets == {2: drive("c1") if ranked.index(drive("c1")) < ranked.index(drive("c2")) else drive("c2")}


def test_a_preference_that_would_crowd_a_node_or_cannot_be_written_is_passed_over(worker):
    crowding = worker._choose_targets(LAYOUT, [2], view(), {2: drive("a1")}, lost=set())  # a second shard on a
    assert crowding == {2: drive("c0")}
    full = view(full=("c0",))
    assert worker._choose_targets(LAYOUT, [2], full, {}, lost={2})[2] in {drive("c1"), drive("c2")}


def test_several_bad_shards_get_distinct_drives_outside_the_layout(worker):
    current = view(failed=("a0", "b0", "a1", "a2"))
    targets = worker._choose_targets(LAYOUT, [0, 1], current, {}, lost={0, 1})
    assert set(targets) == {0, 1} and len(set(targets.values())) == 2
    assert not set(targets.values()) & set(LAYOUT.drives)
    assert drive("b1") in targets.values() or drive("b2") in targets.values()  # node b has room for its shard


def test_drive_view_lists_offline_drives_and_knows_every_drive_s_domain():
    current = DriveView(states={"x2": "offline", "x1": "offline", "y1": "online"}, writable={"y1"}, replaced_by={},
                        candidates=[Candidate("y1", "rack-y")], domain_of={"x1": "rack-x", "x2": "rack-x"})  # fmt: skip
    assert current.offline() == ["x1", "x2"]
    domains = current.failure_domains()
    assert domains.domain("x1") == "rack-x" and domains.live == {"rack-y": 1}


# rebuilding cells ----------------------------------------------------------------------------------------

DATA = random.Random(4).randbytes(LAYOUT.length)


def read_cells(indexes) -> dict[int, list]:
    geometry = ShardGeometry(LAYOUT)
    files = shard_files(LAYOUT, DATA)
    offset, length = geometry.span(0, LAYOUT.stripe_count)
    return {i: geometry.split(files[i][offset : offset + length], 0, LAYOUT.stripe_count) for i in indexes}


def test_lost_shards_are_rebuilt_record_for_record():
    expected = cell_records(LAYOUT, DATA)
    for lost in ([0], [5], [0, 5], [2, 3]):
        cells = read_cells(i for i in range(6) if i not in lost)
        rebuilt = ShardGeometry(LAYOUT).rebuild_records(cells, lost, LAYOUT.stripe_count)
        assert rebuilt == {i: expected[i] for i in lost}, lost


def test_a_moving_shard_keeps_its_good_cells_and_only_its_bad_ones_are_decoded():
    expected = cell_records(LAYOUT, DATA)
    cells = read_cells([1, 2, 3, 4, 5])
    cells[5][1] = None  # the moving shard's stripe 1 failed its CRC on the way
    cells[2][3] = None  # and another source has a bad cell elsewhere
    rebuilt = ShardGeometry(LAYOUT).rebuild_records(cells, [0, 5], LAYOUT.stripe_count)
    assert rebuilt == {0: expected[0], 5: expected[5]}


def test_a_stripe_with_fewer_than_k_good_cells_cannot_be_rebuilt():
    cells = read_cells([2, 3, 4, 5])
    cells[4][2] = None  # stripe 2: three good cells for a 4+2 segment
    with pytest.raises(InsufficientFragments, match=f"segment {LAYOUT.segment_id}: only 3 good cells"):
        ShardGeometry(LAYOUT).rebuild_records(cells, [0, 1], LAYOUT.stripe_count)
