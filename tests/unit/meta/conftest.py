"""A real metadata store with one bucket, ``b``, on SQLite and on PostgreSQL (``meta_target``)."""

from __future__ import annotations

import pytest

from apollo.meta.store import SqlStore


@pytest.fixture
def store(meta_target):
    db = SqlStore(meta_target())
    db.create_bucket("b", 1.0)
    yield db
    db.close()
