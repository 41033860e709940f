"""Batch GET on the native path: many objects (or byte ranges of them), in any mix of buckets, for one
metadata round trip per ``limits.batch_lookup_items_max`` items and about one request per storage node,
instead of a lookup and a request per shard of each object.

A training job reads samples of 10 KiB – 1 MiB by the thousand. Here the lookups go in one call
(``ObjectEngine.head_many``, which answers every item, found or not, with its own ``Lookup``), small
objects come back inline in that same answer, and the rest are read in waves: every shard read of a wave
bound for one storage node goes in one request (``apollo.client.node_batches``). The next lookups are
asked for, and the next wave read, while this one is yielded. A missing key, a refused one or a failed
read is that item's error: the batch goes on.

Results come in request order (``ordered=True``: a slow object holds back those after it, at most two
waves of them read ahead) or as each completes."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Iterable
from dataclasses import dataclass, field

from apollo import errors, limits
from apollo.client.engine import ObjectEngine
from apollo.client.node_batches import NodeReads, read_bytes
from apollo.proto import codec
from apollo.proto.layout import ObjectData
from apollo.proto.records import Lookup, Version

# Items held, read or being read: two waves of a lookup call's worth, so a batch of a thousand ranges costs
# one metadata call and one request per storage node.
WINDOW_DEFAULT = 2 * limits.batch_lookup_items_max


@dataclass(frozen=True, eq=False)  # a pin is itself: equal (and hashed) by identity, as its version is unhashable
class Pinned:
    """One version of an object as a lookup found it, its layout and read tokens included
    (``AsyncClient.pin``). Read through it (``get``, ``get_into``, ``BatchItem.pinned``), it gives the bytes
    it found, whatever is written since, on a versioned bucket or not, with no metadata call; until the
    garbage collector removes a version replaced since (``--gc-delay`` after), or its tokens end (an hour)."""

    bucket: str
    key: str
    version: Version = field(repr=False)

    @property
    def size(self) -> int:
        return self.version.size

    @property
    def metadata(self) -> dict[str, str]:
        """Its user metadata."""
        return dict(self.version.attrs.user_meta)


@dataclass(frozen=True)
class BatchItem:
    """An object, or bytes ``[start, end)`` of it (``end`` None: to its end), of its latest version, the one
    named, or the one a snapshot of its bucket pinned (``snapshot``: its id); or of one of its members, when it
    is a tar archive indexed when written."""

    bucket: str
    key: str
    version_id: str | None = None
    start: int = 0
    end: int | None = None
    snapshot: str | None = None
    member: str | None = None  # a member of a tar archive indexed when written: start and end are in it
    pinned: Pinned | None = None  # the version a pin found: read with no lookup

    def __post_init__(self) -> None:
        if sum(choice is not None for choice in (self.version_id, self.snapshot, self.pinned)) > 1:
            raise ValueError(f"{self.bucket}/{self.key}: an item names one of a version, a snapshot or a pin")
        if self.pinned is not None and (self.pinned.bucket, self.pinned.key) != (self.bucket, self.key):
            raise ValueError(f"{self.bucket}/{self.key}: the pin is of {self.pinned.bucket}/{self.pinned.key}")

    @classmethod
    def of(cls, item: BatchItem | tuple) -> BatchItem:
        """An item, or a tuple of its fields in order: ``("bucket", "key")``, ``("b", "k", None, 0, 100)``."""
        return item if isinstance(item, BatchItem) else cls(*item)


@dataclass(frozen=True)
class BatchResult:
    """One item's answer: its bytes, or the exception it alone raised (``ObjectNotFound``,
    ``BucketNotFound``, ``AccessDenied``, ``InvalidRequest`` for a range outside it, a read failure)."""

    item: BatchItem
    data: bytes | None = None
    error: Exception | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


async def read_batch(engine: ObjectEngine, items: Iterable[BatchItem | tuple], *, ordered: bool = True,
                     window: int = WINDOW_DEFAULT) -> AsyncIterator[BatchResult]:  # fmt: skip
    """Each item's ``BatchResult``, in request order or as they complete (see the module's docstring)."""
    resolved = _resolved(engine, [BatchItem.of(item) for item in items])
    async for result in read_looked_up(engine, resolved, ordered=ordered, window=window):
        yield result


async def read_looked_up(engine: ObjectEngine, resolved: AsyncIterator[tuple[BatchItem, Lookup]], *,
                         ordered: bool = True, window: int = WINDOW_DEFAULT) -> AsyncIterator[BatchResult]:  # fmt: skip
    """The reads of items already looked up (the gateway's batch decides its answer from the lookups
    before it reads a byte); ``resolved`` is closed when this ends.

    Items are read in waves of up to half the window (at least one) and ``limits.shard_batch_wave_bytes``
    of shard reads, each with one request per storage node (``apollo.client.node_batches``); the next wave
    is read while this one is yielded, so at most two waves are held, read or being read. Whatever is still
    being read when the caller stops is cancelled, node requests included."""
    if window < 1:
        raise ValueError("window must be at least 1")
    source = _Waves(resolved, max(1, window // 2))
    waves: list[_Wave] = []
    try:
        while True:
            while not source.exhausted and len(waves) < 2:
                wave = _Wave(engine, await source.next())
                if wave.pending:
                    waves.append(wave)
            if not waves:
                return
            if ordered:
                results = [await waves[0].pending.popleft()]
            else:
                await asyncio.wait([task for wave in waves for task in wave.pending],
                                   return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
                results = [result for wave in waves for result in wave.take_done()]
            waves = [wave for wave in waves if wave.pending]
            for result in results:
                yield result
    finally:
        for wave in waves:
            wave.cancel()
        await resolved.aclose()


Looked = tuple[BatchItem, Lookup, "tuple[int, int] | BatchResult"]  # an item, its lookup, its span or answer


class _Waves:
    """Looked-up items, taken a wave at a time: at most ``items`` of them, and no more bytes of shard reads
    than ``limits.shard_batch_wave_bytes`` (an item past that starts the next wave)."""

    def __init__(self, resolved: AsyncIterator[tuple[BatchItem, Lookup]], items: int) -> None:
        self._resolved = resolved
        self._items = items
        self._held: Looked | None = None
        self.exhausted = False

    async def next(self) -> list[Looked]:
        wave: list[Looked] = []
        size = 0
        while len(wave) < self._items:
            if self._held is not None:
                looked, self._held = self._held, None
            else:
                try:
                    item, lookup = await anext(self._resolved)
                except StopAsyncIteration:
                    self.exhausted = True
                    break
                looked = (item, lookup, _span(item, lookup))
            span = looked[2]
            weight = 0 if isinstance(span, BatchResult) else read_bytes(looked[1].version.data, *span)
            if wave and size + weight > limits.shard_batch_wave_bytes:
                self._held = looked
                break
            wave.append(looked)
            size += weight
        return wave


class _Wave:
    """One wave's results as futures, in order, started at once: those answered by their lookup already done,
    small ranges of stored objects batched per node, a large object read on its own as a single GET reads it."""

    def __init__(self, engine: ObjectEngine, wave: list[Looked]) -> None:
        loop = asyncio.get_running_loop()
        answers: list[asyncio.Future[BatchResult]] = []
        batched: list[tuple[int, BatchItem, ObjectData, int, int]] = []
        for item, lookup, span in wave:
            if isinstance(span, BatchResult) or lookup.version.data.inline is not None:
                inline = None if isinstance(span, BatchResult) else lookup.version.data.inline
                answers.append(loop.create_future())
                answers[-1].set_result(span if inline is None else BatchResult(item, _sliced(inline, *span)))
            elif span[1] - span[0] > limits.shard_batch_object_bytes_max:
                answers.append(asyncio.ensure_future(_read_alone(engine, item, lookup.version, *span)))
            else:
                answers.append(loop.create_future())
                batched.append((len(answers) - 1, item, lookup.version.data, *span))
        self.reads = NodeReads(engine.ctx, [(data, start, end) for _, _, data, start, end in batched])
        for (number, item, *_), read in zip(batched, self.reads.results, strict=True):
            answers[number] = asyncio.ensure_future(_result(item, read))
        self.pending: deque[asyncio.Future[BatchResult]] = deque(answers)

    def take_done(self) -> list[BatchResult]:
        """The results done, in order, out of ``pending``."""
        done = [task for task in self.pending if task.done()]
        self.pending = deque(task for task in self.pending if not task.done())
        return [task.result() for task in done]

    def cancel(self) -> None:
        for task in self.pending:
            task.cancel()
        self.reads.cancel()


async def _resolved(engine: ObjectEngine, items: list[BatchItem]) -> AsyncIterator[tuple[BatchItem, Lookup]]:
    """(item, its lookup) in order; the lookups of the next ``batch_lookup_items_max`` items are asked for
    while these are read."""
    step = limits.batch_lookup_items_max
    chunks = [items[first : first + step] for first in range(0, len(items), step)]

    def lookups_of(chunk: list[BatchItem]) -> asyncio.Task[list[Lookup]]:
        return asyncio.ensure_future(_lookups(engine, chunk))

    upcoming = lookups_of(chunks[0]) if chunks else None
    try:
        for number, chunk in enumerate(chunks):
            lookups = await upcoming
            upcoming = lookups_of(chunks[number + 1]) if number + 1 < len(chunks) else None
            for pair in zip(chunk, lookups, strict=True):
                yield pair
    finally:
        if upcoming is not None:
            upcoming.cancel()


async def _lookups(engine: ObjectEngine, items: list[BatchItem]) -> list[Lookup]:
    """Each item's lookup, in order: a pinned item's is its pin; those of live objects in one metadata call,
    each snapshot's in one more.
    A snapshot that does not exist (or a key that may not list its bucket) is the error of each of its items."""
    found: list[Lookup | None] = [Lookup(item.pinned.version) if item.pinned else None for item in items]
    live = [number for number, item in enumerate(items) if item.snapshot is None and item.pinned is None]
    if live:
        named = [(items[n].bucket, items[n].key, items[n].version_id) for n in live]
        for number, lookup in zip(live, await engine.head_many(named), strict=True):
            found[number] = lookup
    by_snapshot: dict[tuple[str, str], list[int]] = {}
    for number, item in enumerate(items):
        if item.snapshot is not None:
            by_snapshot.setdefault((item.bucket, item.snapshot), []).append(number)
    for (bucket, snapshot), numbers in by_snapshot.items():
        try:
            lookups = await engine.head_pinned(bucket, snapshot, [items[n].key for n in numbers])
        except (errors.NotFound, errors.InvalidRequest, errors.AccessDenied) as exc:
            lookups = [Lookup(error=type(exc).__name__, message=str(exc)) for _ in numbers]
        for number, lookup in zip(numbers, lookups, strict=True):
            found[number] = lookup
    looked_up = [lookup for lookup in found if lookup is not None]
    await find_members(engine, items, looked_up)
    return looked_up


async def find_members(engine: ObjectEngine, items: list[BatchItem], lookups: list[Lookup]) -> None:
    """The span of each found item's tar member, in its ``Lookup``: one metadata call per bucket."""
    wanted: dict[str, list[int]] = {}
    for number, (item, lookup) in enumerate(zip(items, lookups, strict=True)):
        if item.member is not None and lookup.version is not None:
            wanted.setdefault(item.bucket, []).append(number)
    for bucket, numbers in wanted.items():
        named = [(items[n].key, lookups[n].version.seq, items[n].member) for n in numbers]
        for number, span in zip(numbers, await engine.tar_member_spans(bucket, named), strict=True):
            lookups[number].member = span


