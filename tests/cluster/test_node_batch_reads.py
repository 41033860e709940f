"""Reads of many objects batched per storage node (``POST /_apollo/shards``) over six node processes.

The requests are counted at the nodes (their own metrics), the bytes compared with single reads, the
damage done for real (flipped bytes, deleted shard files, a node killed), and the wire attacked with
tokens of other segments and malformed batches.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
import urllib.request
import uuid

import aiohttp
import pytest
from aiohttp import web
from storage_processes import NODES, Engine, run

from apollo import limits, tokens
from apollo.client.context import ClientContext
from apollo.client.node_batches import NodeReads
from apollo.client.remote_storage import RemoteStorageNode, Timeouts
from apollo.client.writer import ObjectWriter
from apollo.errors import InsufficientFragments
from apollo.eventloop import ByteBudget
from apollo.meta.service import MetaService
from apollo.meta.store import SqlStore
from apollo.proto.layout import Scheme
from apollo.proto.placement import Candidate
from apollo.proto.routes import SHARDS_PREFIX
from apollo.proto.storage_api import ERROR_HEADER, unframe_reads
from apollo.storage.drive import Drive, format_drive
from apollo.storage.geometry import ShardGeometry
from apollo.storage.node import LocalStorageNode, ShardRead
from apollo.storage.service import BATCH_BUDGET, build_storage_app


def node_metric(node, pattern: str) -> int:
    """The sum of a node's own metric samples whose line matches ``pattern`` (its value captured)."""
    with urllib.request.urlopen(f"{node.endpoint}/metrics", timeout=5) as response:
        text = response.read().decode()
    return int(sum(float(value) for value in re.findall(pattern, text, re.MULTILINE)))


def shard_requests(node, op: str) -> int:
    """The node's own count of shard requests of one kind, every status."""
    return node_metric(node, rf'^apollo_shard_requests_total\{{op="{op}",status="\d+"\}} (\S+)$')


def shard_file(nodes, segment, index: int):
    """The file holding shard ``index`` of a segment, on whichever node's drive it went to."""
    drive_id = segment.drives[index]
    node = next(node for node in nodes if node.drive_ids() == [drive_id])
    shard = segment.shard(index)
    return node.drives[0] / "shards" / f"{shard.pg:04x}" / f"{shard.segment_id}.{shard.index}"


async def written(engine: Engine, rng: random.Random, count: int) -> list[tuple[object, bytes]]:
    objects = []
    for _ in range(count):
        data = rng.randbytes(rng.randrange(limits.inline_object_bytes_max + 1, 600 * 1024))  # on the drives
        objects.append((await engine.write(data), data))
    return objects


def test_a_batch_of_ranges_is_one_request_per_node_and_equals_single_reads(tmp_path, nodes, keyring, seed):
    rng = random.Random(seed)

    async def scenario():
        engine = Engine(tmp_path, nodes, keyring, Timeouts())
        try:
            objects = await written(engine, rng, 30)
            ranges = []
            for result, data in objects:
                for _ in range(3):
                    start = rng.randrange(len(data))
                    ranges.append((result, data, start, rng.randrange(start, len(data)) + 1))
            before = {op: [shard_requests(node, op) for node in nodes] for op in ("GET", "POST")}
            reads = NodeReads(engine.ctx, [(result.data, start, end) for result, _, start, end in ranges]).results
            got = [await read for read in reads]
            after = {op: [shard_requests(node, op) for node in nodes] for op in ("GET", "POST")}
            for (result, data, start, end), answer in zip(ranges, got, strict=True):
                assert answer == data[start:end]
                assert answer == await engine.read(result, start, end)
            return before, after
        finally:
            await engine.close()

    before, after = run(scenario())
    posts = [a - b for a, b in zip(after["POST"], before["POST"], strict=True)]
    assert posts == [1] * NODES, f"one batch request per node, got {posts}"
    assert after["GET"] == before["GET"], "no single shard read for a healthy batch"


