"""A shard send that outlives its request: the socket and the file it was given are closed and their numbers
reused, and the send must still go to its own client from its own file, and nowhere else.

This is the attack on the node seen in a stress run: a client cancels a large GET (its request is cancelled,
which closes the transport's socket and the shard file while the send thread goes on), another client's new
connection takes the freed descriptor number, and the thread's shard bytes landed in that connection.
"""

from __future__ import annotations

import asyncio
import os
import socket
from concurrent.futures import ThreadPoolExecutor

from apollo.storage.sendfile import send_owned

SHARD_BYTES = 4 << 20  # far more than the socket buffers hold: the send waits for its reader


def test_a_send_outliving_its_request_writes_only_to_its_own_client(tmp_path):
    shard = os.urandom(SHARD_BYTES)
    (tmp_path / "shard").write_bytes(shard)
    (tmp_path / "other").write_bytes(b"another file's bytes")
    client, node_side = socket.socketpair()
    node_side.setblocking(False)  # as the event loop keeps it
    file_fd = os.open(tmp_path / "shard", os.O_RDONLY)

    async def scenario(executor: ThreadPoolExecutor) -> tuple[socket.socket, socket.socket, int]:
        send = asyncio.ensure_future(send_owned(executor, node_side.fileno(), file_fd, 0, SHARD_BYTES, 10.0))
        await asyncio.sleep(0.2)  # the thread has filled the socket buffers and waits
        send.cancel()  # the request is cancelled: the transport and the file go
        node_side.close()
        os.close(file_fd)
        newcomer, newcomer_node_side = socket.socketpair()  # a new connection, a new file: the freed numbers
        other_fd = os.open(tmp_path / "other", os.O_RDONLY)
        return newcomer, newcomer_node_side, other_fd

    with ThreadPoolExecutor(1) as executor:
        newcomer, newcomer_node_side, other_fd = asyncio.run(scenario(executor))
        received = bytearray()
        client.settimeout(10)
        while chunk := client.recv(1 << 20):  # the send goes on to the end, then its socket closes
            received += chunk
    assert bytes(received) == shard
    newcomer.setblocking(False)
    try:
        stray = newcomer.recv(1 << 16)
    except BlockingIOError:
        stray = b""
    assert stray == b"", f"{len(stray)} bytes of another client's shard reached a new connection"
    assert os.pread(other_fd, 100, 0) == b"another file's bytes"
    for closing in (client, newcomer, newcomer_node_side):
        closing.close()
    os.close(other_fd)
