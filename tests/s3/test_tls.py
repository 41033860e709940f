"""HTTPS on the S3 front doors: ``apollo server`` and ``apollo gateway`` with ``--certs DIR``.

Every test makes its own throwaway CA with the ``openssl`` command and runs real processes: what a client
sees is what an operator's clients will see (boto3 with ``verify=``, the aws cli with ``--ca-bundle``, the
native client trusting the CA through ``SSL_CERT_FILE``), and certificate renewals are real file
replacements, signals and new handshakes.
"""

from __future__ import annotations

import http.client
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import botocore.exceptions
import pytest

from apollo.testing.certs import ThrowawayCA
from apollo.testing.server import DEV_ACCESS_KEY, DEV_SECRET_KEY, ServerProcess, free_port


@pytest.fixture
def ca(tmp_path: Path) -> ThrowawayCA:
    return ThrowawayCA.create(tmp_path / "ca")


def _https_server(tmp_path: Path, ca: ThrowawayCA, **kwargs) -> ServerProcess:
    certs = ca.issue(tmp_path / "certs", name="first", serial=1)
    return ServerProcess(tmp_path / "server", certs=certs, ca_file=ca.cert, **kwargs)


def _served_name(port: int, ca: ThrowawayCA) -> str:
    """The common name of the certificate a new connection is shown (verified against ``ca``)."""
    with _handshake(port, ssl.create_default_context(cafile=ca.cert)) as tls:
        return _common_name(tls)


