"""Tar shards as first-class objects, on a cluster and on ``apollo server``: a ``.tar`` written through the
native client is indexed as it streams, and each member is then a range read, alone, in a batch, through a
snapshot; bytes equal what Python's ``tarfile`` extracts."""

from __future__ import annotations

import io
import random
import tarfile

import pytest
from deployments import Target, deployment, metadata_calls

from apollo import errors
from apollo.client import BatchItem

BUCKET = "shards"
USER, SECRET = "tar-user", "tar-user-secret-key"


@pytest.fixture(params=["cluster", "server"])
def target(request, make_cluster, make_server) -> Target:
    return deployment(request.param, make_cluster, make_server, USER, SECRET)


def make_tar(rng: random.Random, count: int) -> tuple[bytes, dict[str, bytes]]:
    """A GNU tar of ``count`` samples (sizes from 10 bytes to 200 KiB, some names over 100 characters)."""
    buffer, samples = io.BytesIO(), {}
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for number in range(count):
            name = f"{number:06d}.{'x' * 120 if number % 50 == 0 else ''}{rng.choice(['jpg', 'cls', 'json'])}"
            samples[name] = data = rng.randbytes(rng.choice([10, 3_000, 40_000, 200_000]))
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue(), samples


def test_members_of_an_indexed_tar_are_range_reads_alone_in_batches_and_through_snapshots(target, seed):
    rng = random.Random(seed)
    archive, samples = make_tar(rng, 200)
    with target.native(USER, SECRET) as client:
        client.create_bucket(BUCKET)
        client.put(BUCKET, "train/shard-0000.tar", archive)
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            expected = [(m.name, m.offset_data, m.size) for m in tar.getmembers()]
        assert client.tar_members(BUCKET, "train/shard-0000.tar") == expected
        for name in rng.sample(sorted(samples), 10):
            assert client.get(BUCKET, "train/shard-0000.tar", member=name) == samples[name]
        name = max(samples, key=lambda n: len(samples[n]))
        assert client.get(BUCKET, "train/shard-0000.tar", 100, 5000, member=name) == samples[name][100:5000]

        client.put(BUCKET, "plain.bin", b"not an archive")
        client.put(BUCKET, "fake.tar", b"a .tar name is no archive")  # stored as given, without an index
        assert client.get(BUCKET, "fake.tar") == b"a .tar name is no archive"
        assert client.tar_members(BUCKET, "fake.tar") == []
        with pytest.raises(errors.InvalidRequest, match="tar archive"):
            client.put(BUCKET, "insisted", b"x" * 5000, tar_index=True)
        assert client.head(BUCKET, "insisted") is None
        with pytest.raises(errors.ObjectNotFound, match="no tar member"):
            client.get(BUCKET, "train/shard-0000.tar", member="missing.jpg")

        items, want = [], []
        names = sorted(samples)
        for _ in range(1000):
            pick = rng.random()
            if pick < 0.8:
                name = rng.choice(names)
                start = rng.randrange(0, len(samples[name]) + 1)
                end = rng.choice([None, rng.randrange(start, len(samples[name]) + 1)])
                items.append(BatchItem(BUCKET, "train/shard-0000.tar", start=start, end=end, member=name))
                want.append(samples[name][start:end])
            elif pick < 0.9:
                items.append(BatchItem(BUCKET, rng.choice(["train/shard-0000.tar", "plain.bin"]), member="nope"))
                want.append(errors.ObjectNotFound)
            else:
                items.append(BatchItem(BUCKET, "plain.bin"))
                want.append(b"not an archive")
        before = metadata_calls(target, "get_tar_members")
        got = [r.data if r.ok else type(r.error) for r in client.get_batch(items)]
        assert got == want
        assert metadata_calls(target, "get_tar_members") - before == 1  # one call for the batch's members

        snap = client.snapshot(BUCKET, "train/")
        client.put(BUCKET, "train/shard-0000.tar", make_tar(rng, 3)[0])  # replaced: the snapshot keeps the old
        assert len(client.tar_members(BUCKET, "train/shard-0000.tar")) == 3
        name = names[7]
        pinned = list(client.get_batch([BatchItem(BUCKET, "train/shard-0000.tar", snapshot=snap.snapshot_id,
                                                  member=name)]))  # fmt: skip
        assert pinned[0].data == samples[name]
        client.delete_snapshot(BUCKET, snap.snapshot_id)