def _span(item: BatchItem, lookup: Lookup) -> tuple[int, int] | BatchResult:
    """The bytes ``[start, end)`` of the version an item reads, or its answer when it reads none."""
    if lookup.version is None:
        return BatchResult(item, error=codec.error_from_wire({"type": lookup.error, "message": lookup.message}))
    base, size = 0, lookup.version.size
    if item.member is not None:
        if lookup.member is None:
            missing = f"{item.bucket}/{item.key} has no tar member {item.member!r} (or no tar index)"
            return BatchResult(item, error=errors.ObjectNotFound(missing))
        base, size = lookup.member
    end = size if item.end is None else min(item.end, size)
    if item.start < 0 or item.start > end or (item.end is not None and item.end < item.start):
        outside = f"range [{item.start}, {item.end}) is outside {item.bucket}/{item.key} of {size} bytes"
        return BatchResult(item, error=errors.InvalidRequest(outside))
    return base + item.start, base + end


def _sliced(inline: bytes, start: int, end: int) -> bytes:
    """Bytes ``[start, end)`` of a small object's bytes, the object itself when that is all of it: a batch of
    a thousand 10 KiB samples would otherwise copy every one once more."""
    return inline if start == 0 and end == len(inline) and type(inline) is bytes else bytes(inline[start:end])


async def _result(item: BatchItem, read: Awaitable[bytes]) -> BatchResult:
    try:
        return BatchResult(item, await read)
    except Exception as exc:  # noqa: BLE001 - this item's failure (shards lost past parity), not the batch's
        return BatchResult(item, error=exc)


async def _read_alone(engine: ObjectEngine, item: BatchItem, version: Version, start: int, end: int
                      ) -> BatchResult:  # fmt: skip
    try:
        return BatchResult(item, b"".join([piece async for piece in engine.read(version, start, end)]))
    except Exception as exc:  # noqa: BLE001 - this item's failure (lost shards, a dropped connection), not the batch's
        return BatchResult(item, error=exc)
