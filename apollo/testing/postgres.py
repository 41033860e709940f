"""A throwaway PostgreSQL server in a temporary directory, from Debian's postgresql-15 binaries.

The test suite and ``apollo dev-cluster --postgres`` both run one: ``initdb`` into a
fresh directory, the server on a loopback port of its own, trust authentication for
the ``apollo`` role, and nothing left behind after ``stop()``. As root it runs under the
``postgres`` account (PostgreSQL refuses to run as root).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from apollo.testing import leftovers
from apollo.testing.server import free_port

ROLE = "apollo"
ROOT_PREFIX = "apollo-pg-"  # every server's temp directory: its data, socket and log


def find_bindir() -> Path | None:
    """The newest installed server binaries (``/usr/lib/postgresql/<major>/bin``), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


class TempPostgres:
    def __init__(self, durable: bool = True, port: int | None = None) -> None:
        """``durable=False`` turns fsync off: for tests, whose data need not survive a power cut."""
        bindir = find_bindir()
        if bindir is None:
            raise RuntimeError("PostgreSQL server binaries not found: apt-get install postgresql-15")
        self.bindir = bindir
        self.durable = durable
        self.port = port or free_port()
        leftovers.reap(ROOT_PREFIX)  # servers of killed test runs
        self.root = Path(tempfile.mkdtemp(prefix=ROOT_PREFIX))
        leftovers.claim(self.root)
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self._user = "postgres" if os.geteuid() == 0 else None
        if self._user:
            account = pwd.getpwnam(self._user)
            os.chown(self.root, account.pw_uid, account.pw_gid)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{ROLE}@127.0.0.1:{self.port}/{database}"

    def socket_url(self, url: str) -> str:
        """``url`` (one of this server's) through its Unix socket: what a process in another network
        namespace reaches the server by, since a socket file crosses namespaces and loopback does not."""
        database = url.rsplit("/", 1)[1]
        return f"postgresql://{ROLE}@/{database}?host={self.root}&port={self.port}"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self._user:
            command = ["runuser", "-u", self._user, "--", *command]
        return subprocess.run(command, capture_output=True, text=True, check=check, cwd=self.root)

    def start(self) -> TempPostgres:
        if not self.data.exists():
            self._run("initdb", "-D", str(self.data), "-U", ROLE, "--auth=trust", "-E", "UTF8",
                      "--locale=C.UTF-8", *([] if self.durable else ["--no-sync"]))  # fmt: skip
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c max_connections=300"
        if not self.durable:
            options += " -c fsync=off -c full_page_writes=off"
        result = self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60",
                           "-o", options, "start", check=False)  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"PostgreSQL did not start: {result.stdout}{result.stderr}\n{self.log_tail()}")
        return self

    def stop(self, mode: str = "fast") -> None:
        """``mode``: fast (clean), or immediate (like a crash: recovery from the WAL at the next start)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def kill(self) -> None:
        """SIGKILL the postmaster and every backend: the harshest database outage."""
        pid = self.pid()
        if pid is None:
            return
        children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
        pids = [pid, *map(int, children)]
        for victim in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in pids):
            time.sleep(0.05)

    def pid(self) -> int | None:
        pidfile = self.data / "postmaster.pid"
        try:
            return int(pidfile.read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None

    def create_database(self, name: str) -> str:
        """A new empty database; returns its URL."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.url(name)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> TempPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.destroy()


def rows_filtered_out(url: str, sql: str, args: tuple) -> tuple[int, str]:
    """How many rows PostgreSQL read and dropped (``Rows Removed by Filter``) running the store's ``?`` statement
    with ``args``, planned generically as the metadata service's event loop plans its statements; and the plan.
    A statement meant to probe an index per key that scans a whole bucket instead shows here."""
    import psycopg

    from apollo.meta.async_sql import numbered

    kinds = {str: "text", list: "text[]", float: "float8", int: "int8"}
    types = ", ".join(kinds[type(arg)] for arg in args)
    # Simple queries (ClientCursor): a PREPARE sent with the extended protocol would take its $n as its own.
    with psycopg.connect(url, autocommit=True, options="-c plan_cache_mode=force_generic_plan",
                         cursor_factory=psycopg.ClientCursor) as conn:  # fmt: skip
        conn.execute(f"PREPARE probed({types}) AS {numbered(sql)}")
        slots = ", ".join(["%s"] * len(args))
        plan = "\n".join(row[0] for row in conn.execute(f"EXPLAIN ANALYZE EXECUTE probed({slots})", args))
    return sum(int(n) for n in re.findall(r"Rows Removed by Filter: (\d+)", plan)), plan
