"""A seeded workload that writes objects through a client and later checks every byte of them.

    objects = Workload(seed)                      # seed None: $APOLLO_TEST_SEED, else a random one (printed)
    objects.write(s3, "data", 6)                  # one object of each size class (below), seeded sizes and bytes
    objects.write(s3, "data", 160, sizes=(200_000, 900_000))
    ... damage ...
    objects.verify(s3, "data")                    # whole GETs by MD5 and a seeded range of each; raises on any miss

The client is a boto3 S3 client or the native ``apollo.client.Client`` (told apart by ``put_object``).
Only sizes, seeds and MD5s are kept: bodies are regenerated from their seeds when a check needs them,
so a workload of many large objects costs no memory. A failure names the seed; ``APOLLO_TEST_SEED=<seed>``
replays a workload made without a fixed seed, as tests/conftest.py's ``seed`` fixture does.
"""

from __future__ import annotations

import hashlib
import io
import os
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from apollo import limits

SEED_ENV = "APOLLO_TEST_SEED"
MIB = 1024**2
PART_BYTES = 5 * MIB  # multipart uploads through boto3: 5 MiB parts, the S3 minimum
RANGE_BYTES_MAX = 2 * MIB  # a range check reads at most this much
BLOCK_BYTES = MIB  # bodies are made in blocks of this size, so that a range of one is cheap to remake


@dataclass(frozen=True)
class SizeClass:
    """Objects of ``low..high`` bytes (inclusive); ``multipart`` ones go up in parts through boto3."""

    name: str
    low: int
    high: int
    multipart: bool = False


_INLINE = limits.inline_object_bytes_max
# ``write(client, bucket, n)`` cycles through these, so any six objects cover what the store treats apart.
SIZE_CLASSES = (
    SizeClass("empty", 0, 0),
    SizeClass("inline", 1, _INLINE),  # kept in the metadata row
    SizeClass("inline-edge", _INLINE + 1, _INLINE + 1024),  # just too big for the row: one partial stripe
    SizeClass("stripes", 1 * MIB, 3 * MIB),  # several stripes of one segment
    SizeClass("batches", 9 * MIB, 9 * MIB + 64 * 1024),  # more than one I/O batch (8 MiB) in one segment
    SizeClass("multipart", 11 * MIB, 12 * MIB, multipart=True),  # three parts: three segments
)

Sizes = tuple[int, int] | Callable[[random.Random], int] | None


def replay_seed(seed: int | None = None) -> int:
    """``seed`` if given, else ``$APOLLO_TEST_SEED`` if set, else a fresh random one; printed either way."""
    if seed is None:
        seed = int(os.environ.get(SEED_ENV, random.randrange(2**32)))
        print(SEED_ENV, seed)
    return seed


def body_of(seed: int, size: int, start: int = 0, end: int | None = None) -> bytes:
    """Bytes ``[start, end)`` of the ``size``-byte body ``seed`` makes. Blocks of 1 MiB come from their own
    generators, so a range costs only the blocks it touches."""
    end = size if end is None else min(end, size)
    if start >= end:
        return b""
    first, last = start // BLOCK_BYTES, (end - 1) // BLOCK_BYTES
    blocks = [random.Random(f"{seed}/{n}").randbytes(min(BLOCK_BYTES, size - n * BLOCK_BYTES))
              for n in range(first, last + 1)]  # fmt: skip
    offset = first * BLOCK_BYTES
    return b"".join(blocks)[start - offset : end - offset]


@dataclass(frozen=True)
class Written:
    """One acknowledged object: where it is, and how to regenerate and recognise its bytes."""

    bucket: str
    key: str
    size: int
    seed: int
    md5: str

    def body(self) -> bytes:
        return body_of(self.seed, self.size)


def _is_boto3(client: Any) -> bool:
    return hasattr(client, "put_object")


