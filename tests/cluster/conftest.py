"""Clusters of real processes on loopback over the session's PostgreSQL."""

from __future__ import annotations

import itertools
import os

import pytest

from apollo.testing.cluster import LocalCluster

_numbers = itertools.count()


@pytest.fixture
def make_cluster(tmp_path, postgres):
    """``make_cluster(nodes=7, metas=2, gateways=2)``: started, and stopped after the test."""
    started: list[LocalCluster] = []

    def factory(**kwargs) -> LocalCluster:
        number = next(_numbers)
        database = postgres.create_database(f"apollo_cluster_{os.getpid()}_{number}")
        cluster = LocalCluster(tmp_path / f"cluster{number}", database, **kwargs)
        started.append(cluster)
        try:
            return cluster.start()
        except Exception:
            cluster.stop()
            raise

    yield factory
    for cluster in started:
        cluster.stop()
