"""A real ``apollo server`` process on a free port over temp-dir drives.

Tests and benchmarks use the same harness so that what they exercise is what
users run: the CLI entry point, real sockets, real files.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

DEV_ACCESS_KEY = "apollo-dev"
DEV_SECRET_KEY = "apollo-dev-secret"


# Ports handed to processes that bind them later come from below the kernel's ephemeral range
# (/proc/sys/net/ipv4/ip_local_port_range starts at 32768): a port the kernel picked for ``bind(0)`` can be
# taken meanwhile as the local end of any outgoing connection (a PostgreSQL pool, an HTTP client), and the
# role then fails with "address already in use" (CI saw it with a gateway started after seven nodes).
_PORTS = range(20000, 32768)
_handed: set[int] = set()


def _ports() -> range:
    """This test worker's share of ``_PORTS``: pytest-xdist's workers (``PYTEST_XDIST_WORKER=gwN``) each hand out
    ports of their own slice, so one cannot hand out a port another handed to a role that has not bound it yet."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER", ""), os.environ.get("PYTEST_XDIST_WORKER_COUNT", "")
    if not (worker.startswith("gw") and worker[2:].isdigit() and count.isdigit() and int(count) > 0):
        return _PORTS
    share = len(_PORTS) // int(count)
    first = _PORTS.start + int(worker[2:]) % int(count) * share
    return range(first, first + share)


def free_port() -> int:
    """A port nothing listens on now, outside the ephemeral range, not handed out before by this process."""
    rng, ports = random.Random(), _ports()
    for _ in range(200):
        port = rng.choice(ports)
        if port in _handed:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
        _handed.add(port)
        return port
    with socket.socket() as sock:  # the range is crowded: an ephemeral port, as before
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
