"""Shard files nothing refers to are swept; everything referenced stays."""

from __future__ import annotations

import shutil
import uuid

from apollo.testing.admin import admin
from apollo.testing.workload import Workload


def test_sweep_deletes_unreferenced_and_misplaced_shards_and_keeps_the_rest(make_server):
    server = make_server(drives=7)
    s3 = server.s3()
    s3.create_bucket(Bucket="data")
    objects = Workload(51)
    objects.write(s3, "data", 6)
    referenced = set(server.shard_files())
    sample = sorted(referenced)[0]
    stray = sample.parent / f"{uuid.uuid4().hex}.3"  # a segment the metadata never heard of
    stray.write_bytes(b"x" * 1000)
    spare = next(d for d in server.drives if not (d / sample.relative_to(sample.parents[2])).exists())
    misplaced = spare / sample.relative_to(sample.parents[2])  # a real shard, on a drive its layout does not name
    misplaced.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(sample, misplaced)

    young = admin("gc", "--now", "--wait", meta_dir=server.meta_dir)  # default minimum age: fresh files are kept
    assert "0 orphans deleted" in young, young
    assert stray.exists() and misplaced.exists()

    swept = admin("gc", "--now", "--wait", "--min-age", "0", meta_dir=server.meta_dir)
    assert "2 orphans deleted" in swept, swept
    assert set(server.shard_files()) == referenced
    objects.verify(s3, "data")
