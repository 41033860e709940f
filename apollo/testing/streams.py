"""A real aiohttp ``StreamReader`` without a socket, for unit tests of the parsers that read request bodies."""

from __future__ import annotations

import asyncio

from aiohttp import StreamReader
from aiohttp.base_protocol import BaseProtocol


class _Protocol(BaseProtocol):
    """A connection with no socket: always connected, and nothing to pause when the test feeds ahead."""

    @property
    def connected(self) -> bool:
        return True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self, resume_parser: bool = True) -> None:
        pass


def body_stream(loop: asyncio.AbstractEventLoop) -> StreamReader:
    """An empty request body stream on ``loop``: the test feeds it (``feed_data``, ``feed_eof``)."""
    return StreamReader(_Protocol(loop), 2**16, loop=loop)
