"""What an operator sees of ``apollo server``: the version (``apollo --version``, the start banner,
``apollo_build_info``), access-log lines that name the key, the bytes and the S3 error, health checks and
scrapes kept out of the S3 numbers, and both ends of a shutdown."""

from __future__ import annotations

import importlib.metadata
import platform
import re
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import boto3
import pytest
from botocore.exceptions import ClientError

VERSION = importlib.metadata.version("apollo-storage")
BUILD_INFO = f'apollo_build_info{{python="{platform.python_version()}",version="{VERSION}"}} 1.0'
# The format accesslog.py documents: eleven fields, none empty, none with a space inside the quotes' two.
ACCESS_LINE = re.compile(
    r'INFO apollo\.access: (?P<remote>\S+) (?P<id>[0-9A-F]{16}) (?P<key>\S+) "(?P<method>[A-Z]+) (?P<target>\S+)" '
    r"(?P<status>\d{3}) (?P<op>\S+) (?P<error>\S+) (?P<bytes_in>\d+) (?P<bytes_out>\d+) (?P<ms>\d+\.\d)ms$"
)
PUBLIC = ("/health/live", "/health/ready", "/metrics")


def access_lines(server, count: int, timeout_s: float = 5.0) -> list[dict[str, str]]:
    """The server's access-log lines, parsed, once there are ``count`` (they are flushed every second)."""
    deadline = time.monotonic() + timeout_s
    while True:
        lines = [line for line in server.log_path.read_text().splitlines() if "apollo.access" in line]
        if len(lines) >= count or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    parsed = [ACCESS_LINE.search(line) for line in lines]
    assert all(parsed), [line for line, match in zip(lines, parsed, strict=True) if not match]
    return [match.groupdict() for match in parsed]


def scrape(server) -> str:
    with urllib.request.urlopen(f"{server.endpoint}/metrics") as response:
        return response.read().decode()


def poll_public_paths(server, times: int = 3) -> None:
    """What a load balancer and Prometheus do all day long."""
    for _ in range(times):
        for path in PUBLIC:
            with urllib.request.urlopen(server.endpoint + path) as response:
                assert response.status == 200


