"""``--upload-expiry``: the garbage collector aborts abandoned multipart uploads and removes their shards."""

from __future__ import annotations

import random
import time

from apollo import limits
from apollo.testing.s3error import s3_error

MiB = 1024**2
# Longer than one GC interval plus slack: the young upload, started when the old one becomes due,
# is then still young at the GC pass that aborts the old one, whenever in its interval that pass runs.
EXPIRY_S = limits.gc_interval_s + 3


def _wait(condition, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.2)


def _upload_ids(client) -> set[str]:
    return {u["UploadId"] for u in client.list_multipart_uploads(Bucket="ckpt").get("Uploads", [])}


def test_abandoned_upload_is_aborted_and_a_young_one_survives(make_server):
    server = make_server(extra_args=["--upload-expiry", str(EXPIRY_S), "--gc-delay", "0"])
    client = server.s3()
    client.create_bucket(Bucket="ckpt")
    rng = random.Random(11)

    # An upload with two sharded parts, then abandoned.
    shards_before = set(server.shard_files())
    old = client.create_multipart_upload(Bucket="ckpt", Key="abandoned")["UploadId"]
    started = time.monotonic()
    old_parts = [{"PartNumber": n, "ETag": client.upload_part(Bucket="ckpt", Key="abandoned", UploadId=old,
                                                              PartNumber=n, Body=rng.randbytes(5 * MiB))["ETag"]}
                 for n in (1, 2)]  # fmt: skip
    old_shards = set(server.shard_files()) - shards_before
    assert old_shards

    # Once it is due, a young upload starts; the next GC pass takes the old one only.
    time.sleep(max(0.0, started + EXPIRY_S - time.monotonic()))
    young = client.create_multipart_upload(Bucket="ckpt", Key="young")["UploadId"]
    young_started = time.monotonic()
    young_body = rng.randbytes(MiB + 3)
    young_etag = client.upload_part(Bucket="ckpt", Key="young", UploadId=young, PartNumber=1, Body=young_body)["ETag"]
    _wait(lambda: old not in _upload_ids(client), timeout_s=limits.gc_interval_s + 10)
    assert time.monotonic() - young_started < EXPIRY_S  # else the young one may have expired too: a slow host
    assert young in _upload_ids(client)

    # The old upload is gone for every operation, and so are its shard files.
    for call in (
        lambda: client.upload_part(Bucket="ckpt", Key="abandoned", UploadId=old, PartNumber=3, Body=b"late"),
        lambda: client.complete_multipart_upload(Bucket="ckpt", Key="abandoned", UploadId=old,
                                                 MultipartUpload={"Parts": old_parts}),
        lambda: client.list_parts(Bucket="ckpt", Key="abandoned", UploadId=old),
    ):  # fmt: skip
        with s3_error("NoSuchUpload"):
            call()
    _wait(lambda: not any(path.exists() for path in old_shards), timeout_s=limits.gc_interval_s + 10)
    assert "aborted multipart upload " + old in server.log_tail(200)

    # The young upload completes as usual.
    client.complete_multipart_upload(Bucket="ckpt", Key="young", UploadId=young,
                                     MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": young_etag}]})  # fmt: skip
    assert client.get_object(Bucket="ckpt", Key="young")["Body"].read() == young_body
    assert _upload_ids(client) == set()
