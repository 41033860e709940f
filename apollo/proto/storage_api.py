"""The storage node's wire contract, shared by the service (``apollo.storage.service``) and its
client stub (``apollo.client.remote_storage``): the headers each side reads.

Shards are at ``/_apollo/shards/{drive}/{pg}/{segment}/{index}`` (every part quoted, and checked by
format on arrival); listings at ``/_apollo/shards/{drive}`` and ``/_apollo/shards/{drive}/{pg}``
(``apollo.proto.routes``).

Batches of positional reads go in one ``POST /_apollo/shards``: a training job's batch of a thousand small
objects would otherwise cost a request per shard of each. The body is JSON,
``{"tokens": [token, ...], "reads": [[token number, drive, pg, segment, index, offset, length], ...]}``
(a read's token is the one of its segment, sent once however many reads share it). A read of one cell record
may name a part of it, ``[..., offset, length, lo, hi]``: the node checks the record's CRC32C and answers
with its bytes ``[lo, hi)`` only (``apollo.storage.node.cut``). The answer (200) is framed: a 4-byte
big-endian length, a JSON list with, per read in order, its length in bytes (``[length, CRC32C of the
bytes]`` for a part) or its error (``{"error": wire name, "errno": name, "message": text}``, as a single
read's answer names it), then the bytes of the reads that succeeded, back to back. Limits:
``apollo.limits.shard_batch_*``.
"""

from __future__ import annotations

import json
import struct

TOKEN_HEADER = "X-Apollo-Token"
SIZE_HEADER = "X-Apollo-Size"
ERROR_HEADER = "X-Apollo-Error"
EPOCH_HEADER = "X-Apollo-Epoch"  # the cluster map epoch this node last heard of: a client with an older map refreshes
ERRNO_HEADER = "X-Apollo-Errno"

_FRAME = struct.Struct(">I")


def frame_head(outcomes: list[int | dict]) -> bytes:
    """The start of a batch read's answer: the outcome of each read (its length, or its error); the bytes
    of the reads that succeeded follow it."""
    head = json.dumps(outcomes, separators=(",", ":")).encode()
    return _FRAME.pack(len(head)) + head


def unframe_reads(body: bytes | bytearray) -> tuple[list[int | dict], memoryview]:
    """An answer read back (``frame_head`` and the bytes): the outcomes, and a view of the bytes after them.

    :raises ValueError: a body that is not such an answer."""
    if len(body) < _FRAME.size:
        raise ValueError("batch read answer shorter than its frame")
    (head_len,) = _FRAME.unpack_from(body)
    view = memoryview(body)
    if head_len > len(body) - _FRAME.size:
        raise ValueError("batch read answer cut short in its outcome list")
    outcomes = json.loads(bytes(view[_FRAME.size : _FRAME.size + head_len]))
    if not isinstance(outcomes, list):
        raise ValueError("batch read answer's outcomes are not a list")
    return outcomes, view[_FRAME.size + head_len :]
