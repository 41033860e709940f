"""Drive states and drive jobs: what the manager does with the health the probes report.

States (the ``drives`` table)::

    online    healthy; takes new shards while it has free space above the reserve
    offline   unreachable (I/O errors, or its storage node stopped heartbeating); no new
              shards, reads fall back to parity; back to online when it answers, failed
              after ``drive_offline_grace_s``
    failed    wiped, replaced or gone for good: every shard it held is rebuilt elsewhere
    draining  readable but leaving (``apollo admin drive drain``): shards are copied off
    retired   holds nothing the namespace needs; ``apollo admin drive remove`` forgets it

The health comes from the all-in-one server's own probes (``apollo.cluster.drives``) or,
in a cluster, from storage nodes' heartbeats and their liveness
(``apollo.cluster.remote_drives``). Drive jobs are resumable walks over every committed
segment that queue the shards a failed or draining drive holds for the repair worker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection

from apollo.cluster.passes import request_setting
from apollo.proto.cluster_map import DriveRecord
from apollo.proto.records import DriveJob

log = logging.getLogger("apollo.drives")
JOB_PAGE_SEGMENTS = 512
JOBS_IDLE_POLL_S = 0.5  # a new drive job (a failure, a drain) starts walking within this


class DriveLifecycle:
    def __init__(self, meta) -> None:
        self.meta = meta
        self.offline_grace_s = 600.0
        self._unreachable_since: dict[str, float] = {}
        self._states: dict[str, str] = {}
        # Drives the repair worker is writing to right now (``RepairWorker.writing``; the same process runs both).
        self.repairs_writing: Callable[[], Collection[str]] = tuple

    async def apply(self, records: dict[str, DriveRecord], health: dict[str, str], gained: bool) -> None:
        """Turn one round of health reports into state changes; ``gained``: a drive became writable.

        Health: ``ok``, ``gone`` (format file missing or another drive's), ``unreachable`` (I/O errors,
        or not served by its node), ``silent`` (its storage node stopped heartbeating).
        """
        now = time.time()
        for drive_id, state in health.items():
            record = records[drive_id]
            if state != "ok":
                await self._on_trouble(record, state, now)
            else:
                self._unreachable_since.pop(drive_id, None)
                if record.state == "offline":
                    await self._set_state(record, "online", now, "it answers again")
        if gained:  # repairs that found no drive to rebuild onto may now find one
            await self.meta.retry_repairs_now()

    async def _on_trouble(self, record: DriveRecord, health: str, now: float) -> None:
        if health == "gone" and record.state in ("online", "offline", "draining"):
            await self._fail(record, now, "its format file is gone: wiped, unmounted or replaced")
        elif health in ("unreachable", "silent"):
            since = self._unreachable_since.setdefault(record.drive_id, now)
            if record.state == "online":
                why = "its storage node stopped heartbeating" if health == "silent" else "I/O errors while probing it"
                await self._set_state(record, "offline", now, why)
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

    async def rebalance_on_change(self, records: dict[str, DriveRecord]) -> None:
        """A drive joined, left or finished draining: data no longer sits where shares say it should."""
        states = {d: r.state for d, r in records.items()}
        if self._states and states != self._states:
            log.info("drive states changed: rebalance requested")
            await self.meta.set_setting(request_setting("rebalance"), repr(time.time()))
        self._states = states

    async def jobs_forever(self, records: Callable[[], dict[str, DriveRecord]]) -> None:
        """Advance the drive jobs: quickly while there is work, every ``JOBS_IDLE_POLL_S`` otherwise."""
        while True:
            try:
                busy = await self.run_jobs(records())
            except Exception:
                log.exception("drive job step failed")
                busy = 0
            await asyncio.sleep(0.05 if busy else JOBS_IDLE_POLL_S)

    async def run_jobs(self, records: dict[str, DriveRecord]) -> int:
        """Advance every drive job by one page; retire drives nothing refers to any more."""
        now = time.time()
        jobs = await self.meta.drive_jobs()
        for job in jobs:
            await self._advance(job, now)
        busy = {job.drive_id for job in jobs}
        for record in list(records.values()):
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
        """Retire a failed or draining drive once nothing needs it; a retired drive is no longer served.

        Drives placement and repair chose a moment before the drain began (they follow the drive states a
        couple of seconds late) may still receive a shard: a repair writing there now, or a write in flight
        (a pending row in the garbage queue) that may yet commit. Retired before that commit, the drive
        would hold a committed shard nobody reads and nobody knows to rebuild; after it, the commit is
        found below and the walk starts again. A draining drive also waits for the garbage collector to
        delete replaced data there, which it can do only while the drive is served.
        """
        if await self.meta.pending_repairs_on(record.drive_id) or record.drive_id in self.repairs_writing():
            return
        held = await self.meta.segments_after(-1, "", 1, record.drive_id)
        if held and record.drive_id in held[0].drives:  # committed after the walk passed it
            await self._walk_again(record, now)
            return
        if record.state == "draining" and await self.meta.garbage_on(record.drive_id):
            return
        if await self.meta.reconcile_drive_index(record.drive_id):  # the index was wrong: its walk may have missed
            log.warning("the shard index of drive %s disagreed with the layouts; corrected, walking it again",
                        record.drive_id)  # fmt: skip
            await self._walk_again(record, now)
            return
        await self._set_state(record, "retired", now, "no segment refers to it any more")

    async def _walk_again(self, record: DriveRecord, now: float) -> None:
        await self.meta.start_drive_job(record.drive_id, "drain" if record.state == "draining" else "evacuate", now)
