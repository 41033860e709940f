"""A real SQLite metadata store with one bucket, ``b``."""

from __future__ import annotations

import pytest

from apollo.meta.store import SqlStore


@pytest.fixture
def store(tmp_path):
    db = SqlStore(tmp_path / "meta.db")
    db.create_bucket("b", 1.0)
    yield db
    db.close()