def test_apollo_version_prints_the_installed_version():
    done = subprocess.run([sys.executable, "-m", "apollo", "--version"], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == (0, f"apollo {VERSION}\n"), done.stderr


def test_access_log_lines_carry_the_key_the_bytes_and_the_error_code(make_server):
    server = make_server()
    s3 = server.s3()
    s3.create_bucket(Bucket="logged")
    body = b"x" * 48213
    s3.put_object(Bucket="logged", Key="cat photo.jpg", Body=body)
    assert s3.get_object(Bucket="logged", Key="cat photo.jpg")["Body"].read() == body
    with pytest.raises(ClientError, match="NoSuchKey"):
        s3.get_object(Bucket="logged", Key="missing")
    with pytest.raises(urllib.error.HTTPError) as anonymous:
        urllib.request.urlopen(f"{server.endpoint}/logged/cat%20photo.jpg")
    assert anonymous.value.code == 403
    wrong_secret = boto3.client("s3", endpoint_url=server.endpoint, aws_access_key_id="apollo-dev",
                                aws_secret_access_key="not-the-secret", region_name="us-east-1")  # fmt: skip
    with pytest.raises(ClientError, match="SignatureDoesNotMatch"):
        wrong_secret.list_objects_v2(Bucket="logged")
    with socket.create_connection(("127.0.0.1", server.port)) as raw:  # a quote in the target must not end it
        raw.sendall(b'GET /logged/a"b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
        assert raw.recv(64).startswith(b"HTTP/1.1 403")
    poll_public_paths(server)

    lines = access_lines(server, 7)
    assert [(line["method"], line["target"], line["status"], line["op"], line["error"], line["key"])
            for line in lines] == [
        ("PUT", "/logged", "200", "CreateBucket", "-", "apollo-dev"),
        ("PUT", "/logged/cat%20photo.jpg", "200", "PutObject", "-", "apollo-dev"),
        ("GET", "/logged/cat%20photo.jpg", "200", "GetObject", "-", "apollo-dev"),
        ("GET", "/logged/missing", "404", "GetObject", "NoSuchKey", "apollo-dev"),
        ("GET", "/logged/cat%20photo.jpg", "403", "GetObject", "AccessDenied", "-"),  # anonymous: no bucket policy
        ("GET", "/logged?list-type=2&encoding-type=url", "403", "unknown", "SignatureDoesNotMatch", "apollo-dev"),
        ("GET", "/logged/a%22b", "403", "GetObject", "AccessDenied", "-"),
    ]  # fmt: skip
    put, get, missing = lines[1], lines[2], lines[3]
    assert int(put["bytes_in"]) == len(body)
    assert 0 < int(put["bytes_out"]) < 1024  # status line and headers only
    assert int(get["bytes_in"]) == 0
    assert len(body) < int(get["bytes_out"]) < len(body) + 1024  # the body and its headers
    assert 0 < int(missing["bytes_out"]) < 2048  # headers and the XML error
    assert len({line["id"] for line in lines}) == len(lines)
    assert not [line for line in server.log_path.read_text().splitlines() if any(p in line for p in PUBLIC)]


def test_metrics_export_build_info_and_count_only_s3_requests(make_server):
    server = make_server()  # it was polled on /health/ready until it answered
    poll_public_paths(server)
    server.s3().list_buckets()
    text = scrape(server)
    assert BUILD_INFO in text
    counted = re.findall(r'^apollo_s3_requests_total\{op="(\w+)",status="(\d+)"\} (\S+)$', text, re.M)
    assert counted == [("ListBuckets", "200", "1.0")]
    observed = re.findall(r'^apollo_s3_request_seconds_count\{op="(\w+)"\} (\S+)$', text, re.M)
    assert observed == [("ListBuckets", "1.0")]


def test_the_log_names_the_version_and_both_ends_of_a_shutdown(make_server):
    server = make_server()
    server.stop()  # SIGTERM
    assert server.process.returncode == 0
    lines = server.log_path.read_text().splitlines()
    assert any(f"INFO apollo.server: Apollo {VERSION} S3 endpoint http://127.0.0.1:{server.port} " in line
               for line in lines), lines  # fmt: skip
    starting = _index(lines, r"INFO apollo\.server: server shutting down: no new connections")
    done = _index(lines, r"INFO apollo\.server: server shut down in \d+\.\d s$")
    assert starting < done


def test_workers_and_their_supervisor_log_as_the_server_and_export_one_build_info(make_server):
    server = make_server(extra_args=["--workers", "2"])
    serving = [rf"INFO apollo\.server: Apollo {re.escape(VERSION)} worker {n} \(pid \d+\) serving" for n in (0, 1)]
    deadline = time.monotonic() + 30
    while not all(re.search(pattern, server.log_path.read_text()) for pattern in serving):  # ready is one of them
        assert time.monotonic() < deadline, server.log_tail()
        time.sleep(0.2)
    text = scrape(server)
    assert [line for line in text.splitlines() if line.startswith("apollo_build_info")] == [BUILD_INFO]
    server.stop()
    lines = server.log_path.read_text().splitlines()
    assert any(f"INFO apollo.server: Apollo {VERSION} S3 endpoint http://127.0.0.1:{server.port}  workers=2 " in line
               for line in lines), lines  # fmt: skip
    stopping = _index(lines, r"INFO apollo\.server: server shutting down: stopping 2 workers$")
    workers_done = [_index(lines, rf"INFO apollo\.server: worker {n} shut down in ") for n in (0, 1)]
    done = _index(lines, r"INFO apollo\.server: server shut down in \d+\.\d s$")
    assert stopping < min(workers_done) and max(workers_done) < done


def _index(lines: list[str], pattern: str) -> int:
    found = [n for n, line in enumerate(lines) if re.search(pattern, line)]
    assert len(found) == 1, f"{pattern!r} found {len(found)} times in:\n" + "\n".join(lines[-30:])
    return found[0]
