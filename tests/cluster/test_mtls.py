"""Mutual TLS between the roles of a cluster, and the attacks it stops.

Real processes on loopback (``LocalCluster(tls=True)``): every role runs with ``--certs`` from a throwaway
cluster CA; the harness's clients show a client certificate of that CA. An attacker here is a host on the
cluster network with Apollo's code but without a certificate the cluster CA issued: it may hold valid keys or
tokens, or take a dead node's address, and must still get nothing. The same object paths over mutual TLS run
in tests/cluster/test_cluster.py and test_native_client.py (their ``mutual-tls`` / ``cluster-tls`` cases).
"""

from __future__ import annotations

import asyncio
import http.client
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from apollo import errors
from apollo.client import Client
from apollo.client.fetch import ShardFetcher
from apollo.client.tls import calling_context, read_cas
from apollo.testing.admin import admin
from apollo.testing.certs import ThrowawayCA
from apollo.testing.cluster import RoleProcess
from apollo.testing.server import DEV_ACCESS_KEY, DEV_SECRET_KEY, free_port

BUCKET = "mtls"


def _answer(port: int, context: ssl.SSLContext) -> bytes:
    """The first bytes a TLS client with ``context`` gets back from the role on ``port`` for a request.

    :raises ssl.SSLError, ConnectionError: the role ended the connection without a byte of an answer. Under
        TLS 1.3 the server checks the client's certificate after the client has finished its side of the
        handshake, and asyncio's servers then close without the TLS alert: the client sees an EOF on its
        first read.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1", suppress_ragged_eofs=False) as tls:  # fmt: skip
        tls.sendall(b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        return tls.recv(100)


def _refused(port: int, context: ssl.SSLContext) -> None:
    with pytest.raises((ssl.SSLError, ConnectionError)):
        answer = _answer(port, context)
        print(f"the role on port {port} answered a client it must refuse: {answer!r}")


def _plain_http_refused(endpoint: str) -> None:
    """A plain-HTTP request to a TLS port gets no HTTP answer (the handshake fails; the connection closes)."""
    with pytest.raises((http.client.HTTPException, OSError)):
        urllib.request.urlopen(endpoint.replace("https://", "http://") + "/health/live", timeout=5)


def _common_name(port: int, context: ssl.SSLContext) -> str:
    """The common name of the certificate a new connection to ``port`` is shown."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:  # fmt: skip
        return dict(pair[0] for pair in tls.getpeercert()["subject"])["commonName"]


def _ca_only(cluster, tmp_path: Path) -> Path:
    """A certificate directory that trusts the cluster CA but holds no client certificate."""
    directory = tmp_path / "ca-only"
    (directory / "CAs").mkdir(parents=True)
    shutil.copy(cluster.ca_file, directory / "CAs" / "ca.crt")
    return directory


