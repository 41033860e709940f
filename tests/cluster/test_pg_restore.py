"""Restoring a cluster's PostgreSQL from a pg_dump, as docs/deploy.md ("Restoring the metadata database")
says: stop the metadata services and gateways, pg_restore, start them again, sweep the orphans. The
namespace is the dump's: objects written after it are gone (their shards swept), objects deleted after
it are back while the garbage collector has not removed their data."""

from __future__ import annotations

import subprocess

import pytest
from botocore.exceptions import ClientError

from apollo.testing.admin import admin
from apollo.testing.postgres import find_bindir
from apollo.testing.workload import Workload


def test_a_cluster_restored_from_pg_dump_serves_the_dumped_namespace(make_cluster, tmp_path):
    cluster = make_cluster(nodes=6, meta_args=("--gc-delay", "3600"))
    s3 = cluster.s3()
    s3.create_bucket(Bucket="data")
    before = Workload(71)
    before.write(s3, "data", 8, sizes=(100_000, 3_000_000))
    dump = tmp_path / "apollo.dump"
    bindir = find_bindir()
    subprocess.run([str(bindir / "pg_dump"), "--format=custom", f"--file={dump}", cluster.database], check=True)

    after = Workload(72, prefix="after-")
    after.write(s3, "data", 4, sizes=(100_000, 3_000_000))
    deleted = before.keys("data")[:2]
    for key in deleted:
        s3.delete_object(Bucket="data", Key=key)

    for process in [*cluster.gateways, *cluster.metas]:  # nothing may write while the database is replaced
        process.stop()
    subprocess.run([str(bindir / "pg_restore"), "--clean", "--if-exists", "--no-owner", f"--dbname={cluster.database}",
                    str(dump)], check=True)  # fmt: skip
    for meta in cluster.metas:
        meta.start()
    for gateway in cluster.gateways:
        gateway.start(ready="/health/ready")

    s3 = cluster.s3()
    before.verify(s3, "data")  # every object of the dump, the two deleted since included
    for key in after.keys("data"):
        with pytest.raises(ClientError) as missing:
            s3.head_object(Bucket="data", Key=key)
        assert missing.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    swept = admin("sweep", "--now", "--wait", "--min-age", "0", database=cluster.database)
    orphans = int(swept.split("checked, ")[1].split(" orphans")[0])
    assert orphans > 0, swept  # the shards of the objects written after the dump
    before.verify(s3, "data")
