"""PyTorch datasets over a real ``apollo server`` (CPU torch, DataLoader workers forked): each epoch reads
every sample once across (rank, worker), in a global order that depends only on (snapshot, seed, epoch),
the same for world sizes 1, 2 and 4; a run stopped mid-epoch resumes on another world size with exactly the
rest; the snapshot keeps the samples readable after they are deleted. Ranks are simulated in one process
(``rank=``/``world_size=``); ``test_torch_distributed.py`` runs them as processes joined by gloo."""

from __future__ import annotations

import itertools
import pickle

import pytest
import torch

from apollo import errors
from apollo.torch import ApolloDataLoader, ApolloIterableDataset, ApolloMapDataset, ApolloSample

COUNT = 203
BATCH = 4


@pytest.fixture(scope="module")
def samples(apollo_fs) -> tuple[str, dict[str, bytes]]:
    """A bucket of ``COUNT`` small samples (some inline in the metadata, some on the drives)."""
    bucket = "torch-samples"
    apollo_fs.mkdir(bucket)
    data = {f"train/{n:05d}.bin": f"sample {n} ".encode() * (1 + (n % 7) * 400) for n in range(COUNT)}
    apollo_fs.pipe({f"{bucket}/{key}": value for key, value in data.items()})
    return bucket, data


def keys_of(batch: list[ApolloSample]) -> list[str]:
    return [sample.key for sample in batch]


def loop(dataset: ApolloIterableDataset, workers: int, steps: int | None = None) -> tuple[list[str], dict]:
    """What a rank's training loop receives (``steps`` batches, or the whole epoch) and the state after."""
    loader = ApolloDataLoader(dataset, batch_size=BATCH, num_workers=workers, collate_fn=keys_of)
    received: list[str] = []
    for batch in itertools.islice(loader, steps):
        received += batch
    return received, loader.state_dict()


def global_order(bucket: str, world_size: int, workers: int, **options) -> list[str]:
    """Every rank's loop in lockstep, one sample at a time."""
    options = {"batch_size": BATCH, **options}
    per_rank = [loop(ApolloIterableDataset.from_prefix(f"apollo://{bucket}/train/", rank=rank, world_size=world_size,
                                                       **options), workers)[0]
                for rank in range(world_size)]  # fmt: skip
    return [key for step in itertools.zip_longest(*per_rank) for key in step if key is not None]


def test_a_map_dataset_reads_a_snapshot_of_its_prefix_in_batches(samples, apollo_fs):
    bucket, data = samples
    dataset = ApolloMapDataset.from_prefix(f"apollo://{bucket}/train/", transform=lambda s: (s.key, len(s.data)))
    assert len(dataset) == COUNT and dataset[3] == ("train/00003.bin", len(data["train/00003.bin"]))
    again = pickle.loads(pickle.dumps(ApolloMapDataset(dataset.source)))  # what a spawned worker gets
    assert again[-1].key == "train/00202.bin" and again[-1].data == data["train/00202.bin"]
    loader = torch.utils.data.DataLoader(again, batch_size=16, num_workers=2, collate_fn=keys_of, shuffle=True)
    assert sorted(key for batch in loader for key in batch) == sorted(data)
    with pytest.raises(IndexError):
        dataset[COUNT]


def test_every_epoch_reads_each_sample_once_in_one_global_order_for_any_world_size(samples):
    bucket, data = samples
    snapshot = ApolloIterableDataset.from_prefix(f"apollo://{bucket}/train/").snapshot_id  # the listing, once
    orders = {world_size: global_order(bucket, world_size, workers, snapshot=snapshot, shuffle=True, seed=11)
              for world_size, workers in ((1, 0), (2, 2), (4, 1))}  # fmt: skip
    assert orders[1] == orders[2] == orders[4]
    assert sorted(orders[1]) == sorted(data) and orders[1] != sorted(data)
    dataset = ApolloIterableDataset.from_prefix(f"apollo://{bucket}/train/", snapshot=snapshot, shuffle=True,
                                                seed=11, batch_size=BATCH)  # fmt: skip
    first = [sample.key for sample in dataset]
    dataset.set_epoch(1)
    second = [sample.key for sample in dataset]
    assert first == orders[1] and sorted(second) == sorted(first) and second != first


