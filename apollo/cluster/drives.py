"""The drives of this process: attach, probe, detach; their states change in ``apollo.cluster.lifecycle``.

Every server process probes the drives it serves every couple of seconds (format
file + free space) to decide where new shards may go. Only the manager process
(the holder of the manager lease) turns what the probes find into state changes
and runs the drive jobs.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from apollo import metrics
from apollo.client.context import ClientContext
from apollo.cluster.lifecycle import DriveLifecycle
from apollo.cluster.repair import DriveView
from apollo.errors import DriveError
from apollo.meta.service import MetaService
from apollo.proto.cluster_map import NODE_NAME, SERVING_STATES, DriveRecord, DriveState
from apollo.proto.placement import Candidate
from apollo.storage.drive import Drive
from apollo.storage.node import LocalStorageNode

log = logging.getLogger("apollo.drives")


class DriveMonitor:
    domain_unit = "drives"  # on one server every drive is its own failure domain

    def __init__(
        self, ctx: ClientContext, node: LocalStorageNode, deployment_id: str, *, manager: bool, reserve_bytes: int
    ) -> None:
        self.ctx = ctx
        self.meta: MetaService = ctx.meta
        self.node = node
        self.deployment_id = deployment_id
        self.manager = manager  # only the manager changes drive states and runs drive jobs
        self.reserve_bytes = reserve_bytes
        self.lifecycle = DriveLifecycle(self.meta)
        self.records: dict[str, DriveRecord] = {}
        self.writable: set[str] = set()
        self.reports: dict[str, tuple[str, int, int]] = {}  # the last probe: drive -> (health, free, total)

    def view(self) -> DriveView:
        """States and writability as of the last probe, for the repair worker and the rebalancer."""
        return DriveView(
            states={d: r.state for d, r in self.records.items()},
            writable=set(self.writable),
            replaced_by={d: r.replaced_by for d, r in self.records.items() if r.replaced_by},
            candidates=self._candidates(),
            domain_of={d: d for d in self.records},
        )

    def _candidates(self) -> list[Candidate]:
        """Online drives. On one server each drive fails on its own, so each is its own failure domain:
        the spread rule then asks one shard per drive, and the ranking is plain score order."""
        return [Candidate(d, d, r.weight) for d, r in self.records.items() if r.state == "online"]

    async def probe(self) -> None:
        """Refresh states from the database, attach new drives, check every drive, publish writability.

        Placement is updated before any database write: with the metadata disk full those writes
        fail, and drives that regained space must still be used again.
        """
        self.records = {r.drive_id: r for r in await self.meta.list_drives()}
        checks = await asyncio.to_thread(self._check_all, dict(self.node.drives))
        self.reports = {drive_id: report for drive_id, (report, _) in checks.items()}
        self._attach_or_detach(checks)
        writable = set()
        for drive_id, ((health, free, total, _), _) in checks.items():
            record = self.records[drive_id]
            if health == "ok" and record.state == "online" and free >= self.reserve_bytes:
                writable.add(drive_id)
            metrics.drive_up.labels(drive_id).set(1 if health == "ok" else 0)
            metrics.drive_free_bytes.labels(drive_id).set(free)
            metrics.drive_total_bytes.labels(drive_id).set(total)
        gained = writable - self.writable
        if writable != self.writable:
            log.info("writable drives: %d of %d", len(writable), len(self.records))
        self.writable = writable
        self.meta.placement.update(self._candidates(), writable)
        if self.manager:
            await self._apply_transitions(checks, bool(gained))
            self.meta.placement.update(self._candidates(), writable)  # states may have changed
        for state in DriveState:
            metrics.drives_by_state.labels(state).set(sum(r.state == state for r in self.records.values()))

    async def _apply_transitions(self, checks: dict, gained: bool) -> None:
        await self.lifecycle.apply(self.records, {d: report[0] for d, (report, _) in checks.items()}, gained)
        await self.meta.set_drive_usage({d: tuple(report[1:]) for d, (report, _) in checks.items()})

    def _check_all(self, attached: dict[str, Drive]) -> dict[str, tuple[tuple[str, int, int, str], Drive | None]]:
        """Per serving drive: ((health, free bytes, total bytes, filesystem), the drive opened if it was not
        attached).

        Health is "ok", "gone" (no format file, or another drive's) or "unreachable" (I/O errors).
        Runs on a thread and only does I/O; attaching and detaching happen on the event loop.
        """
        out = {}
        for drive_id, record in self.records.items():
            if record.node != NODE_NAME or record.state not in SERVING_STATES:
                continue
            drive, opened = attached.get(drive_id), None
            try:
                if drive is None:  # added while running (apollo admin drive add|replace), or missing at start
                    drive = opened = Drive(Path(record.path), self.deployment_id)
                    if drive.drive_id != drive_id:
                        raise DriveError(f"{record.path} now holds drive {drive.drive_id}, not {drive_id}")
                report = drive.check()
                out[drive_id] = (report, opened if report[0] == "ok" else None)
            except DriveError:
                out[drive_id] = (("gone", 0, 0, ""), None)
            except OSError:
                out[drive_id] = (("unreachable", 0, 0, ""), None)
        return out

    def _attach_or_detach(self, checks: dict[str, tuple[tuple[str, int, int, str], Drive | None]]) -> None:
        for drive_id, ((health, *_), opened) in checks.items():
            path = self.records[drive_id].path
            if opened is not None:
                self.node.attach(opened)
                self.ctx.nodes[drive_id] = self.node
                log.info("attached drive %s at %s", drive_id, path)
            elif health == "gone" and self.node.detach(drive_id):
                # Its directory no longer holds it (a replacement may live there now): stop touching it.
                self.ctx.nodes.pop(drive_id, None)
                log.error("detached drive %s (%s): its format file is gone", drive_id, path)
        for drive_id in list(self.node.drives):
            record = self.records.get(drive_id)
            if record is not None and record.state not in SERVING_STATES and self.node.detach(drive_id):
                # Failed or retired by an operator (`drive replace` before the probe saw the wipe): a
                # replacement may already live in its directory, which must never be touched through it.
                self.ctx.nodes.pop(drive_id, None)
                log.info("detached drive %s (%s): it is %s", drive_id, record.path, record.state)