def test_callers_without_a_certificate_of_the_cluster_ca_get_nothing_from_any_role(make_cluster, tmp_path):
    cluster = make_cluster(nodes=3, ec="2+1", tls=True)
    meta, node = cluster.metas[0], cluster.nodes[0]
    ca_only = calling_context(read_cas(_ca_only(cluster, tmp_path)))  # trusts the servers, shows nothing
    rogue = ThrowawayCA.create(tmp_path / "rogue-ca", "Rogue CA")
    # A certificate for the same names from another CA, with the cluster CA trusted: it verifies the
    # roles, and shows them a certificate they must not accept.
    rogue_certs = rogue.issue(tmp_path / "rogue", name="apollo node9", trust=cluster.certs.ca)
    with_rogue = calling_context(read_cas(rogue_certs))
    with_rogue.load_cert_chain(rogue_certs / "public.crt", rogue_certs / "private.key")

    # The metadata RPC and a storage node's shards: no client certificate, or one from another CA, ends
    # the connection at the handshake, whatever the request; the harness's own certificate gets an answer.
    for port in (meta.port, node.port):
        _refused(port, ca_only)
        _refused(port, with_rogue)
        assert _answer(port, cluster.ssl_context).startswith(b"HTTP/1.1 200")
    # Plain HTTP gets no answer from any role, the gateway's S3 port included.
    for role in (meta, node, cluster.gateways[0]):
        _plain_http_refused(role.endpoint)

    # The native client with valid keys but no client certificate, or one of another CA: refused at once,
    # saying TLS, not "retry later" after half a minute of retries.
    for certs in (_ca_only(cluster, tmp_path / "again"), rogue_certs):
        started = time.monotonic()
        with pytest.raises(errors.MetadataUnavailable, match="TLS with the metadata service failed"):
            Client(cluster.meta_urls, DEV_ACCESS_KEY, DEV_SECRET_KEY, certs=certs)
        assert time.monotonic() - started < 10
    # ... and with neither (the system's CAs) it does not trust the roles' certificates at all.
    with pytest.raises(errors.MetadataUnavailable, match=r"TLS with the metadata service failed \(self-signed cert"):
        Client(cluster.meta_urls, DEV_ACCESS_KEY, DEV_SECRET_KEY, certs=tmp_path)  # no public.crt, no CAs/

    # The native client's own shard reader, without a client certificate: the node never reads the request.
    async def fetch_shard() -> None:
        fetcher = ShardFetcher(node.endpoint, 3.0, ca_only)
        try:
            await fetcher.get("/_apollo/shards/d/0/s/0?offset=0&length=10", {}, 5.0, 10)
        finally:
            fetcher.close()

    with pytest.raises(ConnectionError):
        asyncio.run(fetch_shard())

    # A storage node with a certificate of another CA cannot join the cluster.
    port = free_port()
    (tmp_path / "node9-drive").mkdir()
    impostor = RoleProcess("node9", ["storage", str(tmp_path / "node9-drive"), "--meta", cluster.meta_urls,
                                     "--address", f"127.0.0.1:{port}", "--name", "node9", "--certs", str(rogue_certs)],
                           port, tmp_path / "node9.log", ssl_context=cluster.ssl_context)  # fmt: skip
    with pytest.raises(RuntimeError, match="cannot join the cluster: TLS with the metadata service failed"):
        impostor.start(timeout_s=30)

    # After all of it the roles serve their own as before.
    s3 = cluster.s3()
    s3.create_bucket(Bucket=BUCKET)
    s3.put_object(Bucket=BUCKET, Key="after", Body=b"still serving")
    assert s3.get_object(Bucket=BUCKET, Key="after")["Body"].read() == b"still serving"
    assert "node9" not in admin("node", "list", database=cluster.database)


class Impostor:
    """A TLS server on a dead storage node's port with a certificate of another CA, for the same names: what
    a host that took the node's address could run. It counts handshakes and keeps every byte a client sends
    it after one: a request there would carry a capability token."""

    def __init__(self, port: int, certs: Path) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(certs / "public.crt", certs / "private.key")
        self.listener = socket.create_server(("127.0.0.1", port))
        self.listener.settimeout(0.2)
        self.handshakes = 0
        self.received = bytearray()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            self.handshakes += 1
            conn.settimeout(2)
            try:
                with self.context.wrap_socket(conn, server_side=True) as tls:
                    self.received += tls.recv(65536)
            except OSError:  # the client refused our certificate (ssl.SSLError), or hung up
                conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.listener.close()


def test_a_storage_node_impostor_with_another_cas_certificate_gets_no_request(make_cluster, tmp_path):
    cluster = make_cluster(nodes=6, tls=True)
    objects = {f"o{n}": os.urandom(300_000 + 50_000 * n) for n in range(8)}
    s3 = cluster.s3()
    s3.create_bucket(Bucket=BUCKET)
    with cluster.native() as client:
        # Both front doors over mutual TLS: S3 through the gateway, the native client straight to the nodes.
        for key, body in objects.items():
            if key < "o4":
                s3.put_object(Bucket=BUCKET, Key=key, Body=body)
            else:
                client.put(BUCKET, key, body)
        for key, body in objects.items():
            assert client.get(BUCKET, key) == body
            assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == body
        # Kill a node; a host takes its address with a certificate for the same names from another CA.
        rogue = ThrowawayCA.create(tmp_path / "rogue-ca", "Rogue CA")
        victim = cluster.nodes[2]
        victim.kill()
        impostor = Impostor(victim.port, rogue.issue(tmp_path / "impostor", name="apollo node2"))
        try:
            # Reads go around it (parity), a write leaves its shard out; and it never gets a request.
            for key, body in objects.items():
                assert client.get(BUCKET, key) == body
                assert s3.get_object(Bucket=BUCKET, Key=key)["Body"].read() == body
            client.put(BUCKET, "after", b"x" * 1_000_000)
            s3.put_object(Bucket=BUCKET, Key="after-s3", Body=b"y" * 1_000_000)
            assert client.get(BUCKET, "after") == b"x" * 1_000_000
        finally:
            impostor.close()
    assert impostor.handshakes > 0, "no client tried the dead node's address: the test proves nothing"
    assert bytes(impostor.received) == b""


