"""PyTorch datasets over Apollo, read through the native client (no gateway), pinned by a snapshot.

A dataset lists its prefix once, as a snapshot (``apollo.meta.sql_snapshots``): every epoch, rank and
restart reads exactly those objects, whatever is written or deleted meanwhile. What a dataset pickles to
its DataLoader workers is where the samples are (``Source``), never a client: each process makes its own
on first use, after a fork or a spawn alike.

- ``ApolloMapDataset``: ``dataset[i]`` is a sample; a DataLoader's batch of indices is one batch GET
  (``__getitems__``).
- ``ApolloIterableDataset``: each rank and worker reads its share of the epoch's global order
  (``apollo.torch.plan``), ahead with batch GETs; ``state_dict`` / ``load_state_dict`` resume an epoch
  where it stopped, on any world size. ``ApolloDataLoader`` counts what the loop received for it.

    dataset = ApolloIterableDataset.from_prefix("apollo://datasets/train/", shuffle=True, seed=7, batch_size=32,
                                                transform=decode)
    loader = ApolloDataLoader(dataset, batch_size=32, num_workers=4)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch.distributed
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from apollo import errors
from apollo.client import BatchItem, Client, ObjectInfo
from apollo.torch.plan import Reader, epoch_order

WINDOW_DEFAULT = 256  # samples held by each reader: waves of 128, each one request per storage node


@dataclass(frozen=True)
class ApolloSample:
    """What a dataset yields when it has no ``transform``: the key and its bytes, or the tar shard's key,
    the member's name and the member's bytes."""

    key: str
    data: bytes
    member: str | None = None


@dataclass(frozen=True)
class Source:
    """The samples (keys of one bucket, as a snapshot pinned them, or members of tar shards there: ``members``
    then names each sample's member) and how to reach them: picklable."""

    endpoint: str
    access_key: str
    secret_key: str = field(repr=False)  # a dataset printed in a log must not show it
    bucket: str = ""
    snapshot_id: str = ""
    keys: tuple[str, ...] = ()
    client_options: dict = field(default_factory=dict)
    members: tuple[str, ...] = ()

    @classmethod
    def of(cls, url: str, *, keys: Iterable[str] | None = None, snapshot: str | None = None,
           tar_members: bool = False, endpoint: str | None = None, access_key: str | None = None,
           secret_key: str | None = None, **client_options: Any) -> Source:  # fmt: skip
        """The samples under ``url`` (``apollo://bucket/prefix``), listed once from a snapshot taken now (or
        the one given): all of them, or the ``keys`` named (full keys, or relative to the url's prefix; each
        must be there); with ``tar_members``, the
        members of the ``.tar`` objects among them (indexed when written), shard by shard in key order.
        Endpoint and keys from the arguments or ``APOLLO_ENDPOINT``, ``APOLLO_ACCESS_KEY``,
        ``APOLLO_SECRET_KEY``.

        :raises ObjectNotFound: a key named that the snapshot does not hold.
        :raises ValueError: ``tar_members`` and a ``.tar`` object without its index.
        """
        bucket, _, prefix = url.removeprefix("apollo://").partition("/")
        wanted = None if keys is None else [key if key.startswith(prefix) else prefix + key for key in keys]
        if wanted is not None:  # full keys, or keys under the url's prefix
            prefix = os.path.commonprefix(wanted)
        reached = (endpoint or os.environ["APOLLO_ENDPOINT"], access_key or os.environ["APOLLO_ACCESS_KEY"],
                   secret_key or os.environ["APOLLO_SECRET_KEY"])  # fmt: skip
        with Client(*reached, **client_options) as client:
            snapshot_id = snapshot or client.snapshot(bucket, prefix).snapshot_id
            listed = [entry.key for entry in client.list(bucket, prefix, snapshot=snapshot_id)
                      if isinstance(entry, ObjectInfo)]  # fmt: skip
            if wanted is not None:
                held = set(listed)
                missing = [key for key in wanted if key not in held]
                if missing:
                    raise errors.ObjectNotFound(f"{len(missing)} keys are not in snapshot {snapshot_id}, e.g. "
                                                f"{missing[0]}")  # fmt: skip
                listed = wanted
            if not tar_members:
                return cls(*reached, bucket, snapshot_id, tuple(listed), dict(client_options))
            shards, members = [], []
            for key in (key for key in listed if key.endswith(".tar")):
                found = client.tar_members(bucket, key, snapshot=snapshot_id)
                if not found:
                    raise ValueError(f"{bucket}/{key} has no member index: write it with the native client, or "
                                     "through S3 with x-apollo-tar-index: true")  # fmt: skip
                shards += [key] * len(found)
                members += [name for name, _, _ in found]
        return cls(*reached, bucket, snapshot_id, tuple(shards), dict(client_options), tuple(members))

    def client(self) -> Client:
        """This process's client for this source: made on first use, again in a forked or spawned worker."""
        key = (self.endpoint, self.access_key, tuple(sorted(self.client_options.items())))
        made = _CLIENTS.get(key)
        if made is None or made[0] != os.getpid():
            made = _CLIENTS[key] = (os.getpid(), Client(self.endpoint, self.access_key, self.secret_key,
                                                         **self.client_options))  # fmt: skip
        return made[1]

    def read(self, indices: Iterable[int], window: int = WINDOW_DEFAULT) -> Iterator[ApolloSample]:
        """The samples at these indices of ``keys``, in order, read ahead with one batch GET.
        :raises ApolloError: the first sample that could not be read (a training set does not skip data)."""
        items = (BatchItem(self.bucket, self.keys[index], snapshot=self.snapshot_id,
                           member=self.members[index] if self.members else None) for index in indices)  # fmt: skip
        for result in self.client().get_batch(items, window=window):
            if not result.ok:
                raise result.error
            yield ApolloSample(result.item.key, result.data, result.item.member)


_CLIENTS: dict[tuple, tuple[int, Client]] = {}


class ApolloMapDataset(Dataset):
    """``dataset[i]``: the ``i``-th key of the snapshot, in key order, through ``transform``."""

    def __init__(self, source: Source, transform: Callable[[ApolloSample], Any] | None = None) -> None:
        self.source = source
        self.transform = transform

    @classmethod
    def from_prefix(cls, url: str, *, transform: Callable[[ApolloSample], Any] | None = None,
                    **options: Any) -> ApolloMapDataset:  # fmt: skip
        """Over the objects under ``url`` (``Source.of`` takes ``keys``, ``snapshot``, the endpoint...)."""
        return cls(Source.of(url, **options), transform)

    @property
    def snapshot_id(self) -> str:
        """The snapshot the dataset reads: delete it (``Client.delete_snapshot``) when no run needs it."""
        return self.source.snapshot_id

    def __len__(self) -> int:
        return len(self.source.keys)

    def __getitem__(self, index: int) -> Any:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[int]) -> list[Any]:
        """A DataLoader's whole batch of indices in one batch GET."""
        for index in indices:
            if not -len(self) <= index < len(self):
                raise IndexError(f"index {index} of a dataset of {len(self)} samples")
        samples = self.source.read([index % len(self) for index in indices])
        return [self.transform(sample) if self.transform else sample for sample in samples]


