"""The gateway's batch GET (``POST /bucket?batch``, AIStore's GetBatch request, a TAR answer): read back with
Python's ``tarfile``, against single GETs of the same items."""

from __future__ import annotations

import io
import json
import random
import tarfile
import uuid

import pytest
from signed_http import send

from apollo import limits
from apollo.eventloop import ByteBudget
from apollo.testing.admin import admin


def _batch(server, bucket: str, document: dict, **credentials: str):
    body = json.dumps(document).encode()
    return send(server.port, "POST", f"/{bucket}?batch", {"Content-Type": "application/json"}, body, **credentials)


def _entries(reply) -> list[tuple[str, bytes]]:
    assert reply.status == 200 and reply.headers["Content-Type"] == "application/x-tar", reply.body[:300]
    with tarfile.open(fileobj=io.BytesIO(reply.body), mode="r:") as archive:
        return [(member.name, archive.extractfile(member).read()) for member in archive.getmembers()]


@pytest.fixture
def two_buckets(s3, bucket, seed):
    rng = random.Random(seed)
    other = f"batch-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=other)
    objects = {}
    for name in (bucket, other):
        for n in range(30):
            objects[(name, f"d/{n:02d} ü")] = body = rng.randbytes(rng.choice([0, 100, 20_000, 300_000]))
            s3.put_object(Bucket=name, Key=f"d/{n:02d} ü", Body=body)
    return other, objects


def test_a_batch_answers_every_item_in_request_order_as_single_gets_do(server, s3, bucket, two_buckets, seed):
    other, objects = two_buckets
    rng = random.Random(seed)
    items, expected = [], []
    for _ in range(300):
        (name, key), body = rng.choice(list(objects.items()))
        item = {"objname": key} if name == bucket else {"objname": key, "bucket": name}
        if body and rng.random() < 0.3:
            start = rng.randrange(len(body))
            item |= {"start": start, "length": rng.randrange(len(body) - start + 1)}
            body = body[start : start + item["length"]]
        items.append(item)
        expected.append((f"{name}/{key}", body))
    items.insert(7, {"objname": "never-written"})
    expected.insert(7, (f"__404__/{bucket}/never-written", b""))
    items.insert(9, {"objname": "k", "bucket": "no-such-bucket-here"})
    expected.insert(9, ("__404__/no-such-bucket-here/k", b""))
    assert _entries(_batch(server, bucket, {"in": items, "coer": True})) == expected
    names_only = _entries(_batch(server, bucket, {"in": items[:5], "onob": True}))
    assert [name for name, _ in names_only] == [item["objname"] for item in items[:5]]


def test_a_batch_reads_a_version_by_id(server, s3, bucket):
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    old = s3.put_object(Bucket=bucket, Key="k", Body=b"old")["VersionId"]
    s3.put_object(Bucket=bucket, Key="k", Body=b"new")
    entries = _entries(_batch(server, bucket, {"in": [{"objname": "k", "version": old}, {"objname": "k"}]}))
    assert entries == [(f"{bucket}/k", b"old"), (f"{bucket}/k", b"new")]


def test_without_continue_on_error_a_missing_item_is_the_answer_before_any_tar(server, s3, bucket):
    s3.put_object(Bucket=bucket, Key="here", Body=b"x")
    reply = _batch(server, bucket, {"in": [{"objname": "here"}, {"objname": "gone"}]})
    assert (reply.status, reply.code) == (404, "NoSuchKey")


@pytest.mark.parametrize("document", [
    b"not json", b"[]", b'{"in": []}', b'{"in": [{"name": "k"}]}', b'{"in": [{"objname": "k", "start": -1}]}',
    b'{"in": [{"objname": "k", "length": "10"}]}', b'{"in": [{"objname": "k", "bucket": "Bad_Bucket"}]}',
    b'{"in": [{"objname": ""}]}', b'{"in": [{"objname": "k", "version": "../x"}]}',
])  # fmt: skip
def test_a_malformed_batch_is_refused_whole(server, bucket, document):
    reply = send(server.port, "POST", f"/{bucket}?batch", {"Content-Type": "application/json"}, document)
    assert reply.status == 400 and reply.code in ("InvalidRequest", "InvalidBucketName", "InvalidArgument"), reply.body


def test_too_many_items_are_refused(server, bucket):
    reply = _batch(server, bucket, {"in": [{"objname": "k"}] * (limits.batch_request_items_max + 1)})
    assert (reply.status, reply.code) == (400, "InvalidRequest")


def test_a_batch_reads_only_what_the_caller_may_get_and_hides_what_it_may_not_list(server, s3, bucket):
    """Each item is authorized as a GET of it alone: a user who may read ``public/*`` gets those, 403
    entries for the rest, and, since it may not list the bucket, 403 for a missing key too."""
    s3.put_object(Bucket=bucket, Key="public/a", Body=b"open")
    s3.put_object(Bucket=bucket, Key="private/b", Body=b"closed")
    made = admin("user", "create", meta_dir=server.meta_dir)
    access, secret = made.split("access key: ")[1].split()[0], made.split("secret key: ")[1].split()[0]
    s3.put_bucket_policy(Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::000000000000:user/{access}"},
         "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{bucket}/public/*"}]}))  # fmt: skip
    try:
        items = [{"objname": "public/a"}, {"objname": "private/b"}, {"objname": "public/missing"}]
        entries = _entries(_batch(server, bucket, {"in": items, "coer": True}, access_key=access, secret=secret))
        assert entries == [(f"{bucket}/public/a", b"open"), (f"__403__/{bucket}/private/b", b""),
                           (f"__403__/{bucket}/public/missing", b"")]  # fmt: skip
        reply = _batch(server, bucket, {"in": items}, access_key=access, secret=secret)
        assert (reply.status, reply.code) == (403, "AccessDenied")
    finally:
        s3.delete_bucket_policy(Bucket=bucket)


def test_an_item_above_the_batch_item_size_is_its_own_error(server, s3, bucket):
    s3.put_object(Bucket=bucket, Key="big", Body=b"\1" * (limits.batch_item_bytes_max + 1))
    s3.put_object(Bucket=bucket, Key="small", Body=b"s")
    items = [{"objname": "big"}, {"objname": "small"}, {"objname": "small", "start": 5},
             {"objname": "small", "start": 0, "length": 100}]  # fmt: skip
    entries = _entries(_batch(server, bucket, {"in": items, "coer": True}))
    assert entries == [(f"__400__/{bucket}/big", b""), (f"{bucket}/small", b"s"), (f"__416__/{bucket}/small", b""),
                       (f"{bucket}/small", b"s")]  # a range past the end is cut there, as a GET's  # fmt: skip


def test_the_budget_refuses_what_would_pass_its_bytes():
    budget = ByteBudget(100)
    assert budget.take(60) and not budget.take(50) and budget.take(40)
    budget.give_back(60)
    assert budget.take(50) and budget.held == 90