class Workload:
    """Objects written with seeded sizes and contents, remembered by MD5, verified byte for byte later."""

    def __init__(self, seed: int | None = None, *, prefix: str = "obj-") -> None:
        fixed = seed is not None
        self.seed = replay_seed(seed)
        if fixed:
            print("workload seed", self.seed)
        self.prefix = prefix
        self.rng = random.Random(self.seed)
        self.objects: dict[tuple[str, str], Written] = {}
        self._next = 0  # numbers keys across write() calls, so a second call adds objects rather than replacing

    def __len__(self) -> int:
        return len(self.objects)

    def keys(self, bucket: str) -> list[str]:
        return sorted(key for b, key in self.objects if b == bucket)

    # writing ---------------------------------------------------------------------------------------------

    def write(self, client: Any, bucket: str, n: int, *, sizes: Sizes = None, prefix: str | None = None
              ) -> list[Written]:  # fmt: skip
        """Write ``n`` objects named ``<prefix><number>``. Sizes: None cycles through ``SIZE_CLASSES``
        (a seeded size within each); ``(low, high)`` draws uniformly; a callable draws from the rng."""
        written = []
        for _ in range(n):
            number, self._next = self._next, self._next + 1
            multipart = False
            if sizes is None:
                size_class = SIZE_CLASSES[number % len(SIZE_CLASSES)]
                size, multipart = self.rng.randint(size_class.low, size_class.high), size_class.multipart
            elif callable(sizes):
                size = sizes(self.rng)
            else:
                size = self.rng.randint(*sizes)
            written.append(self.put(client, bucket, f"{prefix or self.prefix}{number:04d}", size, multipart=multipart))
        return written

    def put(self, client: Any, bucket: str, key: str, size: int, *, multipart: bool = False) -> Written:
        """Write one object of ``size`` seeded bytes (in 5 MiB parts through boto3 when ``multipart``); it is
        remembered only once the store acknowledged it, so a failed write raises and changes nothing here."""
        seed = self.rng.getrandbits(64)
        body = body_of(seed, size)
        if not _is_boto3(client):
            client.put(bucket, key, body)
        elif multipart:
            from boto3.s3.transfer import TransferConfig

            config = TransferConfig(multipart_threshold=PART_BYTES, multipart_chunksize=PART_BYTES, max_concurrency=2)
            client.upload_fileobj(io.BytesIO(body), bucket, key, Config=config)
        else:
            client.put_object(Bucket=bucket, Key=key, Body=body)
        written = Written(bucket, key, size, seed, hashlib.md5(body).hexdigest())
        self.objects[(bucket, key)] = written
        return written

    def forget(self, bucket: str, key: str) -> None:
        """The test deleted or overwrote the object by other means: stop checking it."""
        self.objects.pop((bucket, key), None)

    # checking ---------------------------------------------------------------------------------------------

    def check(self, client: Any, bucket: str, key: str, *, ranges: bool = True) -> str | None:
        """None when the object reads back exactly (whole, and one seeded range); else what is wrong.
        A failed request is reported too, not raised."""
        obj = self.objects[(bucket, key)]
        try:
            got = _read(client, bucket, key, None)
            if hashlib.md5(got).hexdigest() != obj.md5:
                return f"{bucket}/{key}: read {len(got)} bytes (md5 {hashlib.md5(got).hexdigest()}), " \
                       f"expected {obj.size} bytes (md5 {obj.md5})"  # fmt: skip
            if ranges and obj.size > 1:
                draw = random.Random(obj.seed ^ 0x5EED)
                start = draw.randrange(obj.size - 1)
                end = draw.randrange(start, min(obj.size, start + RANGE_BYTES_MAX))  # inclusive
                if _read(client, bucket, key, (start, end)) != body_of(obj.seed, obj.size, start, end + 1):
                    return f"{bucket}/{key}: bytes {start}-{end} of {obj.size} read wrong"
        except Exception as exc:  # a failed read is a finding like a wrong byte
            return f"{bucket}/{key}: read failed: {exc.__class__.__name__}: {exc}"
        return None

    def verify(self, client: Any, bucket: str | None = None, *, keys: Iterable[str] | None = None,
               ranges: bool = True) -> int:  # fmt: skip
        """Check every remembered object (of ``bucket``, or only ``keys`` there); returns how many were checked.
        Raises AssertionError naming every object that does not read back exactly, and the seed."""
        if keys is not None:
            if bucket is None:
                raise TypeError("keys are checked within one bucket")
            chosen = [(bucket, key) for key in keys]
        else:
            chosen = sorted(name for name in self.objects if bucket is None or name[0] == bucket)
        problems = [p for b, k in chosen if (p := self.check(client, b, k, ranges=ranges)) is not None]
        if problems:
            shown = "\n  ".join(problems[:20]) + (f"\n  ... and {len(problems) - 20} more" if problems[20:] else "")
            raise AssertionError(f"workload seed {self.seed}: {len(problems)} of {len(chosen)} objects do not read "
                                 f"back exactly:\n  {shown}")  # fmt: skip
        return len(chosen)


def _read(client: Any, bucket: str, key: str, byte_range: tuple[int, int] | None) -> bytes:
    """The object's bytes, or bytes ``start..end`` (inclusive) of it."""
    if _is_boto3(client):
        extra = {"Range": f"bytes={byte_range[0]}-{byte_range[1]}"} if byte_range else {}
        return client.get_object(Bucket=bucket, Key=key, **extra)["Body"].read()
    if byte_range is None:
        return client.get(bucket, key)
    return client.get(bucket, key, byte_range[0], byte_range[1] + 1)
