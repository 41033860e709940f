"""LMCache's remote-connector interface, copied faithfully for the tests: LMCache 0.3+ does not install on a
machine without CUDA (it pulls cupy-cuda and a torch of its own pick), so ``apollo.kv.lmcache`` is tested
against this copy instead of the package.

From ``lmcache/v1/storage_backend/connector/base_connector.py`` (``RemoteConnector``: the methods and
their signatures, bodies left out), ``lmcache/v1/memory_management.py`` (``TensorMemoryObj``: ``metadata``
with shape, dtype and format, ``tensor``, and ``byte_array`` as a ctypes ``c_ubyte`` view of the tensor's
memory, format ``<B``), ``LocalCPUBackend.allocate(shape, dtype, fmt)`` (None when the memory is used up),
the external adapter's constructor call (``loop=, local_cpu_backend=, config=``), and ``CacheEngineKey``
(``to_string``).
"""

from __future__ import annotations

import abc
import ctypes
import enum
from dataclasses import dataclass
from typing import Any

import torch


class MemoryFormat(enum.IntEnum):
    UNDEFINED = 0
    KV_2LTD = 1
    KV_T2D = 2
    KV_MLA_FMT = 5


@dataclass
class MemoryObjMetadata:
    shape: torch.Size
    dtype: torch.dtype
    address: int
    phy_size: int
    ref_count: int
    fmt: MemoryFormat = MemoryFormat.UNDEFINED


class TensorMemoryObj:
    def __init__(self, raw_data: torch.Tensor, metadata: MemoryObjMetadata) -> None:
        self.raw_data = raw_data
        self.meta = metadata

    @property
    def metadata(self) -> MemoryObjMetadata:
        return self.meta

    def get_size(self) -> int:
        return self.meta.shape.numel() * self.meta.dtype.itemsize

    @property
    def tensor(self) -> torch.Tensor:
        return self.raw_data[: self.get_size()].view(self.meta.dtype).view(self.meta.shape)

    @property
    def byte_array(self) -> memoryview:
        num_bytes = self.raw_data.numel() * self.raw_data.element_size()
        pointer = ctypes.cast(self.raw_data.data_ptr(), ctypes.POINTER(ctypes.c_ubyte))
        return memoryview((ctypes.c_ubyte * num_bytes).from_address(ctypes.addressof(pointer.contents)))

    def ref_count_down(self) -> None:
        pass


class LocalCPUBackend:
    """``allocate`` out of a fixed budget of host memory, as LMCache's allocator: None when it is used up."""

    def __init__(self, capacity_bytes: int) -> None:
        self.capacity_bytes = capacity_bytes
        self.allocated_bytes = 0
        self.config = None
        self.metadata = None

    def allocate(self, shape: torch.Size, dtype: torch.dtype, fmt: MemoryFormat = MemoryFormat.UNDEFINED
                 ) -> TensorMemoryObj | None:  # fmt: skip
        size = torch.Size(shape).numel() * dtype.itemsize
        if self.allocated_bytes + size > self.capacity_bytes:
            return None
        self.allocated_bytes += size
        raw = torch.empty(size, dtype=torch.uint8)
        return TensorMemoryObj(raw, MemoryObjMetadata(torch.Size(shape), dtype, raw.data_ptr(), size, 1, fmt))


@dataclass(frozen=True)
class CacheEngineKey:
    fmt: str
    model_name: str
    world_size: int
    worker_id: int
    chunk_hash: int

    def to_string(self) -> str:
        return f"{self.fmt}@{self.model_name}@{self.world_size}@{self.worker_id}@{self.chunk_hash:x}"


class RemoteConnector(metaclass=abc.ABCMeta):
    """The interface: the abstract methods every connector has; the others it has if its ``support_*`` says so
    (False here, as in LMCache)."""

    @abc.abstractmethod
    async def exists(self, key: CacheEngineKey) -> bool: ...

    @abc.abstractmethod
    def exists_sync(self, key: CacheEngineKey) -> bool: ...

    @abc.abstractmethod
    async def get(self, key: CacheEngineKey) -> Any | None: ...

    @abc.abstractmethod
    async def put(self, key: CacheEngineKey, memory_obj: Any): ...

    @abc.abstractmethod
    async def list(self) -> list[str]: ...

    @abc.abstractmethod
    async def close(self): ...

    def support_ping(self) -> bool:
        return False

    async def ping(self) -> int:
        raise NotImplementedError

    def support_batched_get(self) -> bool:
        return False

    async def batched_get(self, keys: list[CacheEngineKey]) -> list[Any | None]:
        raise NotImplementedError

    def support_batched_put(self) -> bool:
        return False

    async def batched_put(self, keys: list[CacheEngineKey], memory_objs: list[Any]):
        raise NotImplementedError

    def support_batched_async_contains(self) -> bool:
        return False

    async def batched_async_contains(self, lookup_id: str, keys: list[CacheEngineKey], pin: bool = False) -> int:
        raise NotImplementedError

    def support_batched_get_non_blocking(self) -> bool:
        return False

    async def batched_get_non_blocking(self, lookup_id: str, keys: list[CacheEngineKey]) -> list[Any]:
        raise NotImplementedError

    def remove_sync(self, key: CacheEngineKey) -> bool:
        raise NotImplementedError

    def batched_contains(self, keys: list[CacheEngineKey], stop_after_first_not_exits: bool = True) -> list[bool]:
        raise NotImplementedError

    def support_batched_contains(self) -> bool:
        return False
