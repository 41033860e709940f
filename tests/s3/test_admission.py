"""Requests in flight per access key and per process (apollo/gateway/admission.py): one key's job cannot take
every slot of a server from the others; beyond its share a request is answered 503 SlowDown at once.

Requests are held in flight the way a slow client holds them: a PUT whose body has not all arrived."""

from __future__ import annotations

import socket
import time
import urllib.request

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from apollo.testing.admin import admin
from apollo.testing.server import ServerProcess

PER_KEY = 2
ONE_ATTEMPT = {"total_max_attempts": 1}  # botocore retries SlowDown; each refusal is counted once
TOTAL = 3


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    limits = ["--max-requests-per-key", str(PER_KEY), "--max-requests", str(TOTAL)]
    process = ServerProcess(tmp_path_factory.mktemp("admission"), extra_args=limits)
    process.start()
    process.s3().create_bucket(Bucket="adm")
    yield process
    process.kill()


def _hold_put(server, s3, key: str) -> socket.socket:
    """A PUT that has sent its headers and part of its body: in flight until the socket closes."""
    url = s3.generate_presigned_url("put_object", Params={"Bucket": "adm", "Key": key})
    target = url.removeprefix(server.endpoint)
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    sock.sendall(f"PUT {target} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nContent-Length: 1000000\r\n\r\n"
                 .encode() + b"x" * 1000)  # fmt: skip
    return sock


def _refused(server, limit: str) -> float:
    text = urllib.request.urlopen(f"{server.endpoint}/metrics", timeout=10).read().decode()
    prefix = f'apollo_s3_refused_requests_total{{limit="{limit}"}} '
    return sum(float(line[len(prefix) :]) for line in text.splitlines() if line.startswith(prefix))


def _slow_down(call) -> str:
    with pytest.raises(ClientError) as caught:
        call()
    error = caught.value.response
    assert (error["ResponseMetadata"]["HTTPStatusCode"], error["Error"]["Code"]) == (503, "SlowDown"), error
    return error["Error"]["Message"]


def _other_key_client(server):
    made = admin("key", "create", meta_dir=server.meta_dir)
    access = made.split("access key: ")[1].split()[0]
    secret = made.split("secret key: ")[1].split()[0]
    return boto3.client("s3", endpoint_url=server.endpoint, aws_access_key_id=access, aws_secret_access_key=secret,
                        region_name="us-east-1", config=Config(retries=ONE_ATTEMPT))  # fmt: skip


def test_one_key_gets_its_share_and_other_keys_keep_theirs(server):
    s3, other = server.s3(retries=ONE_ATTEMPT), _other_key_client(server)
    refused_before = _refused(server, "key")
    held = [_hold_put(server, s3, f"held-{n}") for n in range(PER_KEY)]
    time.sleep(1)  # the server has read their headers: they are in flight
    try:
        message = _slow_down(lambda: s3.list_objects_v2(Bucket="adm"))  # the dev key's share is taken
        assert f"{PER_KEY} requests in progress" in message
        assert _refused(server, "key") == refused_before + 1
        other.put_object(Bucket="adm", Key="other", Body=b"fine")  # another key is not held up
    finally:
        for sock in held:
            sock.close()
    _eventually_admitted(lambda: s3.put_object(Bucket="adm", Key="after", Body=b"again"))
    assert s3.get_object(Bucket="adm", Key="after")["Body"].read() == b"again"


def test_the_process_limit_holds_across_keys(server):
    s3, other = server.s3(retries=ONE_ATTEMPT), _other_key_client(server)
    held = [_hold_put(server, s3, f"p-{n}") for n in range(PER_KEY)]
    held.append(_hold_put(server, other, "p-other"))  # TOTAL in flight now
    time.sleep(1)
    try:
        message = _slow_down(lambda: other.list_objects_v2(Bucket="adm"))
        assert f"This server has {TOTAL} requests in progress" in message
    finally:
        for sock in held:
            sock.close()
    _eventually_admitted(lambda: other.list_objects_v2(Bucket="adm"))


def _eventually_admitted(call, attempts: int = 50) -> None:
    """Closed sockets free their slots once the server notices the closes (a few milliseconds)."""
    for _ in range(attempts):
        try:
            call()
            return
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "SlowDown":
                raise
            time.sleep(0.1)
    raise AssertionError("the slots of closed requests were never given back")
