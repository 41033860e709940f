"""Shard bytes from the page cache to a client's socket with ``sendfile``: no copy through Python.

A read served as ``pread`` + ``write`` copies every byte twice in the node (file to a Python
buffer, buffer to the socket): with ``perf``, those copies were a third of a storage node's
CPU on large reads. uvloop, which every Apollo process runs, has no ``loop.sendfile``, so the
node writes the body itself, on a thread: the file may not be cached (a read that waits on
the disk must not stall the event loop), and the thread waits for the socket to take more
with ``poll`` (the socket is non-blocking: the event loop owns it). Sends have threads of
their own (``LocalStorageNode.send``), so clients that stop reading hold only those.
"""

from __future__ import annotations

import errno
import os
import select


def send_range(sock_fd: int, file_fd: int, offset: int, count: int, stall_s: float) -> None:
    """Send ``count`` bytes of ``file_fd`` from ``offset`` to the socket.

    :raises TimeoutError: the socket took nothing for ``stall_s`` (a client that stopped reading).
    :raises OSError: the client went away (EPIPE, ECONNRESET), or the file ended early (EIO).
    """
    poller = select.poll()
    poller.register(sock_fd, select.POLLOUT)
    while count:
        try:
            sent = os.sendfile(sock_fd, file_fd, offset, count)
        except BlockingIOError:
            if not poller.poll(stall_s * 1000):
                raise TimeoutError(errno.ETIMEDOUT, f"client took no data for {stall_s} s") from None
            continue
        if sent == 0:
            raise OSError(errno.EIO, f"shard file ended {count} bytes short of the range")
        offset += sent
        count -= sent
