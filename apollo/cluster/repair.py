"""The repair worker: turns rows of the repair queue back into full redundancy.

For each segment with queued shards: look up its current layout, check the
queued shards (a report can be stale: a transient error, or a shard already
rebuilt), choose a target drive per bad shard (a move's planned target, else the
same drive if it is still online, else the drive that replaced it, else the
placement group's ranking; always one that keeps the segment's spread over
failure domains legal, ``placement.FailureDomains``), rebuild the cells from any ``k``
good shards (or copy the shard as is when draining a readable drive), write
the new shard files, read them back, and commit the new layout in one
metadata transaction. Old copies on other drives are deleted afterwards. All
I/O is paced by byte and operation budgets that can change at run time.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from apollo import metrics
from apollo.client.context import ClientContext
from apollo.client.remote_storage import RemoteStorageNode
from apollo.cluster.passes import request_setting
from apollo.cluster.ratelimit import RateLimiter
from apollo.cluster.rebuild import ShardRebuilder
from apollo.cluster.shardcheck import check_shard
from apollo.errors import ApolloError
from apollo.proto.layout import SegmentLayout
from apollo.proto.placement import Candidate, FailureDomains, rank
from apollo.proto.records import RepairItem

log = logging.getLogger("apollo.repair")
RETRY_BASE_S = 5.0
RETRY_MAX_S = 600.0
OFFLINE_RECHECK_S = 30.0
IDLE_POLL_S = 0.25  # an idle worker looks at the queue this often (one indexed query)
MOVE_REASONS = ("drain", "rebalance")  # the shard is fine: copy it when its drive is readable


@dataclass
class DriveView:
    """What the repair worker and the rebalancer need to know about drives right now (from the drive monitor)."""

    states: dict[str, str]  # drive id -> online | offline | failed | draining | retired
    writable: set[str]  # healthy, attached, online, with free space
    replaced_by: dict[str, str]
    candidates: list[Candidate]  # placement candidates (online drives, with their failure domains), for ``rank``
    domain_of: dict[str, str] = field(default_factory=dict)  # failure domain of every known drive, online or not

    def failure_domains(self) -> FailureDomains:
        """The spread rule's view: the live domains (those of online drives) and every drive's domain."""
        return FailureDomains.of(self.candidates, self.domain_of)

    def offline(self) -> list[str]:
        """Drives within their offline grace: they may come back with every shard they hold."""
        return sorted(d for d, state in self.states.items() if state == "offline")


_DETAILS = re.compile(r"\b[0-9a-f]{16,32}\b|\d+")  # ids and numbers: what differs between segments of one cause


def _log_failures(failed: dict[str, list[tuple[str, str, float]]]) -> None:
    """One line per cause a pass's repairs failed of, not one per segment per retry: a missing spare drive
    fails every segment the same way, and thousands of lines would hide the one thing to do."""
    for reason, segments in sorted(failed.items(), key=lambda item: -len(item[1])):
        delays = [delay for _, _, delay in segments]
        segment, example, _ = segments[0]
        log.warning("repair of %d segment(s) failed: %s (e.g. segment %s: %s); retrying in %.0f-%.0f s",
                    len(segments), reason, segment, example, min(delays), max(delays))  # fmt: skip


class RepairWorker:
    def __init__(self, ctx: ClientContext, drives: Callable[[], DriveView]) -> None:
        self.ctx = ctx
        self.meta = ctx.meta
        self.drives = drives
        self.bytes_budget = RateLimiter(0)
        self.ops_budget = RateLimiter(0)
        self.rebuilder = ShardRebuilder(ctx, self.bytes_budget, self.ops_budget)
        self.parallel = 4
        self.paused = False
        self.repaired_bytes = 0  # rebuilt or copied bytes written, for the status rate
        # Drives shards are being written to right now: one must not be retired before the commit that
        # points a segment at it (it may have started draining since it was chosen).
        self.writing: Counter[str] = Counter()

    def tune(self, bytes_per_s: float, ops_per_s: float, parallel: int, paused: bool) -> None:
        self.bytes_budget.rate = bytes_per_s
        self.ops_budget.rate = ops_per_s
        self.parallel = max(1, parallel)
        self.paused = paused

    async def run_forever(self) -> None:
        while True:
            try:
                done = await self.run_once()
            except Exception:
                log.exception("repair pass failed")
                done = 0
            if not done:
                await asyncio.sleep(IDLE_POLL_S)

    async def run_once(self) -> int:
        """Repair the segments that are due now; returns how many were looked at."""
        if self.paused:
            return 0
        # In a cluster each node rebuilds the shards that land on it (``_rebuild``): ``parallel`` segments per
        # node at once, so a failed drive's rebuild speeds up as nodes are added.
        nodes = {id(node) for node in self.ctx.nodes.values() if isinstance(node, RemoteStorageNode)}
        at_once = self.parallel * max(1, len(nodes))
        due = await self.meta.due_repairs(time.time(), at_once * 4)
        if not due:
            return 0
        gate = asyncio.Semaphore(at_once)
        failed: dict[str, list[tuple[str, str, float]]] = {}  # reason -> [(segment, message, retry delay)]

        async def one(segment_id: str, items: list[RepairItem]) -> None:
            async with gate:
                try:
                    await self.repair_segment(segment_id, items)
                except Exception as exc:
                    delay = min(RETRY_MAX_S, RETRY_BASE_S * 2 ** min(items[0].attempts, 10))
                    log.debug("repair of segment %s failed (%s); retrying in %.0f s", segment_id, exc, delay)
                    reason = _DETAILS.sub("#", str(exc))  # the same cause for every group and shard
                    failed.setdefault(reason, []).append((segment_id, str(exc), delay))
                    metrics.repair_failures.inc()
                    await self.meta.defer_repairs(segment_id, [i.shard_index for i in items], time.time() + delay)

        await asyncio.gather(*(one(s, items) for s, items in due.items()))
        _log_failures(failed)
        return len(due)

    async def repair_segment(self, segment_id: str, items: list[RepairItem]) -> None:
        layout, pending = await self.meta.segment_layout(segment_id)
        if layout is None:
            if pending:  # still being written: its layout is not final; look again later
                await self.meta.defer_repairs(segment_id, [i.shard_index for i in items], time.time() + RETRY_BASE_S)
            else:  # deleted meanwhile: nothing to repair
                await self.meta.drop_repairs(segment_id)
            return
        view = self.drives()
        waiting = [i.shard_index for i in items if view.states.get(layout.drives[i.shard_index]) == "offline"]
        if waiting:  # an unreachable drive may come back; it is rebuilt once it is declared failed
            await self.meta.defer_repairs(segment_id, waiting, time.time() + OFFLINE_RECHECK_S)
            items = [i for i in items if i.shard_index not in waiting]
        items = await self._drop_stale_moves(layout, items, view)
        moving = {i.shard_index for i in items if i.reason in MOVE_REASONS}
        planned = {i.shard_index: i.target for i in items if i.target}
        bad: list[int] = []
        for item in items:
            index = item.shard_index
            drive = layout.drives[index]
            if index in moving or view.states.get(drive) != "online":
                bad.append(index)
                continue
            await self.ops_budget.take(2)
            problem = await check_shard(self.ctx, layout, index, drive, deep=True, pace=self.bytes_budget.take)
            if problem is None:
                log.info("segment %s shard %d on %s checks out healthy (%s): nothing to do", segment_id, index,
                         drive, item.reason)  # fmt: skip
            else:
                bad.append(index)
        healthy = [i.shard_index for i in items if i.shard_index not in bad]
        if healthy:
            await self.meta.drop_repairs(segment_id, healthy)
        if not bad:
            return
        targets = self._choose_targets(layout, bad, view, planned, lost=set(bad) - moving)
        if len(targets) < len(bad):
            free = view.writable - set(layout.drives)
            why = "that keeps the segment's spread over failure domains legal" if free else "outside the layout"
            raise ApolloError(f"no writable drive {why} for shards {sorted(set(bad) - set(targets))} of group "
                              f"{layout.pg}")  # fmt: skip
        copy_from = {i: layout.drives[i] for i in moving if view.states.get(layout.drives[i]) in ("online", "draining")}
        self.writing.update(targets.values())
        try:
            committed = await self._write_and_commit(layout, targets, copy_from)
        finally:
            self.writing -= Counter(targets.values())
        if committed and view.failure_domains().at_risk([targets.get(i, d) for i, d in enumerate(layout.drives)]):
            # Rebuilt over the limit (no drive had room within it): have it counted, and moved once one has.
            await self.meta.set_setting(request_setting("rebalance"), repr(time.time()))

    async def _write_and_commit(self, layout: SegmentLayout, targets: dict[int, str], copy_from: dict[int, str]
                                ) -> bool:  # fmt: skip
        """Write the shards, then point the layout at them; False (and nothing left behind) when it changed."""
        try:
            written = await self._rebuild(layout, targets, copy_from)
        except Exception:
            # A target may hold a finished file (its read-back failed, or the job broke after a finish): removed
            # unless the current layout uses it. A remote job's failure does not say how far it got.
            moved = {i: d for i, d in targets.items() if d != layout.drives[i]}
            if moved:
                await self._discard_rebuilt(layout.segment_id, layout, moved)
            raise
        if not await self.meta.commit_repair(layout.segment_id, layout.drives, targets):
            await self._discard_rebuilt(layout.segment_id, layout, targets)
            return False
        metrics.repaired_shards.inc(len(targets))
        metrics.repair_bytes.inc(written)
        self.repaired_bytes += written
        # One line per segment is debug only: `apollo admin status` and the metrics carry the rates.
        log.debug("segment %s: rebuilt shards %s onto %s", layout.segment_id, sorted(targets),
                  [targets[i] for i in sorted(targets)])  # fmt: skip
        await self._delete_old_copies(layout, targets)
        return True

    async def _rebuild(self, layout: SegmentLayout, targets: dict[int, str], copy_from: dict[int, str]) -> int:
        """Bytes written rebuilding ``targets``. In a cluster, by the storage node of the first target: the
        survivors cross its link, not this process's, and its drives take the writes. Here otherwise (the
        all-in-one server, whose drives are all local): paced by the budgets as it goes."""
        node = self.ctx.node(next(iter(targets.values())))
        if isinstance(node, RemoteStorageNode):
            await self.ops_budget.take(len(targets))
            written = await node.rebuild(layout, targets, copy_from)
            await self.bytes_budget.take(written)  # paced after the fact: the next rebuild waits for these bytes
            return written
        return await self.rebuilder.rebuild(layout, targets, copy_from)

    async def _drop_stale_moves(self, layout: SegmentLayout, items: list[RepairItem], view: DriveView) -> list:
        """Planned moves whose shard moved meanwhile, or whose target cannot take it now (not writable, in the
        layout, or in a domain the move would crowd), are forgotten (the rebalancer plans again from fresh
        usage); the other items go on."""
        domains = view.failure_domains()

        def stale(item: RepairItem) -> bool:
            index = item.shard_index
            return (layout.drives[index] != item.drive_id or item.target not in view.writable
                    or item.target not in domains.targets(layout.drives, index, [item.target]))  # fmt: skip

        dropped = [i.shard_index for i in items if i.reason == "rebalance" and stale(i)]
        if dropped:
            await self.meta.drop_repairs(layout.segment_id, dropped)
        return [i for i in items if i.shard_index not in dropped]

    def _choose_targets(
        self, layout: SegmentLayout, bad: list[int], view: DriveView, planned: dict[int, str], lost: set[int]
    ) -> dict[int, str]:
        """A writable drive per shard of ``bad``, each keeping the segment's spread legal (``FailureDomains``).

        Preferred, when legal: a move's planned target, the same drive (rewrite in place), the drive that
        replaced the old one; else the least crowded domains in the group's ranking. The ranking alone is
        not enough: once a layout has changed (a move inside a node, a spare), its next drive can be in a
        domain that already holds as many shards as the code can lose (3,2,1 where 2,2,2 was possible).
        A ``lost`` shard with no legal drive goes to the least crowded domain anyway (a shard there beats
        a missing one; the rebalancer moves it later); a shard that is only moving stays put.
        """
        domains = view.failure_domains()
        drives = ["" if i in bad else d for i, d in enumerate(layout.drives)]
        ranked = [c.drive_id for c in rank(layout.pg, view.candidates) if c.drive_id in view.writable]
        targets: dict[int, str] = {}
        for index in bad:
            old = layout.drives[index]
            preferred = [planned.get(index, ""), old if view.states.get(old) == "online" else "",
                         view.replaced_by.get(old, "")]  # fmt: skip
            preferred = [d for d in preferred if d in view.writable]
            legal = domains.targets(drives, index, preferred)
            choice = next((d for d in preferred if d in legal), None) or domains.choose(drives, index, ranked)
            if choice is None and index in lost:
                choice = domains.least_crowded(drives, index, ranked)
                if choice is not None:
                    log.warning("segment %s shard %d: no drive keeps the spread legal; rebuilt onto %s (the "
                                "rebalancer moves it when it can)", layout.segment_id, index, choice)  # fmt: skip
            if choice:
                targets[index] = choice
                drives[index] = choice
        return targets

    async def _delete_old_copies(self, layout: SegmentLayout, targets: dict[int, str]) -> None:
        for index, new_drive in targets.items():
            old = layout.drives[index]
            if old != new_drive and old in self.ctx.nodes:
                try:
                    await self.ctx.node(old).delete(old, layout.shard(index))
                except (OSError, ApolloError):
                    pass  # a failed or wiped drive: nothing left to delete

    async def _discard_rebuilt(self, segment_id: str, layout: SegmentLayout, targets: dict[int, str]) -> None:
        """The layout changed under us (deleted, or repaired elsewhere): remove what we wrote unless it is in use."""
        current, _ = await self.meta.segment_layout(segment_id)
        for index, drive in targets.items():
            if current is not None and current.drives[index] == drive:
                continue
            try:
                await self.ctx.node(drive).delete(drive, layout.shard(index))
            except (OSError, ApolloError):
                log.warning("could not remove unused rebuilt shard %d of %s on %s", index, segment_id, drive)
        log.info("segment %s changed during repair; the rebuilt shards were discarded", segment_id)
