"""Check one shard file against its segment's layout: the scrubber's and the repairer's eyes.

A *shallow* check costs two small reads: the file exists, its header names this
segment and shard, its size is exactly header + cell records + footer, and the
footer decodes. A *deep* check also reads every cell record and verifies its
CRC32C, and that the header's padding is still zero (a flipped byte anywhere in
the file is found).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from apollo.client.context import ClientContext
from apollo.errors import ApolloError, ChecksumMismatch
from apollo.proto.layout import SegmentLayout, ShardRef
from apollo.storage.geometry import ShardGeometry
from apollo.storage.node import StorageNode
from apollo.storage.shardfile import (
    HEADER_BYTES,
    decode_footer,
    decode_header,
    footer_start,
    header_padding_is_zero,
)

Pace = Callable[[int], Awaitable[None]]  # called with the bytes about to be read
FOOTER_READ_BYTES = 4096  # the tail read for a footer: its JSON is a few dozen bytes


async def header_and_footer(node: StorageNode, drive_id: str, shard: ShardRef) -> tuple[dict, dict]:
    """A shard file's header and footer fields, each decoded and checked (two small reads).

    :raises FileNotFoundError: no such file. :raises ChecksumMismatch, ValueError: either is damaged.
    :raises OSError, ApolloError: the drive or its node failed.
    """
    header = decode_header(await node.read(drive_id, shard, 0, HEADER_BYTES))
    return header, decode_footer(await node.read_tail(drive_id, shard, FOOTER_READ_BYTES))


async def _no_pace(_: int) -> None:
    return None


async def check_shard(
    ctx: ClientContext, layout: SegmentLayout, index: int, drive_id: str, *, deep: bool, pace: Pace = _no_pace
) -> str | None:
    """None when shard ``index`` on ``drive_id`` is healthy, else what is wrong with it."""
    geometry = ShardGeometry(layout)
    shard = layout.shard(index)
    try:
        node = ctx.node(drive_id)
        size = await node.size(drive_id, shard)
        await pace(HEADER_BYTES)
        block = await node.read(drive_id, shard, 0, HEADER_BYTES)
        header = decode_header(block)
        if header.get("segment_id") != layout.segment_id or header.get("shard") != index:
            return f"header names segment {header.get('segment_id')} shard {header.get('shard')}"
        if deep and not header_padding_is_zero(block):
            return "header padding is not zero"
        end = geometry.records_end
        if size <= end:
            return f"truncated: {size} bytes, cell records alone need {end}"
        await pace(size - end)
        tail = await node.read(drive_id, shard, end, size - end)
        footer = decode_footer(tail)
        if footer_start(tail) != 0:  # the footer follows the last record at once: nothing in between
            return f"{footer_start(tail)} stray bytes between the cell records and the footer"
        if footer.get("segment_id") != layout.segment_id or footer.get("length") != layout.length:
            return f"footer names segment {footer.get('segment_id')} length {footer.get('length')}"
        if deep:
            for s0, s1 in geometry.batches():
                offset, length = geometry.span(s0, s1)
                await pace(length)
                raw = await node.read(drive_id, shard, offset, length)
                cells = await ctx.cpu_run(geometry.split, raw, s0, s1)
                bad = [s0 + n for n, cell in enumerate(cells) if cell is None]
                if bad:
                    return f"cell CRC32C mismatch in stripe {bad[0]}" + (f" and {len(bad) - 1} more" if bad[1:] else "")
    except FileNotFoundError:
        return "shard file missing"
    except ChecksumMismatch as exc:
        return str(exc)
    except (OSError, ApolloError, ValueError) as exc:
        return f"unreadable: {exc.__class__.__name__}: {exc}"
    return None
