"""A whole cluster on one machine: metadata services, storage nodes and gateways as real processes.

``apollo dev-cluster`` and the cluster tests both use it. Every process is the real
``apollo meta | storage | gateway`` command on a loopback port; nothing is mocked. With ``tls=True``
every role runs with ``--certs`` from a throwaway cluster CA (mutual TLS between the roles), and the
harness's own clients (readiness probes, boto3, native clients) verify that CA and present a client
certificate, as a real deployment's would.
"""

from __future__ import annotations

import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from apollo.testing.certs import ClusterCerts
from apollo.testing.netns import Host, Network
from apollo.testing.server import DEV_ACCESS_KEY, DEV_SECRET_KEY, free_port


class RoleProcess:
    """One ``apollo <role>`` process: start, wait for its health endpoint, kill -9, SIGSTOP, restart."""

    def __init__(self, name: str, args: list[str], port: int, log_path: Path, module: str = "apollo",
                 ssl_context: ssl.SSLContext | None = None, host: Host | None = None) -> None:  # fmt: skip
        """``python -m module *args``; the ``apollo`` command gets ``--dev`` (the development key).
        ``ssl_context``: the process serves HTTPS, and the harness calls it with this context.
        ``host``: the process runs in that host's network namespace, at its address (else on loopback)."""
        self.name = name
        self.args = args
        self.port = port
        self.log_path = log_path
        self.module = module
        self.ssl_context = ssl_context
        self.host = host
        self.process: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        """``ip:port`` the process listens on (``--address``)."""
        return f"{self.host.address if self.host else '127.0.0.1'}:{self.port}"

    @property
    def endpoint(self) -> str:
        return f"{'https' if self.ssl_context else 'http'}://{self.address}"

    def fetch(self, path: str, timeout_s: float = 5.0) -> bytes:
        """GET ``path`` (``/metrics``, ``/health/ready``) as a scraper or probe does; raises on no 2xx."""
        with urllib.request.urlopen(self.endpoint + path, timeout=timeout_s, context=self.ssl_context) as response:
            return response.read()

    def start(self, timeout_s: float = 30.0, ready: str = "/health/live") -> RoleProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            dev = ["--dev"] if self.module == "apollo" else []
            argv = [sys.executable, "-m", self.module, *self.args, *dev]
            if self.host:
                argv = self.host.command(argv)  # `ip netns exec` execs the command: the pid stays the role's
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                self.fetch(ready, timeout_s=1)
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"{self.name} not ready after {timeout_s}s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        if self.alive():
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def pause(self) -> None:
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.alive():
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()


