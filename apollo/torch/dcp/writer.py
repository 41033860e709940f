"""``ApolloStorageWriter``: PyTorch Distributed Checkpoint saves to ``apollo://bucket/prefix``, all or nothing.

torch's filesystem and fsspec writers make a checkpoint by writing data files and then renaming
``.metadata.tmp`` to ``.metadata``; on an object store that rename is a copy and a delete, and a save killed
half-way leaves files that look like part of a checkpoint. Here the save is one Apollo transaction
(``apollo.client.transaction``):

1. the coordinator's ``prepare_global_plan`` begins it and hands its id to every rank in the plan it sends
   (the plan is how torch already talks to the ranks: no extra collective);
2. each rank's ``write_data`` joins it and streams its data files straight to the storage nodes, several in
   parallel, each file one staged put: nothing of them is visible;
3. the coordinator's ``finish`` stages ``.metadata`` (and, when it replaces an earlier save of the same
   id, the deletes of that save's files this one did not rewrite) and commits: every file of the
   checkpoint appears in one metadata transaction.

A save killed at any point before the commit leaves nothing visible, and the transaction's TTL hands what
it wrote to GC. ``overwrite=False`` makes the commit conditional on nothing existing under the prefix, so
two jobs saving the same step cannot both win.

The writer pickles (``dcp.async_save`` with the process executor ships it to another process): it holds the
endpoint and keys, never a client; each process makes its own on first use (``apollo.torch.urls``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import io
import os
import uuid
from collections.abc import AsyncIterator
from typing import Any

from torch.distributed.checkpoint.metadata import Metadata, StorageMeta
from torch.distributed.checkpoint.planner import SavePlan, SavePlanner, WriteItem, WriteItemType
from torch.distributed.checkpoint.storage import StorageWriter, WriteResult
from torch.futures import Future

from apollo import faults
from apollo.client import AsyncClient
from apollo.client.transaction import Transaction
from apollo.torch.dcp.layout import METADATA, SAVE_ID_META, SUFFIX, Location, PlanData, metadata_bytes, raw_bytes
from apollo.torch.dcp.place import CheckpointPlace

FILES_PER_RANK_DEFAULT = 2  # data files each rank streams at once: each is one staged put, in parallel


class ApolloStorageWriter(CheckpointPlace, StorageWriter):
    """A ``StorageWriter`` for ``apollo://bucket/prefix`` (see the module's docstring).

    ``endpoint``, ``access_key``, ``secret_key``: default ``APOLLO_ENDPOINT``, ``APOLLO_ACCESS_KEY``,
    ``APOLLO_SECRET_KEY``; every rank must use the same key (a transaction is its creator key's).
    ``files_per_rank``: data files a rank writes, in parallel, its items spread over them by size.
    ``overwrite``: False refuses a prefix that holds anything, at the start and again, atomically, at the commit.
    ``txn_ttl_s``: how long a save may take before its transaction expires (the service clamps it).
    """

    def __init__(self, checkpoint_id: str | os.PathLike | None = None, *, endpoint: str | None = None,
                 access_key: str | None = None, secret_key: str | None = None,
                 files_per_rank: int = FILES_PER_RANK_DEFAULT, overwrite: bool = True,
                 txn_ttl_s: float | None = None) -> None:  # fmt: skip
        CheckpointPlace.__init__(self, endpoint, access_key, secret_key)
        if files_per_rank < 1:
            raise ValueError(f"files_per_rank must be at least 1, not {files_per_rank}")
        self.files_per_rank = files_per_rank
        self.overwrite = overwrite
        self.txn_ttl_s = txn_ttl_s
        self.save_id = uuid.uuid4().hex
        self.rank: int | None = None
        self.use_collectives = True
        self._txn: Transaction | None = None  # this process's handle on the save's transaction
        if checkpoint_id is not None:
            self.reset(checkpoint_id)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_txn"] = None  # a handle on this process's client; the plan carries the id to any process
        return state

    # StorageWriter ----------------------------------------------------------------------------

    def reset(self, checkpoint_id: str | os.PathLike | None = None) -> None:
        self._locate(checkpoint_id)
        self.save_id = uuid.uuid4().hex
        self._txn = None

    def set_up_storage_writer(self, is_coordinator: bool, *args: Any, **kwargs: Any) -> None:
        if self.url is None:
            raise ValueError("no checkpoint_id: give ApolloStorageWriter one, or pass checkpoint_id to dcp.save")
        self.rank = kwargs.get("rank")
        self.use_collectives = kwargs.get("use_collectives", True)

    def storage_meta(self) -> StorageMeta | None:
        return StorageMeta(checkpoint_id=self.url, save_id=self.save_id)

    def prepare_local_plan(self, plan: SavePlan) -> SavePlan:
        if not self.overwrite and self._run(self._prefix_holds_anything):
            raise FileExistsError(f"{self.url} already holds a checkpoint and overwrite=False")
        return plan

    def prepare_global_plan(self, plans: list[SavePlan]) -> list[SavePlan]:
        txn_id = self._run(self._begin)
        if not self.use_collectives and self.rank is not None:  # each rank plans, and commits, alone
            return [dataclasses.replace(plans[0], storage_data=PlanData(f"__{self.rank}_", txn_id, self.save_id))]
        return [dataclasses.replace(plan, storage_data=PlanData(f"__{rank}_", txn_id, self.save_id))
                for rank, plan in enumerate(plans)]  # fmt: skip

    def write_data(self, plan: SavePlan, planner: SavePlanner) -> Future[list[WriteResult]]:
        data: PlanData = plan.storage_data
        spread = _spread(plan.items, self.files_per_rank)
        files = [(f"{data.prefix}{n}{SUFFIX}", items) for n, items in enumerate(spread) if items]
        results = self._run(self._write_files, data, files, planner)
        future: Future[list[WriteResult]] = Future()
        future.set_result(results)
        return future

    def finish(self, metadata: Metadata, results: list[list[WriteResult]]) -> None:
        metadata.storage_data = {result.index: result.storage_data for rank in results for result in rank}
        metadata.storage_meta = self.storage_meta()
        name = f"__{self.rank}{METADATA}" if not self.use_collectives and self.rank is not None else METADATA
        written = {location.relative_path for location in metadata.storage_data.values()} | {name}
        self._run(self._commit, name, metadata_bytes(metadata), written)

    # on the client's loop ----------------------------------------------------------------------

    async def _prefix_holds_anything(self, apollo: AsyncClient) -> bool:
        async for _ in apollo.list(self.bucket, self.prefix):
            return True
        return False

    async def _begin(self, apollo: AsyncClient) -> str:
        condition = None if self.overwrite else self.prefix
        self._txn = await apollo.transaction(self.bucket, ttl_s=self.txn_ttl_s, if_prefix_absent=condition).begin()
        return self._txn.id

    async def _joined(self, apollo: AsyncClient, txn_id: str) -> Transaction:
        if self._txn is None or self._txn.id != txn_id:
            self._txn = await apollo.join_transaction(self.bucket, txn_id).begin()
        return self._txn

    async def _write_files(self, apollo: AsyncClient, data: PlanData, files: list[tuple[str, list[WriteItem]]],
                           planner: SavePlanner) -> list[WriteResult]:  # fmt: skip
        txn = await self._joined(apollo, data.txn_id)
        per_file = await asyncio.gather(*(self._write_file(txn, data.save_id, name, items, planner)
                                          for name, items in files))  # fmt: skip
        return [result for results in per_file for result in results]

    async def _write_file(self, txn: Transaction, save_id: str, name: str, items: list[WriteItem],
                          planner: SavePlanner) -> list[WriteResult]:  # fmt: skip
        """One data file: its items' bytes one after another, streamed into one staged put. Each item is
        resolved only when the stream reaches it (``resolve_data`` may copy from a GPU)."""
        results: list[WriteResult] = []

        async def body() -> AsyncIterator[memoryview]:
            offset = 0
            for item in items:
                data = planner.resolve_data(item)
                if item.type == WriteItemType.BYTE_IO:
                    view = memoryview(data.getbuffer() if isinstance(data, io.BytesIO) else bytes(data)).cast("B")
                    location = Location(name, offset, len(view))
                else:
                    view = raw_bytes(data)
                    location = Location(name, offset, len(view), str(data.dtype), tuple(data.shape))
                results.append(WriteResult(index=item.index, size_in_bytes=len(view), storage_data=location))
                yield view
                offset += len(view)

        await txn.put(self.prefix + name, body(), metadata={SAVE_ID_META: save_id})
        faults.point("dcp.write.after_file")
        return results

    async def _commit(self, apollo: AsyncClient, metadata_name: str, metadata: bytes, written: set[str]) -> None:
        txn = self._txn
        if txn is None:
            raise RuntimeError("finish() on a writer that began no save: it runs on the coordinator only")
        try:
            if self.overwrite and self.use_collectives:  # a rank-local finish must keep the other ranks' files
                async for entry in apollo.list(self.bucket, self.prefix, delimiter="/"):
                    if isinstance(entry, str):  # a "directory" below: not a file of a save
                        continue
                    name = entry.key[len(self.prefix) :]
                    if _is_checkpoint_file(name) and name not in written:
                        await txn.delete(entry.key)
            faults.point("dcp.finish.before_metadata")
            await txn.put(self.prefix + metadata_name, metadata)
            faults.point("dcp.finish.before_commit")
            await txn.commit()
        except BaseException:
            with contextlib.suppress(Exception):  # the caller sees why the commit failed; the TTL ends it else
                await txn.abort()
            raise
        finally:
            self._txn = None


def _spread(items: list[WriteItem], files: int) -> list[list[WriteItem]]:
    """Items over ``files`` files, the largest first onto the file with the fewest bytes so far, so the
    parallel streams end together; each file keeps the planner's order among its own items."""
    if files == 1:
        return [list(items)]
    loads = [0] * files
    chosen = [[] for _ in range(files)]
    for position, item in sorted(enumerate(items), key=lambda pair: -_size(pair[1])):
        target = loads.index(min(loads))
        chosen[target].append((position, item))
        loads[target] += _size(item)
    return [[item for _, item in sorted(members, key=lambda pair: pair[0])] for members in chosen]


def _is_checkpoint_file(name: str) -> bool:
    """A file an earlier save of this id wrote: what a new save replaces (anything else there is left)."""
    return name.endswith((SUFFIX, METADATA))


def _size(item: WriteItem) -> int:
    if item.type == WriteItemType.BYTE_IO:
        return 1  # small, and unknown until resolved
    return item.tensor_storage_size() or 0

