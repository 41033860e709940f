"""Drive lifecycle: attach, probe, mark, evacuate, retire.

States (the ``drives`` table)::

    online    healthy; takes new shards while it has free space above the reserve
    offline   unreachable (I/O errors); no new shards, reads fall back to parity;
              back to online when it answers, failed after ``drive_offline_grace_s``
    failed    wiped, replaced or gone for good: every shard it held is rebuilt elsewhere
    draining  readable but leaving (``apollo admin drive drain``): shards are copied off
    retired   holds nothing the namespace needs; ``apollo admin drive remove`` forgets it

Every server process probes the drives it serves every couple of seconds (format
file + free space) to decide where new shards may go. Only the manager process
(the single server, or worker 0 of ``--workers N``) changes states and runs the
drive jobs: resumable walks over every committed segment that queue the shards a
failed or draining drive holds for the repair worker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from apollo.client.context import ClientContext
from apollo.cluster.repair import DriveView
from apollo.errors import DriveError
from apollo.gateway import metrics
from apollo.meta.placement import Candidate
from apollo.meta.service import MetaService
from apollo.meta.sql_admin import DriveRecord
from apollo.meta.sql_repair import DriveJob
from apollo.storage.drive import Drive
from apollo.storage.node import LocalStorageNode

log = logging.getLogger("apollo.drives")
NODE_NAME = "local"
SERVING_STATES = ("online", "offline", "draining")  # drives a server keeps attached and readable
JOB_PAGE_SEGMENTS = 512
STATES = ("online", "offline", "failed", "draining", "retired")


class DriveMonitor:
    def __init__(
        self, ctx: ClientContext, node: LocalStorageNode, deployment_id: str, *, manager: bool, reserve_bytes: int
    ) -> None:
        self.ctx = ctx
        self.meta: MetaService = ctx.meta
        self.node = node
        self.deployment_id = deployment_id
        self.manager = manager  # only the manager changes drive states and runs drive jobs
        self.reserve_bytes = reserve_bytes
        self.offline_grace_s = 600.0
        self.records: dict[str, DriveRecord] = {}
        self.writable: set[str] = set()
        self._unreachable_since: dict[str, float] = {}

    def view(self) -> DriveView:
        """States and writability as of the last probe, for the repair worker."""
        return DriveView(
            states={d: r.state for d, r in self.records.items()},
            writable=set(self.writable),
            replaced_by={d: r.replaced_by for d, r in self.records.items() if r.replaced_by},
            candidates=self._candidates(),
        )

    def _candidates(self) -> list[Candidate]:
        return [Candidate(d, r.node, r.weight) for d, r in self.records.items() if r.state == "online"]

    async def probe(self) -> None:
        """Refresh states from the database, attach new drives, check every drive, publish writability.

        Placement is updated before any database write: with the metadata disk full those writes
        fail, and drives that regained space must still be used again.
        """
        self.records = {r.drive_id: r for r in await self.meta.list_drives()}
        checks = await asyncio.to_thread(self._check_all, dict(self.node.drives))
        self._attach_or_detach(checks)
        writable = set()
        for drive_id, (health, free, _, _) in checks.items():
            record = self.records[drive_id]
            if health == "ok":
                self._unreachable_since.pop(drive_id, None)
                if record.state == "online" and free >= self.reserve_bytes:
                    writable.add(drive_id)
            metrics.drive_up.labels(drive_id, record.path).set(1 if health == "ok" else 0)
            metrics.drive_free_bytes.labels(drive_id).set(free)
        gained = writable - self.writable
        if writable != self.writable:
            log.info("writable drives: %d of %d", len(writable), len(self.records))
        self.writable = writable
        self.meta.set_drives(self._candidates(), writable)
        if self.manager:
            await self._apply_transitions(checks, bool(gained))
            self.meta.set_drives(self._candidates(), writable)  # states may have changed
        for state in STATES:
            metrics.drives_by_state.labels(state).set(sum(r.state == state for r in self.records.values()))

    async def _apply_transitions(self, checks: dict, gained: bool) -> None:
        now = time.time()
        for drive_id, (health, _, _, _) in checks.items():
            record = self.records[drive_id]
            if health != "ok":
                await self._on_trouble(record, health, now)
            elif record.state == "offline":
                await self._set_state(record, "online", now, "it answers again")
        await self.meta.set_drive_usage({d: (free, total) for d, (_, free, total, _) in checks.items()})
        if gained:  # repairs that found no drive to rebuild onto may now find one
            await self.meta.retry_repairs_now()

    def _check_all(self, attached: dict[str, Drive]) -> dict[str, tuple[str, int, int, Drive | None]]:
        """Per serving drive: (health, free bytes, total bytes, the drive opened if it was not attached).

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
                health = drive.probe()
                free, total = drive.usage() if health == "ok" else (0, 0)
                out[drive_id] = (health, free, total, opened if health == "ok" else None)
            except DriveError:
                out[drive_id] = ("gone", 0, 0, None)
            except OSError:
                out[drive_id] = ("unreachable", 0, 0, None)
        return out

    def _attach_or_detach(self, checks: dict[str, tuple[str, int, int, Drive | None]]) -> None:
        for drive_id, (health, _, _, opened) in checks.items():
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

    async def _on_trouble(self, record: DriveRecord, health: str, now: float) -> None:
        if health == "gone" and record.state in ("online", "offline", "draining"):
            await self._fail(record, now, "its format file is gone: wiped, unmounted or replaced")
        elif health == "unreachable":
            since = self._unreachable_since.setdefault(record.drive_id, now)
            if record.state == "online":
                await self._set_state(record, "offline", now, "I/O errors while probing it")
            elif record.state == "offline" and now - since >= self.offline_grace_s:
                await self._fail(record, now, f"unreachable for {now - since:.0f} s")

    async def _fail(self, record: DriveRecord, now: float, why: str) -> None:
        await self._set_state(record, "failed", now, why)
        await self.meta.start_drive_job(record.drive_id, "evacuate", now)

    async def _set_state(self, record: DriveRecord, state: str, now: float, why: str) -> None:
        if await self.meta.set_drive_state(record.drive_id, state, now):
            level = logging.ERROR if state in ("offline", "failed") else logging.INFO
            log.log(level, "drive %s (%s): %s -> %s: %s", record.drive_id, record.path, record.state, state, why)
            record.state = state

    # drive jobs (manager only) ---------------------------------------------------------------

    async def run_jobs(self) -> int:
        """Advance every drive job by one page; retire drives nothing refers to any more."""
        now = time.time()
        jobs = await self.meta.drive_jobs()
        for job in jobs:
            await self._advance(job, now)
        busy = {job.drive_id for job in jobs}
        for record in list(self.records.values()):
            if record.state in ("failed", "draining") and record.drive_id not in busy:
                await self._retire_if_empty(record, now)
        return len(jobs)

    async def _advance(self, job: DriveJob, now: float) -> None:
        page = await self.meta.segments_after(job.cursor_pg, job.cursor_segment, JOB_PAGE_SEGMENTS, job.drive_id)
        if not page:
            await self.meta.finish_drive_job(job.drive_id, now)
            log.info("drive %s: %s walk done, %d shards queued", job.drive_id, job.kind, job.queued)
            return
        reason = "drain" if job.kind == "drain" else "drive failed"
        items = [
            (layout.segment_id, index, job.drive_id, reason)
            for layout in page
            for index, drive in enumerate(layout.drives)
            if drive == job.drive_id
        ]
        await self.meta.advance_drive_job(job, page[-1].pg, page[-1].segment_id, items, now)

    async def _retire_if_empty(self, record: DriveRecord, now: float) -> None:
        if await self.meta.pending_repairs_on(record.drive_id):
            return
        if await self.meta.segments_after(-1, "", 1, record.drive_id):  # committed after the walk passed it
            await self.meta.start_drive_job(record.drive_id, "drain" if record.state == "draining" else "evacuate", now)
            return
        await self._set_state(record, "retired", now, "no segment refers to it any more")
