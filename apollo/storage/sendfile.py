"""Shard bytes from the page cache to a client's socket with ``sendfile``: no copy through Python.

A read served as ``pread`` + ``write`` copies every byte twice in the node (file to a Python
buffer, buffer to the socket): with ``perf``, those copies were a third of a storage node's
CPU on large reads. uvloop, which every Apollo process runs, has no ``loop.sendfile``, so the
node writes the body itself, on a thread: the file may not be cached (a read that waits on
the disk must not stall the event loop), and the thread waits for the socket to take more
with ``poll`` (the socket is non-blocking: the event loop owns it). Sends have threads of
their own (``LocalStorageNode.send``), so clients that stop reading hold only those.

The thread sends through duplicates of the socket's and the file's descriptors, its own, which it closes
when done (``send_owned``). A request cancelled mid-send (its client gone) closes the transport's socket
and the shard file at once, while the thread, which cannot be stopped, goes on sending; a connection
accepted meanwhile, or a file opened, would get those descriptor numbers. With the caller's numbers the
thread sent one client's shard bytes into another client's connection (a stress run of concurrent GETs,
some cancelled, under load: about 1 in 60,000 GETs; the other client saw a reply head over 16 KiB).
"""

from __future__ import annotations

import asyncio
import errno
import os
import select
from concurrent.futures import Executor


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


async def send_owned(executor: Executor, sock_fd: int, file_fd: int, offset: int, count: int, stall_s: float) -> None:
    """``send_range`` on ``executor``'s thread, through duplicates of both descriptors that the thread owns
    (closed when it is done, or here if it never starts): whatever the caller closes after, even when this
    coroutine is cancelled, the thread keeps writing to this socket from this file and nowhere else."""
    owned = (os.dup(sock_fd), os.dup(file_fd))
    try:
        job = executor.submit(_send_and_close, *owned, offset, count, stall_s)
    except BaseException:
        _close(owned)
        raise
    job.add_done_callback(lambda done: _close(owned) if done.cancelled() else None)
    await asyncio.wrap_future(job)


def _send_and_close(sock_fd: int, file_fd: int, offset: int, count: int, stall_s: float) -> None:
    try:
        send_range(sock_fd, file_fd, offset, count, stall_s)
    finally:
        _close((sock_fd, file_fd))


def _close(descriptors: tuple[int, ...]) -> None:
    for descriptor in descriptors:
        os.close(descriptor)
