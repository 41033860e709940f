"""Which sample each reader reads, in which order: the plan of an epoch, without torch.

The global order of an epoch is a permutation of the samples that depends only on (snapshot, seed, epoch):
the same for any number of ranks and workers, so a run may be resumed on another world size. Ranks take
that order in turn (rank ``r`` of ``W``: positions ``r, r + W, r + 2W``, ...), and inside a rank, its
DataLoader workers take whole batches in turn (worker ``w`` of ``n``: the rank's batches ``w, w + n``, ...),
which is the order in which a DataLoader hands batches back. So what a rank's loop receives is exactly its
share of the global order, in order, and after ``k`` samples on every rank the first ``k * W`` positions
(from where the epoch started) have been read: that count is the whole of the resumption state.

Ranks run in lockstep (each training step takes one batch on every rank), which is what makes ``k`` the
same everywhere; the last positions of an epoch may leave ranks one sample apart.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass


def epoch_order(count: int, *, snapshot_id: str, seed: int, epoch: int, shuffle: bool) -> list[int]:
    """The samples' indices in the order of this epoch: a permutation seeded by (snapshot, seed, epoch), or
    the listing's key order without ``shuffle``. ``random.Random`` seeded by a string is the same in every
    process and on every platform (its seed is the string's SHA-512)."""
    order = list(range(count))
    if shuffle:
        random.Random(f"apollo-plan:{snapshot_id}:{seed}:{epoch}").shuffle(order)
    return order


@dataclass(frozen=True)
class Reader:
    """One consumer of the plan: a worker of a rank."""

    rank: int = 0
    world_size: int = 1
    worker: int = 0
    workers: int = 1  # DataLoader workers of each rank (1 when the rank reads in its own process)
    batch_size: int = 1  # the DataLoader's: workers take whole batches in turn

    def __post_init__(self) -> None:
        if not (0 <= self.rank < self.world_size and 0 <= self.worker < self.workers and self.batch_size >= 1):
            raise ValueError(f"not a reader of a plan: {self}")

    def positions(self, count: int, start: int = 0) -> Iterator[int]:
        """The global positions (indices into ``epoch_order``) this reader reads, in order, of the ``count``
        samples from position ``start`` on (a resumed epoch starts past what was read)."""
        for batch in itertools.count(self.worker, self.workers):  # this worker's batches of the rank's share
            for local in range(batch * self.batch_size, (batch + 1) * self.batch_size):
                position = start + self.rank + local * self.world_size
                if position >= count:
                    return
                yield position
