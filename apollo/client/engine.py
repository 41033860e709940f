"""ObjectEngine: the one implementation of the object API, over the metadata service and the storage nodes.

Both front doors are users of this class and of nothing below it: the S3 gateway's handlers
(``apollo.gateway``) and the native client (``apollo.client.native``); ``tests/test_tidy.py``
fails on a ``.meta.`` access in either. What an operation checks, in which order, which
metadata calls it makes and which clock it stamps is therefore decided here, once. Methods
take plain values and return the records of ``apollo.proto.records``; the front doors turn
those into XML and headers, or into ``ObjectInfo``. Bytes move between the caller and the
drives; the metadata service sees only bucket and key operations, allocate, commit and lookup.

Call sequence (each step names its metadata calls; errors are ``apollo.errors`` classes)::

    await engine.create_bucket(b)                      # create_bucket          BucketExists
    version, result = await engine.put_object(b, k, chunks, attrs, conditions=c)
        # 1) get_bucket: BucketNotFound before any byte moves
        # 2) If-None-Match: * only: get_version, PreconditionFailed before any byte moves
        # 3) the writer streams to the drives (allocate_segment per segment; inline when small)
        # 4) verify(result) may refuse the bytes; 5) commit_version checks the conditions again
        #    inside its transaction: PreconditionFailed, ObjectNotFound (If-Match on a missing key)
        # a failure after 3) hands the written segments to GC at once (abandon_segments)
    version = await engine.head(b, k, version_id)      # get_version: None, a delete marker, or a version
    async for piece in engine.read(version, start, end): ...   # no metadata call; InsufficientFragments
    await engine.delete_object(b, k, version_id)       # delete_object: a marker on a versioned bucket

    upload_id = await engine.create_upload(b, k, attrs)          # create_upload       BucketNotFound
    part = await engine.upload_part(b, k, upload_id, n, chunks)  # get_upload, allocate, commit_part
    #   or copy_part(source, await engine.get_upload(...), n)    # the same, the upload looked up once
    version = await engine.complete_upload(b, k, upload_id, parts)   # complete_upload: InvalidPart,
    #   InvalidPartOrder, EntityTooSmall, PreconditionFailed; or abort_upload(b, k, upload_id)

Every call on a missing bucket raises ``BucketNotFound``; on a missing upload ``UploadNotFound``.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable

from apollo import errors, limits
from apollo.client.context import ClientContext
from apollo.client.reader import read_range
from apollo.client.writer import ObjectWriter, WriteResult
from apollo.invariant import invariant
from apollo.proto.layout import Scheme
from apollo.proto.records import (
    Bucket,
    Conditions,
    ConsoleSession,
    DeleteResult,
    KeyRights,
    KVNamespace,
    ListPage,
    Lookup,
    ObjectAttrs,
    Part,
    Snapshot,
    TxnInfo,
    Upload,
    Version,
)
from apollo.proto.tar_index import TarIndexer

Body = AsyncIterator[bytes | memoryview]


async def _fed_to(indexer: TarIndexer, body: Body) -> Body:
    """``body``, each chunk also fed to ``indexer`` on its way to the drives."""
    async for chunk in body:
        indexer.feed(chunk)
        yield chunk


async def _in_calls(call: Callable[[list], Awaitable[list]], items: list) -> list:
    """``call``'s answers for ``items``, asked ``limits.batch_lookup_items_max`` at a time (the most one batch
    lookup may name), one metadata call after another, joined in order."""
    answers: list = []
    step = limits.batch_lookup_items_max
    for first in range(0, len(items), step):
        answers += await call(items[first : first + step])
    return answers


Verify = Callable[[WriteResult], None]  # raises to refuse the written bytes before they are committed
ChecksumOf = Callable[[Upload, list[Part]], dict[str, str]]


class ObjectEngine:
    def __init__(self, ctx: ClientContext, scheme: Scheme, cell_size: int = limits.cell_size_bytes_default,
                 write_quorum: int | None = None, *, clock: Callable[[], float] = time.time) -> None:  # fmt: skip
        """``write_quorum``: shards that must be durable to acknowledge a write (default and minimum k+1).

        ``clock`` stamps every record this engine writes (creation and modification times, GC due
        times): the front doors never pass a time, so both stamp the same way."""
        self.ctx = ctx
        self._meta = ctx.meta
        self.scheme = scheme
        self.cell_size = cell_size
        self.write_quorum = write_quorum
        self._clock = clock
        # Told of a version looked up again because its layout had changed under a read: a caller that caches
        # layouts (the native client) replaces its copy, or every read of it would find the old one first.
        self.on_relayout: Callable[[Version], None] = lambda version: None

    # buckets ---------------------------------------------------------------------------------

    async def create_bucket(self, bucket: str, owner: str = "") -> None:
        """``owner``: the access key of the S3 request (a gateway says it; on a native client's own call the
        metadata service takes the calling key, whatever is sent). :raises BucketExists:"""
        await self._meta.create_bucket(bucket, self._clock(), owner)

    async def get_bucket(self, bucket: str) -> Bucket:
        """:raises BucketNotFound:"""
        return await self._meta.get_bucket(bucket)

    async def list_buckets(self) -> list[Bucket]:
        return await self._meta.list_buckets()

    async def delete_bucket(self, bucket: str) -> None:
        """Its multipart uploads in progress go with it. :raises BucketNotFound, BucketNotEmpty:"""
        await self._meta.delete_bucket(bucket, self._clock())

    async def get_versioning(self, bucket: str) -> str:
        """``""`` (never enabled), ``"Enabled"`` or ``"Suspended"``. :raises BucketNotFound:"""
        return (await self._meta.get_bucket(bucket)).versioning

    async def set_versioning(self, bucket: str, status: str) -> None:
        """``status``: ``"Enabled"`` or ``"Suspended"``. :raises BucketNotFound:"""
        await self._meta.set_versioning(bucket, status)

    async def set_bucket_policy(self, bucket: str, policy: str) -> None:
        """``policy``: a document ``apollo.proto.policy`` accepted for this bucket; "" removes it.
        :raises BucketNotFound:"""
        await self._meta.set_bucket_policy(bucket, policy)

    async def set_bucket_tags(self, bucket: str, tags: dict[str, str]) -> None:
        """Replace the bucket's tags ({} removes them). :raises BucketNotFound:"""
        await self._meta.set_bucket_tags(bucket, tags)

    # objects: writes -------------------------------------------------------------------------

    async def put_object(
        self,
        bucket: str,
        key: str,
        body: Body,
        attrs: ObjectAttrs,
        *,
        conditions: Conditions | None = None,
        checksummers: dict | None = None,
        verify: Verify | None = None,
        md5: bool = True,
        tar_index: bool | None = None,
    ) -> tuple[Version, WriteResult]:
        """Stream ``body`` to drives, then commit; ``verify(result)`` may raise to refuse the bytes.

        ``md5=False``: the ETag is not the content's MD5 (see :class:`ObjectWriter`). ``tar_index``: record
        the member index of a tar archive as it streams past (``apollo.proto.tar_index``), committed with
        the version; None: for keys ending in ``.tar``, kept only if the bytes are a whole archive; True: the
        bytes must be one (else InvalidRequest, nothing committed).

        :raises BucketNotFound, PreconditionFailed, ObjectNotFound, InsufficientStorage, BadDigest:
        """
        try:
            await self._meta.get_bucket(bucket)  # fail before moving any bytes
        except errors.AccessDenied:
            pass  # a key that may put but not list (s3:ListBucket): its commit is held to PutObject all the same
        if conditions and conditions.if_none_match_star:  # early only: the commit checks it for real
            current = await self._meta.get_version(bucket, key, with_data=False)
            if current is not None and not current.delete_marker:
                raise errors.PreconditionFailed("If-None-Match: * and the key exists")
        indexer = TarIndexer() if tar_index or (tar_index is None and key.endswith(".tar")) else None
        if indexer is not None:
            body = _fed_to(indexer, body)
        result = await self._writer({"bucket": bucket, "key": key}, checksummers, md5=md5).write(body)
        try:
            if verify is not None:
                verify(result)
            members = None
            if indexer is not None:
                members = [[m.name, m.offset, m.size] for m in indexer.members()] or None
                if tar_index and indexer.error:
                    raise errors.InvalidRequest(f"{bucket}/{key} was to be indexed as a tar archive: {indexer.error}")
            attrs.checksums.update(result.checksums)
            version = await self._meta.commit_version(
                bucket, key, size=result.size, etag=result.etag, attrs=attrs, data=result.data,
                now=self._clock(), conditions=conditions, members=members,
            )  # fmt: skip
        except BaseException:
            await self._release(result)
            raise
        return version, result

    async def copy_object(
        self, source: Version, bucket: str, key: str, attrs: ObjectAttrs, *,
        conditions: Conditions | None = None, checksummers: dict | None = None,
    ) -> tuple[Version, WriteResult]:  # fmt: skip
        """A new object with ``source``'s bytes (a version from :meth:`head`, with its data) and ``attrs``.

        The bytes are read and written again, so the copy shares no segment with its source and
        either may be deleted alone. :raises: as :meth:`put_object`, and InsufficientFragments.
        """
        return await self.put_object(bucket, key, self.read(source), attrs, conditions=conditions,
                                     checksummers=checksummers)  # fmt: skip

    def _writer(self, identity: dict, checksummers: dict | None, inline: bool = True, md5: bool = True,
                txn: tuple[str, str] | None = None) -> ObjectWriter:  # fmt: skip
        return ObjectWriter(
            self.ctx, self.scheme, self.cell_size, identity,
            inline_max=limits.inline_object_bytes_max if inline else -1, checksummers=checksummers,
            quorum=self.write_quorum, md5=md5, txn=txn,
        )  # fmt: skip

    async def _release(self, result: WriteResult) -> None:
        """Bytes that will never be committed: their segments become due for GC now, not at the pending TTL."""
        if result.data.segments:
            await self._meta.abandon_segments([s.segment_id for s in result.data.segments], self._clock())

    # objects: reads, deletes, tags, listings -------------------------------------------------

    async def head(self, bucket: str, key: str, version_id: str | None = None, *, with_data: bool = True
                   ) -> Version | None:  # fmt: skip
        """The latest version (possibly a delete marker) or the one named; None when there is none.

        ``with_data=False`` leaves out the layout (and read tokens): for existence checks only.
        :raises BucketNotFound:
        """
        return await self._meta.get_version(bucket, key, version_id, with_data=with_data)

    async def head_many(self, items: list[tuple[str, str, str | None]]) -> list[Lookup]:
        """:meth:`head` of each (bucket, key, version id or None) with its layout, in
        ``limits.batch_lookup_items_max`` items per metadata call; each item's own ``Lookup`` says why it has
        no version (no bucket, no object, a delete marker, or, for a native client's key, AccessDenied)."""
        return await _in_calls(self._meta.get_versions, items)

    def read(self, version: Version, start: int = 0, end: int | None = None) -> AsyncIterator[bytes | memoryview]:
        """Stream bytes ``[start, end)`` of a version returned by :meth:`head`; no metadata call, unless its
        layout has gone stale (:meth:`_read_following_moves`)."""
        invariant(version.data is not None, "read() needs a version loaded with its data")
        return self._read_following_moves(version, start, version.size if end is None else end)

    async def _read_following_moves(self, version: Version, start: int, end: int) -> AsyncIterator[bytes | memoryview]:
        """``read_range``, resumed once from where it stopped with the version looked up again, when a segment
        had too few readable shards and its layout has changed since ``version`` was read: the repair worker
        moves healthy shards (drains, rebalancing) and deletes the old copy once the move is committed, so a
        reader holding the layout from before (a cached one, or one read a moment earlier) finds it gone,
        which alone costs nothing, but beside unreachable shards can leave fewer than k.

        :raises InsufficientFragments: also with the current layout, or when it has not changed."""
        position = start
        try:
            async for piece in read_range(self.ctx, version.data, start, end):
                position += len(piece)
                yield piece
            return
        except errors.InsufficientFragments:
            current = await self._meta.get_version(version.bucket, version.key, version.version_id)
            if current is None or current.data is None or current.data.segments == version.data.segments:
                raise
            self.on_relayout(current)
        async for piece in read_range(self.ctx, current.data, position, end):
            yield piece

    async def delete_object(self, bucket: str, key: str, version_id: str | None = None) -> DeleteResult:
        """S3's DELETE: without a version id, a delete marker on a versioned bucket and removal otherwise;
        with one, that version (or marker) goes. :raises BucketNotFound:"""
        return await self._meta.delete_object(bucket, key, version_id, self._clock())

    async def rename_object(self, bucket: str, key: str, dest_key: str, *, conditions: Conditions | None = None
                            ) -> Version:  # fmt: skip
        """Move the latest version of ``key`` to ``dest_key`` in one metadata transaction (``rename_object``):
        no byte moves. :raises ObjectNotFound, PreconditionFailed, RenameRefused: (a versioned bucket, or a
        version a snapshot pins: copy and delete instead)"""
        return await self._meta.rename_object(bucket, key, dest_key, self._clock(), conditions)

    async def delete_objects(self, bucket: str, objects: list[tuple[str, str | None]]
                             ) -> list[DeleteResult | Exception]:  # fmt: skip
        """Delete each (key, version id), in order; a key that fails gives its exception and the rest go on.

        :raises BucketNotFound: before any key is deleted.
        """
        await self._meta.get_bucket(bucket)
        results: list[DeleteResult | Exception] = []
        for key, version_id in objects:
            try:
                results.append(await self.delete_object(bucket, key, version_id))
            except Exception as exc:  # noqa: BLE001 - reported per key, as S3 does
                results.append(exc)
        return results

    async def set_tags(self, bucket: str, key: str, version_id: str | None, tags: dict[str, str]) -> str:
        """Replace the tag set of the latest version or the one named; returns the version id it applied to.

        :raises BucketNotFound, ObjectNotFound, VersionNotFound:
        """
        return await self._meta.set_tags(bucket, key, version_id, tags)

    async def clear_tags(self, bucket: str, key: str, version_id: str | None) -> str:
        """:meth:`set_tags` with no tags."""
        return await self.set_tags(bucket, key, version_id, {})

    async def list_objects(self, bucket: str, prefix: str = "", delimiter: str = "", after: str = "",
                           max_keys: int = limits.list_keys_max) -> ListPage:  # fmt: skip
        """One page of the latest versions (no delete markers) after key ``after``; with a delimiter,
        keys sharing a prefix up to it come as one of ``prefixes``. :raises BucketNotFound:"""
        return await self._meta.list_objects(bucket, prefix, delimiter, after, max_keys)

    async def list_versions(self, bucket: str, prefix: str, delimiter: str, key_marker: str, version_marker: str,
                            max_keys: int) -> ListPage:  # fmt: skip
        """One page of every version and delete marker, newest first within a key. :raises BucketNotFound:"""
        return await self._meta.list_versions(bucket, prefix, delimiter, key_marker, version_marker, max_keys)

    # snapshots (``apollo.meta.sql_snapshots``) ---------------------------------------------------

    async def create_snapshot(self, bucket: str, prefix: str = "") -> Snapshot:
        """Pin the latest version of every object under ``prefix``, in one metadata transaction.
        :raises BucketNotFound, InvalidRequest: (too many objects, or snapshots in the bucket)"""
        return await self._meta.create_snapshot(bucket, prefix, self._clock())

    async def get_snapshot(self, bucket: str, snapshot_id: str) -> Snapshot:
        """:raises BucketNotFound, SnapshotNotFound:"""
        return await self._meta.get_snapshot(bucket, snapshot_id)

    async def list_snapshots(self, bucket: str) -> list[Snapshot]:
        """:raises BucketNotFound:"""
        return await self._meta.list_snapshots(bucket)

    async def delete_snapshot(self, bucket: str, snapshot_id: str) -> None:
        """Unpin; the versions only it kept go to GC. :raises BucketNotFound, SnapshotNotFound, AccessDenied:"""
        await self._meta.delete_snapshot(bucket, snapshot_id, self._clock())

    async def list_snapshot(self, bucket: str, snapshot_id: str, prefix: str = "", delimiter: str = "",
                            after: str = "", max_keys: int = limits.list_keys_max) -> ListPage:  # fmt: skip
        """One page of a snapshot's objects, as :meth:`list_objects`. :raises BucketNotFound, SnapshotNotFound:"""
        return await self._meta.list_snapshot(bucket, snapshot_id, prefix, delimiter, after, max_keys)

    async def tar_member_spans(self, bucket: str, items: list[tuple[str, int, str]]) -> list[list[int] | None]:
        """``[offset, size]`` in its archive of each (key, ``Version.seq``, member name), or None: no such
        member, no index, or (for a native client's key) not readable. :raises BucketNotFound:"""
        return await _in_calls(lambda chunk: self._meta.get_tar_members(bucket, [list(item) for item in chunk]), items)

    async def list_tar_members(self, bucket: str, key: str, version_id: str | None = None,
                               snapshot_id: str | None = None) -> list[tuple[str, int, int]]:  # fmt: skip
        """(name, offset, size) of each member of a tar archive written with its index, by offset: of its
        latest version, the one named, or the one a snapshot pinned. :raises BucketNotFound, ObjectNotFound:"""
        found = await self._meta.list_tar_members(bucket, key, version_id, snapshot_id)
        return [tuple(member) for member in found]

    async def head_pinned(self, bucket: str, snapshot_id: str, keys: list[str]) -> list[Lookup]:
        """The version of each key a snapshot pinned, with its layout, as :meth:`head_many` answers.
        :raises BucketNotFound, SnapshotNotFound:"""
        return await _in_calls(lambda chunk: self._meta.get_snapshot_versions(bucket, snapshot_id, chunk), keys)

    # KV namespaces: a bucket with a byte budget, a TTL and LRU eviction (``apollo.meta.sql_kv``) ----------

    async def create_kv_namespace(self, bucket: str, budget_bytes: int, ttl_s: float, owner: str = "") -> KVNamespace:
        """A new bucket that is a KV namespace, in one metadata transaction. ``owner``: as :meth:`create_bucket`.
        :raises BucketExists, InvalidRequest: (bounds)"""
        return await self._meta.create_kv_namespace(bucket, budget_bytes, ttl_s, self._clock(), owner)

    async def set_kv_namespace(self, bucket: str, budget_bytes: int, ttl_s: float | None) -> KVNamespace:
        """``ttl_s`` None: keep it. :raises BucketNotFound, InvalidRequest: (bounds; not a KV namespace)"""
        return await self._meta.set_kv_namespace(bucket, budget_bytes, ttl_s, self._clock())

    async def get_kv_namespace(self, bucket: str) -> KVNamespace:
        """:raises BucketNotFound, InvalidRequest: (not a KV namespace)"""
        return await self._meta.get_kv_namespace(bucket)

    async def kv_lookup(self, bucket: str, keys: list[str]) -> list[Lookup]:
        """Each key's live value with its layout, as :meth:`head_many` answers, recorded as read (its recency
        ranks eviction); ``limits.batch_lookup_items_max`` keys per metadata call. :raises BucketNotFound,
        InvalidRequest:"""
        return await _in_calls(lambda chunk: self._meta.kv_lookup(bucket, chunk, self._clock()), keys)

    async def kv_prefix_hits(self, bucket: str, keys: list[str]) -> int:
        """How many of ``keys``, from the first, hold live values: one metadata call per
        ``limits.batch_lookup_items_max`` keys, none after a miss. :raises BucketNotFound, InvalidRequest:"""
        hits, step = 0, limits.batch_lookup_items_max
        for first in range(0, len(keys), step):
            chunk = keys[first : first + step]
            found = await self._meta.kv_prefix_hits(bucket, chunk, self._clock())
            hits += found
            if found < len(chunk):
                break
        return hits

    # transactions over many objects (``apollo.meta.sql_txns``) ------------------------------------

    async def begin_txn(self, bucket: str, *, ttl_s: float | None = None, if_prefix_absent: str | None = None
                        ) -> TxnInfo:  # fmt: skip
        """A new open transaction; the service clamps ``ttl_s`` to its bounds. :raises BucketNotFound,
        InvalidRequest: (``limits.txns_open_per_key_max``)"""
        return await self._meta.begin_txn(bucket, self._clock(), ttl_s=ttl_s, if_prefix_absent=if_prefix_absent)

    async def get_txn(self, bucket: str, txn_id: str) -> TxnInfo:
        """:raises TransactionNotFound, AccessDenied:"""
        return await self._meta.get_txn(txn_id, bucket)

    async def stage_put(self, txn_id: str, bucket: str, key: str, body: Body, attrs: ObjectAttrs, *,
                        if_none_match: bool = False, md5: bool = True) -> WriteResult:  # fmt: skip
        """Stream ``body`` to the drives as :meth:`put_object` does, then stage it (``stage_put``): no reader
        sees it before the transaction's commit. A failure after the bytes moved hands them to GC at once.

        :raises TransactionNotFound, TransactionClosed, AccessDenied, InsufficientStorage:
        """
        result = await self._writer({"bucket": bucket, "key": key}, None, md5=md5, txn=(bucket, txn_id)).write(body)
        try:
            attrs.checksums.update(result.checksums)
            await self._meta.stage_put(txn_id, bucket, key, size=result.size, etag=result.etag, attrs=attrs,
                                       data=result.data, now=self._clock(), if_none_match=if_none_match)  # fmt: skip
        except BaseException:
            await self._release(result)
            raise
        return result

    async def stage_delete(self, txn_id: str, bucket: str, key: str) -> TxnInfo:
        """:raises TransactionNotFound, TransactionClosed, AccessDenied:"""
        return await self._meta.stage_delete(txn_id, bucket, key, self._clock())

    async def commit_txn(self, txn_id: str, bucket: str) -> TxnInfo:
        """Every staged item visible at once. :raises PreconditionFailed, TransactionClosed, AccessDenied:"""
        return await self._meta.commit_txn(txn_id, bucket, self._clock())

    async def abort_txn(self, txn_id: str, bucket: str) -> None:
        """Staged data to GC. :raises TransactionClosed: (committed already), AccessDenied:"""
        await self._meta.abort_txn(txn_id, bucket, self._clock())

    # multipart uploads -----------------------------------------------------------------------

    async def create_upload(self, bucket: str, key: str, attrs: ObjectAttrs, *, checksum_algorithm: str = "",
                            checksum_type: str = "") -> str:  # fmt: skip
        """A new upload's id. ``checksum_algorithm``/``checksum_type``: the object checksum its parts
        carry and how they combine (COMPOSITE or FULL_OBJECT). :raises BucketNotFound:"""
        return await self._meta.create_upload(bucket, key, attrs, checksum_algorithm, self._clock(), checksum_type)

    async def get_upload(self, bucket: str, key: str, upload_id: str) -> Upload:
        """:raises BucketNotFound, UploadNotFound: (also for an upload of another bucket or key)"""
        return await self._meta.get_upload(bucket, key, upload_id)

    async def upload_part(
        self, bucket: str, key: str, upload_id: str, part_number: int, body: Body,
        *, checksummers: dict | None = None, verify: Verify | None = None,
    ) -> Part:  # fmt: skip
        """Stream one part to drives and attach it; a part number uploaded again replaces the old part.

        :raises BucketNotFound, UploadNotFound (before any byte moves), InsufficientStorage, BadDigest:
        """
        upload = await self._meta.get_upload(bucket, key, upload_id)
        return await self._write_part(upload, part_number, body, checksummers, verify)

    async def copy_part(self, source: Version, upload: Upload, part_number: int, start: int = 0,
                        end: int | None = None, *, checksummers: dict | None = None) -> Part:  # fmt: skip
        """A part made of bytes ``[start, end)`` of ``source`` (a version from :meth:`head`, with its data).

        ``upload`` is the record :meth:`get_upload` returned (its caller needed it for the checksum
        algorithm): the upload is not looked up a second time. :raises UploadNotFound, InsufficientFragments:
        """
        return await self._write_part(upload, part_number, self.read(source, start, end), checksummers, None)

    async def _write_part(self, upload: Upload, part_number: int, body: Body, checksummers: dict | None,
                          verify: Verify | None) -> Part:  # fmt: skip
        """The part as committed: its ETag, its checksums (the ones asked for) and its commit time."""
        identity = {"bucket": upload.bucket, "key": upload.key, "upload_id": upload.upload_id, "part": part_number}
        result = await self._writer(identity, checksummers, inline=False).write(body)
        now = self._clock()
        try:
            if verify is not None:
                verify(result)
            await self._meta.commit_part(
                upload.upload_id, part_number, size=result.size, etag=result.etag, checksums=result.checksums,
                data=result.data, now=now,
            )  # fmt: skip
        except BaseException:
            await self._release(result)
            raise
        return Part(part_number, result.size, result.etag, now, result.checksums)

    async def list_parts(self, upload: Upload, after: int, max_parts: int) -> tuple[list[Part], bool]:
        """One page of the parts of ``upload`` (as :meth:`get_upload` returned it, which checked its bucket
        and key) numbered above ``after``, and whether more follow."""
        return await self._meta.list_parts(upload.upload_id, after, max_parts)

    async def list_uploads(self, bucket: str, prefix: str, delimiter: str, key_marker: str, upload_marker: str,
                           max_uploads: int) -> ListPage:  # fmt: skip
        """One page of the uploads in progress, by key then initiation. :raises BucketNotFound:"""
        return await self._meta.list_uploads(bucket, prefix, delimiter, key_marker, upload_marker, max_uploads)

    async def complete_upload(self, bucket: str, key: str, upload_id: str, parts: list[tuple[int, str]], *,
                              conditions: Conditions | None = None, checksum_of: ChecksumOf | None = None
                              ) -> Version:  # fmt: skip
        """Publish the listed (part number, ETag) parts as one object, in one transaction.

        ``checksum_of(upload, chosen parts)`` gives the object's checksums from its parts' (the
        protocol layer knows how S3 combines them) and may raise to refuse the completion.
        :raises BucketNotFound, UploadNotFound, InvalidPart, InvalidPartOrder, EntityTooSmall, PreconditionFailed:
        """
        return await self._meta.complete_upload(
            bucket, key, upload_id, parts, part_size_min=limits.part_size_bytes_min, now=self._clock(),
            conditions=conditions, checksum_of=checksum_of,
        )  # fmt: skip

    async def abort_upload(self, bucket: str, key: str, upload_id: str) -> None:
        """Drop the upload; its parts' data goes to GC. :raises BucketNotFound, UploadNotFound:"""
        await self._meta.abort_upload(bucket, key, upload_id, self._clock())

    # access keys -----------------------------------------------------------------------------

    async def get_secret(self, access_key: str) -> str | None:
        """The secret of an access key, for checking request signatures (a gateway's root key may ask)."""
        return await self._meta.get_secret(access_key)

    async def put_session(self, access_key: str, secret_key: str, token_digest: str, parent: str, policy: str,
                          expires: float) -> None:  # fmt: skip
        """Store a temporary key for ``parent`` (STS AssumeRole, ``apollo.gateway.sts``)."""
        await self._meta.put_session(access_key, secret_key, token_digest, parent, policy, expires, self._clock())

    async def key_rights(self, access_key: str) -> KeyRights | None:
        """Secret, whether it is root, and identity policies of an access key; None when unknown."""
        return await self._meta.key_rights(access_key)

    # web-console sessions (service rights: the root key of a gateway, or the server's own service) --------

    async def open_console_session(self, token_digest: str, access_key: str, secret_fingerprint: str,
                                   csrf: str) -> float:  # fmt: skip
        """Record a console login (``apollo.meta.sql_console``); returns when it expires, on the service's
        clock. :raises NotFound: no such access key."""
        return await self._meta.open_console_session(token_digest, access_key, secret_fingerprint, csrf,
                                                     self._clock())  # fmt: skip

    async def console_session(self, token_digest: str) -> ConsoleSession | None:
        """The live console session whose token has this SHA-256, or None."""
        return await self._meta.console_session(token_digest, self._clock())

    async def close_console_session(self, token_digest: str) -> None:
        await self._meta.close_console_session(token_digest)
