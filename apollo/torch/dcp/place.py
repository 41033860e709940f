"""What the checkpoint writer and reader share: where the checkpoint is (``apollo://bucket/prefix``), and
this process's client to reach it, made from settings (never held: the writer must pickle)."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from typing import Any

from apollo.torch.urls import client_for, is_prefix_url, split_prefix_url


class CheckpointPlace:
    """``endpoint``, ``access_key``, ``secret_key``: default ``APOLLO_ENDPOINT``, ``APOLLO_ACCESS_KEY``,
    ``APOLLO_SECRET_KEY``."""

    def __init__(self, endpoint: str | None, access_key: str | None, secret_key: str | None) -> None:
        self._settings = (endpoint, access_key, secret_key)
        self.url: str | None = None
        self.bucket = self.prefix = ""

    @classmethod
    def validate_checkpoint_id(cls, checkpoint_id: str | os.PathLike) -> bool:
        return is_prefix_url(checkpoint_id)

    def _locate(self, checkpoint_id: str | os.PathLike | None) -> None:
        """:raises ValueError: not ``apollo://bucket/prefix``."""
        if checkpoint_id is not None:
            self.url = os.fspath(checkpoint_id)
            self.bucket, self.prefix = split_prefix_url(self.url)

    def _run(self, method: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        """``method(async client, *args)`` on this process's client's loop."""
        return client_for(*self._settings).run(lambda apollo: method(apollo, *args))
