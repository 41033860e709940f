"""A throwaway highly available PostgreSQL: Patroni members over one etcd, all in a temporary directory.

The failover tests and ``apollo dev-cluster --postgres-ha`` run what production runs: a primary, a synchronous
standby that Patroni promotes when the primary's host dies, and metadata services that follow the primary
through a libpq multi-host URL (``target_session_attrs=read-write``). Every process binds loopback ports of
its own; as root, etcd and the Patroni members run under the ``postgres`` account (PostgreSQL refuses to run
as root), and nothing is left behind after ``destroy()``.

Debian 12: ``apt-get install patroni etcd-server`` (Patroni 3.0 on the system's Python, etcd 3.4). Patroni
talks to etcd through its v3 API (the ``etcd3`` section): etcd needs no ``--enable-v2``.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

from apollo.testing import leftovers
from apollo.testing.postgres import ROLE, find_bindir
from apollo.testing.server import free_port

REPLICATION_ROLE = "replicator"
PATRONI = "/usr/bin/patroni"  # Debian's: a script on the system's Python, with Debian's python3-etcd, psycopg2
ETCD = "/usr/bin/etcd"
ROOT_PREFIX = "apollo-patroni-"  # every cluster's temp directory: its data, configuration and logs
# A standby whose upstream vanished retries every wal_retrieve_retry_interval (5 s by default): in strict
# synchronous mode the new primary's first commit waits for that retry, so a shorter one shortens a failover
# (promotion to first write: 1.9 s with 1 s, 1.3-1.5 s with 200 ms; the rest is Patroni creating the
# standby's replication slot after its post-promotion checkpoint).
DEFAULT_PARAMETERS = {"max_connections": 300, "wal_retrieve_retry_interval": "200ms"}


@dataclass
class Member:
    """One Patroni node: its REST API and PostgreSQL ports, its directory and its Patroni process."""

    index: int
    name: str
    dir: Path
    rest_port: int
    pg_port: int
    process: subprocess.Popen | None = None

    @property
    def data(self) -> Path:
        return self.dir / "data"

    @property
    def config(self) -> Path:
        return self.dir / "patroni.yml"

    @property
    def log(self) -> Path:
        return self.dir / "patroni.log"

    def postmaster_pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None


class TempPatroniCluster:
    def __init__(self, members: int = 3, durable: bool = True, strict: bool = True, ttl: int = 30,
                 loop_wait: int = 10, retry_timeout: int = 10, parameters: dict | None = None) -> None:  # fmt: skip
        """``strict``: Patroni's synchronous_mode_strict: with no synchronous standby left the primary stops
        acknowledging commits rather than acknowledging ones a failover could lose. ``durable=False``
        turns fsync off (a killed process loses nothing the kernel has; a power cut would).
        ``ttl``/``loop_wait``/``retry_timeout``: Patroni's defaults; a host loss is noticed when the
        leader key expires, 20-30 s after the kill with these values (ttl >= loop_wait + 2 * retry_timeout).
        ``parameters``: PostgreSQL settings for every member, over ``DEFAULT_PARAMETERS``."""
        bindir = find_bindir()
        if bindir is None:
            raise RuntimeError("PostgreSQL server binaries not found: apt-get install postgresql-15")
        if not Path(PATRONI).exists() or not Path(ETCD).exists():
            raise RuntimeError("Patroni or etcd not found: apt-get install patroni etcd-server")
        self.bindir = bindir
        self.durable = durable
        self.strict = strict
        self.timings = {"ttl": ttl, "loop_wait": loop_wait, "retry_timeout": retry_timeout}
        self.parameters = {**DEFAULT_PARAMETERS, **(parameters or {})}
        self.scope = f"apollo-{uuid.uuid4().hex[:12]}"  # etcd keys /apollo-test/<scope>/...: one cluster each
        leftovers.reap(ROOT_PREFIX)  # clusters of killed test runs
        self.root = Path(tempfile.mkdtemp(prefix=ROOT_PREFIX))
        leftovers.claim(self.root)
        self._user = "postgres" if os.geteuid() == 0 else None
        self._chown(self.root)
        self.etcd_port, self.etcd_peer_port = free_port(), free_port()
        self.etcd: subprocess.Popen | None = None
        self.members = [Member(i, f"m{i}", self.root / f"m{i}", free_port(), free_port()) for i in range(members)]

    # ---------------------------------------------------------------------------------- addresses

    def url(self, database: str = "postgres") -> str:
        """Every member; libpq (and psycopg) try them in order and keep the one that accepts writes."""
        hosts = ",".join(f"127.0.0.1:{m.pg_port}" for m in self.members)
        return f"postgresql://{ROLE}@{hosts}/{database}?target_session_attrs=read-write"

    # ------------------------------------------------------------------------------------- start

    def start(self, timeout: float = 120.0) -> TempPatroniCluster:
        self._start_etcd()
        for member in self.members:
            member.dir.mkdir()
            self._chown(member.dir)
            member.dir.chmod(0o700)
            member.config.write_text(self.patroni_yaml(member))
            self._chown(member.config)
        # The first member alone bootstraps (initdb): the others would race it for the initialize key anyway,
        # and start cloning with pg_basebackup once it is the leader.
        self._start_member(self.members[0])
        self.wait_ready(require_sync=False, timeout=timeout)
        for member in self.members[1:]:
            self._start_member(member)
        self.wait_ready(require_sync=len(self.members) > 1, timeout=timeout)
        self.wait_writable(timeout)
        return self

    def _start_etcd(self) -> None:
        """One etcd on loopback, its data in the temp dir: the DCS every member's leader lock lives in."""
        data = self.root / "etcd"
        client, peer = f"http://127.0.0.1:{self.etcd_port}", f"http://127.0.0.1:{self.etcd_peer_port}"
        command = [ETCD, "--name", "etcd0", "--data-dir", str(data),
                   "--listen-client-urls", client, "--advertise-client-urls", client,
                   "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                   "--initial-cluster", f"etcd0={peer}", "--initial-cluster-state", "new",
                   "--initial-cluster-token", self.scope, "--logger", "zap"]  # fmt: skip
        self.etcd = self._spawn(command, self.root / "etcd.log")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError):
                if json.loads(self._http(f"{client}/health"))["health"] == "true":
                    return
            if self.etcd.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"etcd did not start:\n{self._tail(self.root / 'etcd.log')}")

    def patroni_yaml(self, member: Member) -> str:
        """Patroni's configuration for ``member`` (JSON is YAML: no YAML library needed to write it)."""
        shared = dict(self.parameters)  # in the DCS: Patroni keeps them equal on every member
        if not self.durable:
            shared["fsync"] = "off"  # full_page_writes stays on: pg_rewind needs it
        sync = len(self.members) > 1
        config = {
            "scope": self.scope,
            "namespace": "/apollo-test/",
            "name": member.name,
            "restapi": {"listen": f"127.0.0.1:{member.rest_port}", "connect_address": f"127.0.0.1:{member.rest_port}"},
            "etcd3": {"host": f"127.0.0.1:{self.etcd_port}"},
            "bootstrap": {
                "dcs": {
                    **self.timings,
                    "maximum_lag_on_failover": 1048576,
                    "synchronous_mode": sync,
                    "synchronous_mode_strict": sync and self.strict,
                    "postgresql": {"use_pg_rewind": True, "use_slots": True, "parameters": shared},
                },
                "initdb": [{"encoding": "UTF8"}, {"locale": "C.UTF-8"}, *([] if self.durable else ["no-sync"])],
            },
            "postgresql": {
                "listen": f"127.0.0.1:{member.pg_port}",
                "connect_address": f"127.0.0.1:{member.pg_port}",
                "data_dir": str(member.data),
                "bin_dir": str(self.bindir),
                "pgpass": str(member.dir / "pgpass"),  # the default, ~postgres/.pgpass, is shared by every member
                "authentication": {
                    "superuser": {"username": ROLE, "password": ROLE},  # initdb --username=apollo
                    "replication": {"username": REPLICATION_ROLE, "password": REPLICATION_ROLE},
                    "rewind": {"username": ROLE, "password": ROLE},
                },
                "parameters": {"unix_socket_directories": str(member.dir)},
                "pg_hba": [
                    "local all all trust",
                    f"host all {ROLE} 127.0.0.1/32 trust",
                    f"host replication {REPLICATION_ROLE} 127.0.0.1/32 trust",
                ],
                "remove_data_directory_on_rewind_failure": True,
                "remove_data_directory_on_diverged_timelines": True,
            },
            "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False, "nosync": False},
        }
        return json.dumps(config, indent=2) + "\n"

    def _start_member(self, member: Member) -> None:
        member.process = self._spawn([PATRONI, str(member.config)], member.log)

    # ---------------------------------------------------------------------------------- topology

    def cluster_state(self) -> dict | None:
        """Patroni's ``GET /cluster`` from the first member that answers, or None."""
        for member in self.members:
            if member.process is None or member.process.poll() is not None:
                continue
            with contextlib.suppress(OSError, ValueError):
                return json.loads(self._http(f"http://127.0.0.1:{member.rest_port}/cluster"))
        return None

    def roles(self) -> dict[str, str]:
        """Member name -> role (leader, sync_standby, replica) of the running members."""
        state = self.cluster_state() or {}
        return {m["name"]: m["role"] for m in state.get("members", []) if m.get("state") in ("running", "streaming")}

    def primary_index(self) -> int | None:
        for name, role in self.roles().items():
            if role == "leader":
                return int(name[1:])
        return None

    def wait_ready(self, require_sync: bool = True, timeout: float = 120.0) -> None:
        """Until a leader accepts writes (and a synchronous standby streams from it, with ``require_sync``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            roles = set(self.roles().values())
            if "leader" in roles and (not require_sync or "sync_standby" in roles):
                return
            time.sleep(0.2)
        logs = "\n".join(f"--- {m.name}\n{self._tail(m.log)}" for m in self.members)
        raise RuntimeError(f"no leader{' and sync standby' if require_sync else ''} after {timeout} s: "
                           f"{self.cluster_state()}\n{logs}")  # fmt: skip

    def wait_writable(self, timeout: float = 120.0) -> None:
        """Until ``url()`` reaches a server that takes writes (Patroni names the new leader a moment before
        its promotion ends)."""
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.url(), autocommit=True, connect_timeout=5):
                    return
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def create_database(self, name: str) -> str:
        """A new empty database on the primary (replicated like any write); returns its multi-host URL."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.url(name)

    # ------------------------------------------------------------------------------------ faults

    def kill_primary(self) -> int:
        """SIGKILL the primary's host: its Patroni and its postmaster with every backend, all at once.

        Killing only the postmaster is a crash Patroni recovers from in place (it restarts PostgreSQL within
        a loop_wait, no failover); killing only Patroni leaves PostgreSQL primary with nobody renewing the
        leader key: a split brain once a standby is promoted. A dead host loses both, so both go. The kernel
        then resets every client connection at once, kinder than a real host loss, where packets vanish and
        clients wait for TCP timeouts. Returns the killed member's index; ``restart_member`` brings it back.
        """
        index = self.primary_index()
        if index is None:
            raise RuntimeError(f"no primary to kill: {self.cluster_state()}")
        self.kill_member(index)
        return index

    def kill_member(self, index: int) -> None:
        member = self.members[index]
        pids = self._member_pids(member)
        for pid in pids:  # stop first: no process sees another die and reacts (Patroni would restart postgres)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if member.process is not None:
            member.process.wait(timeout=10)
        leftovers.wait_gone(pids)

    def restart_member(self, index: int) -> None:
        """The host is back: Patroni starts, rewinds the old primary's data if it diverged, and follows."""
        self._start_member(self.members[index])

    def _member_pids(self, member: Member) -> list[int]:
        """The member's runuser and Patroni processes, its postmaster (which Patroni detaches: it is not a
        child of Patroni) and the postmaster's children (backends, walsenders, checkpointer...)."""
        pids: list[int] = []
        if member.process is not None and member.process.poll() is None:
            pids.append(member.process.pid)
            pids += leftovers.descendants(member.process.pid)
        postmaster = member.postmaster_pid()
        if postmaster is not None and leftovers.cmdline(postmaster).startswith(str(self.bindir)):
            pids.append(postmaster)
            pids += leftovers.descendants(postmaster)
        return list(dict.fromkeys(pids))

    # ------------------------------------------------------------------------------------ stop

    def destroy(self) -> None:
        self._kill_everything()
        shutil.rmtree(self.root, ignore_errors=True)

    def _kill_everything(self) -> None:
        """SIGKILL every process of this cluster: members, etcd, and anything whose command line names our
        temp dir (a postmaster outlives its Patroni), with their descendants."""
        for member in self.members:
            self.kill_member(member.index)
        leftovers.kill(leftovers.naming(self.root) + ([self.etcd.pid] if self.etcd is not None else []))
        if self.etcd is not None:  # our child: reaped here, a zombie until then
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.etcd.wait(timeout=10)

    def __enter__(self) -> TempPatroniCluster:
        try:
            return self.start()
        except BaseException:
            self.destroy()
            raise

    def __exit__(self, *exc: object) -> None:
        self.destroy()

    # ---------------------------------------------------------------------------------- helpers

    def _spawn(self, command: list[str], log: Path) -> subprocess.Popen:
        """``command`` under the postgres account, in a session of its own, output to ``log``."""
        if self._user:
            command = ["runuser", "-u", self._user, "--", *command]
        with open(log, "ab") as out:
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       cwd=self.root, start_new_session=True)  # fmt: skip
        self._chown(log)
        return process

    def _chown(self, path: Path) -> None:
        if self._user:
            account = pwd.getpwnam(self._user)
            os.chown(path, account.pw_uid, account.pw_gid)

    @staticmethod
    def _http(url: str) -> str:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.read().decode()

    @staticmethod
    def _tail(path: Path, lines: int = 20) -> str:
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

