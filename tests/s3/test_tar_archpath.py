"""Tar shards through S3: a PUT with ``x-apollo-tar-index: true`` records the member index, and a member is
then ``GET ?archpath=NAME`` (ranges inside it too) or an ``archpath`` item of a batch GET; bytes equal what
Python's ``tarfile`` extracts. Without the header nothing is indexed; with it, a body that is no archive is
refused and nothing is stored."""

from __future__ import annotations

import io
import json
import random
import tarfile
from urllib.parse import quote

from signed_http import send


def make_tar(rng: random.Random, count: int) -> tuple[bytes, dict[str, bytes]]:
    buffer, samples = io.BytesIO(), {}
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for number in range(count):
            name = f"samples/{number:05d} é.{rng.choice(['jpg', 'json'])}"
            samples[name] = data = rng.randbytes(rng.choice([5, 4_000, 90_000]))
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue(), samples


def test_a_tar_put_with_the_header_serves_its_members_by_archpath(server, s3, bucket, seed):
    rng = random.Random(seed)
    archive, samples = make_tar(rng, 120)
    put = send(server.port, "PUT", f"/{bucket}/shard-000.tar", {"x-apollo-tar-index": "true"}, archive)
    assert put.status == 200, put.body
    names = sorted(samples)
    for name in rng.sample(names, 8):
        reply = send(server.port, "GET", f"/{bucket}/shard-000.tar?archpath={quote(name, safe='')}")
        assert reply.status == 200 and reply.body == samples[name], (reply.status, reply.body[:200])
        assert reply.headers["x-apollo-archpath"] == quote(name) and "ETag" not in reply.headers
    big = max(names, key=lambda n: len(samples[n]))
    ranged = send(server.port, "GET", f"/{bucket}/shard-000.tar?archpath={quote(big, safe='')}",
                  {"Range": "bytes=100-199"})  # fmt: skip
    assert ranged.status == 206 and ranged.body == samples[big][100:200]
    assert ranged.headers["Content-Range"] == f"bytes 100-199/{len(samples[big])}"
    missing = send(server.port, "GET", f"/{bucket}/shard-000.tar?archpath=nope")
    assert missing.status == 404 and missing.code == "NoSuchKey"
    assert s3.get_object(Bucket=bucket, Key="shard-000.tar")["Body"].read() == archive  # the archive itself

    document = {"in": [{"objname": "shard-000.tar", "archpath": name} for name in names[:20]]
                + [{"objname": "shard-000.tar", "archpath": "nope"}], "coer": True}  # fmt: skip
    reply = send(server.port, "POST", f"/{bucket}?batch", {"Content-Type": "application/json"},
                 json.dumps(document).encode())  # fmt: skip
    assert reply.status == 200, reply.body[:300]
    with tarfile.open(fileobj=io.BytesIO(reply.body), mode="r:") as answer:
        entries = [(m.name, answer.extractfile(m).read()) for m in answer.getmembers()]
    assert entries == [(f"{bucket}/shard-000.tar/{name}", samples[name]) for name in names[:20]] + [
        (f"__404__/{bucket}/shard-000.tar/nope", b"")]


def test_without_the_header_nothing_is_indexed_and_with_it_a_non_archive_is_refused(server, s3, bucket, seed):
    archive, samples = make_tar(random.Random(seed), 3)
    s3.put_object(Bucket=bucket, Key="plain.tar", Body=archive)  # S3 indexes only when asked
    reply = send(server.port, "GET", f"/{bucket}/plain.tar?archpath={quote(sorted(samples)[0], safe='')}")
    assert reply.status == 404 and b"x-apollo-tar-index" in reply.body
    refused = send(server.port, "PUT", f"/{bucket}/fake.tar", {"x-apollo-tar-index": "true"}, b"x" * 3000)
    assert refused.status == 400 and b"tar archive" in refused.body, refused.body
    assert s3.list_objects_v2(Bucket=bucket, Prefix="fake")["KeyCount"] == 0
    bad = send(server.port, "PUT", f"/{bucket}/other.tar", {"x-apollo-tar-index": "yes"}, archive)
    assert bad.status == 400 and bad.code == "InvalidArgument"
