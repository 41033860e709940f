"""Every cluster role names its version at start, exports ``apollo_build_info``, logs under its role's name
and says when a shutdown starts and when it is over; the gateway's access log and S3 counters carry S3
requests only, with the key, the bytes and the error code."""

from __future__ import annotations

import importlib.metadata
import platform
import re
import time
import urllib.request

import pytest
from botocore.exceptions import ClientError

VERSION = importlib.metadata.version("apollo-storage")
BUILD_INFO = f'apollo_build_info{{python="{platform.python_version()}",version="{VERSION}"}} 1.0'
ACCESS_LINE = re.compile(
    r'apollo\.access: \S+ [0-9A-F]{16} (?P<key>\S+) "(?P<request>\S+ \S+)" (?P<status>\d{3}) (?P<op>\S+) '
    r"(?P<error>\S+) (?P<bytes_in>\d+) (?P<bytes_out>\d+) \d+\.\dms$"
)


def _scrape(process) -> str:
    with urllib.request.urlopen(f"{process.endpoint}/metrics") as response:
        return response.read().decode()


def _access_lines(process, count: int) -> list[dict[str, str]]:
    """The access-log lines of a gateway, parsed, once there are ``count`` (they are flushed every second)."""
    deadline = time.monotonic() + 5
    while True:
        lines = [line for line in process.log_path.read_text().splitlines() if "apollo.access" in line]
        if len(lines) >= count or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    parsed = [ACCESS_LINE.search(line) for line in lines]
    assert all(parsed), lines
    return [match.groupdict() for match in parsed]


def _index(lines: list[str], pattern: str) -> int:
    found = [n for n, line in enumerate(lines) if re.search(pattern, line)]
    assert len(found) == 1, f"{pattern!r} found {len(found)} times in:\n" + "\n".join(lines[-30:])
    return found[0]


def test_every_role_names_its_version_exports_build_info_and_logs_its_shutdown(make_cluster):
    cluster = make_cluster(nodes=3, ec="2+1")
    meta, node, gateway = cluster.metas[0], cluster.nodes[0], cluster.gateways[0]
    s3 = cluster.s3()
    s3.create_bucket(Bucket="roles")
    s3.put_object(Bucket="roles", Key="k", Body=b"v" * 1000)
    with pytest.raises(ClientError, match="NoSuchKey"):
        s3.get_object(Bucket="roles", Key="gone")
    for process in (meta, node, gateway):
        assert BUILD_INFO in _scrape(process), process.name

    # The gateway was polled on /health/ready until it answered, and just scraped: none of it is S3 traffic.
    counted = re.findall(r'^apollo_s3_requests_total\{op="(\w+)",status="(\d+)"\}', _scrape(gateway), re.M)
    assert sorted(counted) == [("CreateBucket", "200"), ("GetObject", "404"), ("PutObject", "200")]
    access = _access_lines(gateway, 3)
    assert [(line["key"], line["request"], line["status"], line["op"], line["error"], line["bytes_in"])
            for line in access] == [
        ("apollo-dev", "PUT /roles", "200", "CreateBucket", "-", "0"),
        ("apollo-dev", "PUT /roles/k", "200", "PutObject", "-", "1000"),
        ("apollo-dev", "GET /roles/gone", "404", "GetObject", "NoSuchKey", "0"),
    ]  # fmt: skip
    assert all(0 < int(line["bytes_out"]) < 2048 for line in access)

    cluster.stop()  # SIGTERM to every process
    for process, logger, banner, what in (
        (meta, "apollo.meta", "metadata service", "metadata service"),
        (node, "apollo.storage", "storage node node0", "storage node node0"),
        (gateway, "apollo.gateway", "S3 gateway", "gateway"),
    ):
        lines = process.log_path.read_text().splitlines()
        _index(lines, rf"INFO {logger}: Apollo {re.escape(VERSION)} {banner} http://127\.0\.0\.1:{process.port} ")
        starting = _index(lines, rf"INFO {logger}: {what} shutting down: no new connections")
        done = _index(lines, rf"INFO {logger}: {what} shut down in \d+\.\d s$")
        assert starting < done, process.name
