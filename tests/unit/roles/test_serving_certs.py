"""``apollo.roles.tls.ServingCerts`` and ``apollo.client.tls``: which certificate directories serve and call,
what a role's two contexts demand and show, and that a reload reaches both. Real sockets, certificates from a
throwaway CA (``openssl``); no process.
"""

from __future__ import annotations

import logging
import shutil
import socket
import ssl
import threading
from pathlib import Path

import pytest

from apollo.client.tls import CertError, client_context
from apollo.roles.tls import ServingCerts, check_https
from apollo.testing.certs import ThrowawayCA

log = logging.getLogger("test")


@pytest.fixture
def ca(tmp_path: Path) -> ThrowawayCA:
    return ThrowawayCA.create(tmp_path / "ca", "cluster CA")


def _client_name_seen(server: ssl.SSLContext, client: ssl.SSLContext) -> str | None:
    """Handshake ``client`` against a server with ``server``; the common name of the client certificate the
    server saw (None: none shown). Raises what the client gets when the server refuses it."""
    seen: list[str | None] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:

        def serve() -> None:
            conn, _ = listener.accept()
            try:
                with server.wrap_socket(conn, server_side=True) as tls:
                    cert = tls.getpeercert()
                    seen.append(dict(p[0] for p in cert["subject"])["commonName"] if cert else None)
                    tls.sendall(b"ok")
            except OSError:
                conn.close()

        thread = threading.Thread(target=serve)
        thread.start()
        try:
            with socket.create_connection(listener.getsockname(), timeout=5) as raw:
                tls = client.wrap_socket(raw, server_hostname="127.0.0.1", suppress_ragged_eofs=False)
                assert tls.recv(2) == b"ok"
        finally:
            thread.join()
    return seen[0]


def test_a_role_demands_a_client_certificate_of_the_cluster_ca_and_shows_its_own(tmp_path, ca):
    meta = ServingCerts(ca.issue(tmp_path / "meta", name="meta", serial=1, trust=ca), log, require_client_certs=True)
    node_dir = ca.issue(tmp_path / "node", name="node", serial=2, trust=ca)
    node = ServingCerts(node_dir, log, require_client_certs=True)
    assert meta.context.verify_mode == ssl.CERT_REQUIRED and node.client is not None
    assert _client_name_seen(meta.context, node.client) == "node"
    # Renewed in place and reloaded: the node shows the new certificate as a client too.
    ca.issue(node_dir, name="node renewed", serial=3, trust=ca)
    assert node.reload("test")
    assert _client_name_seen(meta.context, node.client) == "node renewed"
    # No certificate, or one of another CA: refused.
    rogue = ThrowawayCA.create(tmp_path / "rogue", "rogue CA")
    for certs in (tmp_path / "ca-only", rogue.issue(tmp_path / "rogue-client", name="rogue", trust=ca)):
        (certs / "CAs").mkdir(parents=True, exist_ok=True)
        shutil.copy(ca.cert, certs / "CAs" / "ca.crt")
        with pytest.raises((ssl.SSLError, ConnectionError)):
            _client_name_seen(meta.context, client_context(certs))
    # The role trusts the cluster CA only: a server of another CA is refused by its calls.
    rogue_server = ServingCerts(rogue.issue(tmp_path / "rogue-server", name="rogue", serial=9), log)
    with pytest.raises(ssl.SSLCertVerificationError):
        _client_name_seen(rogue_server.context, node.client)


def test_a_front_door_asks_for_no_certificate_and_reads_no_cas(tmp_path, ca):
    certs = ca.issue(tmp_path / "server", name="server", trust=ca)
    (certs / "CAs" / "broken.crt").write_text("not a certificate")
    server = ServingCerts(certs, log)  # apollo server: DIR/CAs is not its business
    assert server.context.verify_mode == ssl.CERT_NONE and server.client is None
    assert _client_name_seen(server.context, ssl.create_default_context(cafile=ca.cert)) is None
    with pytest.raises(CertError, match=r"broken\.crt holds no PEM certificate"):
        ServingCerts(certs, log, cluster=True)  # a gateway reads them


def test_a_role_without_the_cluster_ca_does_not_start(tmp_path, ca):
    bare = ca.issue(tmp_path / "bare", name="bare")
    with pytest.raises(CertError, match="holds no CA certificate"):
        ServingCerts(bare, log, require_client_certs=True)
    gateway = ServingCerts(bare, log, cluster=True)  # a gateway may call plain-verified roles
    assert gateway.client is None


def test_a_client_directory_and_the_https_rule(tmp_path, ca):
    with pytest.raises(CertError, match="is not a directory"):
        client_context(tmp_path / "missing")
    half = ca.issue(tmp_path / "half", trust=ca)
    (half / "private.key").unlink()
    with pytest.raises(CertError, match="private.key is missing"):
        client_context(half)
    check_https("https://a:1,https://b:2", "apollo storage", "--meta")
    with pytest.raises(SystemExit, match="--meta http://b:2 is not https://"):
        check_https("https://a:1, http://b:2", "apollo storage", "--meta")
