"""Integration fixtures: one real ``apollo server`` for the module, named to fsspec through the environment."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from apollo.integrations.fsspec import ApolloFileSystem
from apollo.testing.server import DEV_ACCESS_KEY, DEV_SECRET_KEY, ServerProcess

ENVIRONMENT = ("APOLLO_ENDPOINT", "APOLLO_ACCESS_KEY", "APOLLO_SECRET_KEY")


@pytest.fixture(scope="module")
def apollo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The server, with ``APOLLO_ENDPOINT``/``APOLLO_ACCESS_KEY``/``APOLLO_SECRET_KEY`` set for its life, so
    ``fsspec.filesystem("apollo")`` and ``fsspec.open("apollo://...")`` find it as a user's job would."""
    saved = {name: os.environ.get(name) for name in ENVIRONMENT}
    with ServerProcess(tmp_path_factory.mktemp("integrations")) as process:
        os.environ.update(APOLLO_ENDPOINT=process.endpoint, APOLLO_ACCESS_KEY=DEV_ACCESS_KEY,
                          APOLLO_SECRET_KEY=DEV_SECRET_KEY)  # fmt: skip
        ApolloFileSystem.clear_instance_cache()  # no instance made for an earlier module's server
        try:
            yield process
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


@pytest.fixture(scope="module")
def apollo_fs(apollo_server: ServerProcess):
    """The cached ``ApolloFileSystem`` of this environment, as ``fsspec.filesystem("apollo")`` returns it."""
    import fsspec

    return fsspec.filesystem("apollo")


@pytest.fixture
def fs_bucket(apollo_fs) -> str:
    """A fresh bucket for one test."""
    name = f"fs-{uuid.uuid4().hex[:12]}"
    apollo_fs.mkdir(name)
    return name
