"""The native direct-path client: metadata from ``apollo meta``, bytes straight to and from storage nodes.

No gateway in between: the client encodes and decodes erasure-coded stripes itself,
streams every shard of a stripe to its node in parallel, and asks the metadata service
only to begin (placement and a write token per segment), commit, and look up (layout
and read tokens). Layouts of looked-up versions are cached by version id, so reading
the same object again costs no metadata call. Every object operation goes through the
``ObjectEngine``, as the S3 gateway's do: the two front doors cannot drift apart.

    async with AsyncClient("http://meta:9100", access_key, secret_key) as apollo:
        await apollo.put("data", "shard-0001.tar", open("shard-0001.tar", "rb"))
        async for result in apollo.get_batch([("data", key) for key in keys]):
            ...

``apollo.client.blocking.Client`` offers the same calls, blocking, for code without an event loop.
"""

from __future__ import annotations

import asyncio
import io
import os
import time
from collections import OrderedDict
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import aiohttp

from apollo import errors, limits, tokens
from apollo.client import batch
from apollo.client.batch import BatchItem, BatchResult, Pinned
from apollo.client.context import ClientContext
from apollo.client.engine import ObjectEngine
from apollo.client.remote_meta import RemoteMeta
from apollo.client.remote_storage import Timeouts
from apollo.client.tls import client_context, environment_context
from apollo.client.transaction import Transaction
from apollo.client.writer import write_quorum as quorum_of
from apollo.proto import codec
from apollo.proto.layout import Scheme
from apollo.proto.records import Conditions, KVNamespace, Lookup, ObjectAttrs, Snapshot, Version

READ_CHUNK_BYTES = limits.io_batch_bytes  # a file read per encode batch: no joining
LAYOUTS_KEPT = 10_000
LAYOUT_TTL_S = tokens.TOKEN_TTL_S / 2  # a cached layout's read tokens must still be valid when it is used

Body = bytes | bytearray | memoryview | str | Path | BinaryIO | AsyncIterable[bytes] | Iterable[bytes]


@dataclass(frozen=True)
class ObjectInfo:
    bucket: str
    key: str
    size: int
    etag: str
    version_id: str
    last_modified: float
    content_type: str
    metadata: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, version: Version) -> ObjectInfo:
        return cls(version.bucket, version.key, version.size, version.etag, version.version_id,
                   version.last_modified, version.attrs.content_type, dict(version.attrs.user_meta))  # fmt: skip


async def _chunks(body: Body) -> AsyncIterator[bytes | memoryview]:
    """Any body as chunks of at most ``READ_CHUNK_BYTES``; files are read on a thread, never whole.

    A ``bytes`` body is never copied: the writer encodes from views of it."""
    if isinstance(body, bytes | bytearray | memoryview):
        view = memoryview(body).cast("B")
        for start in range(0, len(view), READ_CHUNK_BYTES):
            yield view[start : start + READ_CHUNK_BYTES]
        return
    if isinstance(body, str | Path):
        with open(body, "rb") as handle:
            async for chunk in _chunks(handle):
                yield chunk
        return
    if isinstance(body, io.IOBase) or hasattr(body, "read"):
        while chunk := await asyncio.to_thread(body.read, READ_CHUNK_BYTES):
            yield chunk
        return
    if hasattr(body, "__aiter__"):
        async for chunk in body:
            yield chunk
        return
    for chunk in body:
        yield chunk


def _pins(bucket: str, keys: Sequence[str], lookups: list[Lookup]) -> list[Pinned | None]:
    """A pin of each key found; None for one that is not. :raises ApolloError: any other failed lookup, e.g.
    AccessDenied (one refused key fails the call: a pin stands for a consistent state of all of them)."""
    pins: list[Pinned | None] = []
    for key, lookup in zip(keys, lookups, strict=True):
        if lookup.version is None and lookup.error not in ("ObjectNotFound", ""):
            raise codec.error_from_wire({"type": lookup.error, "message": lookup.message})
        pins.append(None if lookup.version is None else Pinned(bucket, key, lookup.version))
    return pins


