"""The placement half of ``scale_sim.py``: maps, balance, data moved, and who rebuilds a failed drive.

Everything here calls Apollo's own placement code on a ``ClusterMap`` the simulator built: ``ClusterMap.candidates``
for the failure domains, ``Placement.drives_for`` (what ``MetaService.place`` calls for every new segment),
``place_drives`` for the maps after a change, and the repair worker's own target choice
(``RepairWorker._choose_targets``, over ``FailureDomains`` and ``rank``) for a rebuild. Nothing is reimplemented:
the simulator only counts what those functions answer.

One ranking serves both schemes: ``place_drives`` ranks every drive and keeps the first ``width``, so the drives
of a 4+2 group are the first six of the same group's 8+4 drives. ``full_map`` checks that on a few groups
(``prefix_checked``) instead of trusting it, and then ranks each group once, for the widest scheme.
"""

from __future__ import annotations

import dataclasses
import math
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from apollo.cluster.repair import DriveView, RepairWorker
from apollo.proto.cluster_map import ClusterMap, DriveInfo, NodeInfo
from apollo.proto.layout import Scheme, SegmentLayout
from apollo.proto.placement import Placement, place_drives

PREFIX_CHECKS = 8  # groups on which the narrow scheme's drives are checked to be the wide one's first drives


# The topology and its changes ------------------------------------------------------------------------


@dataclass(frozen=True)
class Topology:
    racks: int
    nodes_per_rack: int
    drives_per_node: int

    @property
    def drives(self) -> int:
        return self.racks * self.nodes_per_rack * self.drives_per_node

    @property
    def nodes(self) -> int:
        return self.racks * self.nodes_per_rack


def rack_name(rack: int) -> str:
    return f"rack-{rack:03d}"


def node_name(rack: int, node: int) -> str:
    return f"r{rack:03d}-n{node:03d}"


def drive_ids(rng: random.Random, count: int) -> list[str]:
    """Drive ids of the form Apollo formats drives with (16 hex digits of a random uuid), from the seeded RNG."""
    return [f"{rng.getrandbits(64):016x}" for _ in range(count)]


def node_info(rack: int, node: int) -> NodeInfo:
    """A storage node as the map shows it (alive; the heartbeat time does not matter to placement)."""
    return NodeInfo(node_name(rack, node), f"https://10.{rack // 256}.{rack % 256}.{node + 1}:9100", rack_name(rack),
                    True, 0.0)  # fmt: skip


def _drives(node: str, ids: Sequence[str]) -> list[DriveInfo]:
    return [DriveInfo(drive_id, node, "online", True, 1.0) for drive_id in ids]


def node_added(cluster: ClusterMap, rack: int, drives: int, rng: random.Random) -> ClusterMap:
    """One more node (of ``drives`` drives) in ``rack``: the rack grows, the number of failure domains does not."""
    taken = sum(n.rack == rack_name(rack) for n in cluster.nodes)
    node = node_info(rack, taken)
    return dataclasses.replace(cluster, epoch=cluster.epoch + 1, nodes=[*cluster.nodes, node],
                               drives=[*cluster.drives, *_drives(node.name, drive_ids(rng, drives))])  # fmt: skip


def rack_added(cluster: ClusterMap, nodes: int, drives: int, rng: random.Random) -> ClusterMap:
    """A new rack of ``nodes`` nodes: one failure domain more."""
    rack = len({n.rack for n in cluster.nodes})
    added = [node_info(rack, n) for n in range(nodes)]
    new_drives = [d for node in added for d in _drives(node.name, drive_ids(rng, drives))]
    return dataclasses.replace(cluster, epoch=cluster.epoch + 1, nodes=[*cluster.nodes, *added],
                               drives=[*cluster.drives, *new_drives])  # fmt: skip


def without(cluster: ClusterMap, node_names: set[str]) -> ClusterMap:
    """The map once ``node_names`` and their drives are gone (removed, drained: not placed on any more)."""
    return dataclasses.replace(cluster, epoch=cluster.epoch + 1,
                               nodes=[n for n in cluster.nodes if n.name not in node_names],
                               drives=[d for d in cluster.drives if d.node not in node_names])  # fmt: skip


# Full maps and balance --------------------------------------------------------------------------------


@dataclass
class FullMap:
    """Every group's drives for the widest scheme (narrower schemes take a prefix), and what computing it cost."""

    pg_count: int
    groups: list[list[str]]
    place_s: float  # ranking every group, cold (Placement.drives_for, each group once)
    cached_call_s: float  # one Placement.drives_for call once the group is remembered (mean)
    prefix_checked: int  # groups on which place_drives(width=narrow) == the wide drives' prefix was checked


def full_map(cluster: ClusterMap, pg_count: int, widths: Sequence[int]) -> FullMap:
    """Rank every group through ``Placement`` (as ``MetaService.place`` does), then call it again from its cache."""
    placement = Placement()
    placement.update(cluster.candidates(), cluster.writable())
    wide = max(widths)
    started = time.perf_counter()
    groups = [placement.drives_for(pg, wide) for pg in range(pg_count)]
    place_s = time.perf_counter() - started
    started = time.perf_counter()
    for pg in range(pg_count):
        placement.drives_for(pg, wide)
    cached_s = (time.perf_counter() - started) / pg_count
    checked = 0
    for pg in range(min(PREFIX_CHECKS, pg_count)):
        for width in widths:
            narrow = place_drives(pg, placement.candidates, placement.writable, width)
            if narrow != groups[pg][:width]:
                raise RuntimeError(f"group {pg}: {width} drives are not the first of the {wide}: {narrow}")
        checked += 1
    return FullMap(pg_count, groups, place_s, cached_s, checked)