class LocalCluster:
    """``metas`` metadata services on one database, ``nodes`` storage nodes of ``drives`` drives, ``gateways``.

    ``tls``: every role with ``--certs`` (``certs``: the cluster CA and a directory per role under
    ``root/tls``), so the roles speak mutual TLS to each other and S3 clients reach the gateways over HTTPS.
    ``network``: every role on a host of its own in that network; storage node ``i`` in rack
    ``i % racks`` (its ``--rack`` label too), metadata services and gateways in a rack of their own
    (``SERVICES_RACK``), so cutting a storage rack never cuts them. The database must then be reachable
    from the hosts (``TempPostgres.socket_url``: a Unix socket crosses network namespaces).
    """

    SERVICES_RACK = 200

    def __init__(
        self, root: Path, database: str, nodes: int = 6, drives: int = 1, metas: int = 1, gateways: int = 1,
        ec: str = "4+2", racks: int = 0, meta_args: tuple[str, ...] = (), tls: bool = False, cert_days: int = 2,
        network: Network | None = None, node_args: tuple[str, ...] = (),
    ) -> None:  # fmt: skip
        if tls and network:
            raise ValueError("the throwaway certificates name 127.0.0.1 only: no TLS on a network of hosts")
        self.root = Path(root)
        self.database = database
        self.network = network
        self.certs = ClusterCerts.create(self.root / "tls", cert_days) if tls else None
        self.ssl_context = self.certs.client_context() if self.certs else None
        self.metas = [self._role(f"meta{i}", self.SERVICES_RACK) for i in range(metas)]
        for meta in self.metas:
            meta.args = ["meta", "--database", database, "--address", meta.address, *meta_args,
                         *self._certs_args(meta.name)]  # fmt: skip
        self.meta_urls = ",".join(meta.endpoint for meta in self.metas)
        self.drives_per_node, self.racks, self.node_args = drives, racks, node_args
        self.node_drives: dict[str, list[Path]] = {}
        self.nodes = [self._node_process(i) for i in range(nodes)]
        self.gateways = []
        for i in range(gateways):
            gateway = self._role(f"gateway{i}", self.SERVICES_RACK)
            gateway.args = ["gateway", "--meta", self.meta_urls, "--address", gateway.address, "--ec", ec,
                            *self._certs_args(gateway.name)]  # fmt: skip
            self.gateways.append(gateway)

    def _role(self, name: str, rack: int) -> RoleProcess:
        host = self.network.add_host(name, rack) if self.network else None
        return RoleProcess(name, [], free_port(), self.root / f"{name}.log", ssl_context=self.ssl_context, host=host)

    def _certs_args(self, name: str) -> list[str]:
        """``--certs`` with a new certificate for ``name`` from the cluster CA; nothing without TLS."""
        return ["--certs", str(self.certs.issue(name))] if self.certs else []

    @property
    def ca_file(self) -> Path | None:
        """The cluster CA's certificate: what S3 clients verify a gateway with (``verify=``, ``--ca-bundle``)."""
        return self.certs.ca.cert if self.certs else None

    @property
    def client_certs(self) -> Path | None:
        """A client's certificate directory (``certs=`` of a native client, ``APOLLO_CERTS``)."""
        return self.certs.client if self.certs else None

    def _node_process(self, i: int) -> RoleProcess:
        drive_dirs = [self.root / f"node{i}" / f"drive{d}" for d in range(self.drives_per_node)]
        self.node_drives[f"node{i}"] = drive_dirs
        rack = ["--rack", f"rack{i % self.racks}"] if self.racks else []
        node = self._role(f"node{i}", i % self.racks if self.racks else 0)
        node.args = ["storage", *map(str, drive_dirs), "--meta", self.meta_urls, "--address", node.address,
                     "--name", node.name, *rack, *self.node_args, *self._certs_args(node.name)]  # fmt: skip
        return node

    def _start_node(self, node: RoleProcess) -> RoleProcess:
        for path in self.node_drives[node.name]:  # a real node's drives are mounted before it starts
            path.mkdir(parents=True, exist_ok=True)
        return node.start()

    def add_node(self) -> RoleProcess:
        """Start one more storage node (a new host joining the cluster)."""
        node = self._node_process(len(self.nodes))
        self.nodes.append(node)
        return self._start_node(node)

    @property
    def processes(self) -> list[RoleProcess]:
        return [*self.metas, *self.nodes, *self.gateways]

    def start(self) -> LocalCluster:
        for meta in self.metas:
            meta.start()
        for node in self.nodes:
            self._start_node(node)
        for gateway in self.gateways:
            gateway.start(ready="/health/ready")
        return self

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()

    def s3(self, gateway: int = 0, **config):
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3", endpoint_url=self.gateways[gateway].endpoint, aws_access_key_id=DEV_ACCESS_KEY,
            aws_secret_access_key=DEV_SECRET_KEY, region_name="us-east-1",
            config=Config(**{"retries": {"max_attempts": 1}, **config}),
            verify=str(self.ca_file) if self.ca_file else None,
        )  # fmt: skip

    def native_options(self) -> dict:
        """What a native client of this cluster is given besides its keys: the client certificates under TLS."""
        return {"certs": self.client_certs} if self.certs else {}

    def native(self, access_key: str = DEV_ACCESS_KEY, secret_key: str = DEV_SECRET_KEY, **options):
        """A blocking native client of this cluster (``apollo.client.Client``)."""
        from apollo.client import Client

        return Client(self.meta_urls, access_key, secret_key, **{**self.native_options(), **options})

    def shard_files(self) -> list[Path]:
        return [p for p in self.root.glob("node*/drive*/shards/**/*") if p.is_file()]

    def tmp_files(self) -> list[Path]:
        return [p for p in self.root.glob("node*/drive*/tmp/*") if p.is_file()]

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