class AsyncClient:
    def __init__(
        self, meta_url: str, access_key: str, secret_key: str, *, scheme: str = "4+2",
        cell_size: int = limits.cell_size_bytes_default, timeouts: Timeouts | None = None,
        write_quorum: int | None = None, certs: str | os.PathLike | None = None,
    ) -> None:  # fmt: skip
        """``meta_url``: one or more metadata services, comma-separated. ``write_quorum``: shards that must
        be durable before a put returns (default and minimum k+1; k+m waits for every shard).

        ``certs``: a certificate directory for ``https://`` clusters (default: ``$APOLLO_CERTS``, if set), laid
        out as the roles' ``--certs``: ``public.crt`` and ``private.key``, the client certificate a cluster with
        mutual TLS demands, and ``CAs/*.crt``, the cluster CA, then the only one trusted for the metadata
        services and the storage nodes (``apollo.client.tls``). Without one, ``https://`` is verified with the
        system's CAs (or ``SSL_CERT_FILE``) and no client certificate is shown.

        :raises CertError: (``apollo.client.tls``) a ``certs`` directory that is missing or broken.
        """
        self._ssl = client_context(certs) if certs is not None else environment_context()  # a broken one fails here
        self._meta_url = meta_url
        self._keys = (access_key, secret_key)
        self._scheme = Scheme.parse(scheme)
        self._cell_size = cell_size
        self._write_quorum = quorum_of(self._scheme, write_quorum)
        self._timeouts = timeouts
        self._session: aiohttp.ClientSession | None = None
        self._meta: RemoteMeta | None = None
        self._engine: ObjectEngine | None = None  # every object operation goes through it
        self._layouts: OrderedDict[tuple[str, str, str], tuple[float, Version]] = OrderedDict()

    async def connect(self) -> AsyncClient:
        """:raises AccessDenied: a wrong key. :raises MetadataUnavailable: no metadata service answers."""
        self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0), read_bufsize=4 << 20)
        self._meta = RemoteMeta(self._meta_url, *self._keys, self._session, self._timeouts, ssl_context=self._ssl)
        try:
            await self._meta.start()
        except BaseException:
            await self._session.close()
            raise
        ctx = ClientContext(self._meta, self._meta.nodes)
        self._engine = ObjectEngine(ctx, self._scheme, self._cell_size, self._write_quorum)
        self._engine.on_relayout = self._relayout
        return self

    async def close(self) -> None:
        if self._meta is not None:
            await self._meta.close()
        if self._session is not None:
            await self._session.close()
        if self._engine is not None:
            self._engine.ctx.cpu.shutdown(wait=False)

    async def __aenter__(self) -> AsyncClient:
        return await self.connect()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # buckets ---------------------------------------------------------------------------------

    async def create_bucket(self, bucket: str) -> None:
        await self._engine.create_bucket(bucket)

    async def delete_bucket(self, bucket: str) -> None:
        await self._engine.delete_bucket(bucket)

    async def list_buckets(self) -> list[str]:
        """Every bucket's name, sorted."""
        return sorted(b.name for b in await self._engine.list_buckets())

    async def bucket_exists(self, bucket: str) -> bool:
        try:
            await self._engine.get_bucket(bucket)
        except errors.BucketNotFound:
            return False
        return True

    # writes ----------------------------------------------------------------------------------

    async def put(self, bucket: str, key: str, body: Body, *, content_type: str = "application/octet-stream",
                  metadata: dict[str, str] | None = None, if_none_match: bool = False, md5: bool = False,
                  tar_index: bool | None = None) -> ObjectInfo:  # fmt: skip
        """Store ``body`` (bytes, a path, a binary file, or an (async) iterable of chunks) under ``key``.

        Large bodies become several segments, each in its own placement group: the client
        spreads one object over the whole cluster with no multipart protocol.
        The ETag is the body's MD5 only for small objects or with ``md5=True``; otherwise it is
        a digest of the cells' CRC32Cs ending in ``-<segments>``, which S3 tools take for a
        multipart ETag. MD5 would be the slowest step of the write; every cell's CRC32C is
        stored and checked on every read either way.
        A tar archive (a key ending in ``.tar``, or any with ``tar_index=True``) is indexed as it streams:
        each member is then a range read (``get(..., member=name)``, ``BatchItem.member``); ``tar_index=True``
        refuses bytes that are not a whole archive, ``False`` indexes nothing.
        :raises BucketNotFound, PreconditionFailed (``if_none_match`` and the key exists), InsufficientStorage:
        :raises InvalidRequest: ``tar_index=True`` and not a tar archive.
        """
        attrs = ObjectAttrs(content_type=content_type, user_meta=dict(metadata or {}))
        conditions = Conditions(if_none_match_star=True) if if_none_match else None
        version, _ = await self._engine.put_object(bucket, key, _chunks(body), attrs, conditions=conditions, md5=md5,
                                                   tar_index=tar_index)  # fmt: skip
        return ObjectInfo.of(version)

    async def delete(self, bucket: str, key: str, version_id: str | None = None) -> None:
        await self._engine.delete_object(bucket, key, version_id)
        self._forget(bucket, [key])

    async def delete_many(self, bucket: str, keys: Iterable[str]) -> list[Exception | None]:
        """Delete the latest version of each key, in order (a missing key is no error, as in S3).

        One result per key: None, or the exception that key raised while the others went on.
        :raises BucketNotFound: before any key is deleted.
        """
        keys = list(keys)
        results = await self._engine.delete_objects(bucket, [(key, None) for key in keys])
        self._forget(bucket, keys)
        return [r if isinstance(r, Exception) else None for r in results]

    def _forget(self, bucket: str, keys: list[str]) -> None:
        """Drop cached layouts of deleted keys: their segments go to GC."""
        gone = set(keys)
        for cached in [k for k in self._layouts if k[0] == bucket and k[1] in gone]:
            del self._layouts[cached]

    async def copy(self, bucket: str, key: str, dest_bucket: str, dest_key: str) -> ObjectInfo:
        """A new object ``dest_bucket/dest_key`` with the bytes, content type and metadata of ``bucket/key``.

        The bytes move between the storage nodes and this process only (no local file, no gateway),
        and the copy shares no segment with its source (``ObjectEngine.copy_object``), so either may be
        deleted alone. :raises ObjectNotFound, BucketNotFound, InsufficientFragments:
        """
        source = await self._version(bucket, key, None)
        attrs = ObjectAttrs(content_type=source.attrs.content_type, headers=dict(source.attrs.headers),
                            user_meta=dict(source.attrs.user_meta))  # fmt: skip
        version, _ = await self._engine.copy_object(source, dest_bucket, dest_key, attrs)
        return ObjectInfo.of(version)

    async def rename(self, bucket: str, key: str, dest_key: str, *, if_none_match: bool = False) -> ObjectInfo:
        """Move ``key`` to ``dest_key`` in one metadata transaction: no byte moves, and no reader ever sees both
        keys, or neither. ``if_none_match``: only if ``dest_key`` does not exist (else ``PreconditionFailed``).

        :raises ObjectNotFound, PreconditionFailed: :raises RenameRefused: on a versioned bucket (the source's
            version stays) or for a version a snapshot pins: :meth:`copy` and :meth:`delete` instead.
        """
        conditions = Conditions(if_none_match_star=True) if if_none_match else None
        version = await self._engine.rename_object(bucket, key, dest_key, conditions=conditions)
        self._forget(bucket, [key, dest_key])
        return ObjectInfo.of(version)

    # multipart uploads: an object written in parts that appears only at complete_upload ----------

    async def create_upload(self, bucket: str, key: str, *, content_type: str = "application/octet-stream",
                            metadata: dict[str, str] | None = None) -> str:  # fmt: skip
        """A new upload's id: parts of at least ``limits.part_size_bytes_min`` (the last may be smaller)
        become one object at :meth:`complete_upload`; nothing is visible before. :raises BucketNotFound:"""
        attrs = ObjectAttrs(content_type=content_type, user_meta=dict(metadata or {}))
        return await self._engine.create_upload(bucket, key, attrs)

    async def upload_part(self, bucket: str, key: str, upload_id: str, part_number: int, body: Body) -> str:
        """Stream one part to the drives; returns its ETag for :meth:`complete_upload`.

        :raises UploadNotFound, InsufficientStorage:"""
        part = await self._engine.upload_part(bucket, key, upload_id, part_number, _chunks(body))
        return part.etag

    async def complete_upload(self, bucket: str, key: str, upload_id: str, parts: list[tuple[int, str]]
                              ) -> ObjectInfo:  # fmt: skip
        """Publish the (part number, ETag) parts as one object, in one metadata transaction.

        :raises UploadNotFound, InvalidPart, InvalidPartOrder, EntityTooSmall:"""
        version = await self._engine.complete_upload(bucket, key, upload_id, parts)
        self._forget(bucket, [key])
        return ObjectInfo.of(version)

    async def abort_upload(self, bucket: str, key: str, upload_id: str) -> None:
        """Drop the upload; its parts go to GC. :raises UploadNotFound:"""
        await self._engine.abort_upload(bucket, key, upload_id)

    # reads -----------------------------------------------------------------------------------

    async def head(self, bucket: str, key: str, version_id: str | None = None) -> ObjectInfo | None:
        version = await self._lookup(bucket, key, version_id, fresh=version_id is None)
        return None if version is None else ObjectInfo.of(version)

    async def _lookup(self, bucket: str, key: str, version_id: str | None, fresh: bool = True) -> Version | None:
        """The version with its layout; a given version id is immutable, so its layout is served from cache."""
        cached = self._layouts.get((bucket, key, version_id or ""))
        if cached is not None and not fresh and time.monotonic() - cached[0] < LAYOUT_TTL_S:
            return cached[1]
        version = await self._engine.head(bucket, key, version_id)
        if version is None or version.delete_marker:
            return None
        self._layouts[(bucket, key, version.version_id)] = (time.monotonic(), version)
        while len(self._layouts) > LAYOUTS_KEPT:
            self._layouts.popitem(last=False)
        return version

    def _relayout(self, version: Version) -> None:
        """A version whose shards moved since we cached it: the cache takes its new layout."""
        cache_key = (version.bucket, version.key, version.version_id)
        if cache_key in self._layouts:
            self._layouts[cache_key] = (time.monotonic(), version)

    async def pin(self, bucket: str, keys: Sequence[str]) -> list[Pinned | None]:
        """Each key's latest version as it is now (None: no such object), for one metadata call per 1,000
        keys: read through a pin, an object gives these bytes whatever is written since (``batch.Pinned``).
        What a reader of several objects needs to read one consistent state of them, on any bucket (an
        unversioned one's versions all have the id ``null``). :raises BucketNotFound:"""
        return _pins(bucket, keys, await self._engine.head_many([(bucket, key, None) for key in keys]))

    async def _version(self, bucket: str, key: str, version_id: str | None, snapshot: str | None = None,
                       pinned: Pinned | None = None) -> Version:  # fmt: skip
        if pinned is not None:
            if (pinned.bucket, pinned.key) != (bucket, key) or version_id is not None or snapshot is not None:
                raise ValueError(f"{bucket}/{key}: read through a pin of {pinned.bucket}/{pinned.key}, alone")
            return pinned.version
        if snapshot is not None:
            lookup = (await self._engine.head_pinned(bucket, snapshot, [key]))[0]
            if lookup.version is None:
                raise codec.error_from_wire({"type": lookup.error, "message": lookup.message})
            return lookup.version
        version = await self._lookup(bucket, key, version_id, fresh=version_id is None)
        if version is None:
            raise errors.ObjectNotFound(f"{bucket}/{key} does not exist")
        return version

    async def stream(self, bucket: str, key: str, start: int = 0, end: int | None = None,
                     version_id: str | None = None, snapshot: str | None = None, member: str | None = None,
                     pinned: Pinned | None = None) -> AsyncIterator[bytes | memoryview]:  # fmt: skip
        """Bytes ``[start, end)`` in order, read ahead from the data shards, with bounded memory; of the latest
        version, the one named, the one ``snapshot`` (an id from :meth:`snapshot`) pinned, or the one a
        :meth:`pin` found; of the whole
        object, or of the tar ``member`` of that name (a range read: the archive was indexed when written).

        Pieces are read-only memoryviews of the verified cells (a cell at most each), not copies;
        ``bytes(piece)`` where a ``bytes`` is needed. :raises ObjectNotFound: (also: no such member)"""
        version = await self._version(bucket, key, version_id, snapshot, pinned)
        base, size = 0, version.size
        if member is not None:
            span = (await self._engine.tar_member_spans(bucket, [(key, version.seq, member)]))[0]
            if span is None:
                raise errors.ObjectNotFound(f"{bucket}/{key} has no tar member {member!r} (or no tar index)")
            base, size = span
        end = size if end is None else min(end, size)
        async for piece in self._engine.read(version, base + start, base + max(start, end)):
            yield piece

    async def get(self, bucket: str, key: str, start: int = 0, end: int | None = None,
                  version_id: str | None = None, snapshot: str | None = None, member: str | None = None,
                  pinned: Pinned | None = None) -> bytes:  # fmt: skip
        """:meth:`stream`'s bytes, joined."""
        pieces = self.stream(bucket, key, start, end, version_id, snapshot, member, pinned)
        return b"".join([piece async for piece in pieces])

    async def tar_members(self, bucket: str, key: str, version_id: str | None = None, snapshot: str | None = None
                          ) -> list[tuple[str, int, int]]:  # fmt: skip
        """(name, offset, size) of each member of a tar archive indexed when written, by offset; ``[]``: none.
        Of the latest version, the one named, or the one ``snapshot`` pinned."""
        return await self._engine.list_tar_members(bucket, key, version_id, snapshot)

    async def get_into(self, bucket: str, key: str, buffer: bytearray | memoryview, start: int = 0,
                       version_id: str | None = None, snapshot: str | None = None,
                       pinned: Pinned | None = None) -> int:  # fmt: skip
        """Read into ``buffer`` (e.g. pinned host memory) from ``start``; returns the bytes written."""
        view = memoryview(buffer).cast("B")
        filled = 0
        async for piece in self.stream(bucket, key, start, start + len(view), version_id, snapshot, pinned=pinned):
            view[filled : filled + len(piece)] = piece
            filled += len(piece)
        return filled

    def get_batch(self, items: Iterable[BatchItem | tuple], *, ordered: bool = True,
                  window: int = batch.WINDOW_DEFAULT) -> AsyncIterator[BatchResult]:  # fmt: skip
        """Many objects or ranges, from any buckets, each as a ``BatchResult`` with its bytes or its own
        error (a missing key does not stop the batch): one metadata call per 1,000 items, small objects
        inline in its answer, the others read in waves of one request per storage node, at most ``window``
        items held; in request order, or as each completes
        with ``ordered=False`` (``apollo.client.batch``)."""
        return batch.read_batch(self._engine, items, ordered=ordered, window=window)

    async def list(self, bucket: str, prefix: str = "", delimiter: str = "", start_after: str = "",
                   snapshot: str | None = None) -> AsyncIterator[ObjectInfo | str]:  # fmt: skip
        """Every object (and, with a delimiter, every common prefix as a ``str``) in key order, page by page:
        of the bucket now, or of a snapshot of it."""
        marker = start_after
        while True:
            if snapshot is None:
                page = await self._engine.list_objects(bucket, prefix, delimiter, marker, limits.list_keys_max)
            else:
                page = await self._engine.list_snapshot(bucket, snapshot, prefix, delimiter, marker)
            entries = [ObjectInfo.of(v) for v in page.entries] + list(page.prefixes)
            for entry in sorted(entries, key=lambda e: e if isinstance(e, str) else e.key):
                yield entry
            if not page.truncated:
                return
            marker = page.next_marker

    # transactions over many objects (``apollo.client.transaction``) ---------------------------------

    def transaction(self, bucket: str, *, ttl_s: float | None = None, if_prefix_absent: str | None = None
                    ) -> Transaction:  # fmt: skip
        """A new transaction, begun on entering ``async with`` (or ``await txn.begin()``): puts and deletes
        staged into it are invisible to every reader until it commits, then all appear at once. Leaving the
        ``async with`` normally commits it; an exception aborts it. ``txn.id`` is what other processes
        :meth:`join_transaction` with. ``ttl_s``: how long it may stay open (the service grants
        ``limits.txn_ttl_s_min`` to ``txn_ttl_s_max``; default 1 h); then it is aborted. ``if_prefix_absent``:
        the commit fails (PreconditionFailed, nothing applied) if any object exists under that prefix then.
        :raises BucketNotFound, InvalidRequest: (on begin; ``limits.txns_open_per_key_max``)"""
        return Transaction(self._engine, _chunks, bucket, ttl_s=ttl_s, if_prefix_absent=if_prefix_absent)

    def join_transaction(self, bucket: str, txn_id: str) -> Transaction:
        """Another process's transaction, to stage into: with the same access key that began it. Leaving
        ``async with`` never commits or aborts a joined transaction (``commit()``/``abort()`` still may).
        :raises TransactionNotFound, TransactionClosed, AccessDenied: (on entering)"""
        return Transaction(self._engine, _chunks, bucket, txn_id=txn_id)

    # KV namespaces (``apollo.kv``, ``apollo.meta.sql_kv``) -----------------------------------------

    async def create_kv_namespace(self, bucket: str, budget_bytes: int, ttl_s: float = 0) -> KVNamespace:
        """A new bucket that is a KV namespace: at most ``budget_bytes`` of values, each gone ``ttl_s`` after it
        was written (0: never), the least recently read evicted first (``apollo.kv``).
        :raises BucketExists, InvalidRequest, AccessDenied: (s3:CreateBucket)"""
        return await self._engine.create_kv_namespace(bucket, budget_bytes, ttl_s)

    async def set_kv_namespace(self, bucket: str, budget_bytes: int, ttl_s: float | None = None) -> KVNamespace:
        """Change a namespace's budget (a smaller one evicts at once) and TTL (None: keep it).
        :raises BucketNotFound, InvalidRequest, AccessDenied: (s3:PutLifecycleConfiguration)"""
        return await self._engine.set_kv_namespace(bucket, budget_bytes, ttl_s)

    async def kv_namespace(self, bucket: str) -> KVNamespace:
        """Its budget, TTL, and the bytes and values it holds. :raises BucketNotFound, InvalidRequest:"""
        return await self._engine.get_kv_namespace(bucket)

    async def kv_lookup(self, bucket: str, keys: Sequence[str]) -> list[Pinned | None]:
        """Each key's value in a KV namespace (None: absent, expired or evicted), as :meth:`pin` finds it, for one
        metadata call per 1,000 keys, recorded as read. :raises BucketNotFound, InvalidRequest: :raises
        AccessDenied: a key the caller may not read (s3:GetObject): the lookup is refused whole, before it runs."""
        return _pins(bucket, keys, await self._engine.kv_lookup(bucket, list(keys)))

    async def kv_prefix_hits(self, bucket: str, keys: Sequence[str]) -> int:
        """How many of ``keys``, from the first, hold values in a KV namespace: one metadata call per 1,000
        keys. :raises BucketNotFound, InvalidRequest:"""
        return await self._engine.kv_prefix_hits(bucket, list(keys))

    # snapshots -------------------------------------------------------------------------------

    async def snapshot(self, bucket: str, prefix: str = "") -> Snapshot:
        """Pin exactly the objects under ``prefix`` now (their versions, by reference: no data is copied), in
        one metadata transaction; read them later with ``snapshot=`` on ``get``, ``list`` and ``get_batch``
        items, whatever is written or deleted meanwhile, until :meth:`delete_snapshot`.
        :raises BucketNotFound, InvalidRequest: (``limits.snapshot_objects_max``, ``snapshots_per_bucket_max``)"""
        return await self._engine.create_snapshot(bucket, prefix)

    async def snapshots(self, bucket: str) -> list[Snapshot]:
        """The bucket's snapshots, oldest first."""
        return await self._engine.list_snapshots(bucket)

    async def delete_snapshot(self, bucket: str, snapshot_id: str) -> None:
        """Unpin: versions deleted since, and kept by no other snapshot, go to GC. Only the key that took a
        snapshot may delete it. :raises SnapshotNotFound, AccessDenied:"""
        await self._engine.delete_snapshot(bucket, snapshot_id)
