"""Concurrent commits share ``commit_versions`` calls (``apollo.client.commits``) and each still gets exactly
what ``commit_version`` alone answers: its version, or its own error. The calls go to a real metadata service
in process (SQLite), through a recorder of which calls were made."""

from __future__ import annotations

import asyncio
import time

import pytest

from apollo import errors
from apollo.client.commits import SharedCommits
from apollo.meta.service import MetaService
from apollo.meta.store import SqlStore
from apollo.proto.layout import ObjectData
from apollo.proto.records import ObjectAttrs
from apollo.testing.layouts import etag


class Recorded:
    """The service's calls, each recorded by method and commit count, with the clock the service imposes;
    ``refuse`` makes batch calls raise it, before anything runs."""

    def __init__(self, meta: MetaService) -> None:
        self.meta, self.calls, self.refuse = meta, [], None

    async def __call__(self, method: str, *args, **kwargs):
        self.calls.append((method, len(args[0]) if method == "commit_versions" else 1))
        await asyncio.sleep(0.005)  # a network round trip: commits arriving meanwhile queue
        if self.refuse is not None and method == "commit_versions":
            raise self.refuse
        return await getattr(self.meta, method)(*args, **kwargs, now=time.time())


@pytest.fixture
def meta(tmp_path):
    service = MetaService(SqlStore(tmp_path / "meta.db"))
    asyncio.run(service.create_bucket("b", time.time()))
    yield service
    service.close()


def commit(key: str, bucket: str = "b") -> dict:
    body = key.encode()
    return {"bucket": bucket, "key": key, "size": len(body), "etag": etag(key), "attrs": ObjectAttrs(),
            "data": ObjectData(len(body), inline=body)}  # fmt: skip


async def outcomes(commits: SharedCommits, batch: list[dict]) -> list:
    async def one(item: dict):
        try:
            return (await commits.commit(item)).key
        except errors.ApolloError as exc:
            return type(exc)

    return await asyncio.gather(*(one(item) for item in batch))


def test_concurrent_commits_share_calls_and_each_gets_its_own_answer(meta):
    recorded = Recorded(meta)
    batch = [commit(f"k{n}") for n in range(20)] + [commit("lost", bucket="no-such-bucket"), commit("k20")]
    commits = SharedCommits(recorded)
    got = asyncio.run(outcomes(commits, batch))
    assert got == [f"k{n}" for n in range(20)] + [errors.BucketNotFound, "k20"]
    # Made together, they went together: a call of ``share_min`` commits and one of the rest.
    assert [n for _, n in recorded.calls] == [commits.share_min, len(batch) - commits.share_min]
    assert {method for method, _ in recorded.calls} == {"commit_versions"}
    listed = asyncio.run(meta.list_objects("b", "", "", "", 100)).entries
    assert sorted(v.key for v in listed) == sorted(f"k{n}" for n in range(21))


def test_a_batch_refused_whole_is_sent_again_one_commit_per_call(meta):
    recorded = Recorded(meta)
    recorded.refuse = errors.AccessDenied("commit_versions is not a metadata call this key may make")
    got = asyncio.run(outcomes(SharedCommits(recorded), [commit(f"k{n}") for n in range(10)]))
    assert got == [f"k{n}" for n in range(10)]
    assert {method for method, _ in recorded.calls} == {"commit_versions", "commit_version"}
    assert sum(n for method, n in recorded.calls if method == "commit_version") == 10


def test_a_shared_call_that_failed_after_it_was_sent_fails_each_of_its_commits_and_sends_none_again(meta):
    recorded = Recorded(meta)
    recorded.refuse = errors.MetadataUnavailable("the metadata service is unavailable; retry later")
    got = asyncio.run(outcomes(SharedCommits(recorded), [commit(f"k{n}") for n in range(10)]))
    assert got == [errors.MetadataUnavailable] * 10
    assert {method for method, _ in recorded.calls} == {"commit_versions"}
