"""Clusters of real processes on loopback over the session's PostgreSQL."""

from __future__ import annotations

import itertools
import os
import time
import uuid

import pytest
from storage_processes import NODES

from apollo import tokens
from apollo.testing import netns
from apollo.testing.cluster import LocalCluster
from apollo.testing.storage import StorageNodeProcess, write_keyring

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


@pytest.fixture
def network():
    """A network of hosts (``apollo.testing.netns``): root only, so skipped elsewhere, and a failure in CI."""
    if why := netns.available():
        if os.environ.get("CI"):
            pytest.fail(f"CI runs as root with `ip netns`: {why}")
        pytest.skip(why)
    with netns.Network() as net:
        yield net


@pytest.fixture
def hosts_cluster(tmp_path, postgres, network):
    """A started cluster of hosts: ``hosts_cluster(nodes=6, racks=3, drives=2)``; stopped before the network goes."""
    started: list[LocalCluster] = []

    def factory(**kwargs) -> LocalCluster:
        url = postgres.create_database(f"apollo_hosts_{os.getpid()}_{next(_numbers)}")
        cluster = LocalCluster(tmp_path / f"cluster{len(started)}", postgres.socket_url(url), network=network,
                               **kwargs)  # fmt: skip
        started.append(cluster)
        return cluster.start()

    yield factory
    for cluster in started:
        cluster.stop()


@pytest.fixture
def keyring(tmp_path):
    """A token keyring, written where ``nodes`` read it."""
    ring = tokens.Keyring([tokens.new_key(time.time() - 3600)])
    write_keyring(tmp_path / "keyring.json", ring)
    return ring


@pytest.fixture
def nodes(tmp_path, keyring):
    """Six storage node processes of one deployment, a drive each."""
    deployment = uuid.uuid4().hex
    started = [StorageNodeProcess(tmp_path / f"node{i}", deployment, tmp_path / "keyring.json") for i in range(NODES)]
    for node in started:
        node.start()
    yield started
    for node in started:
        node.stop()
