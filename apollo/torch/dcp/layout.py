"""Where each item of an Apollo distributed checkpoint lives, and the bytes of a tensor, without torch's
serializer in between.

A tensor is stored as the raw bytes of its contiguous form (row-major, native byte order), with its dtype
and shape in the checkpoint's ``.metadata``. A load can then read any hypercube a resharded plan asks for as
the byte range (or the span of rows) that holds it, and, when the destination is contiguous too, read it
straight into the destination's memory: no ``torch.load`` of a zip archive per tensor, no intermediate copy.

``.metadata`` is torch's ``Metadata`` written with ``torch.save`` and read with ``torch.load(weights_only=True)``
allowing only the classes a checkpoint's metadata holds (``METADATA_CLASSES``): a ``.metadata`` planted by
anyone who may write to the bucket cannot run code when it is read, as a plain pickle (what torch's own
writers use) could. The checkpoint's bytes items are unpickled by torch's load planner, not here.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass

import torch
from torch.distributed.checkpoint import metadata as dcp_metadata

SUFFIX = ".distcp"  # the data files, as torch names its own
METADATA = ".metadata"
SAVE_ID_META = "dcp-save-id"  # user metadata of every data file: which save wrote it


@dataclass(frozen=True)
class Location:
    """One item's place in a data file (``Metadata.storage_data[index]``): bytes ``[offset, offset+length)``
    of ``relative_path``; for a tensor, also its dtype (``str(torch.dtype)``) and shape."""

    relative_path: str
    offset: int
    length: int
    dtype: str | None = None
    shape: tuple[int, ...] | None = None


@dataclass(frozen=True)
class PlanData:
    """What the coordinator's global plan tells each rank of a save: its data files' name prefix, the
    transaction to stage them into, and the save's id, which every data file carries."""

    prefix: str
    txn_id: str
    save_id: str


# What a checkpoint's ``.metadata`` may hold besides tensors' plain containers and torch's own dtypes and sizes.
METADATA_CLASSES = [dcp_metadata.Metadata, dcp_metadata.TensorStorageMetadata, dcp_metadata.BytesStorageMetadata,
                    dcp_metadata.ChunkStorageMetadata, dcp_metadata.TensorProperties, dcp_metadata.MetadataIndex,
                    dcp_metadata.StorageMeta, dcp_metadata._MEM_FORMAT_ENCODING, Location]  # fmt: skip


@dataclass(frozen=True)
class LoadCheck:
    """What the coordinator's global plan tells each rank of a load: the save it planned from. A rank that
    opened another (a new save of the same id committed between their opens) fails the load."""

    save_id: str | None


def metadata_bytes(metadata: dcp_metadata.Metadata) -> bytes:
    """A checkpoint's ``.metadata``, as ``metadata_of`` reads it back."""
    buffer = io.BytesIO()
    torch.save(metadata, buffer)
    return buffer.getvalue()


def metadata_of(data: bytes, name: str) -> dcp_metadata.Metadata:
    """The ``Metadata`` in ``data``. :raises ValueError: not a ``.metadata`` ``ApolloStorageWriter`` wrote
    (torch's own writers pickle it plainly: load those with ``dcp.load`` and no ``storage_reader``), or
    holding anything but a checkpoint's metadata."""
    try:
        with torch.serialization.safe_globals(METADATA_CLASSES):
            metadata = torch.load(io.BytesIO(data), weights_only=True)
    except Exception as exc:  # noqa: BLE001 - whatever torch.load refuses (unpickling, zip, format) is not one
        why = f"{name} is not the metadata of a checkpoint ApolloStorageWriter saved: {exc}"
        raise ValueError(why[:2000]) from None
    if not isinstance(metadata, dcp_metadata.Metadata):
        raise ValueError(f"{name} holds a {type(metadata).__name__}, not a checkpoint's metadata")
    return metadata


def raw_bytes(tensor: torch.Tensor) -> memoryview:
    """The bytes of ``tensor`` in row-major order: a view of its memory if it is contiguous on the CPU, else of
    a contiguous CPU copy. The view keeps the memory alive."""
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    return memoryview(flat.view(torch.uint8).numpy()).cast("B")


def writable_bytes(tensor: torch.Tensor) -> memoryview | None:
    """A writable view of a contiguous CPU tensor's memory, to read into; None if it is not one."""
    if tensor.device.type != "cpu" or not tensor.is_contiguous():
        return None
    return memoryview(tensor.detach().reshape(-1).view(torch.uint8).numpy()).cast("B")


def dtype_named(name: str) -> torch.dtype:
    """``"torch.float32"`` -> ``torch.float32``. :raises ValueError: not a torch dtype."""
    dtype = getattr(torch, name.removeprefix("torch."), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"{name!r} is not a torch dtype")
    return dtype


@dataclass(frozen=True)
class Span:
    """The bytes of a stored tensor that hold a requested hypercube: ``[start, end)`` of its data, and how to
    see the hypercube in them (``strides`` in elements, from the span's first element). ``contiguous``: the
    hypercube is exactly those bytes, in order."""

    start: int
    end: int
    sizes: tuple[int, ...]
    strides: tuple[int, ...]
    contiguous: bool


def span_of(shape: tuple[int, ...], element_size: int, offsets: tuple[int, ...], lengths: tuple[int, ...]) -> Span:
    """Which bytes of a row-major tensor of ``shape`` hold the hypercube ``offsets``/``lengths``.

    :raises ValueError: the hypercube is not inside the tensor."""
    if len(offsets) != len(shape) or len(lengths) != len(shape):
        raise ValueError(f"a hypercube of {len(lengths)} dims asked of a tensor of shape {shape}")
    for offset, length, size in zip(offsets, lengths, shape, strict=True):
        if offset < 0 or length < 0 or offset + length > size:
            raise ValueError(f"hypercube at {offsets} of {lengths} is outside a tensor of shape {shape}")
    strides = [1] * len(shape)
    for dim in range(len(shape) - 2, -1, -1):
        strides[dim] = strides[dim + 1] * shape[dim + 1]
    count = math.prod(lengths)
    if count == 0:
        return Span(0, 0, tuple(lengths), tuple(strides), True)
    first = sum(o * s for o, s in zip(offsets, strides, strict=True))
    last = first + sum((n - 1) * s for n, s in zip(lengths, strides, strict=True))
    contiguous = last - first + 1 == count
    return Span(first * element_size, (last + 1) * element_size, tuple(lengths), tuple(strides), contiguous)


def hypercube_in(data: memoryview | bytes, dtype: torch.dtype, span: Span) -> torch.Tensor:
    """The hypercube ``span`` describes, as a (strided) tensor over ``data``, the span's bytes. No copy: the
    caller only reads it."""
    if span.end == span.start:
        return torch.empty(span.sizes, dtype=dtype)
    with warnings.catch_warnings():  # torch warns that read-only bytes make a writable tensor: only read here
        warnings.simplefilter("ignore", UserWarning)
        flat = torch.frombuffer(data, dtype=torch.uint8).view(dtype)
    return flat.as_strided(span.sizes, span.strides)
