"""A metadata-service outage, seen from a gateway: readiness says so within seconds, S3 requests fail fast
with a plain 503, and the log says when the outage starts and when it ends (once each)."""

from __future__ import annotations

import time
import urllib.error
import urllib.request

from apollo.testing.s3error import s3_error

REFRESH_AND_MARGIN_S = 8.0  # a failed map refresh (every 2 s, 3 s budget) marks the outage


def _ready(gateway) -> int:
    try:
        with urllib.request.urlopen(f"{gateway.endpoint}/health/ready", timeout=5) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def _wait_for(condition, timeout_s: float) -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout_s, f"not within {timeout_s} s"
        time.sleep(0.2)
    return time.monotonic() - started


def _outage_fails_fast(cluster, s3) -> None:
    gateway = cluster.gateways[0]
    _wait_for(lambda: _ready(gateway) == 503, REFRESH_AND_MARGIN_S)
    started = time.monotonic()
    with s3_error("ServiceUnavailable", 503) as error:
        s3.list_objects_v2(Bucket="outage")
    assert time.monotonic() - started < 5, "a request during an outage must fail fast"
    assert "http://" not in error.message and "Error(" not in error.message, error.message


def test_a_dead_or_hung_metadata_service_is_seen_and_survived(make_cluster):
    cluster = make_cluster(nodes=6, metas=1, gateways=1)
    s3 = cluster.s3()
    s3.create_bucket(Bucket="outage")
    s3.put_object(Bucket="outage", Key="k", Body=b"v")
    gateway, meta = cluster.gateways[0], cluster.metas[0]
    assert _ready(gateway) == 200

    meta.kill()  # kill -9: connections refused
    _outage_fails_fast(cluster, s3)
    meta.start()
    _wait_for(lambda: _ready(gateway) == 200, REFRESH_AND_MARGIN_S)
    assert s3.get_object(Bucket="outage", Key="k")["Body"].read() == b"v"

    meta.pause()  # SIGSTOP: connections accepted, never answered
    try:
        _outage_fails_fast(cluster, s3)
    finally:
        meta.resume()
    _wait_for(lambda: _ready(gateway) == 200, REFRESH_AND_MARGIN_S)
    assert s3.get_object(Bucket="outage", Key="k")["Body"].read() == b"v"

    log = gateway.log_path.read_text()
    assert log.count("unreachable: requests fail at once") == 2 and log.count("answers again") == 2, log[-3000:]
