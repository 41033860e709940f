"""The client engine over six storage node processes: tokens, kill -9, SIGSTOP, interrupted streams.

Every shard crosses a real socket to a real storage process, which checks its capability
token and writes through the same drive code as the all-in-one server.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
import uuid

import aiohttp
import pytest
from storage_processes import CELL, Engine, run

from apollo import tokens
from apollo.client.remote_storage import RemoteStorageNode, Timeouts
from apollo.errors import InsufficientStorage
from apollo.proto.layout import ShardRef
from apollo.proto.storage_api import TOKEN_HEADER
from apollo.storage.shardfile import HEADER_BYTES, encode_footer, encode_header, seal_record


def test_write_and_read_across_six_storage_processes(tmp_path, nodes, keyring, seed):
    rng = random.Random(seed)

    async def scenario():
        engine = Engine(tmp_path, nodes, keyring, Timeouts())
        try:
            for size in (1, CELL * 4 - 1, 3 * (1 << 20) + 12345):
                data = rng.randbytes(size)
                result = await engine.write(data)
                assert await engine.read(result) == data
                start = rng.randrange(size)
                end = rng.randrange(start, size) + 1
                assert await engine.read(result, start, end) == data[start:end]
        finally:
            await engine.close()

    run(scenario())
    assert not [p for n in nodes for d in n.drives for p in (d / "tmp").iterdir()]


def test_kill_9_of_two_nodes_during_writes_and_reads_loses_no_acknowledged_byte(tmp_path, nodes, keyring, seed):
    """One node down: writes go on with 5 of 6 shards. Two down (m = 2): writes are refused, reads go on."""
    rng = random.Random(seed)

    async def scenario():
        engine = Engine(tmp_path, nodes, keyring, Timeouts(connect_s=1.0, request_s=3.0))
        acknowledged = []
        try:
            for n in range(8):
                data = rng.randbytes(rng.randrange(1, 3 << 20))
                if n == 2:
                    nodes[1].kill()
                if n == 5:
                    nodes[4].kill()
                try:
                    acknowledged.append((await engine.write(data), data))
                except InsufficientStorage:
                    assert n >= 5, "one node down must not stop writes"
                for result, expected in acknowledged:
                    assert await engine.read(result) == expected
            assert len(acknowledged) >= 5
        finally:
            await engine.close()

    run(scenario())


def test_sigstopped_node_times_out_into_degraded_reads_and_writes(tmp_path, nodes, keyring, seed):
    rng = random.Random(seed)

    async def scenario():
        engine = Engine(tmp_path, nodes, keyring, Timeouts(connect_s=1.0, request_s=1.5))
        try:
            data = rng.randbytes(2 << 20)
            before = await engine.write(data)
            nodes[0].pause()
            started = time.monotonic()
            assert await engine.read(before) == data
            during = await engine.write(data[::-1])
            assert await engine.read(during) == data[::-1]
            assert time.monotonic() - started < 20, "each hung request must give up after its timeout"
        finally:
            nodes[0].resume()
            await engine.close()

    run(scenario())


def test_tokens_forged_expired_or_out_of_scope_are_refused(tmp_path, nodes, keyring):
    node = nodes[0]
    drive = node.drive_ids()[0]
    shard = ShardRef(3, uuid.uuid4().hex, 0)
    body = encode_header({"segment_id": shard.segment_id}) + seal_record(b"x" * 100) + encode_footer({"n": 1})
    forged_ring = tokens.Keyring([tokens.TokenKey(keyring.by_age()[0].key_id, os.urandom(32), 0.0)])

    async def attempt(token: str | None, op: str = tokens.WRITE, target: ShardRef = shard) -> None:
        async with aiohttp.ClientSession() as session:
            remote = RemoteStorageNode(node.endpoint, [drive], lambda o, s: token, session)
            if op == tokens.WRITE:
                sink = await remote.open_shard(drive, target, body[:HEADER_BYTES])
                await sink.append([body[HEADER_BYTES:-30]])
                await sink.finish(body[-30:])
            else:
                try:
                    await remote.read(drive, target, 0, 10)
                finally:
                    remote.close()

    other = uuid.uuid4().hex
    refusals = {
        "missing": ("", tokens.WRITE),
        "forged": (forged_ring.issue(tokens.WRITE, shard.segment_id, 60), tokens.WRITE),
        "expired": (keyring.issue(tokens.WRITE, shard.segment_id, 60, now=time.time() - 120), tokens.WRITE),
        "other segment": (keyring.issue(tokens.WRITE, other, 60), tokens.WRITE),
        "read token for a write": (keyring.issue(tokens.READ, shard.segment_id, 60), tokens.WRITE),
        "altered": (keyring.issue(tokens.READ, other, 60).replace(".", ".x", 2), tokens.READ),
    }
    for name, (token, op) in refusals.items():
        with pytest.raises(tokens.TokenError):
            run(attempt(token, op))
        assert not (node.drives[0] / "shards").exists() or not list((node.drives[0] / "shards").rglob("*.0")), name
    run(attempt(keyring.issue(tokens.WRITE, shard.segment_id, 60)))  # the genuine token works
    run(attempt(keyring.issue(tokens.READ, shard.segment_id, 60), tokens.READ))
    assert not list((node.drives[0] / "tmp").iterdir())


def test_interrupted_or_truncated_shard_stream_leaves_nothing(tmp_path, nodes, keyring):
    node = nodes[0]
    drive = node.drive_ids()[0]

    async def scenario():
        async with aiohttp.ClientSession() as session:
            remote = RemoteStorageNode(node.endpoint, [drive], lambda o, s: keyring.issue(o, s, 60), session)
            shard = ShardRef(1, uuid.uuid4().hex, 2)
            sink = await remote.open_shard(drive, shard, encode_header({"segment_id": shard.segment_id}))
            await sink.append([seal_record(os.urandom(CELL))])
            await sink.abort()  # the client goes away mid-stream
            truncated = ShardRef(1, uuid.uuid4().hex, 2)
            sink = await remote.open_shard(drive, truncated, encode_header({"segment_id": truncated.segment_id}))
            await sink.append([seal_record(os.urandom(CELL))])
            with pytest.raises(Exception, match="footer"):
                await sink.finish(b"")  # a stream that ends without its footer
            for gone in (shard, truncated):
                with pytest.raises(FileNotFoundError):
                    await remote.size(drive, gone)

    run(scenario())
    deadline = time.monotonic() + 5
    while list((node.drives[0] / "tmp").iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not list((node.drives[0] / "tmp").iterdir())


def test_a_shard_streamed_in_ragged_pieces_is_stored_byte_exact(tmp_path, nodes, keyring, seed):
    """The node writes chunks as they arrive and holds back only the tail that may be the footer:
    pieces from 1 byte to 300 KiB, the footer split across appends, must land byte for byte."""
    node = nodes[0]
    drive = node.drive_ids()[0]
    rng = random.Random(seed)
    shard = ShardRef(3, uuid.uuid4().hex, 1)
    header = encode_header({"segment_id": shard.segment_id})
    body = rng.randbytes(6 * 1024 * 1024 + 12345)
    footer = encode_footer({"segment_id": shard.segment_id, "length": len(body)})
    stream = body + footer[:7]  # the footer's first bytes go with the body, its rest on finish

    async def scenario():
        async with aiohttp.ClientSession() as session:
            remote = RemoteStorageNode(node.endpoint, [drive], lambda o, s: keyring.issue(o, s, 60), session)
            sink = await remote.open_shard(drive, shard, header)
            offset = 0
            while offset < len(stream):
                step = rng.choice([1, 7, 4096, 65_537, 300 * 1024])
                await sink.append([stream[offset : offset + step]])
                offset += step
            await sink.finish(footer[7:])
            size = await remote.size(drive, shard)
            try:
                return await remote.read(drive, shard, 0, size)
            finally:
                remote.close()

    assert run(scenario()) == header + body + footer


def test_large_reads_sent_from_the_file_are_exact_short_past_the_end_and_survive_a_vanishing_client(
    tmp_path, nodes, keyring, seed
):
    """Reads of 64 KiB and more go from the file to the socket by sendfile, bypassing aiohttp's writer."""
    node = nodes[0]
    drive = node.drive_ids()[0]
    rng = random.Random(seed)
    shard = ShardRef(5, uuid.uuid4().hex, 0)
    header = encode_header({"segment_id": shard.segment_id})
    body = rng.randbytes(5 << 20)
    footer = encode_footer({"segment_id": shard.segment_id})
    stored = header + body + footer

    async def scenario():
        async with aiohttp.ClientSession() as session:
            remote = RemoteStorageNode(node.endpoint, [drive], lambda o, s: keyring.issue(o, s, 60), session)
            try:
                sink = await remote.open_shard(drive, shard, header)
                await sink.append([body])
                await sink.finish(footer)
                for offset, length in ((0, len(stored)), (12345, 3 << 20), (len(stored) - 100_000, 1 << 20)):
                    got = await remote.read(drive, shard, offset, length)
                    assert got == stored[offset : offset + length]  # the last one comes back short, like pread
                path = f"/_apollo/shards/{drive}/{shard.pg}/{shard.segment_id}/0"
                url = f"{node.endpoint}{path}?offset=0&length={len(stored)}"
                for _ in range(3):  # clients that go away after the first bytes of a 5 MiB body
                    async with session.get(
                        url, headers={TOKEN_HEADER: keyring.issue("read", shard.segment_id, 60)}
                    ) as r:
                        assert r.status == 200
                        await r.content.readexactly(1000)
                        r.close()
                assert await remote.read(drive, shard, 0, len(stored)) == stored  # the node serves on
            finally:
                remote.close()

    run(scenario())

    def open_shard_files() -> list[str]:
        fds = f"/proc/{node.process.pid}/fd"
        return [target for fd in os.listdir(fds) if "/shards/" in (target := os.readlink(f"{fds}/{fd}"))]

    deadline = time.monotonic() + 10  # a send to a vanished client ends at its EPIPE (or the stall timeout)
    while open_shard_files() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not open_shard_files(), "shard files left open after sends"


