"""A real ``apollo server`` process on a free port over temp-dir drives.

Tests and benchmarks use the same harness so that what they exercise is what
users run: the CLI entry point, real sockets, real files.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

DEV_ACCESS_KEY = "apollo-dev"
DEV_SECRET_KEY = "apollo-dev-secret"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """Start, kill -9 and restart one all-in-one server; its drives and metadata live under ``root``."""

    def __init__(self, root: Path, drives: int = 6, extra_args: list[str] | None = None,
                 env: dict[str, str] | None = None, certs: Path | None = None,
                 ca_file: Path | None = None) -> None:  # fmt: skip
        """``certs``: serve HTTPS with ``--certs certs``; ``ca_file``: the CA the harness's own clients (the
        readiness probe, ``s3()``) trust, so what they check is what a real client checks."""
        self.root = Path(root)
        self.certs = Path(certs) if certs else None
        self.ca_file = Path(ca_file) if ca_file else None
        self.drives = [self.root / f"drive{n}" for n in range(1, drives + 1)]
        self.meta_dir = self.root / "meta"
        self.port = free_port()
        self.extra_args = list(extra_args or [])
        self.env = dict(env or {})
        self.log_path = self.root / "server.log"
        self.process: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"{'https' if self.certs else 'http'}://127.0.0.1:{self.port}"

    def ssl_context(self) -> ssl.SSLContext | None:
        """What the harness's clients verify the server with: ``ca_file``, else the system's CAs."""
        return ssl.create_default_context(cafile=self.ca_file) if self.certs else None

    def start(self, timeout_s: float = 30.0) -> ServerProcess:
        self.root.mkdir(parents=True, exist_ok=True)
        args = [sys.executable, "-m", "apollo", "server", *map(str, self.drives), "--meta-dir", str(self.meta_dir),
                "--address", f"127.0.0.1:{self.port}", "--dev", *self.extra_args]  # fmt: skip
        if self.certs:
            args += ["--certs", str(self.certs)]
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child, closed by it
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **self.env})
        log.close()
        self.wait_ready(timeout_s)
        return self

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        context = self.ssl_context()
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"apollo server exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.endpoint}/health/ready", timeout=1, context=context) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"apollo server not ready after {timeout_s}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def kill(self) -> None:
        """kill -9: no clean shutdown, exactly like a power cut for the process."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart(self) -> ServerProcess:
        self.stop()
        return self.start()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def s3(self, **config):
        """A boto3 S3 client for this server (boto3 is a test dependency, imported lazily)."""
        import boto3
        from botocore.config import Config

        verify = str(self.ca_file) if self.certs and self.ca_file else None
        return boto3.client(
            "s3", endpoint_url=self.endpoint, aws_access_key_id=DEV_ACCESS_KEY, aws_secret_access_key=DEV_SECRET_KEY,
            region_name="us-east-1", config=Config(**{"retries": {"max_attempts": 1}, **config}), verify=verify,
        )  # fmt: skip

    def tmp_files(self) -> list[Path]:
        """Files left in the drives' temp areas (interrupted writes not yet cleared)."""
        return self._files("tmp")

    def shard_files(self) -> list[Path]:
        return self._files("shards")

    def _files(self, area: str) -> list[Path]:
        return [p for drive in self.drives if (drive / area).exists() for p in (drive / area).rglob("*") if p.is_file()]


@dataclass
class ThrowawayCA:
    """A throwaway certificate authority for HTTPS tests and benchmarks, made with the ``openssl`` command
    (always on a Linux host; the ``cryptography`` package is not a dependency). ECDSA P-256 keys: they are
    generated in milliseconds, so every test can have its own CA and certificates."""

    directory: Path

    @property
    def cert(self) -> Path:
        """The CA certificate: what clients pass as ``verify=`` / ``--ca-bundle`` / ``cafile``."""
        return self.directory / "ca.crt"

    @classmethod
    def create(cls, directory: Path, name: str = "Apollo test CA") -> ThrowawayCA:
        ca = cls(Path(directory))
        ca.directory.mkdir(parents=True, exist_ok=True)
        _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
                 "-keyout", ca.directory / "ca.key", "-out", ca.cert, "-subj", f"/CN={name}",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
        return ca

    def issue(self, certs_dir: Path, name: str = "apollo test server", serial: int = 1,
              intermediate: bool = False) -> Path:  # fmt: skip
        """Write ``certs_dir/public.crt`` and ``private.key`` (``--certs``'s layout) for 127.0.0.1 and
        localhost. ``intermediate``: signed by an intermediate CA, which ``public.crt`` then carries after the
        certificate (a chain, as public CAs issue them); clients still trust only this CA."""
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
        self._sign(work, "leaf", f"/CN={name}", serial, issuer_cert, issuer_key,
                   "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
                   "subjectAltName=IP:127.0.0.1,DNS:localhost\n")  # fmt: skip
        # Written under temporary names and renamed, as a renewal tool does: a reader never sees half a file.
        for name_out, data in ((CERT_NAME, (work / "leaf.crt").read_bytes() + chain),
                               (KEY_NAME, (work / "leaf.key").read_bytes())):  # fmt: skip
            tmp = certs_dir / f".{name_out}.tmp"
            tmp.write_bytes(data)
            tmp.replace(certs_dir / name_out)
        return certs_dir

    @staticmethod
    def _sign(work: Path, stem: str, subject: str, serial: int, issuer_cert: Path, issuer_key: Path,
              extensions: str) -> None:  # fmt: skip
        ext = work / f"{stem}.ext"
        ext.write_text("subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n" + extensions)
        _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                 "-keyout", work / f"{stem}.key", "-out", work / f"{stem}.csr", "-subj", subject)  # fmt: skip
        _openssl("x509", "-req", "-in", work / f"{stem}.csr", "-CA", issuer_cert, "-CAkey", issuer_key,
                 "-set_serial", str(serial), "-days", "2", "-extfile", ext, "-out", work / f"{stem}.crt")  # fmt: skip


CERT_NAME, KEY_NAME = "public.crt", "private.key"  # apollo.roles.tls's names (MinIO's)


def _openssl(*args: object) -> None:
    result = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {result.stderr.strip()}")