def test_persistent_workers_follow_set_epoch_and_a_loaded_state(samples):
    """Persistent workers keep the dataset they were given: the epoch and the resume position still reach them."""
    bucket, _ = samples
    url = f"apollo://{bucket}/train/"
    options = {"shuffle": True, "seed": 3, "batch_size": BATCH}
    snapshot = ApolloIterableDataset.from_prefix(url).snapshot_id
    expected = []
    for epoch in (0, 1):
        plain = ApolloIterableDataset.from_prefix(url, snapshot=snapshot, **options)
        plain.set_epoch(epoch)
        expected.append([sample.key for sample in plain])
    dataset = ApolloIterableDataset.from_prefix(url, snapshot=snapshot, **options)
    loader = ApolloDataLoader(dataset, batch_size=BATCH, num_workers=2, collate_fn=keys_of, persistent_workers=True)
    got = []
    for epoch in (0, 1):
        dataset.set_epoch(epoch)
        got.append([key for batch in loader for key in batch])
    assert got == expected and got[0] != got[1]
    dataset.load_state_dict({**loop_state(dataset, epoch=1), "position": 8 * BATCH})
    assert [key for batch in loader for key in batch] == expected[1][8 * BATCH :]


def loop_state(dataset: ApolloIterableDataset, epoch: int) -> dict:
    return {**dataset.state_dict(0), "epoch": epoch}


def test_a_run_stopped_mid_epoch_resumes_on_another_world_size_with_exactly_the_rest(samples, apollo_fs):
    bucket, data = samples
    url = f"apollo://{bucket}/train/"
    snapshot = ApolloIterableDataset.from_prefix(url).snapshot_id
    options = {"snapshot": snapshot, "shuffle": True, "seed": 5, "batch_size": BATCH}
    whole = global_order(bucket, 1, 0, **options)
    stopped = [loop(ApolloIterableDataset.from_prefix(url, rank=rank, world_size=2, **options), 2, steps=6)
               for rank in range(2)]  # fmt: skip
    assert stopped[0][1] == stopped[1][1] and stopped[0][1]["position"] == 2 * 6 * BATCH
    before = [key for step in zip(stopped[0][0], stopped[1][0], strict=True) for key in step]
    apollo_fs.rm(f"{bucket}/train/00007.bin")  # the snapshot still holds it
    resumed = []
    for rank in range(3):
        dataset = ApolloIterableDataset.from_prefix(url, rank=rank, world_size=3, **options)
        dataset.load_state_dict(stopped[0][1])
        resumed.append(loop(dataset, 2)[0])
    after = [key for step in itertools.zip_longest(*resumed) for key in step if key is not None]
    assert before + after == whole
    other = ApolloIterableDataset.from_prefix(url, snapshot=snapshot, shuffle=True, seed=6)
    with pytest.raises(ValueError, match="another plan"):
        other.load_state_dict(stopped[0][1])


def test_members_of_tar_shards_are_samples_read_as_ranges_and_pinned_by_the_snapshot(apollo_fs):
    import io
    import tarfile

    bucket = "torch-shards"
    apollo_fs.mkdir(bucket)
    members: dict[tuple[str, str], bytes] = {}
    for shard in range(4):
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for number in range(30):
                name = f"{shard:02d}{number:04d}.{'cls' if number % 2 else 'jpg'}"
                members[(f"shards/{shard:02d}.tar", name)] = data = f"{shard}/{number} ".encode() * (1 + number * 50)
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        apollo_fs.pipe_file(f"{bucket}/shards/{shard:02d}.tar", buffer.getvalue())  # a .tar: indexed as written
    apollo_fs.pipe_file(f"{bucket}/shards/README", b"not a shard")
    dataset = ApolloIterableDataset.from_prefix(f"apollo://{bucket}/shards/", tar_members=True, shuffle=True, seed=3,
                                                batch_size=BATCH)  # fmt: skip
    apollo_fs.pipe_file(f"{bucket}/shards/00.tar", b"replaced after the listing")  # the snapshot keeps the shard
    got = [(s.key, s.member, s.data) for batch in ApolloDataLoader(dataset, batch_size=BATCH, num_workers=2,
                                                                    collate_fn=list) for s in batch]  # fmt: skip
    assert sorted(got) == sorted((key, name, data) for (key, name), data in members.items())
    assert [(k, m) for k, m, _ in got] != sorted((k, m) for k, m, _ in got)  # shuffled across shards
    apollo_fs.pipe_file(f"{bucket}/plain.tar", b"no archive")
    with pytest.raises(ValueError, match="no member index"):
        ApolloMapDataset.from_prefix(f"apollo://{bucket}/plain", tar_members=True)


def test_a_list_of_keys_is_a_dataset_of_those_keys_and_a_dataset_never_shows_its_secret(samples):
    bucket, data = samples
    dataset = ApolloMapDataset.from_prefix(f"apollo://{bucket}/train/", keys=["00009.bin", "train/00002.bin"])
    assert [dataset[i].key for i in range(len(dataset))] == ["train/00009.bin", "train/00002.bin"]
    assert dataset[0].data == data["train/00009.bin"]
    assert dataset.source.secret_key not in repr(dataset.source)
    with pytest.raises(errors.ObjectNotFound, match="not in snapshot"):
        ApolloMapDataset.from_prefix(f"apollo://{bucket}/train/", keys=["00009.bin", "missing.bin"])
