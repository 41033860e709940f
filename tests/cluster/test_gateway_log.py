"""A gateway's access log keeps up with its traffic (it held only the start banner after ~130 requests)."""

from __future__ import annotations

import time

REQUESTS = 40


def test_the_gateway_access_log_shows_requests_within_seconds(make_cluster):
    cluster = make_cluster(nodes=6)
    s3 = cluster.s3()
    s3.create_bucket(Bucket="logged")
    for n in range(REQUESTS - 1):
        s3.put_object(Bucket="logged", Key=f"k{n}", Body=b"x")
    deadline = time.monotonic() + 5
    lines: list[str] = []
    while time.monotonic() < deadline:
        lines = [line for line in cluster.gateways[0].log_path.read_text().splitlines() if "apollo.access" in line]
        if len(lines) >= REQUESTS:
            break
        time.sleep(0.2)
    assert len(lines) >= REQUESTS, f"{len(lines)} access-log lines for {REQUESTS} requests"
    assert sum("PutObject" in line for line in lines) == REQUESTS - 1
