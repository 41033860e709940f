"""Durability by doing the damage: delete drives, flip bytes, then check every byte.

One server per test (``make_server``), 6 directory drives, 4+2: any two
drives may be lost. Object sizes cover inline objects, a single partial
stripe, multi-stripe and multi-batch segments, and a multipart object.
"""

from __future__ import annotations

import random
import urllib.request

from support import metric, pause_repair, query, shards_by_segment, wipe

from apollo.storage.shardfile import HEADER_BYTES
from apollo.testing.s3error import s3_error
from apollo.testing.workload import Workload


def test_losing_two_whole_drives_loses_nothing(make_server):
    server = make_server()
    s3 = server.s3()
    s3.create_bucket(Bucket="data")
    objects = Workload(1)
    objects.write(s3, "data", 6)  # one object of each size class
    objects.verify(s3, "data")
    assert metric(server, "apollo_ec_decoded_stripes_total") == 0  # a healthy read never decodes
    for drive in server.drives[1:3]:
        wipe(drive)
    objects.verify(s3, "data")
    assert metric(server, "apollo_ec_decoded_stripes_total") > 0
    assert metric(server, "apollo_damaged_shards_total") > 0

    server.restart()  # the two wiped drives are refused, not reformatted and reused
    s3 = server.s3()
    objects.verify(s3, "data")
    assert not (server.drives[1] / "apollo-drive.json").exists()
    with s3_error("InsufficientStorage", 507):  # 4 drives left < write quorum of 5
        s3.put_object(Bucket="data", Key="new", Body=b"x" * 100_000)
    assert server.tmp_files() == []
    assert "new" not in [o["Key"] for o in s3.list_objects_v2(Bucket="data").get("Contents", [])]


def test_one_lost_drive_still_takes_writes(make_server):
    server = make_server()
    s3 = server.s3()
    s3.create_bucket(Bucket="data")
    wipe(server.drives[0])
    payload = random.Random(2).randbytes(3 * 1024**2)
    server.wait_ready(5)
    s3.put_object(Bucket="data", Key="after-loss", Body=payload)
    assert s3.get_object(Bucket="data", Key="after-loss")["Body"].read() == payload


def test_flipped_bytes_are_caught_by_cell_crc_and_read_from_parity(make_server):
    server = make_server()
    pause_repair(server)  # the queue rows are what this test checks; test_repair covers the rebuild
    s3 = server.s3()
    s3.create_bucket(Bucket="data")
    objects = Workload(3)
    objects.write(s3, "data", 6)
    rng = random.Random(3)
    flipped = 0
    for paths in shards_by_segment(server).values():
        for path in rng.sample(paths, 2):  # m = 2 bad shards per segment at most
            raw = bytearray(path.read_bytes())
            region = (16, 64) if rng.random() < 0.2 else (HEADER_BYTES, len(raw) - 64)  # header or cell records
            for _ in range(3):
                raw[rng.randrange(*region)] ^= 1 << rng.randrange(8)
            path.write_bytes(bytes(raw))
            flipped += 1
    assert flipped >= 10
    objects.verify(s3, "data")
    assert metric(server, "apollo_damaged_shards_total") > 0
    queued = query(server, "SELECT COUNT(DISTINCT segment_id) FROM repair_queue")[0][0]
    assert queued >= 1  # every damaged shard read leaves a durable row for the repair worker


def test_more_damage_than_parity_fails_loudly_never_returns_wrong_bytes(make_server):
    server = make_server()
    s3 = server.s3()
    s3.create_bucket(Bucket="data")
    s3.put_object(Bucket="data", Key="doomed", Body=random.Random(4).randbytes(1024**2))
    (paths,) = shards_by_segment(server).values()
    for path in paths[:3]:  # three of six shards of a 4+2 stripe: unrecoverable
        path.unlink()
    with s3_error(status=503):
        s3.get_object(Bucket="data", Key="doomed")["Body"].read()
    assert urllib.request.urlopen(f"{server.endpoint}/health/ready").status == 200
