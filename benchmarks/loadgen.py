"""Load generator: N worker processes, each an event loop driving its share of the concurrency.

boto3 spends about 1 ms of CPU per request, which on a small machine would make
the client the bottleneck. These workers sign with a minimal SigV4 signer
(header auth, ``UNSIGNED-PAYLOAD``: two HMACs and one SHA-256 of a short string
per request), send over ``rawhttp`` keep-alive connections (or aiohttp, to
cross-check) and never hash or copy request bodies: bodies are slices of one
random buffer, large ones streamed chunk by chunk.

A task is a plain dict (picklable, sent through a pipe) naming a target:

- ``apollo``: the S3 server under test (bucket/key, signed);
- ``loopback-mem``: the loopback server answering GETs from memory, discarding PUT bodies;
- ``loopback``: the loopback server sending files (page cache) and discarding PUT bodies;
- ``loopback-disk``: like ``loopback`` but PUT bodies are written to a file and fsynced;
- ``disk``: no network, plain files in threads (write+fsync, read, pread).

Every slot (one concurrent request stream) loops until the deadline; an
operation counts when it started at or after ``start_at`` (earlier ones are
warm-up), and the run's wall time ends at the last counted completion, so a
256 MiB operation that runs past the deadline is counted in full, never cut.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import hmac
import multiprocessing
import os
import random
import re
import signal
import ssl
import time
import traceback
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

import aiohttp
import rawhttp
from yarl import URL

CHUNK = 1024 * 1024
RANDOM = os.urandom(CHUNK)
_TOKEN_RE = re.compile(r"<NextContinuationToken>([^<]+)</NextContinuationToken>")
_TRUNCATED_RE = re.compile(r"<IsTruncated>true</IsTruncated>")
MAX_ERRORS_PER_SLOT = 20


def _quote(text: str) -> str:
    return quote(text, safe="-_.~")


class Signer:
    """AWS SigV4 header auth with an unsigned payload, for path-style S3 requests."""

    def __init__(self, access_key: str, secret_key: str, host: str, region: str = "us-east-1") -> None:
        self.access_key, self.secret_key, self.host, self.region = access_key, secret_key, host, region
        self._keys: dict[str, bytes] = {}

    def _signing_key(self, date: str) -> bytes:
        key = self._keys.get(date)
        if key is None:
            key = hmac.new(("AWS4" + self.secret_key).encode(), date.encode(), hashlib.sha256).digest()
            for part in (self.region, "s3", "aws4_request"):
                key = hmac.new(key, part.encode(), hashlib.sha256).digest()
            self._keys = {date: key}
        return key

    def sign(self, method: str, path: str, query: dict[str, str] | None = None) -> tuple[str, dict[str, str]]:
        """(encoded query string, headers) for ``method path?query``; ``path`` holds only URL-safe characters."""
        query_string = "&".join(f"{_quote(k)}={_quote(v)}" for k, v in sorted((query or {}).items()))
        amz_date = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
        scope = f"{amz_date[:8]}/{self.region}/s3/aws4_request"
        canonical = (f"{method}\n{quote(path, safe='/~')}\n{query_string}\nhost:{self.host}\n"
                     f"x-amz-content-sha256:UNSIGNED-PAYLOAD\nx-amz-date:{amz_date}\n\n"
                     "host;x-amz-content-sha256;x-amz-date\nUNSIGNED-PAYLOAD")  # fmt: skip
        to_sign = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        signature = hmac.new(self._signing_key(amz_date[:8]), to_sign.encode(), hashlib.sha256).hexdigest()
        headers = {
            "Host": self.host, "x-amz-content-sha256": "UNSIGNED-PAYLOAD", "x-amz-date": amz_date,
            "Authorization": f"AWS4-HMAC-SHA256 Credential={self.access_key}/{scope}, "
                             f"SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature={signature}",
        }  # fmt: skip
        return query_string, headers


def body(size: int):
    """A request body of ``size`` bytes: bytes for small sizes, else a stream of 1 MiB views of one buffer."""
    if size <= CHUNK:
        return RANDOM[:size]

    async def stream():
        view = memoryview(RANDOM)
        left = size
        while left > 0:
            n = min(left, CHUNK)
            yield view[:n]
            left -= n

    return stream()


HttpError = rawhttp.HttpError


class HttpTarget:
    """The Apollo server (signed S3 requests) or the loopback baseline server (plain paths).

    ``client`` is ``raw`` (``rawhttp``: one keep-alive connection per slot, the default) or ``aiohttp``
    (kept to cross-check the raw client's figures).
    """

    def __init__(self, task: dict) -> None:
        self.task, self.kind = task, task["target"]
        self.base = task["endpoint"]
        self.host = self.base.split("://", 1)[1]
        self.signer = Signer(task["access_key"], task["secret_key"], self.host) if self.kind == "apollo" else None
        self.connections: dict[int, rawhttp.Connection] = {}
        self.session: aiohttp.ClientSession | None = None
        # https (``s3bench.py --tls``): verified against the benchmark's throwaway CA, as a real client would.
        self.ssl = ssl.create_default_context(cafile=task.get("ca_file")) if self.base.startswith("https") else None
        if task.get("client", "raw") == "aiohttp":
            connector = aiohttp.TCPConnector(limit=0, ssl=self.ssl if self.ssl else True)
            timeout = aiohttp.ClientTimeout(total=None, sock_read=300)
            skip = ("Content-Type", "Accept-Encoding", "User-Agent")
            self.session = aiohttp.ClientSession(connector=connector, timeout=timeout, auto_decompress=False,
                                                 skip_auto_headers=skip)  # fmt: skip

    async def close(self) -> None:
        for connection in self.connections.values():
            connection.close()
        if self.session is not None:
            await self.session.close()

    async def _send(self, slot: int, method: str, path: str, query: dict[str, str] | None = None,
                    headers: dict[str, str] | None = None, data=b"", keep_body: bool = False):  # fmt: skip
        """(status, body bytes received, body if kept or not 2xx)."""
        extra = {"Host": self.host, **(headers or {})}
        query_string = ""
        if self.signer:
            query_string, signed = self.signer.sign(method, path, query)
            extra.update(signed)
        target = quote(path, safe="/~") + (f"?{query_string}" if query_string else "")
        if self.session is None:
            connection = self.connections.get(slot)
            if connection is None:
                host, _, port = self.host.rpartition(":")
                connection = self.connections[slot] = rawhttp.Connection(host, int(port), self.ssl)
            return await connection.request(method, target, extra, data, keep_body)
        url = URL(self.base + target, encoded=True)
        async with self.session.request(method, url, headers=extra, data=data if data != b"" else None) as response:
            if keep_body or not 200 <= response.status < 300:
                content = await response.read()
                return response.status, len(content), content
            total = 0
            while chunk := await response.content.readany():
                total += len(chunk)
            return response.status, total, b""

    def _path(self, method: str, key: str) -> str:
        if self.kind == "apollo":
            return f"/{self.task['bucket']}/{key}"
        if method == "GET":
            return f"/mem/{self.task['size']}" if self.kind == "loopback-mem" else f"/file/{_flat(key)}"
        return f"/disk/{_flat(key)}" if self.kind == "loopback-disk" else f"/discard/{_flat(key)}"

    async def put(self, slot: int, key: str, size: int) -> int:
        headers = {"Content-Length": str(size)}
        status, _, content = await self._send(slot, "PUT", self._path("PUT", key), headers=headers, data=body(size))
        _check(status, 200, "PUT", key, content)
        return size

    async def get(self, slot: int, key: str, byte_range: tuple[int, int] | None = None) -> int:
        headers = {"Range": f"bytes={byte_range[0]}-{byte_range[1]}"} if byte_range else None
        status, n, content = await self._send(slot, "GET", self._path("GET", key), headers=headers)
        _check(status, 206 if byte_range else 200, "GET", key, content)
        expected = byte_range[1] - byte_range[0] + 1 if byte_range else self.task.get("size")
        if expected is not None and n != expected:
            raise HttpError(f"GET {key}: {n} bytes, expected {expected}")
        return n

    async def list_all(self, slot: int, prefix: str, page: int) -> int:
        """ListObjectsV2 through every page; returns the number of keys seen."""
        keys, token = 0, None
        while True:
            query = {"list-type": "2", "max-keys": str(page), "prefix": prefix}
            if token:
                query["continuation-token"] = token
            status, _, content = await self._send(slot, "GET", f"/{self.task['bucket']}", query, keep_body=True)
            _check(status, 200, "LIST", prefix, content)
            text = content.decode()
            keys += text.count("<Key>")
            match = _TOKEN_RE.search(text)
            if not _TRUNCATED_RE.search(text) or match is None:
                return keys
            token = match.group(1).replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")


def _check(status: int, expected: int, what: str, key: str, content: bytes) -> None:
    if status != expected:
        raise HttpError(f"HTTP {status} for {what} {key}: {content[:300].decode(errors='replace')}")


def _flat(key: str) -> str:
    return key.replace("/", "_")


class DiskTarget:
    """Plain files in the same filesystem: write+fsync, whole reads and preads, one thread per slot."""

    def __init__(self, task: dict) -> None:
        self.root = task["dir"]
        self.pool = ThreadPoolExecutor(max_workers=max(1, task["slots"]))

    async def close(self) -> None:
        self.pool.shutdown(wait=False)

    async def put(self, slot: int, key: str, size: int) -> int:
        return await asyncio.get_running_loop().run_in_executor(self.pool, self._write, _flat(key), size)

    async def get(self, slot: int, key: str, byte_range: tuple[int, int] | None = None) -> int:
        return await asyncio.get_running_loop().run_in_executor(self.pool, self._read, _flat(key), byte_range)

    def _write(self, name: str, size: int) -> int:
        fd = os.open(os.path.join(self.root, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view, left = memoryview(RANDOM), size
            while left > 0:
                left -= os.write(fd, view[: min(left, CHUNK)])
            os.fsync(fd)
        finally:
            os.close(fd)
        return size

    def _read(self, name: str, byte_range: tuple[int, int] | None) -> int:
        fd = os.open(os.path.join(self.root, name), os.O_RDONLY)
        try:
            if byte_range:
                return len(os.pread(fd, byte_range[1] - byte_range[0] + 1, byte_range[0]))
            buf = bytearray(CHUNK)
            total = 0
            with open(fd, "rb", buffering=0, closefd=False) as handle:
                while n := handle.readinto(buf):
                    total += n
            return total
        finally:
            os.close(fd)


class Stats:
    def __init__(self) -> None:
        self.ops = 0
        self.bytes = 0
        self.latencies: list[float] = []
        self.errors = 0
        self.first_error = ""
        self.t_end = 0.0


async def run_task(task: dict) -> dict:
    """Run one task (this worker's share of one measurement) and return its raw statistics."""
    stats = Stats()
    target = DiskTarget(task) if task["target"] == "disk" else HttpTarget(task)
    start_at, deadline, op = task["start_at"], task["deadline"], task["op"]
    populate = deque(f"{task['key_prefix']}{i:07d}" for i in range(*task["populate"])) if op == "populate" else None
    budget = [len(populate) if populate is not None else task.get("ops_per_worker")]  # None: run until deadline

    def more() -> bool:
        if budget[0] is None:
            return time.monotonic() < deadline
        budget[0] -= 1
        return budget[0] >= 0

    rng = random.Random(os.getpid() ^ time.monotonic_ns())

    async def one(slot: int) -> int:
        if op == "populate":
            return await target.put(slot, populate.popleft(), task["size"])
        if op == "put":
            return await target.put(slot, f"{task['key_prefix']}w{task['worker']}s{slot}", task["size"])
        if op == "get":
            return await target.get(slot, rng.choice(task["keys"]))
        if op == "range":
            first = rng.randrange(0, task["object_size"] - task["size"] + 1)
            return await target.get(slot, task["keys"][0], (first, first + task["size"] - 1))
        if op == "list":
            found = await target.list_all(slot, task["list_prefix"], task["page"])
            if found != task["expected"]:
                raise HttpError(f"LIST found {found} keys, expected {task['expected']}")
            return 0
        raise ValueError(f"unknown op {op!r}")

    async def slot_loop(slot: int) -> None:
        if not task["warmup"]:
            while time.monotonic() < start_at:  # the loop's timer may wake a little early: never start before
                await asyncio.sleep(max(0.0005, start_at - time.monotonic()))
        slot_errors = 0
        while more():
            t0 = time.monotonic()
            try:
                n = await one(slot)
            except Exception as exc:
                stats.errors += 1
                slot_errors += 1
                stats.first_error = stats.first_error or f"{type(exc).__name__}: {exc}"[:400]
                if slot_errors >= MAX_ERRORS_PER_SLOT:
                    return
                continue
            t1 = time.monotonic()
            if t0 >= start_at:
                stats.ops += 1
                stats.bytes += n
                stats.latencies.append(t1 - t0)
                stats.t_end = max(stats.t_end, t1)

    async def cpu_at_start() -> float:
        while time.monotonic() < start_at:
            await asyncio.sleep(max(0.0005, start_at - time.monotonic()))
        return time.process_time()

    cpu_task = asyncio.create_task(cpu_at_start())
    try:
        await asyncio.gather(*(slot_loop(s) for s in range(task["slots"])))
        cpu = time.process_time() - await cpu_task
    finally:
        await target.close()
    return {"ops": stats.ops, "bytes": stats.bytes, "latencies": stats.latencies, "errors": stats.errors,
            "first_error": stats.first_error, "t_end": stats.t_end, "cpu_s": cpu}  # fmt: skip


def worker_main(conn) -> None:
    """Entry point of one generator process: run tasks from the pipe until told to stop."""
    # Ctrl-C reaches the whole process group: the parent alone decides, then stops or kills its workers.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    try:
        while True:
            task = conn.recv()
            if task is None:
                return
            try:
                conn.send(asyncio.run(run_task(task)))
            except Exception:
                conn.send({"crash": traceback.format_exc()})
    except (KeyboardInterrupt, EOFError):
        return


class WorkerPool:
    """Long-lived generator processes (spawned once; a measurement costs no process start-up)."""

    def __init__(self, processes: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.workers = []
        for _ in range(processes):
            parent, child = ctx.Pipe()
            process = ctx.Process(target=worker_main, args=(child,), daemon=True)
            process.start()
            child.close()
            self.workers.append((process, parent))
        self._pending = 0

    @property
    def pids(self) -> list[int]:
        return [process.pid for process, _ in self.workers]

    def submit(self, tasks: list[dict]) -> None:
        """Send one task to each of the first len(tasks) workers; ``collect`` waits for their results."""
        if len(tasks) > len(self.workers):
            raise ValueError(f"{len(tasks)} tasks for {len(self.workers)} generator processes")
        for (_, conn), task in zip(self.workers, tasks, strict=False):
            conn.send(task)
        self._pending = len(tasks)

    def collect(self) -> list[dict]:
        results = [conn.recv() for _, conn in self.workers[: self._pending]]
        self._pending = 0
        for result in results:
            if "crash" in result:
                raise RuntimeError(f"load generator worker crashed:\n{result['crash']}")
        return results

    def close(self) -> None:
        for _, conn in self.workers:
            try:
                conn.send(None)
            except OSError:
                pass
        for process, _ in self.workers:
            process.join(2)
            if process.is_alive():
                process.kill()
                process.join()
