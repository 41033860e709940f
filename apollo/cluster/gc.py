"""The garbage collector: shards of deleted, replaced and abandoned data, and expired multipart uploads.

Runs on the manager (the lease holder): in the all-in-one server over its local drives,
in a cluster on a metadata service over the storage nodes of the map. A due garbage row
names a segment's layout; every shard of it is deleted wherever its drive is served, and
only then is the row forgotten, so a crash in between deletes again (deleting a missing
shard is no error).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from apollo import limits, metrics
from apollo.storage.node import StorageNode

log = logging.getLogger("apollo.gc")
BATCH_SEGMENTS = 256


class GarbageCollector:
    def __init__(self, meta, nodes: Callable[[], dict[str, StorageNode]], upload_expiry_s: float) -> None:
        """``nodes()``: the node serving each drive right now."""
        self.meta = meta
        self.nodes = nodes
        self.upload_expiry_s = upload_expiry_s

    async def run_forever(self) -> None:
        while True:
            try:
                await self.expire_uploads()
                await self.expire_txns()
                await self.expire_kv()
                while await self.collect() == BATCH_SEGMENTS:
                    pass
            except Exception:
                log.exception("garbage collection pass failed")
            await asyncio.sleep(limits.gc_interval_s)

    async def expire_uploads(self) -> int:
        """Abort multipart uploads abandoned for longer than the expiry; their parts become garbage."""
        now = time.time()
        expired = await self.meta.expire_uploads(now - self.upload_expiry_s, now, limits.uploads_expired_per_pass_max)
        for upload in expired:
            log.info("aborted multipart upload %s of %s/%s, initiated %.0f s ago (upload expiry)",
                     upload.upload_id, upload.bucket, upload.key, now - upload.created)  # fmt: skip
        return len(expired)

    async def expire_txns(self) -> int:
        """Abort transactions left open past their TTL (a crashed or forgetful client); their staged data
        becomes garbage after the grace (``apollo.meta.sql_txns``)."""
        expired = await self.meta.expire_txns(time.time(), limits.txns_expired_per_pass_max)
        for txn in expired:
            log.info("aborted transaction %s of %s by %s (%d keys staged): its TTL ended", txn.txn_id, txn.bucket,
                     txn.owner, txn.items)  # fmt: skip
        return len(expired)

    async def expire_kv(self) -> int:
        """Remove the values of KV namespaces whose TTL ended (lookups already treat them as gone); their
        data becomes garbage after the grace (``apollo.meta.sql_kv``)."""
        try:
            removed = await self.meta.expire_kv(time.time(), limits.kv_expired_per_pass_max)
        except Exception:  # the collection of the pass goes on: this one is retried next pass
            log.exception("removing expired KV values failed")
            return 0
        if removed:
            log.info("removed %d expired KV values", removed)
        return removed

    async def collect(self) -> int:
        """Delete the shard files of up to one batch of due garbage rows, then forget the rows."""
        batch = await self.meta.due_garbage(time.time(), BATCH_SEGMENTS)
        nodes = self.nodes()
        for item in batch:
            layout = item.layout
            for index, drive_id in enumerate(layout.drives):
                node = nodes.get(drive_id)
                if node is None:
                    continue
                try:
                    if await node.delete(drive_id, layout.shard(index)):
                        metrics.gc_deleted_shards.inc()
                except OSError as exc:  # the orphan sweep finds what a dead node kept
                    log.warning("GC could not delete shard %d of %s on %s: %s", index, layout.segment_id, drive_id,
                                exc)  # fmt: skip
        if batch:
            await self.meta.forget_garbage([item.layout.segment_id for item in batch])
        return len(batch)
