"""ApolloClient: the one implementation of object operations over meta + storage nodes.

The S3 gateway is a user of this class; so will be the fsspec and PyTorch
integrations. Data moves between the caller and the drives; the metadata
service only sees allocate / commit / lookup.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from apollo import errors, limits
from apollo.client.context import ClientContext
from apollo.client.reader import read_range
from apollo.client.writer import ObjectWriter, WriteResult
from apollo.invariant import invariant
from apollo.proto.layout import Scheme
from apollo.proto.records import Conditions, ObjectAttrs, Version


class ApolloClient:
    def __init__(self, ctx: ClientContext, scheme: Scheme, cell_size: int = limits.cell_size_bytes_default,
                 write_quorum: int | None = None) -> None:  # fmt: skip
        """``write_quorum``: shards that must be durable to acknowledge a write (default and minimum k+1)."""
        self.ctx = ctx
        self.meta = ctx.meta
        self.scheme = scheme
        self.cell_size = cell_size
        self.write_quorum = write_quorum

    def _writer(self, identity: dict, checksummers: dict | None, inline: bool = True, md5: bool = True
                ) -> ObjectWriter:  # fmt: skip
        return ObjectWriter(
            self.ctx, self.scheme, self.cell_size, identity,
            inline_max=limits.inline_object_bytes_max if inline else -1, checksummers=checksummers,
            quorum=self.write_quorum, md5=md5,
        )  # fmt: skip

    async def put_object(
        self,
        bucket: str,
        key: str,
        body: AsyncIterator[bytes],
        attrs: ObjectAttrs,
        *,
        conditions: Conditions | None = None,
        checksummers: dict | None = None,
        verify=None,
        md5: bool = True,
    ) -> tuple[Version, WriteResult]:
        """Stream ``body`` to drives, then commit; ``verify(result)`` may raise to refuse the bytes.

        ``md5=False``: the ETag is not the content's MD5 (see :class:`ObjectWriter`).

        :raises BucketNotFound, PreconditionFailed, InsufficientStorage, BadDigest:
        """
        await self.meta.get_bucket(bucket)  # fail before moving any bytes
        if conditions and conditions.if_none_match_star:
            current = await self.meta.get_version(bucket, key, with_data=False)
            if current is not None and not current.delete_marker:
                raise errors.PreconditionFailed("If-None-Match: * and the key exists")
        writer = self._writer({"bucket": bucket, "key": key}, checksummers, md5=md5)
        result = await writer.write(body)
        try:
            if verify is not None:
                verify(result)
            attrs.checksums.update(result.checksums)
            version = await self.meta.commit_version(
                bucket, key, size=result.size, etag=result.etag, attrs=attrs, data=result.data,
                now=time.time(), conditions=conditions,
            )  # fmt: skip
        except BaseException:
            await self._release(result)
            raise
        return version, result

    async def _release(self, result: WriteResult) -> None:
        if result.data.segments:
            await self.meta.abandon_segments([s.segment_id for s in result.data.segments], time.time())

    async def head(self, bucket: str, key: str, version_id: str | None = None) -> Version | None:
        return await self.meta.get_version(bucket, key, version_id)

    def read(self, version: Version, start: int = 0, end: int | None = None) -> AsyncIterator[bytes | memoryview]:
        """Stream bytes ``[start, end)`` of a version returned by :meth:`head`."""
        invariant(version.data is not None, "read() needs a version loaded with its data")
        return read_range(self.ctx, version.data, start, version.size if end is None else end)

    async def upload_part(
        self, bucket: str, key: str, upload_id: str, part_number: int, body: AsyncIterator[bytes],
        *, checksummers: dict | None = None, verify=None,
    ) -> WriteResult:  # fmt: skip
        await self.meta.get_upload(bucket, key, upload_id)
        writer = self._writer({"bucket": bucket, "key": key, "upload_id": upload_id, "part": part_number},
                              checksummers, inline=False)  # fmt: skip
        result = await writer.write(body)
        try:
            if verify is not None:
                verify(result)
            await self.meta.commit_part(
                upload_id, part_number, size=result.size, etag=result.etag, checksums=result.checksums,
                data=result.data, now=time.time(),
            )  # fmt: skip
        except BaseException:
            await self._release(result)
            raise
        return result