@dataclass
class Balance:
    """Shards per drive over every drive of the map (drives holding none count), as ratios to the mean."""

    max_ratio: float
    min_ratio: float
    mean: float
    empty_drives: int


def balance(loads: Counter[str], drives: Sequence[str]) -> Balance:
    values = [loads.get(d, 0) for d in drives]
    mean = sum(values) / len(values)
    return Balance(max(values) / mean, min(values) / mean, mean, sum(v == 0 for v in values))


def group_loads(groups: Sequence[Sequence[str]], width: int, weights: Sequence[float] | None = None) -> Counter[str]:
    """Shards per drive: one per group it serves, or the group's weight (its segments) per group."""
    loads: Counter[str] = Counter()
    for pg, drives in enumerate(groups):
        for drive in drives[:width]:
            loads[drive] += 1 if weights is None else weights[pg]
    return loads


# Data moved by a change of the map ----------------------------------------------------------------------


@dataclass
class Moved:
    """Of the sampled groups' shard slots, those whose drive changed after a change of the map."""

    slots: int
    positional: int  # shard i of the group is on another drive than before
    left: int  # a drive of the group's set is no longer in it (what must move if surviving shards kept their drive)

    def fraction(self, count: int) -> float:
        return count / self.slots

    def stderr(self, count: int) -> float:
        """Binomial standard error of ``count / slots`` (slots of one group are not independent: a lower bound)."""
        p = count / self.slots
        return math.sqrt(p * (1 - p) / self.slots)


def moved(before: Sequence[Sequence[str]], after: Sequence[Sequence[str]], width: int) -> Moved:
    positional = left = 0
    for old, new in zip(before, after, strict=True):
        positional += sum(a != b for a, b in zip(old[:width], new[:width], strict=True))
        left += len(set(old[:width]) - set(new[:width]))
    return Moved(len(before) * width, positional, left)


def place_sample(cluster: ClusterMap, pgs: Sequence[int], width: int) -> tuple[list[list[str]], float]:
    """``place_drives`` for the sampled groups on a changed map; returns the drives and the seconds it took."""
    candidates, writable = cluster.candidates(), cluster.writable()
    started = time.perf_counter()
    groups = [place_drives(pg, candidates, writable, width) for pg in pgs]
    return groups, time.perf_counter() - started


# Rebuilding one failed drive ---------------------------------------------------------------------------------


@dataclass
class Rebuild:
    """Who takes part in rebuilding one drive's shards, and the busiest drive's share of the work."""

    groups: int  # placement groups with a shard on the failed drive
    holders: int  # distinct drives holding surviving shards of those groups
    readers: int  # distinct drives the repair worker reads from (the first k survivors of each group)
    targets: int  # distinct drives the rebuilt shards go to (the repair worker's own choice)
    busiest_share: float  # largest fraction of the failed drive's bytes one drive reads plus writes
    target_share: float  # largest fraction of the failed drive's bytes one target drive writes


def rebuild(cluster: ClusterMap, groups: Sequence[Sequence[str]], scheme: Scheme, weights: Sequence[float],
            failed: str, rng: random.Random) -> Rebuild:  # fmt: skip
    """Ask the repair worker's target choice where each lost shard goes, as it would once ``failed`` is failed.

    The drive view is what the lease holder's drive monitor gives the worker: the failed drive out of the
    candidates and the writable set, its domain still known. Each group's share of the failed drive's bytes is
    its share of the segments sampled into the groups that drive serves (``weights``).
    """
    width, k = scheme.width, scheme.k
    affected = [(pg, list(drives[:width])) for pg, drives in enumerate(groups) if failed in drives[:width]]
    every = cluster.candidates()
    candidates = [c for c in every if c.drive_id != failed]
    domain_of = {c.drive_id: c.domain for c in every}
    view = DriveView({d.drive_id: "failed" if d.drive_id == failed else d.state for d in cluster.drives},
                     cluster.writable() - {failed}, {}, candidates, {failed: domain_of[failed]})  # fmt: skip
    worker = RepairWorker.__new__(RepairWorker)  # _choose_targets reads only its arguments, not the worker's I/O
    total = sum(weights[pg] for pg, _ in affected) or 1.0
    work: Counter[str] = Counter()
    written: Counter[str] = Counter()
    holders: set[str] = set()
    readers: set[str] = set()
    for pg, drives in affected:
        index = drives.index(failed)
        layout = SegmentLayout(f"{rng.getrandbits(128):032x}", 0, 0, scheme, 256 * 1024, pg, tuple(drives))
        target = worker._choose_targets(layout, [index], view, {}, {index}).get(index)
        if target is None:
            raise RuntimeError(f"the repair worker found no target for group {pg} (failed drive {failed})")
        share = weights[pg] / total
        survivors = [d for i, d in enumerate(drives) if i != index]
        holders.update(survivors)
        read = survivors[:k]  # the worker reads the first k surviving shards, data shards first
        readers.update(read)
        for drive in read:
            work[drive] += share
        work[target] += share
        written[target] += share
    return Rebuild(len(affected), len(holders), len(readers), len(written), max(work.values(), default=0.0),
                   max(written.values(), default=0.0))  # fmt: skip


def failed_drive_sample(groups: Sequence[Sequence[str]], width: int, count: int, rng: random.Random) -> list[str]:
    """``count`` drives (seeded) among those holding at least one shard: a drive holding none rebuilds nothing."""
    holding = sorted({d for drives in groups for d in drives[:width]})
    return rng.sample(holding, min(count, len(holding)))
