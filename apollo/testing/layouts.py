"""Well-formed made-up layouts for tests that drive the metadata store without drives.

Identifiers are held to Apollo's own formats wherever they enter (``apollo.ids``), so tests
name segments through ``segment_id(name)``: the same name gives the same valid id.
"""

from __future__ import annotations

import hashlib
import uuid

from apollo.proto.layout import Scheme, SegmentLayout

DRIVES = tuple(f"{index:016x}" for index in range(1, 33))  # drive ids, enough for the widest scheme
WRITER = "test-writer"  # the owner of the pending writes ``pending`` records
PENDING_DUE = 1e12  # far ahead: a write in progress


def segment_id(name: str | None = None) -> str:
    """A segment id: derived from ``name`` (stable, so tests can compare), else random."""
    return hashlib.md5(name.encode()).hexdigest() if name is not None else uuid.uuid4().hex


def etag(text: str) -> str:
    """An ETag of the form Apollo stores (an MD5 in hex)."""
    return hashlib.md5(text.encode()).hexdigest()


def layout(name: str | None = None, *, offset: int = 0, length: int = 100, scheme: str = "4+2", pg: int = 3,
           cell_size: int = 1024, drives: tuple[str, ...] | None = None) -> SegmentLayout:  # fmt: skip
    parsed = Scheme.parse(scheme)
    return SegmentLayout(segment_id(name), offset, length, parsed, cell_size, pg, drives or DRIVES[: parsed.width])


def pending(store, name: str | None = None, *, owner: str = WRITER, **shape) -> SegmentLayout:
    """A segment allocated to ``owner`` and being written, as ``MetaService.allocate_segment`` records one."""
    allocated = layout(name, **shape)
    store.add_pending(allocated, owner, PENDING_DUE)
    return allocated
