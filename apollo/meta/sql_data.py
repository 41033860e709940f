"""Object data in the SQL store: a commit claims the segments its writer finished, a removal sends them to GC.

A writer's segments are pending writes (GC rows owned by the writer, due when the write would be abandoned)
until a commit claims them (``_store_data``): the layouts stored are the ones this service allocated, never
the writer's. Data that loses its last version goes back to the GC table with a grace for readers in
flight (``_discard_data``); the per-drive shard index follows both (``apollo.meta.shard_index``).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import replace

from apollo import errors, ids, limits
from apollo.meta.plans import run_plan
from apollo.meta.shard_index import index_layouts, unindex_data_plan
from apollo.meta.sqlbase import Conn, Plan, Row, SqlBase, dumps
from apollo.proto.layout import ObjectData, SegmentLayout, segment_bytes_max

IN_LIST_MAX = 500  # keys in one IN (...) list: far below SQLite's and PostgreSQL's limits on parameters


class DataOps(SqlBase):
    gc_delay_s: float = 30.0

    def _store_data(self, db: Conn, data: ObjectData, size: int, etag: str, owner: str, now: float) -> str | None:
        """Attach the writer's segments to a new data id; their pending-write GC rows go in the same
        transaction. What is stored is the service's layout of each segment (``_claim``), not the writer's.

        :raises InvalidRequest: ``size`` is not the data's size; ``etag`` is not of a form Apollo makes.
        :raises AccessDenied: a segment that is not a pending write of ``owner``.
        """
        ids.etag(etag)
        claimed = self._claim(db, data, owner, now)
        if size != data.size or (data.inline is not None and len(data.inline) != size):
            raise errors.InvalidRequest(f"size {size} is not the size of the data written ({data.size})")
        if not claimed:
            return None
        data_id = uuid.uuid4().hex
        db.executemany(
            "INSERT INTO segments (data_id, seq, segment_id, offset_bytes, length, layout, pg) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(data_id, seq, s.segment_id, s.offset, s.length, dumps(s.to_json()), s.pg)
             for seq, s in enumerate(claimed)],
        )  # fmt: skip
        index_layouts(db, claimed)
        db.executemany("DELETE FROM garbage WHERE segment_id = ?", [(s.segment_id,) for s in claimed])
        return data_id

    def _claim(self, db: Conn, data: ObjectData, owner: str, now: float) -> list[SegmentLayout]:
        """The layouts this service allocated to ``owner`` for the segments a writer finished.

        A writer names its segments and how many bytes went into each. Everything else of a
        layout (drives, group, scheme, cell size) is what the service recorded when it allocated
        the segment (``add_pending``; ``repoint_pending`` for a spare drive), never what the writer
        sends: a layout made up by a client could name another tenant's shards, or a file outside
        the drives, for readers and the garbage collector to act on. Offsets follow from the lengths.

        :raises AccessDenied: a segment not allocated to ``owner``, abandoned, or expired.
        :raises InvalidRequest: a length the segment cannot have, a segment named twice, oversized inline data.
        """
        if data.inline is not None and (data.segments or len(data.inline) > limits.inline_object_bytes_max):
            raise errors.InvalidRequest("inline data is for small objects without segments")
        if len({s.segment_id for s in data.segments}) != len(data.segments):
            raise errors.InvalidRequest("a segment is named twice")
        claimed: list[SegmentLayout] = []
        offset = 0
        for given in data.segments:
            row = db.execute("SELECT layout, owner, due FROM garbage WHERE segment_id = ?",
                             (given.segment_id,)).fetchone()  # fmt: skip
            if row is None or row["owner"] != owner or row["due"] <= now:
                raise errors.AccessDenied(
                    f"segment {given.segment_id} is not a write in progress of this caller (never allocated "
                    "to it, already committed, abandoned or expired)"
                )
            allocated = SegmentLayout.from_json(json.loads(row["layout"]))
            if not 0 < given.length <= segment_bytes_max(allocated.stripe_bytes):
                raise errors.InvalidRequest(f"segment {given.segment_id} cannot hold {given.length} bytes")
            claimed.append(replace(allocated, offset=offset, length=given.length))
            offset += given.length
        if data.segments and offset != data.size:
            raise errors.InvalidRequest(f"segments hold {offset} bytes, the data claims {data.size}")
        return claimed

    def _discard_data(self, db: Conn, data_id: str | None, now: float) -> None:
        """Queue a data id's segments for GC after a grace period for in-flight readers."""
        if data_id is not None:
            self._discard_all(db, [data_id], now)

    def _discard_all(self, db: Conn, data_ids: list[str], now: float) -> None:
        """``_discard_data`` of each, a statement per ``IN_LIST_MAX``."""
        run_plan(db, self._discard_all_plan(data_ids, now))

    def _discard_all_plan(self, data_ids: list[str], now: float) -> Plan[None]:
        """``_discard_all`` as a plan (``apollo.meta.plans``)."""
        for first in range(0, len(data_ids), IN_LIST_MAX):
            chunk = data_ids[first : first + IN_LIST_MAX]
            among = f"data_id IN ({', '.join('?' * len(chunk))})"
            yield (f"INSERT INTO garbage (segment_id, layout, owner, due) SELECT segment_id, layout, '', ? "
                   f"FROM segments WHERE {among}", (now + self.gc_delay_s, *chunk))  # fmt: skip
            yield from unindex_data_plan(among, tuple(chunk))
            yield f"DELETE FROM segments WHERE {among}", tuple(chunk)

    def _load_data(self, row: Row, layouts: dict[str, list[SegmentLayout]] | None = None) -> ObjectData:
        """A version row's data; its segments from ``layouts`` (``_layouts_plan``) when given."""
        if row["data_id"] is None:
            return ObjectData(size=row["size"], inline=row["inline_data"] or b"")
        if layouts is None:
            layouts = self.drive(self._layouts_plan([row["data_id"]]))
        return ObjectData(size=row["size"], segments=layouts[row["data_id"]])

    def _layouts_plan(self, data_ids: list[str]) -> Plan[dict[str, list[SegmentLayout]]]:
        """The segments of each data id, in order: a statement per ``IN_LIST_MAX`` of them."""
        found: dict[str, list[SegmentLayout]] = {data_id: [] for data_id in data_ids}
        distinct = list(found)
        for first in range(0, len(distinct), IN_LIST_MAX):
            among, args = self.engine.in_list("data_id", distinct[first : first + IN_LIST_MAX])
            for row in (yield f"SELECT data_id, layout FROM segments WHERE {among} ORDER BY data_id, seq", args):
                found[row["data_id"]].append(SegmentLayout.from_json(json.loads(row["layout"])))
        return found
