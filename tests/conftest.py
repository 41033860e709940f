"""Shared fixtures: one real server for the S3 behaviour tests, fresh ones for damage tests."""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from apollo.testing.postgres import TempPostgres, find_bindir
from apollo.testing.server import ServerProcess
from apollo.testing.workload import replay_seed

_databases = itertools.count()


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server per metadata engine shared by the behaviour tests (each test uses its own bucket)."""
    extra_args = []
    if request.param == "postgresql":
        # A name of its own each time: pytest-xdist may set a session fixture up more than once in a worker.
        database = request.getfixturevalue("postgres").create_database(f"apollo_s3_{os.getpid()}_{next(_databases)}")
        extra_args = ["--meta", database]
    with ServerProcess(tmp_path_factory.mktemp("apollo"), extra_args=extra_args) as process:
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


@pytest.fixture(scope="session")
def postgres() -> Iterator[TempPostgres]:
    """One real PostgreSQL server for the session (fsync off); each test takes a database of its own.

    CI installs postgresql-15 (``./run tests``) and a missing server fails there; elsewhere the
    PostgreSQL cases are skipped with the reason.
    """
    if find_bindir() is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL server binaries are missing in CI: ./run tests installs postgresql-15")
        pytest.skip("PostgreSQL server binaries not installed (apt-get install postgresql-15)")
    with TempPostgres(durable=False) as server:
        yield server


@pytest.fixture(params=["sqlite", "postgresql"])
def meta_target(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], str]:
    """A factory of fresh metadata databases on each engine: a SQLite path or a PostgreSQL URL."""

    def fresh() -> str:
        number = next(_databases)
        if request.param == "sqlite":
            return str(tmp_path / f"meta{number}.db")
        return request.getfixturevalue("postgres").create_database(f"apollo_test_{os.getpid()}_{number}")

    return fresh


@pytest.fixture(params=["sqlite", "postgresql"])
def meta_args(request: pytest.FixtureRequest) -> list[str]:
    """``apollo server`` arguments for a fresh metadata database on each engine."""
    if request.param == "sqlite":
        return []
    database = f"apollo_srv_{os.getpid()}_{next(_databases)}"
    return ["--meta", request.getfixturevalue("postgres").create_database(database)]


@pytest.fixture
def seed() -> int:
    """This test's random seed, printed; ``APOLLO_TEST_SEED=N`` replays a failure."""
    return replay_seed()