def test_renewed_certificates_and_a_new_ca_are_taken_without_a_restart(make_cluster, tmp_path):
    cluster = make_cluster(nodes=3, ec="2+1", tls=True)
    meta, node = cluster.metas[0], cluster.nodes[0]
    node_certs = cluster.certs.root / node.name
    assert _common_name(node.port, cluster.ssl_context) == "apollo node0"
    # The node's pair renewed in place and SIGHUP: new connections get it, the node stays in the cluster (that
    # its own calls show it too is tests/unit/roles/test_serving_certs.py's to check).
    cluster.certs.ca.issue(node_certs, name="apollo node0 renewed", serial=100, trust=cluster.certs.ca)
    node.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while _common_name(node.port, cluster.ssl_context) != "apollo node0 renewed":
        assert time.monotonic() < deadline, node.log_tail()
        time.sleep(0.1)
    # A second CA, added to the metadata service's CAs: its clients are admitted from the next check on.
    second = ThrowawayCA.create(tmp_path / "second-ca", "Apollo second CA")
    newcomer = second.issue(tmp_path / "newcomer", name="apollo newcomer", trust=cluster.certs.ca)
    newcomer_context = calling_context(read_cas(newcomer))
    newcomer_context.load_cert_chain(newcomer / "public.crt", newcomer / "private.key")
    _refused(meta.port, newcomer_context)
    shutil.copy(second.cert, cluster.certs.root / meta.name / "CAs" / "second.crt")
    deadline = time.monotonic() + 15  # the files are checked every 3 s
    while True:
        try:
            assert _answer(meta.port, newcomer_context).startswith(b"HTTP/1.1 200")
            break
        except (ssl.SSLError, ConnectionError):
            assert time.monotonic() < deadline, meta.log_tail()
            time.sleep(0.2)
    assert "CA certificate(s) added" in meta.log_path.read_text()
    # The operator's view: every node answers `apollo admin status` given the client certificates.
    status = admin("status", database=cluster.database, env={"APOLLO_CERTS": str(cluster.client_certs)})
    for each in cluster.nodes:
        assert f"node {each.name} {each.endpoint}: answering" in status, status
    time.sleep(2)  # past a heartbeat with the renewed client certificate
    with cluster.native() as client:
        client.create_bucket(BUCKET)
        client.put(BUCKET, "k", b"renewed")
        assert client.get(BUCKET, "k") == b"renewed"
    assert "node0" in admin("node", "list", database=cluster.database)


def test_a_role_with_half_a_tls_setup_does_not_start(tmp_path):
    """One line and exit 1, before a drive or the database is touched: no cluster CA (a metadata service or
    storage node would admit nobody it could check), or a URL that would carry the calls in clear."""
    ca = ThrowawayCA.create(tmp_path / "ca")
    bare = ca.issue(tmp_path / "bare", name="bare")
    full = ca.issue(tmp_path / "full", name="full", serial=2, trust=ca)
    drive, port = tmp_path / "drive", free_port()
    storage = ["storage", str(drive), "--address", f"127.0.0.1:{port}"]
    cases = {
        ("meta", "--database", str(tmp_path / "meta.db"), "--certs", str(bare)): "holds no CA certificate",
        (*storage, "--meta", "https://127.0.0.1:9", "--certs", str(bare)): "holds no CA certificate",
        (*storage, "--meta", "http://127.0.0.1:9", "--certs", str(full)): "--meta http://127.0.0.1:9 is not https://",
        (*storage, "--meta", "https://127.0.0.1:9", "--certs", str(full), "--advertise", f"http://127.0.0.1:{port}"):
            "--advertise http://127.0.0.1:",
        ("gateway", "--meta", "http://127.0.0.1:9", "--certs", str(full)): "--meta http://127.0.0.1:9 is not https://",
    }  # fmt: skip
    for args, reason in cases.items():
        done = subprocess.run([sys.executable, "-m", "apollo", *args, "--dev"], capture_output=True, text=True,
                              timeout=60)  # fmt: skip
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 1 and reason in lines[-1] and "Traceback" not in done.stderr, (args, done.stderr)
    assert not drive.exists() and not (tmp_path / "meta.db").exists()