def test_a_batch_reads_past_flipped_bytes_deleted_shards_and_a_dead_node(tmp_path, nodes, keyring, seed):
    """Each damaged range goes down the degraded path alone and is reported; one past parity is its own error."""
    rng = random.Random(seed)

    async def scenario():
        engine = Engine(tmp_path, nodes, keyring, Timeouts(connect_s=1.0, request_s=3.0))
        damage = []
        engine.ctx.on_damage.append(damage.append)
        try:
            objects = await written(engine, rng, 12)
            flipped, deleted, lost = (objects[n][0].data.segments[0] for n in (0, 1, 2))
            path = shard_file(nodes, flipped, 0)
            raw = bytearray(path.read_bytes())
            raw[len(raw) // 3] ^= 0x40
            path.write_bytes(bytes(raw))
            shard_file(nodes, deleted, 1).unlink()
            for index in range(3):  # m = 2: three shards gone is past parity
                shard_file(nodes, lost, index).unlink()
            spared = {flipped.drives[0], deleted.drives[1]}  # the damage done above must be read to be reported
            dead = next(node for node in nodes if node.drive_ids()[0] in objects[3][0].data.segments[0].drives
                        and node.drive_ids()[0] not in spared)  # fmt: skip
            dead.kill()
            reads = NodeReads(engine.ctx, [(result.data, 0, len(data)) for result, data in objects]).results
            for number, (read, (_, data)) in enumerate(zip(reads, objects, strict=True)):
                if number == 2:
                    with pytest.raises(InsufficientFragments):
                        await read
                else:
                    assert await read == data, number
            return damage, (flipped.segment_id, deleted.segment_id)
        finally:
            await engine.close()

    damage, (flipped, deleted) = run(scenario())
    reported = {(d.segment_id, d.shard_index) for d in damage}
    assert (flipped, 0) in reported and (deleted, 1) in reported
    assert any("CRC32C" in d.reason for d in damage if d.segment_id == flipped)


def shard_bytes_served(node) -> int:
    return node_metric(node, r'^apollo_shard_bytes_total\{direction="read"\} (\S+)$')


def test_small_ranges_come_back_as_parts_of_cells_the_node_checked(tmp_path, nodes, keyring, seed):
    """1 KiB ranges of 64 KiB cells, batched and single: the nodes send about the ranges' bytes, not their
    cells; a byte flipped in a cell outside the range asked for is still caught (the node checks the whole
    record) and that range is decoded from parity and reported; a part of a cell a hostile client draws
    outside its record is refused."""
    rng = random.Random(seed)

    async def scenario():
        engine = Engine(tmp_path, nodes, keyring, Timeouts())
        damage = []
        engine.ctx.on_damage.append(damage.append)
        try:
            objects = await written(engine, rng, 20)
            ranges = []
            for result, data in objects:
                start, stripe = rng.randrange(len(data) - 1024), result.data.segments[0].stripe_bytes
                if start // stripe != (start + 1023) // stripe:  # within one stripe: across two, whole cells
                    start = (start + 1023) // stripe * stripe - 1024
                ranges.append((result, data, start, start + 1024))
            before = sum(shard_bytes_served(node) for node in nodes)
            got = [await read for read in NodeReads(engine.ctx, [(r.data, lo, hi) for r, _, lo, hi in ranges]).results]
            served = sum(shard_bytes_served(node) for node in nodes) - before
            assert got == [data[lo:hi] for _, data, lo, hi in ranges]
            assert 20 * 1024 <= served <= 2 * 20 * 1024, f"{served} bytes served for 20 KiB of ranges"
            before = sum(shard_bytes_served(node) for node in nodes)
            for result, data, lo, hi in ranges:  # single range reads (a range GET) ask for parts too
                assert await engine.read(result, lo, hi) == data[lo:hi]
            served = sum(shard_bytes_served(node) for node in nodes) - before
            assert 20 * 1024 <= served <= 2 * 20 * 1024, f"{served} bytes served for 20 KiB of single reads"
            assert not damage

            result, data, lo, hi = ranges[0]
            segment = result.data.segments[0]
            stripe = lo // segment.stripe_bytes
            index = (lo - stripe * segment.stripe_bytes) // segment.cell_payload(stripe)
            path = shard_file(nodes, segment, index)
            raw = bytearray(path.read_bytes())
            record_start = ShardGeometry(segment).span(stripe, stripe + 1)[0]
            raw[record_start + 8] ^= 0x01  # in the record's codec header: a byte no part asked for
            path.write_bytes(bytes(raw))
            (again,) = NodeReads(engine.ctx, [(result.data, lo, hi)]).results
            assert await again == data[lo:hi]
            assert await engine.read(result, lo, hi) == data[lo:hi]
            assert {(d.segment_id, d.shard_index) for d in damage} == {(segment.segment_id, index)}
            assert all("CRC32C" in d.reason for d in damage), [d.reason for d in damage]
            return segment, index
        finally:
            await engine.close()

    segment, index = run(scenario())
    drive = segment.drives[index]
    node = next(node for node in nodes if node.drive_ids() == [drive])
    shard = segment.shard(index)
    token = keyring.issue(tokens.READ, segment.segment_id, 60)

    async def attack():
        async with aiohttp.ClientSession() as session:
            for part in ([10, 10], [20, 10], [0, 1000], [0, "9"], [-1, 5]):
                body = {"tokens": [token], "reads": [[0, drive, shard.pg, shard.segment_id, shard.index, 4096, 1000,
                                                     *part]]}  # fmt: skip
                async with session.post(f"{node.endpoint}{SHARDS_PREFIX}", json=body) as response:
                    assert response.status == 400, part
            huge = {"tokens": [token], "reads": [[0, drive, shard.pg, shard.segment_id, shard.index, 0,
                                                  limits.cell_size_bytes_max + 8192, 0, 10]]}  # fmt: skip
            async with session.post(f"{node.endpoint}{SHARDS_PREFIX}", json=huge) as response:
                assert response.status == 400, "a part of more than one cell record"

    run(attack())


def test_each_read_of_a_batch_is_held_to_its_own_segments_token(tmp_path, nodes, keyring, seed):
    """Attacks on ``POST /_apollo/shards``: another segment's token, a write token, a forged one, and
    batches that are not well formed or ask for more than the limits; a malformed batch reads nothing."""
    rng = random.Random(seed)
    node = nodes[0]
    drive = node.drive_ids()[0]

    async def scenario():
        engine = Engine(tmp_path, nodes, keyring, Timeouts())
        try:
            mine, other = (await written(engine, rng, 2))[0][0], (await written(engine, rng, 1))[0][0]
        finally:
            await engine.close()
        mine_segment, other_segment = mine.data.segments[0], other.data.segments[0]
        mine_index, other_index = mine_segment.drives.index(drive), other_segment.drives.index(drive)
        mine_shard, other_shard = mine_segment.shard(mine_index), other_segment.shard(other_index)
        genuine = keyring.issue(tokens.READ, mine_segment.segment_id, 60)
        forged = tokens.Keyring([tokens.TokenKey(keyring.by_age()[0].key_id, rng.randbytes(32), 0.0)])

        def read(token_number: int, shard, offset: int = 0, length: int = 64) -> list:
            return [token_number, drive, shard.pg, shard.segment_id, shard.index, offset, length]

        async with aiohttp.ClientSession() as session:

            async def post(body: bytes | dict, **kwargs) -> aiohttp.ClientResponse:
                data = json.dumps(body).encode() if isinstance(body, dict) else body
                async with session.post(f"{node.endpoint}{SHARDS_PREFIX}", data=data, **kwargs) as response:
                    response.content_bytes = await response.read()
                    return response

            key_id = keyring.by_age()[0].key_id  # a real key's id with a megabyte to HMAC: refused by its length
            tokens_given = [genuine, keyring.issue(tokens.WRITE, mine_segment.segment_id, 60),
                            forged.issue(tokens.READ, mine_segment.segment_id, 60),
                            f"v1.{key_id}.{'A' * (1 << 20)}.AAAA"]  # fmt: skip
            reads = [read(0, mine_shard), read(0, other_shard), read(1, mine_shard), read(2, mine_shard),
                     *[read(3, mine_shard)] * 4]  # fmt: skip
            answer = await post({"tokens": tokens_given, "reads": reads})
            assert answer.status == 200
            outcomes, data = unframe_reads(answer.content_bytes)
            assert outcomes[0] == 64 and bytes(data) == shard_file(nodes, mine_segment, mine_index).read_bytes()[:64]
            whys = ("does not cover segment", "allows write", "signature", *["too long"] * 4)
            for refused, why in zip(outcomes[1:], whys, strict=True):
                assert refused["error"] == "TokenError" and why in refused["message"], refused

            malformed = {
                "not json": b"{reads",
                "no token list": {"reads": [read(0, mine_shard)]},
                "a token it does not carry": {"tokens": [genuine], "reads": [read(5, mine_shard)]},
                "a drive path": {"tokens": [genuine], "reads": [[0, "../../etc", 0, mine_shard.segment_id, 0, 0, 9]]},
                "a segment path": {"tokens": [genuine], "reads": [[0, drive, 0, "../passwd", 0, 0, 9]]},
                "a negative offset": {"tokens": [genuine], "reads": [read(0, mine_shard, offset=-1)]},
                "an offset past any file": {"tokens": [genuine], "reads": [read(0, mine_shard, offset=1 << 63)]},
                "nested past the parser": b'{"tokens": [], "reads": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
                "a text length": {"tokens": [genuine], "reads": [read(0, mine_shard, length="9")]},
                "a short read entry": {"tokens": [genuine], "reads": [read(0, mine_shard)[:6]]},
                "too many reads": {"tokens": [genuine],
                                   "reads": [read(0, mine_shard)] * (limits.shard_batch_reads_max + 1)},
                "too many bytes": {"tokens": [genuine],
                                   "reads": [read(0, mine_shard, length=limits.shard_batch_bytes_max // 2 + 1)] * 2},
            }  # fmt: skip
            for name, body in malformed.items():
                answer = await post(body)
                assert (answer.status, answer.headers.get(ERROR_HEADER)) == (400, "BadRequest"), name
            oversize = b" " * (limits.shard_batch_body_bytes_max + 1)
            assert (await post(oversize)).status == 400
            chunked = await post(_chunks(json.dumps({"tokens": [genuine], "reads": [read(0, mine_shard)]}).encode()))
            assert chunked.status == 400, "a batch without a Content-Length is refused"
            host, port = node.endpoint.removeprefix("http://").split(":")
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(f"POST {SHARDS_PREFIX} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 100\r\n\r\n".encode()
                         + b'{"tokens": [')  # fmt: skip
            writer.write_eof()  # the body ends 88 bytes short: a 400, or the connection closed unanswered
            status_line = await asyncio.wait_for(reader.readline(), 10)
            writer.close()
            assert status_line == b"" or status_line.split()[1] == b"400", status_line
            answer = await post({"tokens": [genuine], "reads": [read(0, mine_shard)]})
            assert answer.status == 200 and unframe_reads(answer.content_bytes)[0] == [64], "the node goes on"

    run(scenario())


async def _chunks(body: bytes):
    yield body


@pytest.mark.parametrize("missing", ["shard", "drive"])
def test_a_read_of_a_missing_shard_or_drive_fails_alone(tmp_path, nodes, keyring, missing):
    node = nodes[0]
    drive = node.drive_ids()[0]
    segment = uuid.uuid4().hex
    token = keyring.issue(tokens.READ, segment, 60)
    wanted_drive = drive if missing == "shard" else "0123456789abcdef"

    async def scenario():
        async with aiohttp.ClientSession() as session:
            body = {"tokens": [token], "reads": [[0, wanted_drive, 0, segment, 0, 0, 10]]}
            async with session.post(f"{node.endpoint}{SHARDS_PREFIX}", json=body) as response:
                assert response.status == 200
                return unframe_reads(await response.read())[0]

    started = time.monotonic()
    (outcome,) = run(scenario())
    assert outcome["error"] == ("FileNotFoundError" if missing == "shard" else "DriveError")
    assert time.monotonic() - started < 10


def test_a_batch_the_node_has_no_memory_for_is_read_shard_by_shard(tmp_path, keyring, seed):
    """A node whose batch budget is spent answers 503 Busy: the client reads the same shards one by one and
    reports no damage (nothing says a shard is bad). The node is a real app on a real socket, in process."""
    rng = random.Random(seed)

    async def scenario():
        deployment = uuid.uuid4().hex
        for n in range(6):
            format_drive(tmp_path / f"d{n}", deployment)
        drives = [Drive(tmp_path / f"d{n}", deployment) for n in range(6)]
        local = LocalStorageNode(drives)
        app = build_storage_app(local, keyring)
        app[BATCH_BUDGET] = ByteBudget(1)  # spent by any batch
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        session = aiohttp.ClientSession()
        remote = RemoteStorageNode(f"http://127.0.0.1:{port}", [d.drive_id for d in drives],
                                   lambda op, segment: keyring.issue(op, segment, 60), session)  # fmt: skip
        meta = MetaService(SqlStore(tmp_path / "meta.db"))
        try:
            meta.placement.update([Candidate(d.drive_id, d.drive_id) for d in drives], {d.drive_id for d in drives})
            writer = ObjectWriter(ClientContext(meta, dict.fromkeys(local.drive_ids(), local)), Scheme.parse("4+2"),
                                  16 * 1024, {"bucket": "b", "key": "k"})  # fmt: skip
            data = rng.randbytes(300_000)
            result = await writer.write(_chunks(data))
            reading = ClientContext(meta, dict.fromkeys(local.drive_ids(), remote))
            damage = []
            reading.on_damage.append(damage.append)
            got = await NodeReads(reading, [(result.data, 10, 250_000)]).results[0]
            assert got == data[10:250_000] and not damage
            part = await NodeReads(reading, [(result.data, 100_000, 101_000)]).results[0]  # a part of one cell
            assert part == data[100_000:101_000] and not damage, "read whole and cut by the client"
            remote.suspect_until = suspect = time.monotonic() + 60  # a node that failed moments ago
            with pytest.raises(ConnectionError, match="failed moments ago"):
                await remote.read_many([ShardRead(drives[0].drive_id, result.data.segments[0].shard(0), 0, 9)])
            assert remote.suspect_until == suspect, "a batch not sent must not extend the suspicion"
        finally:
            remote.close()
            await session.close()
            await runner.cleanup()
            local.close()
            meta.close()

    run(scenario())
