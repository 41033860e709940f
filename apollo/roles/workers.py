"""``apollo server --workers N``: one supervisor, N server processes on one listening socket.

One Python process tops out at one core for request handling (measured with
benchmarks/multiprocess_probe.py: two processes served 1.44x the 4 KiB GETs and
1.29x the 1 MiB GETs of one, on 2 cores). The workers share everything that is
state: the SQLite database (WAL; conditional writes stay atomic across
processes because every commit takes SQLite's write lock) and the drives.

The supervisor does what must happen exactly once, before any worker can
write: format and attach drives, clear temp files and release pending writes
of the previous run. Then it binds the socket, starts the workers with the
socket's descriptor, and watches them: a worker that dies is restarted, after
its own temp files and pending writes are handed to GC (they carry its pid and
owner id). Workers die with the supervisor (PR_SET_PDEATHSIG), so kill -9 of
the supervisor is kill -9 of the server. Worker 0 runs the garbage collector.
With ``--certs``, each worker serves TLS with its own context and watches the
certificate files itself; the supervisor checks the pair once before any
worker starts and passes SIGHUP on to every worker, so ``kill -HUP`` of the
server's pid reloads all of them.
Metrics of all workers are aggregated through prometheus_client's
multiprocess mode.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from functools import partial
from pathlib import Path

from apollo import __version__, limits
from apollo.cluster.keys import ensure_first_key
from apollo.console.sessions import prepare_shared_dir
from apollo.roles.server import (
    CONSOLE_DIR,
    ServerConfig,
    attach_drives,
    lock_meta_dir,
    open_store,
    recover_interrupted_writes,
    url_scheme,
)
from apollo.roles.tls import serving_certs

log = logging.getLogger("apollo.server")  # the supervisor is the server, as operators see it
RESTART_DELAY_S = 1.0
METRICS_DIR = "worker-metrics"  # prometheus_client multiprocess files, one set per worker


class Supervisor:
    def __init__(self, config: ServerConfig, argv: list[str], workers: int) -> None:
        self.config = config
        self.argv = argv  # the server's own command line, repeated for every worker
        self.count = workers
        # Under the metadata directory, which this supervisor locks: a supervisor killed with -9
        # cannot remove it, and the next one to start clears what it left.
        self.metrics_dir = Path(config.meta_dir) / METRICS_DIR
        self.workers: dict[int, tuple[subprocess.Popen, str]] = {}  # index -> (process, owner id)
        self.stopping = False

    def prepare(self) -> list:
        store = open_store(self.config.meta_dir)
        try:
            drives, problems = attach_drives(store, self.config.drives, self.config.create_missing_drives)
            for problem in problems:
                log.error("%s", problem)
            if not drives:
                raise SystemExit("no usable drives")
            recover_interrupted_writes(store, drives, live_owner="supervisor")
            ensure_first_key(store)  # before the workers: each must start with the same token keys
        finally:
            store.close()
        return drives

    def run(self) -> None:
        if self.config.certs:
            # Checked here, once: a worker that exits on a bad pair would be restarted forever.
            serving_certs(self.config.certs, log, "apollo server")
            signal.signal(signal.SIGHUP, self._forward_hup)
        lock = lock_meta_dir(self.config.meta_dir)  # the workers run under it
        shutil.rmtree(self.metrics_dir, ignore_errors=True)  # a killed predecessor's counters
        self.metrics_dir.mkdir()
        console_dir = Path(self.config.meta_dir) / CONSOLE_DIR
        shutil.rmtree(console_dir, ignore_errors=True)  # the last run's failed logins (sessions are the store's)
        prepare_shared_dir(console_dir)
        drives = self.prepare()
        listener = socket.create_server((self.config.host, self.config.port), backlog=1024)
        listener.set_inheritable(True)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._stop)
        log.info("Apollo %s S3 endpoint %s://%s:%d  workers=%d  drives=%d  meta=%s", __version__,
                 url_scheme(self.config), self.config.host, self.config.port, self.count, len(drives),
                 self.config.meta_dir)  # fmt: skip
        try:
            for index in range(self.count):
                self._start(index, listener.fileno())
            self._watch(drives, listener.fileno())
        finally:
            log.info("server shutting down: stopping %d workers", len(self.workers))
            started = time.monotonic()
            self._stop_all()
            listener.close()
            shutil.rmtree(self.metrics_dir, ignore_errors=True)
            lock.release()
            log.info("server shut down in %.1f s", time.monotonic() - started)

    def _start(self, index: int, fd: int) -> None:
        owner = f"w{index}-{uuid.uuid4().hex[:8]}"
        args = [sys.executable, "-m", "apollo", "server", *self.argv, "--worker-index", str(index),
                "--listen-fd", str(fd), "--owner-id", owner]  # fmt: skip
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir)}
        before_exec = partial(_die_with_parent, ignore_hup=self.config.certs is not None)
        process = subprocess.Popen(args, pass_fds=(fd,), env=env, preexec_fn=before_exec)
        self.workers[index] = (process, owner)

    def _watch(self, drives: list, fd: int) -> None:
        while not self.stopping:
            time.sleep(0.2)
            for index, (process, owner) in list(self.workers.items()):
                if process.poll() is None or self.stopping:
                    continue
                log.error("worker %d (pid %d) exited with %s; restarting it", index, process.pid, process.returncode)
                self._forget(process.pid, owner, drives)
                time.sleep(RESTART_DELAY_S)
                if not self.stopping:
                    self._start(index, fd)

    def _forget(self, pid: int, owner: str, drives: list) -> None:
        """A dead worker's unfinished writes: temp files removed, pending segments due for GC."""
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, self.metrics_dir)
        for drive in drives:
            drive.clear_tmp(pid)
        store = open_store(self.config.meta_dir)
        try:
            store.release_owner(owner, time.time())
        finally:
            store.close()

    def _stop(self, signum, _frame) -> None:
        self.stopping = True

    def _forward_hup(self, signum, _frame) -> None:
        """SIGHUP to the server means "reload the TLS certificate": every worker holds its own context."""
        log.info("SIGHUP: workers reload the TLS certificate")
        for process, _ in list(self.workers.values()):
            if process.poll() is None:
                process.send_signal(signal.SIGHUP)

    def _stop_all(self) -> None:
        for process, _ in self.workers.values():
            if process.poll() is None:
                process.terminate()
        deadline = time.monotonic() + limits.shutdown_grace_s + 2
        for process, _ in self.workers.values():
            try:
                process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _die_with_parent(ignore_hup: bool = False) -> None:
    """In the worker, before exec: the kernel kills it when the supervisor dies (even by kill -9).

    ``ignore_hup`` (with ``--certs``): a SIGHUP forwarded while the worker is still starting, before its
    event loop handles it as a reload, must not kill it; an ignored signal stays ignored across exec.
    """
    import ctypes

    if ignore_hup:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def run_workers(config: ServerConfig, argv: list[str], workers: int) -> None:
    Supervisor(config, argv, workers).run()
