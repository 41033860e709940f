"""Baselines: the loopback HTTP server (its own process) and the plain files both it and the disk runs use.

The loopback server is the ceiling of what any Python HTTP server on this
machine can do for the same request shapes, so Apollo's figures are reported
as fractions of it:

- ``GET /mem/<size>``: ``size`` bytes from memory (the 4 KiB request-rate ceiling);
- ``GET /file/<name>``: a file via ``sendfile`` from page cache, Range requests included;
- ``PUT /discard/<name>``: the body is read and thrown away;
- ``PUT /disk/<name>``: the body is written to a file and fsynced (the "loopback+disk" PUT).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

from aiohttp import web

WRITE_BATCH = 4 * 1024 * 1024


def _safe(root: Path, name: str) -> Path:
    if "/" in name or name.startswith("."):
        raise web.HTTPBadRequest()
    return root / name


def build_app(root: Path) -> web.Application:
    files, upload = root / "files", root / "upload"
    upload.mkdir(parents=True, exist_ok=True)
    memory: dict[int, bytes] = {}
    pool = ThreadPoolExecutor(max_workers=64)  # one per concurrent PUT: fsyncs must not queue

    async def get_mem(request: web.Request) -> web.Response:
        size = int(request.match_info["size"])
        if size not in memory:
            memory[size] = os.urandom(size)
        return web.Response(body=memory[size], content_type="application/octet-stream")

    async def get_file(request: web.Request) -> web.StreamResponse:
        return web.FileResponse(_safe(files, request.match_info["name"]))

    async def put_discard(request: web.Request) -> web.Response:
        while await request.content.readany():
            pass
        return web.Response()

    async def put_disk(request: web.Request) -> web.Response:
        loop = asyncio.get_running_loop()
        path = _safe(upload, request.match_info["name"])
        fd = await loop.run_in_executor(pool, os.open, path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            batch = bytearray()
            while chunk := await request.content.readany():
                batch += chunk
                if len(batch) >= WRITE_BATCH:
                    await loop.run_in_executor(pool, _write_all, fd, batch)
                    batch = bytearray()
            if batch:
                await loop.run_in_executor(pool, _write_all, fd, batch)
            await loop.run_in_executor(pool, os.fsync, fd)
        finally:
            os.close(fd)
        return web.Response()

    app = web.Application(client_max_size=0)
    app.router.add_get("/mem/{size}", get_mem)
    app.router.add_get("/file/{name}", get_file)
    app.router.add_put("/discard/{name}", put_discard)
    app.router.add_put("/disk/{name}", put_disk)
    return app


def _write_all(fd: int, data: bytearray | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _serve(root: str, port: int, ready) -> None:
    """One loopback server process; several share the port with SO_REUSEPORT, as the kernel balances them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the benchmark process stops us (SIGTERM) when it is done
    try:
        import uvloop  # the same event loop Apollo runs on

        uvloop.install()
    except ImportError:
        pass

    async def main() -> None:
        runner = web.AppRunner(build_app(Path(root)), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, reuse_port=True).start()
        ready.set()
        await asyncio.Event().wait()

    asyncio.run(main())


class LoopbackServer:
    """The loopback baseline server: ``procs`` spawned processes sharing one port."""

    def __init__(self, root: Path, port: int, procs: int = 1) -> None:
        self.root, self.port, self.procs = root, port, procs
        self.processes: list[multiprocessing.Process] = []

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self.processes]

    def alive(self) -> bool:
        return all(process.is_alive() for process in self.processes)

    def start(self, timeout_s: float = 20.0) -> LoopbackServer:
        ctx = multiprocessing.get_context("spawn")
        events = []
        for _ in range(self.procs):
            ready = ctx.Event()
            process = ctx.Process(target=_serve, args=(str(self.root), self.port, ready), daemon=True)
            process.start()
            self.processes.append(process)
            events.append(ready)
        deadline = time.monotonic() + timeout_s
        for process, ready in zip(self.processes, events, strict=True):
            while not ready.wait(0.05):
                if not process.is_alive() or time.monotonic() > deadline:
                    raise RuntimeError(f"loopback server process did not start (exit code {process.exitcode})")
        return self

    def stop(self) -> None:
        for process in self.processes:
            if process.is_alive():
                process.terminate()
        for process in self.processes:
            process.join(5)
            if process.is_alive():
                process.kill()
                process.join()


def write_file(path: Path, size: int, chunk: bytes, durable: bool = False) -> None:
    """A plain file of ``size`` bytes built from repeats of ``chunk`` (never the whole body in memory).

    ``durable`` fsyncs it, so that its write-back cannot land inside a later timed run.
    """
    with open(path, "wb") as handle:
        left = size
        while left > 0:
            left -= handle.write(chunk[: min(left, len(chunk))])
        if durable:
            handle.flush()
            os.fsync(handle.fileno())


def rebuild_file(sources: list[Path], target: Path) -> int:
    """The disk work of rebuilding one erasure-coded shard, without the decoding: read the ``k`` sources
    chunk by chunk in step, write one file as long as each, fsync it. Returns the bytes written."""
    buffer = bytearray(WRITE_BATCH)
    view = memoryview(buffer)
    written = 0
    with ExitStack() as stack:
        handles = [stack.enter_context(open(source, "rb", buffering=0)) for source in sources]
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        stack.callback(os.close, fd)
        while got := [handle.readinto(buffer) for handle in handles][-1]:
            _write_all(fd, view[:got])
            written += got
        os.fsync(fd)
    return written


def filesystem_of(path: Path) -> str:
    """``fstype device (mount point)`` of the mount holding ``path``, from /proc/mounts."""
    target = os.path.realpath(path)
    best = ("?", "?", "")
    try:
        with open("/proc/mounts") as handle:
            for line in handle:
                device, mount, fstype = line.split()[:3]
                inside = target == mount or target.startswith(mount.rstrip("/") + "/")
                if inside and len(mount) >= len(best[2]):
                    best = (fstype, device, mount)
    except OSError:
        pass
    return f"{best[0]} on {best[1]} (mounted at {best[2] or '?'})"
