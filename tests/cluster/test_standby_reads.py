"""Lookups and listings answered by PostgreSQL standbys (``apollo meta --standby-reads``), with read-your-writes.

A Patroni cluster of three (a primary, a synchronous standby, an asynchronous one) under one metadata service
that reads from the standbys. To show that read-your-writes holds because of the WAL positions and not
because replay happens to be fast, the test pauses replay on both standbys (``pg_wal_replay_pause``): then
a reader that wrote nothing sees the standbys' older state, while the writer sees its own writes.
"""

from __future__ import annotations

import re

import psycopg
import pytest

from apollo import errors
from apollo.testing.cluster import LocalCluster
from tests.cluster.test_postgres_ha import patroni  # noqa: F401  (the fixture)


def _standby_reads(cluster: LocalCluster) -> dict[str, float]:
    """The metadata service's ``apollo_meta_standby_reads_total`` by who answered."""
    text = cluster.metas[0].fetch("/metrics").decode()
    return {m[1]: float(m[2]) for m in re.finditer(r'apollo_meta_standby_reads_total\{answered="(\w+)"\} (\S+)', text)}


def _set_replay(patroni, paused: bool) -> None:  # noqa: F811
    """Pause or resume WAL replay on every standby."""
    primary = patroni.primary_index()
    for member in patroni.members:
        if member.index != primary:
            with psycopg.connect(f"postgresql://apollo@127.0.0.1:{member.pg_port}/postgres", autocommit=True) as db:
                db.execute("SELECT pg_wal_replay_pause()" if paused else "SELECT pg_wal_replay_resume()")


def test_standbys_answer_reads_and_a_writer_always_reads_its_own_writes(patroni, tmp_path):  # noqa: F811
    with LocalCluster(tmp_path / "cluster", patroni.create_database("apollo"), nodes=6, gateways=0,
                      meta_args=("--standby-reads",)) as cluster:  # fmt: skip
        writer, other = cluster.native(), cluster.native()
        writer.create_bucket("sr")
        writer.put("sr", "old", b"v1")
        for _ in range(50):
            assert writer.get("sr", "old") == b"v1"
        before = _standby_reads(cluster)
        assert before.get("standby", 0) > 0, f"no read was answered by a standby: {before}"

        _set_replay(patroni, paused=True)
        try:
            writer.put("sr", "old", b"v2")  # an overwrite the standbys have not replayed
            writer.put("sr", "new", b"n1")  # and an object they do not know
            assert writer.get("sr", "old") == b"v2"  # the writer's position sends its read to the primary
            assert [o.key for o in writer.list("sr")] == ["new", "old"]
            assert other.get("sr", "new") == b"n1"  # found nothing on a standby: the primary answers
            # A reader that wrote nothing may see a standby's older state while replay lags: proof that the
            # standbys lag here and the writer's reads above were routed by its position, not by luck.
            assert other.get("sr", "old") == b"v1"
            during = _standby_reads(cluster)
            assert during.get("behind", 0) > before.get("behind", 0), during
            assert during.get("not_found", 0) > before.get("not_found", 0), during
        finally:
            _set_replay(patroni, paused=False)
        writer.delete("sr", "new")
        with pytest.raises(errors.ObjectNotFound):
            writer.get("sr", "new")
        writer.close()
        other.close()


def test_a_malformed_read_position_is_refused(patroni, tmp_path):  # noqa: F811
    with LocalCluster(tmp_path / "cluster", patroni.create_database("apollo"), nodes=6, gateways=0,
                      meta_args=("--standby-reads",)) as cluster:  # fmt: skip
        client = cluster.native()
        client.create_bucket("sr")
        client._async._meta.written_at = "0/1; DROP TABLE versions"  # what a hostile client may send
        with pytest.raises(errors.InvalidRequest, match="WAL position"):
            client.get("sr", "k")
        client.close()