class ApolloIterableDataset(IterableDataset):
    """The snapshot's samples, each read once per epoch by one (rank, worker), in the epoch's global order
    (``apollo.torch.plan``); with ``shuffle``, a permutation determined by (snapshot, seed, epoch) only.

    ``batch_size`` must be the DataLoader's: workers take whole batches in turn, which is the order a
    DataLoader hands them back in. ``rank`` and ``world_size`` default to ``torch.distributed``'s."""

    def __init__(self, source: Source, *, shuffle: bool = False, seed: int = 0, batch_size: int = 1,
                 rank: int | None = None, world_size: int | None = None,
                 transform: Callable[[ApolloSample], Any] | None = None, window: int = WINDOW_DEFAULT
                 ) -> None:  # fmt: skip
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        self.source = source
        self.shuffle, self.seed, self.batch_size = shuffle, seed, batch_size
        self.rank = rank if rank is not None else torch.distributed.get_rank() if distributed else 0
        self.world_size = world_size if world_size is not None else (
            torch.distributed.get_world_size() if distributed else 1)  # fmt: skip
        self.transform, self.window = transform, window
        # (epoch, the global position it (re)starts from), in shared memory: persistent DataLoader workers keep
        # the copy of the dataset they were given, and must still see set_epoch and load_state_dict. It costs a
        # file descriptor per dataset (torch's sharing strategy), released with the dataset.
        self._progress = torch.zeros(2, dtype=torch.int64).share_memory_()
        self._seen = 0  # samples this object yielded itself (no DataLoader workers)
        Reader(self.rank, self.world_size, batch_size=batch_size)  # refuses a rank outside the world

    @classmethod
    def from_prefix(cls, url: str, *, keys: Iterable[str] | None = None, snapshot: str | None = None,
                    tar_members: bool = False, endpoint: str | None = None, access_key: str | None = None,
                    secret_key: str | None = None, **options: Any) -> ApolloIterableDataset:  # fmt: skip
        """Over the objects (or, ``tar_members``, the members of the tar shards) under ``url``: ``Source.of``;
        ``options`` are the dataset's (shuffle, seed, batch_size, rank, world_size, transform, window)."""
        source = Source.of(url, keys=keys, snapshot=snapshot, tar_members=tar_members, endpoint=endpoint,
                           access_key=access_key, secret_key=secret_key)  # fmt: skip
        return cls(source, **options)

    @property
    def snapshot_id(self) -> str:
        return self.source.snapshot_id

    def __len__(self) -> int:
        """This rank's samples in a whole epoch."""
        return len(range(self.rank, len(self.source.keys), self.world_size))

    @property
    def epoch(self) -> int:
        return int(self._progress[0])

    @epoch.setter
    def epoch(self, epoch: int) -> None:
        self._progress[0] = epoch

    @property
    def _start(self) -> int:
        return int(self._progress[1])

    def _restart(self, epoch: int, start: int) -> None:
        self._progress[0], self._progress[1] = epoch, start
        self._seen = 0

    def set_epoch(self, epoch: int) -> None:
        """As ``DistributedSampler.set_epoch``: the next epoch's order; a new epoch starts at its beginning."""
        if epoch != self.epoch:
            self._restart(epoch, 0)

    def state_dict(self, samples_seen: int | None = None) -> dict[str, Any]:
        """Where this epoch stands, after each rank received ``samples_seen`` samples (default: what this
        object yielded itself; ``ApolloDataLoader`` passes its own count). The same on every rank."""
        seen = self._seen if samples_seen is None else samples_seen
        return {"snapshot_id": self.snapshot_id, "samples": len(self.source.keys), "shuffle": self.shuffle,
                "seed": self.seed, "epoch": self.epoch,
                "position": min(len(self.source.keys), self._start + seen * self.world_size)}  # fmt: skip

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume: the rest of that epoch, on this world size. :raises ValueError: a state of other data."""
        mine = (self.snapshot_id, len(self.source.keys), self.shuffle, self.seed)
        theirs = (state["snapshot_id"], state["samples"], state["shuffle"], state["seed"])
        if mine != theirs:
            raise ValueError(f"the state is of another plan (snapshot, samples, shuffle, seed): {theirs} != {mine}")
        self._restart(int(state["epoch"]), int(state["position"]))

    def __iter__(self) -> Iterator[Any]:
        worker = get_worker_info()
        reader = Reader(self.rank, self.world_size, worker.id if worker else 0, worker.num_workers if worker else 1,
                        self.batch_size)  # fmt: skip
        epoch, start = self.epoch, self._start
        order = epoch_order(len(self.source.keys), snapshot_id=self.snapshot_id, seed=self.seed, epoch=epoch,
                            shuffle=self.shuffle)  # fmt: skip
        positions = reader.positions(len(order), start)
        for sample in self.source.read((order[position] for position in positions), self.window):
            self._seen += 1
            yield self.transform(sample) if self.transform else sample


class ApolloDataLoader(DataLoader):
    """A DataLoader that counts the samples its loop received, so that ``state_dict()`` says where the epoch
    stands (``ApolloIterableDataset.state_dict``) with any number of workers."""

    def __init__(self, dataset: ApolloIterableDataset, *args: Any, **kwargs: Any) -> None:
        super().__init__(dataset, *args, **kwargs)
        self._received = 0

    def __iter__(self) -> Iterator[Any]:
        self._received = 0
        for batch in super().__iter__():
            self._received += self.batch_size or 1
            yield batch

    def state_dict(self) -> dict[str, Any]:
        return self.dataset.state_dict(min(self._received, len(self.dataset)))

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.dataset.load_state_dict(state)
