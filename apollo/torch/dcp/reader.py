"""``ApolloStorageReader``: PyTorch Distributed Checkpoint loads from ``apollo://bucket/prefix``.

- **One checkpoint, whatever is saved meanwhile.** ``read_metadata`` pins ``.metadata`` and then every data
  file it names (``AsyncClient.pin``: one metadata call each), and every byte is read through those pins,
  so a save of the same id committing meanwhile changes nothing that is read, on a versioned bucket or not.
  Every data file carries the id of the save that wrote it: files of another save than the ``.metadata``
  (a save committed between the two pins) are pinned again. The coordinator's load plan tells every rank
  the save it planned from, and a rank that opened another fails the load instead of mixing two.
- **Reads as the storage likes them.** A tensor item is a byte range of a data file (``apollo.torch.dcp.layout``):
  a large one whose destination is a contiguous CPU tensor is read straight into that tensor's memory; the
  others are coalesced per file (ranges less than ``COALESCE_GAP_BYTES`` apart become one) and read with
  batch GETs (``apollo.client.batch``: one metadata call and about one request per storage node per wave),
  in waves of at most ``WAVE_BYTES`` held at once. Resharded loads read just the rows (or span) of each
  stored chunk that hold the hypercube asked for.
- ``.metadata`` is read with torch's weights-only loader (``layout.metadata_of``): a planted one cannot run
  code. Bytes items (what ``torch.save`` made of a non-tensor value) go to the planner, and torch's
  ``DefaultLoadPlanner`` unpickles them with ``weights_only=False``: anyone who could write one file of the
  checkpoint would run code in every rank that loads it. The reader first loads each with the weights-only
  loader and refuses the load when that fails. Passing it proves the same bytes build only what that
  loader allows (the planner's loader then resolves the same globals, all of them on its allow list). A
  job whose checkpoints hold other objects (NumPy's RNG state, say) and whose writers it trusts passes
  ``trust_pickles=True``. Checkpoints saved by torch's own fsspec
  writer (a plain pickle, a ``torch.save`` archive per tensor) are refused with a clear error; ``dcp.load``
  with no reader loads them through the ``apollo`` protocol.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import os
import uuid
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import torch
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta
from torch.distributed.checkpoint.planner import LoadItemType, LoadPlan, LoadPlanner, ReadItem
from torch.distributed.checkpoint.storage import StorageReader
from torch.futures import Future

from apollo.client import AsyncClient
from apollo.client.batch import BatchItem, Pinned
from apollo.torch.dcp.layout import (
    METADATA,
    SAVE_ID_META,
    LoadCheck,
    Location,
    Span,
    dtype_named,
    hypercube_in,
    metadata_of,
    span_of,
    writable_bytes,
)
from apollo.torch.dcp.place import CheckpointPlace

DIRECT_MIN_BYTES = 1 << 20  # a contiguous range at least this large is read straight into its tensor
COALESCE_GAP_BYTES = 256 << 10  # ranges of one file closer than this are read as one
COALESCED_MAX_BYTES = 64 << 20  # ... up to this size
WAVE_BYTES = 256 << 20  # coalesced bytes held at once
DIRECT_READS_AT_ONCE = 8
OPEN_ATTEMPTS = 3  # listings of a checkpoint a save kept changing before the load gives up


@dataclass
class _Job:
    """One read item's bytes: ``[start, end)`` of ``relative_path``, and where they go."""

    request: ReadItem
    relative_path: str
    start: int
    end: int
    target: torch.Tensor | None = None  # a tensor item's destination
    span: Span | None = None  # Apollo's format: how the hypercube lies in the bytes
    dtype: torch.dtype | None = None
    direct: memoryview | None = None  # read straight into this (the target's memory)