def test_clients_that_stop_reading_do_not_hold_up_the_nodes_disk_io(tmp_path, nodes, keyring, seed):
    """More stalled sends than the node has drive I/O threads: other clients' writes and reads go on."""
    node = nodes[0]
    drive = node.drive_ids()[0]
    rng = random.Random(seed)
    big = ShardRef(6, uuid.uuid4().hex, 0)
    body = rng.randbytes(24 << 20)  # more than loopback's socket buffers take: a send to a non-reader stalls

    async def write(remote: RemoteStorageNode, shard: ShardRef, payload: bytes) -> None:
        sink = await remote.open_shard(drive, shard, encode_header({"segment_id": shard.segment_id}))
        await sink.append([payload])
        await sink.finish(encode_footer({"segment_id": shard.segment_id}))

    async def scenario():
        async with aiohttp.ClientSession() as session:
            remote = RemoteStorageNode(node.endpoint, [drive], lambda o, s: keyring.issue(o, s, 60), session)
            stalled = []
            try:
                await write(remote, big, body)
                host, port = node.endpoint.removeprefix("http://").rsplit(":", 1)
                request = (f"GET /_apollo/shards/{drive}/{big.pg}/{big.segment_id}/0?offset=0&length={len(body)} "
                           f"HTTP/1.1\r\nHost: x\r\n{TOKEN_HEADER}: {keyring.issue('read', big.segment_id, 60)}"
                           "\r\n\r\n").encode()  # fmt: skip
                for _ in range(20):  # the node has 16 drive I/O threads
                    _, writer = await asyncio.open_connection(host, int(port), limit=1)  # never read from
                    writer.write(request)
                    stalled.append(writer)
                await asyncio.sleep(1.0)  # every send is under way and stuck on a full socket
                started = time.monotonic()
                small = ShardRef(6, uuid.uuid4().hex, 1)
                await write(remote, small, b"y" * 300_000)
                assert len(await remote.read(drive, small, 0, 400_000)) > 300_000
                assert time.monotonic() - started < 5, "a stalled send held up the node's disk I/O"
            finally:
                for writer in stalled:
                    writer.close()
                remote.close()

    run(scenario())
