"""PyTorch Distributed Checkpoint on Apollo: ``dcp.save``/``dcp.load`` to ``apollo://bucket/prefix``.

    import torch.distributed.checkpoint as dcp
    from apollo.torch.dcp import ApolloStorageReader, ApolloStorageWriter

    dcp.save(state, storage_writer=ApolloStorageWriter("apollo://ckpt/run-7/step-1000"))
    dcp.load(state, storage_reader=ApolloStorageReader("apollo://ckpt/run-7/step-1000"))

A save is one transaction: every rank's files and ``.metadata`` appear together at the coordinator's
``finish``, or nothing does (``writer``). A load reads one checkpoint's pinned versions, straight into the
tensors where it can (``reader``). See ``docs/pytorch.md``."""

from apollo.torch.dcp.reader import ApolloStorageReader
from apollo.torch.dcp.writer import ApolloStorageWriter

__all__ = ["ApolloStorageReader", "ApolloStorageWriter"]