class ApolloStorageReader(CheckpointPlace, StorageReader):
    """A ``StorageReader`` for ``apollo://bucket/prefix`` (see the module's docstring); settings as
    ``ApolloStorageWriter`` takes them."""

    def __init__(self, checkpoint_id: str | os.PathLike | None = None, *, endpoint: str | None = None,
                 access_key: str | None = None, secret_key: str | None = None,
                 trust_pickles: bool = False) -> None:  # fmt: skip
        CheckpointPlace.__init__(self, endpoint, access_key, secret_key)
        self.trust_pickles = trust_pickles  # hand bytes items to the planner unchecked (the module says when)
        self.storage_data: dict[Any, Any] = {}
        self.load_id = uuid.uuid4().hex
        self._save_id: str | None = None
        self._pins: dict[str, Pinned] = {}  # data files by relative path, as read_metadata pinned them
        if checkpoint_id is not None:
            self.reset(checkpoint_id)

    def reset(self, checkpoint_id: str | os.PathLike | None = None) -> None:
        self._locate(checkpoint_id)
        self.storage_data = {}
        self.load_id = uuid.uuid4().hex
        self._pins = {}

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        """:raises FileNotFoundError: no (complete) checkpoint there. :raises RuntimeError: saves kept
        replacing it while it was opened."""
        if self.url is None:
            raise ValueError("no checkpoint_id: give ApolloStorageReader one, or pass checkpoint_id to dcp.load")
        rank = kwargs.get("rank")
        name = METADATA if rank is None else f"__{rank}{METADATA}"
        metadata, self._pins = self._run(self._open, name)
        self._save_id = metadata.storage_meta.save_id if metadata.storage_meta else None
        if metadata.storage_meta is None:
            metadata.storage_meta = StorageMeta()
        metadata.storage_meta.load_id = self.load_id
        return metadata

    def set_up_storage_reader(self, metadata: Metadata, is_coordinator: bool, *args: Any, **kwargs: Any) -> None:
        if metadata.storage_data is None:
            raise ValueError(f"{self.url}: the checkpoint's metadata has no storage data")
        self.storage_data = metadata.storage_data

    def prepare_local_plan(self, plan: LoadPlan) -> LoadPlan:
        return plan

    def prepare_global_plan(self, plans: list[LoadPlan]) -> list[LoadPlan]:
        return [dataclasses.replace(plan, storage_data=LoadCheck(self._save_id)) for plan in plans]

    def read_data(self, plan: LoadPlan, planner: LoadPlanner) -> Future[None]:
        if isinstance(plan.storage_data, LoadCheck) and plan.storage_data.save_id != self._save_id:
            raise RuntimeError(f"{self.url} was saved again while the ranks opened it: they planned from different "
                               "saves; load again")  # fmt: skip
        jobs = [self._job(request, planner) for request in plan.items]
        for wave in _waves(jobs):
            fetched = self._run(self._fetch, wave)
            for job in wave:
                self._deliver(job, fetched.get(id(job)), planner)
        future: Future[None] = Future()
        future.set_result(None)
        return future

    # planning each item's read -------------------------------------------------------------------

    def _job(self, request: ReadItem, planner: LoadPlanner) -> _Job:
        location = self.storage_data[request.storage_index]
        start, end = location.offset, location.offset + location.length
        if request.type == LoadItemType.BYTE_IO:
            return _Job(request, location.relative_path, start, end)
        target = planner.resolve_tensor(request).detach()
        if tuple(target.size()) != tuple(request.lengths):
            raise ValueError(f"{request.storage_index.fqn}: the destination is {tuple(target.size())}, the plan "
                             f"reads {tuple(request.lengths)}")  # fmt: skip
        if not isinstance(location, Location) or location.dtype is None or location.shape is None:
            raise ValueError(f"{self.url}: {request.storage_index.fqn} is not stored as ApolloStorageWriter stores "
                             "tensors (another writer's? load it with dcp.load and no storage_reader)")  # fmt: skip
        dtype = dtype_named(location.dtype)
        span = span_of(location.shape, torch.empty((), dtype=dtype).element_size(), tuple(request.storage_offsets),
                       tuple(request.lengths))  # fmt: skip
        job = _Job(request, location.relative_path, start + span.start, start + span.end, target, span, dtype)
        if span.contiguous and span.end - span.start >= DIRECT_MIN_BYTES and target.dtype == dtype:
            job.direct = writable_bytes(target)
        return job

    def _deliver(self, job: _Job, data: memoryview | None, planner: LoadPlanner) -> None:
        request = job.request
        if job.target is None:
            if not self.trust_pickles:
                self._refuse_unsafe_pickle(request, data)
            planner.load_bytes(request, io.BytesIO(data))
            return
        if job.direct is None:
            job.target.copy_(hypercube_in(data, job.dtype, job.span))
        planner.commit_tensor(request, job.target)

    def _refuse_unsafe_pickle(self, request: ReadItem, data: memoryview | None) -> None:
        """:raises RuntimeError: the item does not load with torch's weights-only loader (the module says why)."""
        try:
            torch.load(io.BytesIO(data), weights_only=True)
        except Exception as exc:
            why = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
            raise RuntimeError(f"{self.url}: item {request.dest_index.fqn!r} is a pickle torch's weights-only loader "
                               f"refuses ({why}); loading it could run code. Pass "
                               "ApolloStorageReader(..., trust_pickles=True) if its writers are trusted") from None

    # on the client's loop ---------------------------------------------------------------------

    async def _open(self, apollo: AsyncClient, name: str) -> tuple[Metadata, dict[str, Pinned]]:
        for _ in range(OPEN_ATTEMPTS):  # again only when a save committed between the two pins
            (pin,) = await apollo.pin(self.bucket, [self.prefix + name])
            if pin is None:
                raise FileNotFoundError(f"{self.url} holds no checkpoint ({name} is missing)")
            metadata = metadata_of(await apollo.get(self.bucket, pin.key, pinned=pin), f"{self.url}/{name}")
            paths = sorted({location.relative_path for location in (metadata.storage_data or {}).values()})
            found = await apollo.pin(self.bucket, [self.prefix + path for path in paths])
            pins = dict(zip(paths, found, strict=True))
            if _of_one_save(metadata, pins):
                return metadata, pins
        missing = [path for path, found in pins.items() if found is None]
        if missing:
            raise FileNotFoundError(f"{self.url}: data files its .metadata names are missing: {missing[:5]}")
        raise RuntimeError(f"{self.url} kept being saved while it was opened ({OPEN_ATTEMPTS} tries)")

    async def _fetch(self, apollo: AsyncClient, jobs: list[_Job]) -> dict[int, memoryview]:
        """Every job's bytes: direct ones into their tensors (no entry), the rest coalesced and batch-read,
        each job's entry a view of what was read for it."""
        coalesced, fetched = _coalesced([job for job in jobs if job.direct is None]), {}
        limit = asyncio.Semaphore(DIRECT_READS_AT_ONCE)

        async def direct(job: _Job) -> None:
            async with limit:
                pin = self._pins[job.relative_path]
                got = await apollo.get_into(pin.bucket, pin.key, job.direct, job.start, pinned=pin)
            if got != len(job.direct):
                raise EOFError(f"{self.url}/{job.relative_path}: {got} bytes at {job.start}, "
                               f"{len(job.direct)} expected")  # fmt: skip

        async def batched() -> None:
            pins = [self._pins[path] for path, *_ in coalesced]
            items = [BatchItem(pin.bucket, pin.key, start=start, end=end, pinned=pin)
                     for pin, (_, start, end, _) in zip(pins, coalesced, strict=True)]  # fmt: skip
            position = 0
            async for result in apollo.get_batch(items):
                if not result.ok:
                    raise result.error
                path, start, end, members = coalesced[position]
                position += 1
                if len(result.data) != end - start:
                    raise EOFError(f"{self.url}/{path}: {len(result.data)} bytes at {start}, "
                                   f"{end - start} expected")  # fmt: skip
                view = memoryview(result.data)
                for job in members:
                    fetched[id(job)] = view[job.start - start : job.end - start]

        await asyncio.gather(batched(), *(direct(job) for job in jobs if job.direct is not None))
        return fetched


