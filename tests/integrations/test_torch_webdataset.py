"""WebDataset over ``apollo://`` against a real ``apollo server``: shards written with ``wds.ShardWriter`` to
``apollo://`` URLs, read back with ``wds.WebDataset`` under a DataLoader (2 forked workers, and a spawned
one), every sample's bytes checked; a missing shard, a missing bucket and a malformed URL fail clearly."""

from __future__ import annotations

import hashlib
import importlib
import random
import sys

import pytest
import torch
import webdataset as wds

import apollo.torch.webdataset as apollo_wds

SHARDS = 4
PER_SHARD = 12
URLS = "apollo://{bucket}/shard-{{000000..{last:06d}}}.tar"


@pytest.fixture(scope="module")
def shards(apollo_fs) -> tuple[str, dict[str, bytes]]:
    """``SHARDS`` tar shards of ``PER_SHARD`` samples (1 B to 300 KiB; shard 2 also holds 3 MiB ones, so it
    is streamed in several read batches), written through ``gopen("apollo://...", "wb")``."""
    bucket = "wds-shards"
    apollo_fs.mkdir(bucket)
    rng = random.Random(5)
    samples: dict[str, bytes] = {}
    with wds.ShardWriter(f"apollo://{bucket}/shard-%06d.tar", maxcount=PER_SHARD, verbose=0) as writer:
        for n in range(SHARDS * PER_SHARD):
            size = 3 * 1024 * 1024 + n if n // PER_SHARD == 2 and n % 4 == 0 else rng.randint(1, 300 * 1024)
            samples[f"sample{n:06d}"] = data = rng.randbytes(size)
            writer.write({"__key__": f"sample{n:06d}", "bin": data, "txt": str(n)})
    assert sorted(apollo_fs.ls(bucket, detail=False)) == [f"{bucket}/shard-{n:06d}.tar" for n in range(SHARDS)]
    return bucket, samples


def digest(sample: dict) -> tuple[str, str, int, str]:
    """What a worker hands back: the key, the shard, the size and a hash (not 20 MB of bytes through a pipe)."""
    return sample["__key__"], sample["__url__"], int(sample["txt"]), hashlib.sha256(sample["bin"]).hexdigest()


def test_the_apollo_scheme_is_registered_on_import_and_only_where_webdataset_is_installed(monkeypatch):
    gopen = importlib.import_module("webdataset.gopen")
    assert gopen.gopen_schemes["apollo"] is apollo_wds.gopen_apollo
    monkeypatch.setitem(sys.modules, "webdataset.gopen", None)  # as if it were not installed
    assert apollo_wds.register() is False


def test_a_dataloader_with_two_workers_reads_every_sample_of_every_shard(shards):
    bucket, samples = shards
    dataset = wds.WebDataset(URLS.format(bucket=bucket, last=SHARDS - 1), shardshuffle=False).map(digest)
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=2)
    got = list(loader)
    assert sorted(key for key, *_ in got) == sorted(samples)  # each sample once
    for key, url, number, sha in got:
        assert sha == hashlib.sha256(samples[key]).hexdigest(), key
        assert key == f"sample{number:06d}" and url == f"apollo://{bucket}/shard-{number // PER_SHARD:06d}.tar"
    for shard in range(SHARDS):  # each shard read by one worker, front to back (the loader interleaves workers)
        in_shard = [key for key, url, *_ in got if url.endswith(f"shard-{shard:06d}.tar")]
        assert in_shard == sorted(in_shard) and len(in_shard) == PER_SHARD


def test_a_spawned_worker_registers_the_scheme_when_it_imports_this_module(shards):
    bucket, samples = shards
    dataset = wds.WebDataset(f"apollo://{bucket}/shard-000003.tar", shardshuffle=False).map(digest)
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=1, multiprocessing_context="spawn")
    got = {key: sha for key, _, _, sha in loader}
    assert got == {key: hashlib.sha256(samples[key]).hexdigest() for key in sorted(samples)[3 * PER_SHARD :]}


def test_a_shard_read_in_part_then_closed_and_streamed_in_pieces(shards):
    bucket, _ = shards
    with wds.gopen(f"apollo://{bucket}/shard-000002.tar") as stream:  # > 9 MiB
        assert len(stream.read(10240)) == 10240  # a tar header and some bytes; the rest is never read
    stream = wds.gopen(f"apollo://{bucket}/shard-000002.tar")
    assert len(stream.raw._piece) < 9 * 1024 * 1024  # only the pieces of one batch are held, not the shard
    stream.close()


def test_a_missing_shard_fails_the_epoch_naming_the_shard(shards):
    bucket, _ = shards
    dataset = wds.WebDataset(URLS.format(bucket=bucket, last=SHARDS), shardshuffle=False).map(digest)
    loader = torch.utils.data.DataLoader(dataset, batch_size=None, num_workers=2)
    with pytest.raises(FileNotFoundError, match=f"{bucket}/shard-{SHARDS:06d}.tar"):
        list(loader)


def test_a_missing_bucket_and_malformed_urls_fail_clearly(shards, monkeypatch):
    with pytest.raises(FileNotFoundError, match="no-such-bucket"):
        list(wds.WebDataset("apollo://no-such-bucket/shard-000000.tar", shardshuffle=False))
    for url in ("apollo://wds-shards", "apollo:///shard-000000.tar"):
        with pytest.raises(ValueError, match="is not an object URL: expected apollo://bucket/key"):
            list(wds.WebDataset(url, shardshuffle=False))
    with pytest.raises(ValueError, match="is not an object URL"):  # WebDataset takes a URL ending in / for a directory
        apollo_wds.gopen_apollo("apollo://wds-shards/dir/")
    with pytest.raises(ValueError, match="only 'rb' and 'wb'"):
        apollo_wds.gopen_apollo("apollo://wds-shards/shard-000000.tar", "ab")
    monkeypatch.delenv("APOLLO_SECRET_KEY")
    with pytest.raises(ValueError, match="APOLLO_SECRET_KEY"):
        wds.gopen("apollo://wds-shards/shard-000000.tar")