def _handshake(port: int, context: ssl.SSLContext) -> ssl.SSLSocket:
    """A new TLS connection to the server (the handshake done), as a context manager that closes it."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        return context.wrap_socket(raw, server_hostname="127.0.0.1")
    except BaseException:
        raw.close()
        raise


def _common_name(tls: ssl.SSLSocket) -> str:
    return dict(pair[0] for pair in tls.getpeercert()["subject"])["commonName"]


def _wait_for_name(port: int, ca: ThrowawayCA, name: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while (seen := _served_name(port, ca)) != name:
        assert time.monotonic() < deadline, f"still serving {seen!r} after {timeout_s} s, expected {name!r}"
        time.sleep(0.1)


def _wait_for_log(server: ServerProcess, text: str, count: int = 1, timeout_s: float = 10.0) -> str:
    deadline = time.monotonic() + timeout_s
    while (log := server.log_path.read_text(errors="replace")).count(text) < count:
        assert time.monotonic() < deadline, f"{text!r} not logged {count} time(s):\n{server.log_tail()}"
        time.sleep(0.05)
    return log


def _get(connection: http.client.HTTPConnection, path: str = "/health/live") -> bytes:
    connection.request("GET", path)
    response = connection.getresponse()
    assert response.status == 200
    return response.read()


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_s3_clients_work_over_https_with_a_certificate_chain(tmp_path: Path, ca: ThrowawayCA):
    # public.crt carries the certificate and its intermediate CA; clients trust only the root.
    certs = ca.issue(tmp_path / "certs", name="chained", intermediate=True)
    with ServerProcess(tmp_path / "server", certs=certs, ca_file=ca.cert) as server:
        assert server.endpoint.startswith("https://")
        assert f"S3 endpoint https://127.0.0.1:{server.port}" in server.log_path.read_text()
        s3 = server.s3()  # boto3 with verify=<the CA file>
        s3.create_bucket(Bucket="tls")
        body = os.urandom(3 * 1024 * 1024 + 7)
        s3.put_object(Bucket="tls", Key="object", Body=body)
        assert s3.get_object(Bucket="tls", Key="object")["Body"].read() == body
        assert _served_name(server.port, ca) == "chained"
        # The aws cli, trusting the CA with --ca-bundle.
        env = {**os.environ, "AWS_ACCESS_KEY_ID": DEV_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": DEV_SECRET_KEY,
               "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip
        aws = [str(Path(sys.executable).parent / "aws"), "--endpoint-url", server.endpoint, "--ca-bundle", str(ca.cert)]
        listed = subprocess.run([*aws, "s3", "ls", "s3://tls/"], capture_output=True, text=True, env=env, timeout=60)
        assert listed.returncode == 0 and "object" in listed.stdout, listed.stderr
        # A default client negotiates TLS 1.2 or better; one that offers at most TLS 1.1 is refused.
        with _handshake(server.port, ssl.create_default_context(cafile=ca.cert)) as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
        old = ssl.create_default_context(cafile=ca.cert)
        old.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        old.maximum_version = ssl.TLSVersion.TLSv1_1
        old.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client offer TLS 1.1 at all: the server must say no
        with pytest.raises(ssl.SSLError):
            _handshake(server.port, old).close()


def test_the_native_client_works_over_https_when_it_trusts_the_ca(tmp_path: Path, ca: ThrowawayCA):
    """``apollo.client.Client`` against ``https://``: the metadata API and the shards (large reads, which a
    plain server sends with sendfile) on the same TLS port. The CA is trusted through ``SSL_CERT_FILE``, which
    aiohttp's default context and the shard fetcher both read, in a process of its own (aiohttp builds its
    context when imported)."""
    with _https_server(tmp_path, ca) as server:
        script = (
            "import os, sys\n"
            "from apollo.client import Client\n"
            "body = os.urandom(6 * 1024 * 1024 + 3)\n"
            "with Client(sys.argv[1], sys.argv[2], sys.argv[3]) as client:\n"
            "    client.create_bucket('native')\n"
            "    client.put('native', 'big', body)\n"
            "    assert client.get('native', 'big') == body\n"
            "    assert client.get('native', 'big', 1_000_000, 3_000_000) == body[1_000_000:3_000_000]\n"
            "print('ok')\n"
        )
        env = {**os.environ, "SSL_CERT_FILE": str(ca.cert)}
        done = subprocess.run([sys.executable, "-c", script, server.endpoint, DEV_ACCESS_KEY, DEV_SECRET_KEY],
                              capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
        assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]
        assert "damaged shard" not in done.stderr  # every shard read came over TLS intact, none decoded around


def test_untrusting_and_plain_http_clients_are_refused_and_the_server_keeps_serving(tmp_path: Path,
                                                                                    ca: ThrowawayCA):  # fmt: skip
    import boto3

    with _https_server(tmp_path, ca) as server:
        untrusting = boto3.client("s3", endpoint_url=server.endpoint, aws_access_key_id=DEV_ACCESS_KEY,
                                  aws_secret_access_key=DEV_SECRET_KEY, region_name="us-east-1",
                                  verify=True)  # the system's CAs, which do not know this one  # fmt: skip
        with pytest.raises(botocore.exceptions.SSLError):
            untrusting.list_buckets()
        for _ in range(3):
            with pytest.raises((http.client.HTTPException, OSError)):
                urllib.request.urlopen(f"http://127.0.0.1:{server.port}/health/live", timeout=5)
            with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw:  # bytes that are no TLS
                raw.sendall(b"\x00" * 64 + b"GET / HTTP/1.0\r\n\r\n")
                try:
                    assert b"HTTP/" not in raw.recv(100)  # a TLS alert or nothing; never a plain answer
                except ConnectionResetError:
                    pass
        assert server.process.poll() is None
        server.s3().create_bucket(Bucket="still-serving")
        assert "Traceback" not in server.log_path.read_text(errors="replace")


def _start_failure(args: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "apollo", *args, "--dev"], capture_output=True, text=True,
                          timeout=60)  # fmt: skip


def test_a_missing_unreadable_or_mismatched_pair_stops_the_start_with_one_line(tmp_path: Path, ca: ThrowawayCA):
    good = ca.issue(tmp_path / "good", name="good", serial=1)
    other = ca.issue(tmp_path / "other", name="other", serial=2)
    mismatched = tmp_path / "mismatched"
    mismatched.mkdir()
    (mismatched / "public.crt").write_bytes((good / "public.crt").read_bytes())
    (mismatched / "private.key").write_bytes((other / "private.key").read_bytes())
    garbled = tmp_path / "garbled"
    garbled.mkdir()
    (garbled / "public.crt").write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    (garbled / "private.key").write_bytes((good / "private.key").read_bytes())
    unreadable = tmp_path / "unreadable"
    unreadable.mkdir()
    (unreadable / "public.crt").write_bytes((good / "public.crt").read_bytes())
    (unreadable / "private.key").mkdir()  # a directory where the key should be: unreadable even as root
    cases = {tmp_path / "nowhere": "public.crt is missing", mismatched: "is not the key of the certificate",
             garbled: "do not load as a certificate chain", unreadable: "cannot read"}  # fmt: skip
    server = ["server", str(tmp_path / "d1"), "--meta-dir", str(tmp_path / "meta"), "--address",
              f"127.0.0.1:{free_port()}"]  # fmt: skip
    gateway = ["gateway", "--meta", "http://127.0.0.1:9", "--address", f"127.0.0.1:{free_port()}"]
    for role in (server, gateway, [*server, "--workers", "2"]):
        for certs, reason in cases.items():
            done = _start_failure([*role, "--certs", str(certs)])
            lines = done.stderr.strip().splitlines()
            assert done.returncode == 1, (role, certs, done.stderr)
            assert reason in lines[-1] and "--certs" in lines[-1] and "Traceback" not in done.stderr, done.stderr
    assert not (tmp_path / "d1").exists()  # refused before a drive (or the database) was touched


def test_sighup_loads_a_renewed_pair_and_open_connections_keep_theirs(tmp_path: Path, ca: ThrowawayCA):
    with _https_server(tmp_path, ca) as server:
        s3 = server.s3()
        s3.create_bucket(Bucket="renew")
        body = os.urandom(24 * 1024 * 1024)
        s3.put_object(Bucket="renew", Key="long", Body=body)
        kept = http.client.HTTPSConnection("127.0.0.1", server.port, context=server.ssl_context(), timeout=10)
        _get(kept)
        assert _common_name(kept.sock) == "first"
        long_get = s3.get_object(Bucket="renew", Key="long")["Body"]
        first_part = long_get.read(1024 * 1024)

        ca.issue(server.certs, name="second", serial=2)
        server.process.send_signal(signal.SIGHUP)
        _wait_for_log(server, "TLS certificate reloaded (SIGHUP)")
        _wait_for_name(server.port, ca, "second", timeout_s=2)

        assert _get(kept) == b"ok\n" and _common_name(kept.sock) == "first"  # the same connection, its own cert
        assert first_part + long_get.read() == body  # the GET in progress finished on its connection
        kept.close()
        assert server.s3().get_object(Bucket="renew", Key="long")["Body"].read() == body
        assert server.process.poll() is None


def test_a_changed_pair_is_picked_up_without_a_signal(tmp_path: Path, ca: ThrowawayCA):
    with _https_server(tmp_path, ca) as server:
        ca.issue(server.certs, name="second", serial=2)
        _wait_for_name(server.port, ca, "second", timeout_s=10)
        assert "TLS certificate reloaded (files changed)" in server.log_path.read_text()


def test_a_broken_pair_is_refused_and_the_old_one_keeps_serving(tmp_path: Path, ca: ThrowawayCA):
    with _https_server(tmp_path, ca) as server:
        other = ca.issue(tmp_path / "other", name="other", serial=3)
        # A renewal copied half-way: the new certificate is in place, its key is not.
        fresh = ca.issue(tmp_path / "fresh", name="second", serial=2)
        (server.certs / "public.crt").write_bytes((fresh / "public.crt").read_bytes())
        (server.certs / "private.key").write_bytes((other / "private.key").read_bytes())
        server.process.send_signal(signal.SIGHUP)
        log = _wait_for_log(server, "TLS certificate not reloaded (SIGHUP)")
        assert "is not the key of the certificate" in log
        for _ in range(5):  # every new handshake still gets the old pair, whole
            assert _served_name(server.port, ca) == "first"
        server.s3().create_bucket(Bucket="still-serving")
        # The key arrives: the next check (or signal) takes the complete pair.
        (server.certs / "private.key").write_bytes((fresh / "private.key").read_bytes())
        server.process.send_signal(signal.SIGHUP)
        _wait_for_name(server.port, ca, "second", timeout_s=5)


def test_every_worker_reloads_on_sighup_to_the_server(tmp_path: Path, ca: ThrowawayCA):
    with _https_server(tmp_path, ca, extra_args=["--workers", "2"]) as server:
        _wait_for_log(server, "worker 1 (pid")  # both workers up (the harness waits for one answer only)
        _wait_for_log(server, "worker 0 (pid")
        ca.issue(server.certs, name="second", serial=2)
        server.process.send_signal(signal.SIGHUP)  # the supervisor's pid, as an operator's kill -HUP
        _wait_for_log(server, "TLS certificate reloaded (SIGHUP)", count=2)
        pids = set()
        for _ in range(40):  # new connections land on either worker: each shows the new certificate
            assert _served_name(server.port, ca) == "second"
        for line in server.log_path.read_text().splitlines():
            if "worker" in line and "(pid" in line and "serving" in line:
                pids.add(line.split("(pid ")[1].split(")")[0])
        assert len(pids) == 2 and server.process.poll() is None
        server.s3().create_bucket(Bucket="workers")


def test_the_gateway_serves_s3_over_https(tmp_path: Path, ca: ThrowawayCA):
    """``apollo gateway --certs``: HTTPS to S3 clients; its own calls to the metadata service are unchanged."""
    import boto3

    certs = ca.issue(tmp_path / "certs", name="gateway", serial=1)
    meta_port, gateway_port = free_port(), free_port()
    processes = []
    try:
        with open(tmp_path / "meta.log", "ab") as log:
            processes.append(subprocess.Popen([sys.executable, "-m", "apollo", "meta", "--database",
                                               str(tmp_path / "meta.db"), "--address", f"127.0.0.1:{meta_port}",
                                               "--dev"], stdout=log, stderr=subprocess.STDOUT))  # fmt: skip
        with open(tmp_path / "gateway.log", "ab") as log:
            processes.append(subprocess.Popen([sys.executable, "-m", "apollo", "gateway", "--meta",
                                               f"http://127.0.0.1:{meta_port}", "--address",
                                               f"127.0.0.1:{gateway_port}", "--certs", str(certs), "--dev"],
                                              stdout=log, stderr=subprocess.STDOUT))  # fmt: skip
        endpoint = f"https://127.0.0.1:{gateway_port}"
        context = ssl.create_default_context(cafile=ca.cert)
        deadline = time.monotonic() + 30
        while True:
            assert all(p.poll() is None for p in processes), (tmp_path / "gateway.log").read_text()
            try:
                with urllib.request.urlopen(f"{endpoint}/health/ready", timeout=1, context=context):
                    break
            except OSError:
                assert time.monotonic() < deadline, (tmp_path / "gateway.log").read_text()
                time.sleep(0.1)
        assert f"S3 gateway https://127.0.0.1:{gateway_port}" in (tmp_path / "gateway.log").read_text()
        s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=DEV_ACCESS_KEY, region_name="us-east-1",
                          aws_secret_access_key=DEV_SECRET_KEY, verify=str(ca.cert))  # fmt: skip
        s3.create_bucket(Bucket="through-the-gateway")
        assert "through-the-gateway" in [b["Name"] for b in s3.list_buckets()["Buckets"]]
        with pytest.raises((http.client.HTTPException, OSError)):
            urllib.request.urlopen(f"http://127.0.0.1:{gateway_port}/health/live", timeout=5)
        ca.issue(certs, name="gateway renewed", serial=2)
        processes[1].send_signal(signal.SIGHUP)
        _wait_for_name(gateway_port, ca, "gateway renewed", timeout_s=5)
        assert processes[1].poll() is None
    finally:
        for process in processes:
            process.terminate()
            process.wait(15)