def _of_one_save(metadata: Metadata, pins: dict[str, Pinned | None]) -> bool:
    """Whether every data file ``metadata`` names was found and, in Apollo's format, written by its save."""
    save_id = metadata.storage_meta.save_id if metadata.storage_meta else None
    for location in (metadata.storage_data or {}).values():
        pin = pins.get(location.relative_path)
        if pin is None:
            return False
        if isinstance(location, Location) and pin.metadata.get(SAVE_ID_META) != save_id:
            return False
    return True


def _coalesced(jobs: list[_Job]) -> list[tuple[str, int, int, list[_Job]]]:
    """(file, start, end, jobs) ranges: per file, by offset, ranges less than ``COALESCE_GAP_BYTES`` apart
    merged while under ``COALESCED_MAX_BYTES``."""
    by_file: dict[str, list[_Job]] = defaultdict(list)
    for job in jobs:
        by_file[job.relative_path].append(job)
    ranges: list[tuple[str, int, int, list[_Job]]] = []
    for path, members in by_file.items():
        members.sort(key=lambda job: job.start)
        start, end, group = members[0].start, members[0].end, [members[0]]
        for job in members[1:]:
            if job.start - end <= COALESCE_GAP_BYTES and max(end, job.end) - start <= COALESCED_MAX_BYTES:
                end = max(end, job.end)
                group.append(job)
                continue
            ranges.append((path, start, end, group))
            start, end, group = job.start, job.end, [job]
        ranges.append((path, start, end, group))
    return ranges


def _waves(jobs: list[_Job]) -> list[list[_Job]]:
    """Jobs in groups whose bytes read into memory (not into tensors) stay under ``WAVE_BYTES`` each."""
    waves: list[list[_Job]] = [[]]
    held = 0
    for job in jobs:
        size = 0 if job.direct is not None else job.end - job.start
        if waves[-1] and held + size > WAVE_BYTES:
            waves.append([])
            held = 0
        waves[-1].append(job)
        held += size
    return waves
