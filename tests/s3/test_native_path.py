"""The native direct-path client against ``apollo server``: the metadata API and the shards served
beside S3 on one port, under ``/_apollo/`` (no S3 bucket name can start with "_")."""

from __future__ import annotations

import os
import urllib.error
import urllib.request

import pytest

from apollo import errors
from apollo.client import Client
from apollo.proto import codec
from apollo.testing.s3calls import virtual_host_s3
from apollo.testing.server import DEV_ACCESS_KEY, DEV_SECRET_KEY, ServerProcess

DOMAIN = "apollo.test"


def test_the_native_client_reads_and_writes_on_the_all_in_one_server(server, seed):
    import random

    rng = random.Random(seed)
    big = rng.randbytes(20 * 1024 * 1024 + 13)  # several segments' worth of stripes, straight to the drives
    bucket = f"native-{os.urandom(4).hex()}"
    with Client(server.endpoint, DEV_ACCESS_KEY, DEV_SECRET_KEY) as client:
        client.create_bucket(bucket)
        assert client.put(bucket, "big", big).size == len(big)
        client.put(bucket, "small", b"tiny")
        assert client.get(bucket, "big") == big
        assert client.get(bucket, "big", 5_000_000, 5_000_100) == big[5_000_000:5_000_100]
        assert [info.key for info in client.list(bucket)] == ["big", "small"]
        client.delete(bucket, "small")
        with pytest.raises(errors.ObjectNotFound):
            client.get(bucket, "small")
    # What the native client wrote is an ordinary object to S3 clients, and the other way round.
    s3 = server.s3()
    assert s3.get_object(Bucket=bucket, Key="big")["Body"].read() == big
    s3.put_object(Bucket=bucket, Key="from-s3", Body=b"s3 bytes")
    with Client(server.endpoint, DEV_ACCESS_KEY, DEV_SECRET_KEY) as client:
        assert client.get(bucket, "from-s3") == b"s3 bytes"


def test_apollo_routes_refuse_unsigned_calls_and_leave_other_paths_to_s3(server):
    def call(path: str, method: str = "GET", body: bytes | None = None) -> tuple[int, str, bytes]:
        request = urllib.request.Request(server.endpoint + path, data=body, method=method)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.headers.get("Content-Type", ""), response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.headers.get("Content-Type", ""), error.read()

    status, _, body = call("/_apollo/rpc/list_buckets", "POST", b"{}")
    assert status == 403 and codec.loads(body)["error"]["type"] == "AccessDenied"  # the metadata API's own edge
    status, _, body = call("/_apollo/shards/" + "0" * 16 + "/0/" + "0" * 32 + "/0?offset=0&length=1")
    assert status == 403 and b"capability token" in body
    status, content_type, body = call("/_apollo/anything-else")  # no Apollo route: S3 answers, as for any path
    assert status == 400 and content_type == "application/xml" and b"<Code>InvalidBucketName</Code>" in body


@pytest.fixture(scope="module")
def vhost_server(tmp_path_factory):
    with ServerProcess(tmp_path_factory.mktemp("vhost-native"), extra_args=["--domain", DOMAIN]) as process:
        yield process


def test_with_virtual_hosts_a_key_under_apollo_is_an_ordinary_key(vhost_server):
    """``bucket.domain/_apollo/rpc/x`` names the key ``_apollo/rpc/x``, not Apollo's metadata API."""
    s3 = virtual_host_s3(vhost_server.port, DOMAIN, DEV_ACCESS_KEY, DEV_SECRET_KEY)
    s3.create_bucket(Bucket="vhost-native")
    for key in ("_apollo/rpc/list_buckets", "_apollo/shards/0000000000000000/0/x/0"):
        s3.put_object(Bucket="vhost-native", Key=key, Body=key.encode())
        assert s3.get_object(Bucket="vhost-native", Key=key)["Body"].read() == key.encode()
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket="vhost-native")["Contents"]]
    assert listed == ["_apollo/rpc/list_buckets", "_apollo/shards/0000000000000000/0/x/0"]
    with Client(vhost_server.endpoint, DEV_ACCESS_KEY, DEV_SECRET_KEY) as client:  # path style: the API
        assert client.get("vhost-native", "_apollo/rpc/list_buckets") == b"_apollo/rpc/list_buckets"
