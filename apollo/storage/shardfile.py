"""On-disk shard file format: self-describing header, CRC'd cell records, footer.

::

    offset 0      header block (HEADER_BYTES): b"APOLLOSH", u32 version, u32 n,
                  n bytes of JSON (bucket, key, version, segment, shard index,
                  scheme, cell size), u32 CRC32C of the JSON, zero padding
    HEADER_BYTES  cell records, one per stripe, in stripe order; record =
                  codec fragment (codec header + payload) + u32 CRC32C(fragment)
    end           footer: JSON (segment length, stripe count), u32 n, u32 CRC32C,
                  b"APOLLOFT"

Every full-stripe record has the same size, so record ``j`` starts at
``HEADER_BYTES + j * full_record_bytes``; only the last record may be shorter.
The header and footer let ``recover-metadata`` rebuild the namespace from the
drives alone.
"""

from __future__ import annotations

import json
import struct

import crc32c

from apollo.errors import ChecksumMismatch

HEADER_BYTES = 4096
HEADER_MAGIC = b"APOLLOSH"
FOOTER_MAGIC = b"APOLLOFT"
FORMAT_VERSION = 1
CRC_BYTES = 4
_U32 = struct.Struct("<I")


def encode_header(info: dict) -> bytes:
    body = json.dumps(info, separators=(",", ":")).encode()
    block = HEADER_MAGIC + _U32.pack(FORMAT_VERSION) + _U32.pack(len(body)) + body + _U32.pack(crc32c.crc32c(body))
    if len(block) > HEADER_BYTES:
        raise ValueError(f"shard header of {len(block)} bytes exceeds {HEADER_BYTES}")
    return block.ljust(HEADER_BYTES, b"\0")


def decode_header(block: bytes) -> dict:
    """:raises ChecksumMismatch: any damage, a block cut short included (scrub and repair catch that alone)."""
    if len(block) < 16 or block[:8] != HEADER_MAGIC:
        raise ChecksumMismatch("shard header magic missing, or the header cut short")
    (length,) = _U32.unpack_from(block, 12)
    if 16 + length + CRC_BYTES > len(block):  # a damaged length field: the CRC would be read past the block
        raise ChecksumMismatch(f"shard header length {length} runs past its block")
    body = block[16 : 16 + length]
    (crc,) = _U32.unpack_from(block, 16 + length)
    if crc32c.crc32c(body) != crc:
        raise ChecksumMismatch("shard header CRC mismatch")
    return json.loads(body)


def header_padding_is_zero(block: bytes) -> bool:
    """The bytes after the header's JSON and CRC are zero (no CRC covers them, so scrub looks)."""
    (length,) = _U32.unpack_from(block, 12)
    return not any(block[16 + length + CRC_BYTES :])


def encode_footer(info: dict) -> bytes:
    body = json.dumps(info, separators=(",", ":")).encode()
    return body + _U32.pack(len(body)) + _U32.pack(crc32c.crc32c(body)) + FOOTER_MAGIC


def footer_start(tail: bytes) -> int:
    """Where the footer begins within ``tail``, the last bytes of a shard stream; -1 when it ends in none."""
    if len(tail) < 16 or tail[-8:] != FOOTER_MAGIC:
        return -1
    start = len(tail) - 16 - _U32.unpack_from(tail, len(tail) - 16)[0]
    return start if start >= 0 else -1


def decode_footer(tail: bytes) -> dict:
    """Decode the footer from the last bytes of a shard file (at least the whole footer).

    :raises ChecksumMismatch: any damage, a tail cut short included.
    """
    if len(tail) < 16 or tail[-8:] != FOOTER_MAGIC:
        raise ChecksumMismatch("shard footer magic missing")
    length, crc = _U32.unpack_from(tail, len(tail) - 16)[0], _U32.unpack_from(tail, len(tail) - 12)[0]
    if length > len(tail) - 16:  # a damaged length field; sliced anyway, the start would clamp to 0
        raise ChecksumMismatch(f"shard footer length {length} runs past the {len(tail)} bytes given")
    body = tail[len(tail) - 16 - length : len(tail) - 16]
    if crc32c.crc32c(body) != crc:
        raise ChecksumMismatch("shard footer CRC mismatch")
    return json.loads(body)


def seal_record(fragment: bytes | memoryview) -> bytes:
    """A cell record: the fragment followed by its CRC32C."""
    return bytes(fragment) + _U32.pack(crc32c.crc32c(fragment))


def open_record(record: bytes | memoryview) -> memoryview:
    """Verify a cell record's CRC32C and return its fragment (zero-copy)."""
    view = memoryview(record)
    if len(view) <= CRC_BYTES:
        raise ChecksumMismatch(f"cell record truncated to {len(view)} bytes")
    fragment = view[:-CRC_BYTES]
    (expected,) = _U32.unpack_from(view, len(view) - CRC_BYTES)
    if crc32c.crc32c(fragment) != expected:
        raise ChecksumMismatch("cell CRC32C mismatch")
    return fragment
