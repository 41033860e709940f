"""PyTorch on Apollo: datasets over a snapshot of a prefix (``datasets``), and the plan of which rank and
worker reads which sample in which order (``plan``, without torch). Needs ``torch`` (a CPU build will do).
Where ``webdataset`` is installed, importing this registers ``apollo://`` with its ``gopen`` (``webdataset``)."""

from apollo.torch import webdataset as _webdataset  # noqa: F401 - registers apollo:// if WebDataset is installed
from apollo.torch.datasets import ApolloDataLoader, ApolloIterableDataset, ApolloMapDataset, ApolloSample, Source

__all__ = ["ApolloDataLoader", "ApolloIterableDataset", "ApolloMapDataset", "ApolloSample", "Source"]
