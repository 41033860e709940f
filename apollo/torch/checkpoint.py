"""Single-file checkpoints on ``apollo://``: ``torch.save(state, writer(url))``, ``torch.load(reader(url))``.

``writer`` is one streaming native put (``Client.open_writer``): torch writes its zip archive straight to the
storage nodes, and the checkpoint is published whole at ``close()``, in one metadata transaction. A save
that raises inside ``with writer(url) as f:``, or a process killed mid-save, publishes nothing; the bytes
written go to GC. So a reader finds the previous checkpoint or the new one, never a torn file.

``reader`` is a seekable file of one version (``Client.open_reader``), looked up once: ``torch.load`` reads
the archive's directory at its end, then each record, each read a range read of that version's cells.

The client is the process's own, configured from the environment (``apollo.torch.urls``), unless one is
given::

    with writer("apollo://ckpt/run-7/step-1000.pt") as f:
        torch.save({"model": model.state_dict(), "optim": optim.state_dict()}, f)
    state = torch.load(reader("apollo://ckpt/run-7/step-1000.pt"), weights_only=True)
"""

from __future__ import annotations

import io

from apollo.client import Client
from apollo.client.file_errors import translated
from apollo.client.files import PutStream
from apollo.torch.urls import environment_client, split_url

__all__ = ["reader", "writer"]


def writer(url: str, client: Client | None = None) -> PutStream:
    """A write-only binary file that becomes the object at ``url`` when closed, and nothing if the ``with``
    block around it raises. :raises ValueError: not ``apollo://bucket/key``.
    :raises FileNotFoundError: no such bucket. :raises PermissionError: the keys may not see it."""
    bucket, key = split_url(url)
    with translated(url):
        return (client or environment_client()).open_writer(bucket, key)


def reader(url: str, client: Client | None = None) -> io.BufferedReader:
    """A seekable binary file of the object at ``url`` as it is now.

    :raises ValueError: not ``apollo://bucket/key``. :raises FileNotFoundError: no such object or bucket.
    :raises PermissionError: the keys may not read it."""
    bucket, key = split_url(url)
    with translated(url):
        return (client or environment_client()).open_reader(bucket, key)
