"""Virtual-host-style addressing (``--domain``) next to path style, through boto3.

The bucket travels in the Host header (``bucket.apollo.test``); the test sends
the requests to 127.0.0.1 with that Host header instead of relying on DNS.
"""

from __future__ import annotations

import pytest

from apollo.testing.s3calls import virtual_host_s3
from apollo.testing.s3error import s3_error
from apollo.testing.server import DEV_ACCESS_KEY, DEV_SECRET_KEY, ServerProcess

DOMAIN = "apollo.test"


@pytest.fixture(scope="module")
def vhost_server(tmp_path_factory):
    with ServerProcess(tmp_path_factory.mktemp("vhost"), extra_args=["--domain", DOMAIN]) as process:
        yield process


def _virtual_client(server):
    return virtual_host_s3(server.port, DOMAIN, DEV_ACCESS_KEY, DEV_SECRET_KEY)


def test_virtual_host_requests_reach_the_bucket_in_the_host_header(vhost_server):
    s3 = _virtual_client(vhost_server)
    sent = []
    s3.meta.events.register("before-send.s3", lambda request, **_: sent.append(request.headers["Host"]))
    s3.create_bucket(Bucket="vhost-bucket")
    s3.put_object(Bucket="vhost-bucket", Key="dir/obj name+1", Body=b"virtual")
    assert s3.get_object(Bucket="vhost-bucket", Key="dir/obj name+1")["Body"].read() == b"virtual"
    assert [o["Key"] for o in s3.list_objects_v2(Bucket="vhost-bucket")["Contents"]] == ["dir/obj name+1"]
    assert sent and all(host.startswith(f"vhost-bucket.{DOMAIN}") for host in sent)
    # the same object by path style on the same server
    assert vhost_server.s3().get_object(Bucket="vhost-bucket", Key="dir/obj name+1")["Body"].read() == b"virtual"


def test_virtual_host_with_a_missing_bucket_is_no_such_bucket(vhost_server):
    with s3_error("NoSuchBucket"):
        _virtual_client(vhost_server).get_object(Bucket="no-such-bucket-here", Key="k")
