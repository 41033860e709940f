"""The plan of an epoch (``apollo.torch.plan``), without torch: every sample read once by one reader, the
order a rank's loop receives, the same global order for any world size, and resumption on another one."""

from __future__ import annotations

import itertools

import pytest

from apollo.torch.plan import Reader, epoch_order

COUNT = 103  # not a multiple of any world size, worker count or batch size below


def loop_receives(count: int, rank: int, world_size: int, workers: int, batch_size: int, start: int = 0) -> list[int]:
    """What a rank's DataLoader hands its loop: whole batches from its workers in turn, as DataLoader does."""
    streams = [iter(Reader(rank, world_size, worker, workers, batch_size).positions(count, start))
               for worker in range(workers)]  # fmt: skip
    received: list[int] = []
    for worker in itertools.cycle(range(workers)):
        batch = list(itertools.islice(streams[worker], batch_size))
        if not batch:
            return received
        received += batch


def global_sequence(count: int, world_size: int, workers: int, batch_size: int, start: int = 0) -> list[int]:
    """The ranks' loops in lockstep, one sample at a time: position order if the plan is right."""
    per_rank = [loop_receives(count, rank, world_size, workers, batch_size, start) for rank in range(world_size)]
    return [p for step in itertools.zip_longest(*per_rank) for p in step if p is not None]


@pytest.mark.parametrize(("world_size", "workers", "batch_size"), [(1, 1, 1), (2, 3, 4), (4, 2, 1), (3, 1, 8)])
def test_each_position_is_read_once_and_each_rank_receives_its_share_in_order(world_size, workers, batch_size):
    everything = [p for rank in range(world_size) for worker in range(workers)
                  for p in Reader(rank, world_size, worker, workers, batch_size).positions(COUNT)]  # fmt: skip
    assert sorted(everything) == list(range(COUNT))
    for rank in range(world_size):
        assert loop_receives(COUNT, rank, world_size, workers, batch_size) == list(range(rank, COUNT, world_size))
    assert global_sequence(COUNT, world_size, workers, batch_size) == list(range(COUNT))


def test_the_order_depends_on_snapshot_seed_and_epoch_only():
    order = epoch_order(COUNT, snapshot_id="s", seed=1, epoch=0, shuffle=True)
    assert sorted(order) == list(range(COUNT)) and order != list(range(COUNT))
    assert order == epoch_order(COUNT, snapshot_id="s", seed=1, epoch=0, shuffle=True)
    others = [epoch_order(COUNT, snapshot_id=s, seed=seed, epoch=e, shuffle=True)
              for s, seed, e in (("t", 1, 0), ("s", 2, 0), ("s", 1, 1))]  # fmt: skip
    assert all(other != order for other in others)
    assert epoch_order(COUNT, snapshot_id="s", seed=1, epoch=0, shuffle=False) == list(range(COUNT))


@pytest.mark.parametrize(("before", "after"), [(2, 3), (4, 1), (1, 4)])
def test_a_run_stopped_after_k_samples_per_rank_resumes_on_another_world_size_with_the_rest(before, after):
    k = 7
    start = k * before  # what ApolloIterableDataset.state_dict says after k samples on every rank
    first = global_sequence(COUNT, before, 2, 4)[:start]
    rest = global_sequence(COUNT, after, 3, 2, start)
    assert first + rest == list(range(COUNT))


def test_a_reader_outside_its_world_is_refused():
    for bad in ((2, 2, 0, 1, 1), (0, 1, 1, 1, 1), (0, 1, 0, 1, 0)):
        with pytest.raises(ValueError):
            Reader(*bad)
