"""Throwaway certificate authorities and certificate directories, for HTTPS tests, benchmarks and
``apollo dev-cluster --tls``.

Made with the ``openssl`` command (always on a Linux host; the ``cryptography`` package is not a dependency).
ECDSA P-256 keys: they are generated in milliseconds, so every test can have its own CA and certificates.
The directories are laid out as ``--certs`` reads them (``apollo.client.tls``).
"""

from __future__ import annotations

import os
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path

from apollo.client.tls import CAS_DIR, CERT_FILE, KEY_FILE, client_context

# Leaf certificates serve and call: the roles of a cluster do both with one certificate under mutual TLS.
LEAF_EXTENSIONS = ("basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                   "extendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n")  # fmt: skip


@dataclass
class ThrowawayCA:
    """A certificate authority in ``directory`` (``ca.crt``, ``ca.key``) that issues certificates for
    127.0.0.1 and localhost, valid for ``days``."""

    directory: Path
    days: int = 2

    @property
    def cert(self) -> Path:
        """The CA certificate: what clients pass as ``verify=`` / ``--ca-bundle`` / ``cafile``."""
        return self.directory / "ca.crt"

    @classmethod
    def create(cls, directory: Path, name: str = "Apollo test CA", days: int = 2) -> ThrowawayCA:
        ca = cls(Path(directory), days)
        ca.directory.mkdir(parents=True, exist_ok=True)
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", days,
                 "-keyout", ca.directory / "ca.key", "-out", ca.cert, "-subj", f"/CN={name}",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
        return ca

    def issue(self, certs_dir: Path, name: str = "apollo test server", serial: int = 1,
              intermediate: bool = False, trust: ThrowawayCA | None = None) -> Path:  # fmt: skip
        """Write ``certs_dir/public.crt`` and ``private.key`` (``--certs``'s layout) for 127.0.0.1 and
        localhost, for serving and for client authentication. ``intermediate``: signed by an intermediate CA,
        which ``public.crt`` then carries after the certificate (a chain, as public CAs issue them); clients
        still trust only this CA. ``trust``: also write that CA's certificate as ``certs_dir/CAs/ca.crt``, the
        cluster CA a role or native client trusts (usually this CA; another one for an impostor)."""
        certs_dir = Path(certs_dir)
        certs_dir.mkdir(parents=True, exist_ok=True)
        work = self.directory / f"issue-{serial}-{os.getpid()}"
        work.mkdir(exist_ok=True)
        issuer_cert, issuer_key, chain = self.cert, self.directory / "ca.key", b""
        if intermediate:
            issuer_cert, issuer_key = work / "intermediate.crt", work / "intermediate.key"
            self._sign(work, "intermediate", f"/CN={name} intermediate CA", serial + 1_000_000, self.cert,
                       self.directory / "ca.key", "basicConstraints=critical,CA:TRUE,pathlen:0\n"
                       "keyUsage=critical,keyCertSign,cRLSign\n")  # fmt: skip
            chain = issuer_cert.read_bytes()
        self._sign(work, "leaf", f"/CN={name}", serial, issuer_cert, issuer_key, LEAF_EXTENSIONS)
        # Written under temporary names and renamed, as a renewal tool does: a reader never sees half a file.
        files = [(certs_dir / CERT_FILE, (work / "leaf.crt").read_bytes() + chain),
                 (certs_dir / KEY_FILE, (work / "leaf.key").read_bytes())]  # fmt: skip
        if trust is not None:
            files.append((certs_dir / CAS_DIR / "ca.crt", trust.cert.read_bytes()))
        for path, data in files:
            path.parent.mkdir(exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_bytes(data)
            tmp.replace(path)
        return certs_dir

    def _sign(self, work: Path, stem: str, subject: str, serial: int, issuer_cert: Path, issuer_key: Path,
              extensions: str) -> None:  # fmt: skip
        ext = work / f"{stem}.ext"
        ext.write_text("subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n" + extensions)
        _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                 "-keyout", work / f"{stem}.key", "-out", work / f"{stem}.csr", "-subj", subject)  # fmt: skip
        _openssl("x509", "-req", "-in", work / f"{stem}.csr", "-CA", issuer_cert, "-CAkey", issuer_key,
                 "-set_serial", str(serial), "-days", self.days, "-extfile", ext, "-out",
                 work / f"{stem}.crt")  # fmt: skip


def _openssl(*args: object) -> None:
    result = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {result.stderr.strip()}")


class ClusterCerts:
    """A throwaway cluster CA and a ``--certs`` directory per role, all trusting that CA: what a cluster with
    mutual TLS needs (``LocalCluster(tls=True)``, ``apollo dev-cluster --tls``)."""

    def __init__(self, ca: ThrowawayCA, root: Path) -> None:
        self.ca = ca
        self.root = root
        self._serial = 0
        self.client = self.issue("client")  # what the harness's own native clients and probes present

    @classmethod
    def create(cls, root: Path, days: int = 2) -> ClusterCerts:
        root = Path(root)
        return cls(ThrowawayCA.create(root / "ca", "Apollo cluster CA", days), root)

    def issue(self, name: str) -> Path:
        """``root/name``: a new certificate for ``name`` and the cluster CA in ``CAs``."""
        self._serial += 1
        return self.ca.issue(self.root / name, name=f"apollo {name}", serial=self._serial, trust=self.ca)

    def client_context(self) -> ssl.SSLContext:
        """A client's TLS context: the cluster CA trusted, the client certificate shown."""
        return client_context(self.client)
