"""What the client library needs to reach metadata and drives."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from apollo.errors import DriveError
from apollo.meta.service import MetaService
from apollo.proto.placement import Placement
from apollo.storage.node import StorageNode

log = logging.getLogger("apollo.client")


@dataclass
class Damage:
    segment_id: str
    shard_index: int
    drive_id: str
    reason: str


HEDGE_AFTER_S = (0.01, 1.0)  # the hedge threshold's bounds; the upper one is also the threshold before any read
HEDGE_SAMPLES = 256  # recent healthy shard reads the threshold is learned from
HEDGE_PERCENTILE = 0.95
HEDGE_FACTOR = 2.0  # a read this many times slower than the recent 95th percentile is hedged
SLOW_FOR_S = 5.0  # a drive that made a read hedge is read around, not waited for, this long
SLOW_DRIVES_MAX = 4096


class ReadLatency:
    """When to stop waiting for a shard and read parity instead (a hedge), learned from recent reads; and
    which drives were slow lately. A node that is alive but slow (a stopped process, a saturated disk, a
    congested link) answers late rather than failing: without a hedge every read it serves would take the
    node's whole request timeout. Slow is not failed: nothing is reported for repair."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._samples: deque[float] = deque(maxlen=HEDGE_SAMPLES)
        self._threshold = HEDGE_AFTER_S[1]
        self._slow: dict[str, float] = {}  # drive id -> until when

    def record(self, seconds: float) -> None:
        """A shard read that answered, and how long it took."""
        self._samples.append(seconds)
        if len(self._samples) % 32 == 0:  # a percentile every 32 reads, not every read
            ordered = sorted(self._samples)
            recent = ordered[min(len(ordered) - 1, int(HEDGE_PERCENTILE * len(ordered)))]
            self._threshold = min(HEDGE_AFTER_S[1], max(HEDGE_AFTER_S[0], HEDGE_FACTOR * recent))

    def hedge_after(self) -> float:
        return self._threshold

    def note_slow(self, drive_id: str) -> None:
        if len(self._slow) >= SLOW_DRIVES_MAX:
            now = self._clock()
            self._slow = {d: until for d, until in self._slow.items() if until > now}
            if len(self._slow) >= SLOW_DRIVES_MAX:
                return
        self._slow[drive_id] = self._clock() + SLOW_FOR_S

    def is_slow(self, drive_id: str) -> bool:
        until = self._slow.get(drive_id)
        return until is not None and until > self._clock()

    def read_around(self, needed: list[str], drives: tuple[str, ...], k: int) -> bool:
        """Whether a read of the ``needed`` drives of a segment on ``drives`` should go around slow ones: one of
        them is slow, and at least ``k`` of the segment's drives are not. When too many are slow (a cluster
        that is behind everywhere, or one process serving every drive while it is busy), parity sits on drives
        as slow as the ones it would stand for: reading it adds requests and saves no time."""
        if not any(self.is_slow(drive) for drive in needed):
            return False
        return sum(not self.is_slow(drive) for drive in drives) >= k


@dataclass
class ClientContext:
    meta: MetaService
    nodes: dict[str, StorageNode]  # drive id -> node serving it
    cpu: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(4, thread_name_prefix="codec"))
    on_damage: list = field(default_factory=list)  # callbacks(Damage), e.g. metrics
    on_decode: list = field(default_factory=list)  # callbacks(stripes decoded from parity), e.g. metrics
    latency: ReadLatency = field(default_factory=ReadLatency)  # when a read hedges, and which drives are slow
    # A batch read's requests carry many shard reads each (``apollo.client.node_batches``): their own threshold.
    batch_latency: ReadLatency = field(default_factory=ReadLatency)

    @property
    def placement(self) -> Placement:
        """Where new shards may go: the metadata service's view (in process) or the cluster map's (remote)."""
        return self.meta.placement

    def node(self, drive_id: str) -> StorageNode:
        node = self.nodes.get(drive_id)
        if node is None:
            raise DriveError(f"no storage node serves drive {drive_id}")
        return node

    async def cpu_run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self.cpu, fn, *args)

    def decoded(self, stripes: int) -> None:
        for callback in self.on_decode:
            callback(stripes)

    async def report(self, damage: Damage) -> None:
        """Log a bad or missing shard and queue it for repair; reads carry on from parity."""
        log.warning(
            "damaged shard segment=%s shard=%d drive=%s: %s",
            damage.segment_id, damage.shard_index, damage.drive_id, damage.reason,
        )  # fmt: skip
        for callback in self.on_damage:
            callback(damage)
        try:
            await self.meta.report_damage(damage.segment_id, damage.shard_index, damage.drive_id, damage.reason,
                                          time.time())  # fmt: skip
        except Exception:  # the read itself must not fail because the queue is unavailable
            log.exception("could not queue repair for segment %s", damage.segment_id)
