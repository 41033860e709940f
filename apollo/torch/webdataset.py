"""WebDataset over ``apollo://``: ``wds.WebDataset("apollo://bucket/shard-{000000..000099}.tar")``.

WebDataset opens every shard URL with its ``gopen``, which dispatches on the scheme through the table
``webdataset.gopen.gopen_schemes``; :func:`register` adds ``apollo`` to it (importing ``apollo.torch`` does,
when ``webdataset`` is installed: it is not a dependency of Apollo).

- ``rb``: the shard is streamed through the native client (``Client.stream``): one metadata lookup, then
  the data shards are read ahead in batches while the tar is parsed, so one version is read whole (an
  overwrite meanwhile does not tear it) and memory holds a few batches, never the shard.
- ``wb`` (``wds.TarWriter`` / ``wds.ShardWriter``): fsspec's ``apollo://`` file, parts uploaded as they
  fill and the object published at ``close``.

Endpoint and keys come from ``APOLLO_ENDPOINT`` (or ``APOLLO_META_URL``), ``APOLLO_ACCESS_KEY`` and
``APOLLO_SECRET_KEY``, as for ``fsspec.filesystem("apollo")``. Each process makes its own client on its
first shard, so forked DataLoader workers never use the parent's loop or sockets. Spawned workers start
with WebDataset's own table: import ``apollo.torch`` (or this module) at the top of the script, which they
re-import.
"""

from __future__ import annotations

import importlib
import io
from collections.abc import Iterator
from typing import IO, Any

from apollo.client.file_errors import translated
from apollo.torch.urls import SCHEME, environment_client, split_url

__all__ = ["ShardStream", "gopen_apollo", "register", "split_url"]


def register() -> bool:
    """Add ``apollo`` to WebDataset's ``gopen`` schemes (again is harmless). ``False``: WebDataset is not
    installed, and nothing was done."""
    try:  # the module: the package's attribute ``webdataset.gopen`` is the function of that name
        gopen = importlib.import_module("webdataset.gopen")
    except ImportError:
        return False
    gopen.gopen_schemes[SCHEME] = gopen_apollo
    return True


def gopen_apollo(url: str, mode: str = "rb", bufsize: int = 8192, **kw: Any) -> IO[bytes]:
    """WebDataset's handler for ``apollo://bucket/key``: a binary file to read (streamed) or write.

    :raises ValueError: not ``apollo://bucket/key``, or a mode other than ``rb``/``wb``.
    :raises FileNotFoundError: no such object or bucket (at open, before any sample).
    :raises PermissionError: the keys may not read it."""
    bucket, key = split_url(url)
    if mode == "wb":
        import fsspec

        return fsspec.filesystem(SCHEME).open(f"{bucket}/{key}", "wb")
    if mode != "rb":
        raise ValueError(f"{url}: mode {mode!r}, only 'rb' and 'wb' are supported")
    return io.BufferedReader(ShardStream(url, environment_client().stream(bucket, key)),
                             max(bufsize, io.DEFAULT_BUFFER_SIZE))  # fmt: skip


class ShardStream(io.RawIOBase):
    """A read-only, forward-only file over ``Client.stream``'s pieces. The first piece is fetched at once, so
    a missing shard fails at open; Apollo's errors become built-ins (``apollo.client.file_errors``)."""

    def __init__(self, url: str, pieces: Iterator[bytes | memoryview]) -> None:
        super().__init__()
        self.name = url
        self._pieces = pieces
        self._piece = memoryview(b"")
        self._next_piece()

    def _next_piece(self) -> bool:
        with translated(self.name):
            piece = next(self._pieces, None)
        self._piece = memoryview(b"") if piece is None else memoryview(piece)
        return piece is not None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._piece:
            if not self._next_piece():
                return 0
        n = min(len(buffer), len(self._piece))
        memoryview(buffer).cast("B")[:n] = self._piece[:n]
        self._piece = self._piece[n:]
        return n

    def close(self) -> None:
        """Stop the read-ahead of a shard left before its end (``islice``, an error in a sample)."""
        if not self.closed:
            self._piece = memoryview(b"")
            self._pieces.close()  # type: ignore[attr-defined]
        super().close()


register()
