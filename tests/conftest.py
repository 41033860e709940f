"""Shared fixtures: one real server for the S3 behaviour tests, fresh ones for damage tests."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from apollo.testing.server import ServerProcess


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server shared by the behaviour tests (each test uses its own bucket)."""
    with ServerProcess(tmp_path_factory.mktemp("apollo")) as process:
        yield process


@pytest.fixture
def s3(server: ServerProcess):
    return server.s3()


@pytest.fixture
def bucket(s3) -> str:
    name = f"test-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture
def make_server(tmp_path: Path) -> Iterator:
    """Factory for servers a test may damage: ``make_server(drives=6, extra_args=[...])``."""
    started: list[ServerProcess] = []

    def factory(**kwargs) -> ServerProcess:
        process = ServerProcess(tmp_path / f"server{len(started)}", **kwargs)
        started.append(process)
        return process.start()

    yield factory
    for process in started:
        process.kill()
