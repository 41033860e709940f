"""The member index of a tar archive, built from its bytes as they stream to the drives (no second read).

Training data comes packed in tar shards (WebDataset): thousands of samples of 10 KiB – 1 MiB per archive.
With each member's name, data offset and size recorded when the archive is written, reading one sample is
a plain range read; without them it is a scan of the archive (AIStore's reads of a shard member scan it).

Headers are parsed by Python's ``tarfile`` (``TarInfo.frombuf``: ustar, GNU and v7, with the ustar name
prefix); what it does not expose for a stream is done here: the GNU long-name member (``L``) and POSIX pax
extended headers (``x``: ``path`` and ``size``; global ``g`` headers are skipped). Only regular files are
members (directories, links and devices hold no data). A name seen twice is the later member, as ``tar``
extracts it. Sparse members, names that are not UTF-8 text, a bad header checksum or an archive cut short leave no
index (``error``).
"""

from __future__ import annotations

import tarfile
from dataclasses import dataclass

from apollo import limits

BLOCK = 512
_FILE_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE)


@dataclass(frozen=True)
class TarMember:
    name: str
    offset: int  # of its first data byte in the archive
    size: int


def _padded(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


def _pax_records(data: bytes) -> dict[str, str]:
    """``"<length> <key>=<value>\\n"`` records, ``length`` counting the whole record (POSIX.1-2001)."""
    records: dict[str, str] = {}
    at = 0
    while at < len(data) and data[at] != 0:
        space = data.index(b" ", at)
        length = int(data[at:space])
        if length <= 0:
            raise ValueError("a pax record of no length")
        key, _, value = data[space + 1 : at + length - 1].partition(b"=")
        records[key.decode("utf-8", "strict")] = value.decode("utf-8", "strict")
        at += length
    return records


class TarIndexer:
    """Feed it the archive's bytes in order (``feed``); then ``members()`` is the index, or ``error`` says
    why there is none."""

    def __init__(self, members_max: int = limits.tar_members_max) -> None:
        self._members_max = members_max
        self._found: dict[str, TarMember] = {}
        self._position = 0  # archive offset of the next byte fed
        self._skip = 0  # data and padding bytes still to pass
        self._buffer = bytearray()
        self._need = BLOCK  # bytes of the header (or extended header data) being gathered
        self._extended: bytes | None = None  # the type of the extended header whose data is gathered
        self._size = 0  # its size, without padding
        self._next: dict[str, str] = {}  # path and size the next member takes from extended headers
        self.ended = False  # the two zero blocks were seen
        self.error = ""

    def feed(self, chunk: bytes | bytearray | memoryview) -> None:
        view = memoryview(chunk).cast("B")
        while view and not self.ended and not self.error:
            if self._skip:
                passed = min(self._skip, len(view))
                self._skip -= passed
                self._position += passed
                view = view[passed:]
                continue
            taken = min(self._need - len(self._buffer), len(view))
            self._buffer += view[:taken]
            self._position += taken
            view = view[taken:]
            if len(self._buffer) == self._need:
                block, self._buffer = bytes(self._buffer), bytearray()
                try:
                    self._consume(block)
                except (tarfile.TarError, ValueError, UnicodeError) as exc:
                    self.error = f"not a tar archive at byte {self._position - len(block)}: {exc}"

    def members(self) -> list[TarMember]:
        """The members by offset; ``[]`` with ``error`` set when the archive cannot be indexed."""
        if not self.error and not self.ended:
            self.error = "the archive ends without its end-of-archive blocks"
        return [] if self.error else sorted(self._found.values(), key=lambda member: member.offset)

    def _consume(self, block: bytes) -> None:
        if self._extended is not None:  # the data of an extended header
            data, kind = block[: self._size], self._extended
            self._extended, self._need = None, BLOCK
            if kind == tarfile.GNUTYPE_LONGNAME:
                self._next["path"] = data.rstrip(b"\0").decode("utf-8", "strict")
            elif kind == tarfile.XHDTYPE:
                self._next.update(_pax_records(data))
            return
        if block == bytes(BLOCK):
            self.ended = True
            return
        info = tarfile.TarInfo.frombuf(block, "utf-8", "strict")
        if info.type in (tarfile.GNUTYPE_LONGNAME, tarfile.XHDTYPE, tarfile.XGLTYPE):
            self._extended, self._size, self._need = info.type, info.size, max(_padded(info.size), BLOCK)
            if info.size == 0:
                self._extended, self._need = None, BLOCK
            return
        if info.type == tarfile.GNUTYPE_SPARSE or info.issparse():
            raise ValueError(f"sparse member {info.name!r}: sparse members are not indexed")
        size = int(self._next.get("size", info.size))
        name = self._next.get("path", info.name)
        self._next = {}
        if info.type in _FILE_TYPES:
            if not name.isprintable():
                raise ValueError(f"member name {name!r:.80} holds control characters")
            self._found.pop(name, None)  # a later member of the same name is the one tar extracts
            self._found[name] = TarMember(name, self._position, size)
            if len(self._found) > self._members_max:
                raise ValueError(f"more than {self._members_max} members")
        # As tarfile does: data follows regular files, and members of types it does not know.
        self._skip = _padded(size) if info.type in _FILE_TYPES or info.type not in tarfile.SUPPORTED_TYPES else 0
