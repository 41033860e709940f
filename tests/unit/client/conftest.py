"""An in-process client context over six real directory drives and a real SQLite metadata store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from apollo.client.context import ClientContext
from apollo.meta.service import MetaService
from apollo.meta.store import SqlStore
from apollo.proto.placement import Candidate
from apollo.storage.drive import format_drive
from apollo.storage.node import LocalStorageNode


@pytest.fixture
def drives(tmp_path: Path) -> Iterator[tuple[ClientContext, list[Path]]]:
    """(context, drive roots): six drives of one node, every one writable."""
    roots = [tmp_path / f"d{i}" for i in range(6)]
    for root in roots:
        format_drive(root, "dep")
    node = LocalStorageNode.open(roots, "dep")
    meta = MetaService(SqlStore(tmp_path / "meta.db"))
    meta.placement.update([Candidate(d, "n") for d in node.drive_ids()], node.drive_ids())
    yield ClientContext(meta, {d: node for d in node.drive_ids()}), roots
    node.close()
    meta.close()
