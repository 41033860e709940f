"""``apollo://bucket/key``: an fsspec filesystem on the native direct-path client.

Every library that takes an fsspec URL (pandas, pyarrow, Dask, Hugging Face ``datasets``, PyTorch's
``FsspecWriter`` for distributed checkpoints, WebDataset through ``fsspec.open``) reads and writes Apollo
without the S3 gateway: bytes move between this process and the storage nodes, the metadata service sees
lookups and commits only. The model is s3fs: the same methods, the same info records (``ETag``,
``LastModified``, ``ContentType``), directories as key prefixes.

    import fsspec
    fs = fsspec.filesystem("apollo")            # APOLLO_ENDPOINT, APOLLO_ACCESS_KEY, APOLLO_SECRET_KEY
    with fs.open("apollo://data/shard-0001.tar") as f:
        f.seek(4096); sample = f.read(65536)   # one range read, only the cells it needs
    pandas.read_parquet("apollo://data/table.parquet")

Configuration: constructor arguments ``endpoint`` (one or more metadata URLs, comma-separated: an
``apollo server`` or a cluster's ``apollo meta``), ``key``, ``secret``, ``client_kwargs`` (passed to
``AsyncClient``: ``scheme``, ``write_quorum``...), else the environment (``APOLLO_ENDPOINT``, falling back
to ``APOLLO_META_URL`` as ``apollo.client.from_environment`` reads it).

Life cycle: instances are fsspec's ``_Cached`` ones (one per arguments, process and thread). The native
client is made on first use, on the loop the calls run on (fsspec's IO thread for blocking calls). A
process forked from one that used the filesystem (PyTorch DataLoader workers fork) gets a new loop and a
new client on its first call: aiohttp sessions and the codec's thread pool do not survive ``fork``.

Object stores have no directories: a directory is a prefix that some key has under it, ``mkdir`` of a
bucket creates it and of anything else does nothing, and an empty directory cannot exist.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import mimetypes
import os
import weakref
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fsspec.asyn import AsyncFileSystem, get_loop, sync, sync_wrapper
from fsspec.callbacks import DEFAULT_CALLBACK
from fsspec.spec import AbstractBufferedFile

from apollo import errors, limits
from apollo.client import batch
from apollo.client.batch import BatchItem
from apollo.client.file_errors import translated, translated_error
from apollo.client.native import AsyncClient, ObjectInfo

READ_BLOCK_BYTES = limits.io_batch_bytes  # read-ahead of an open file: one read job of the client
WRITE_BLOCK_BYTES = limits.segment_size_bytes_max  # one multipart part = one segment, spread over its own drives
LOCAL_WRITE_BYTES = limits.io_batch_bytes  # get_file hands the local file this much per write, on a thread

# Clients a forked child inherited: their sessions belong to the parent's loop and sockets, so the child
# neither uses nor closes them (closing would run on a loop that no thread runs); kept so no finalizer runs.
_INHERITED: list[AsyncClient] = []


def _not_found(path: str) -> FileNotFoundError:
    return FileNotFoundError(errno.ENOENT, "no such object, prefix or bucket", path)


def _close_client(loop: asyncio.AbstractEventLoop, client: AsyncClient, pid: int) -> None:
    """At the instance's collection or at exit: close the session while fsspec's IO loop still runs."""
    if os.getpid() != pid or not loop.is_running():
        return
    with contextlib.suppress(Exception):
        sync(loop, client.close, timeout=2)


class ApolloFileSystem(AsyncFileSystem):
    """fsspec's ``AsyncFileSystem`` over ``apollo.client.AsyncClient``; paths are ``bucket/key``."""

    protocol = ("apollo",)
    root_marker = ""

    def __init__(self, endpoint: str | None = None, key: str | None = None, secret: str | None = None, *,
                 client_kwargs: dict[str, Any] | None = None, asynchronous: bool = False,
                 loop: asyncio.AbstractEventLoop | None = None, **kwargs: Any) -> None:  # fmt: skip
        """:raises ValueError: no endpoint or keys, neither given nor in the environment."""
        super().__init__(asynchronous=asynchronous, loop=loop, **kwargs)
        self.endpoint = endpoint or os.environ.get("APOLLO_ENDPOINT") or os.environ.get("APOLLO_META_URL")
        self.key = key or os.environ.get("APOLLO_ACCESS_KEY")
        self.secret = secret or os.environ.get("APOLLO_SECRET_KEY")
        if not (self.endpoint and self.key and self.secret):
            raise ValueError("apollo:// needs endpoint, key and secret (or APOLLO_ENDPOINT, APOLLO_ACCESS_KEY and "
                             "APOLLO_SECRET_KEY in the environment)")  # fmt: skip
        self.client_kwargs = dict(client_kwargs or {})
        self._native: AsyncClient | None = None
        self._connecting: asyncio.Lock | None = None

    # the native client, made lazily and again after fork ------------------------------------

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """fsspec's IO loop for blocking calls; in a forked child, a new one and a new client."""
        if self._pid != os.getpid():
            self._after_fork()
        return self._loop

    def _after_fork(self) -> None:
        # fsspec's own at-fork hook already dropped the parent's IO loop: get_loop() starts the child's.
        if self._native is not None:
            _INHERITED.append(self._native)
        self._native, self._connecting = None, None
        self._pid = os.getpid()
        if not self.asynchronous:
            self._loop = get_loop()

    async def _client(self) -> AsyncClient:
        if self._pid != os.getpid():
            self._after_fork()
        if self._native is None:
            if self._connecting is None:
                self._connecting = asyncio.Lock()
            async with self._connecting:
                if self._native is None:
                    native = await AsyncClient(self.endpoint, self.key, self.secret, **self.client_kwargs).connect()
                    if not self.asynchronous:
                        weakref.finalize(self, _close_client, self._loop, native, os.getpid())
                    self._native = native
        return self._native

    async def close_client(self) -> None:
        """Close the native client now (the next call makes a new one); for ``asynchronous=True`` users."""
        native, self._native = self._native, None
        if native is not None:
            await native.close()

    # paths and records -----------------------------------------------------------------------

    def split_path(self, path: str) -> tuple[str, str]:
        """``bucket/some/key`` -> ``("bucket", "some/key")``; a bucket alone has the key ``""``."""
        path = self._strip_protocol(path).lstrip("/")
        bucket, _, key = path.partition("/")
        return bucket, key

    @staticmethod
    def _file_info(bucket: str, info: ObjectInfo) -> dict[str, Any]:
        return {
            "name": f"{bucket}/{info.key}", "size": info.size, "type": "file", "ETag": info.etag,
            "LastModified": datetime.fromtimestamp(info.last_modified, UTC), "ContentType": info.content_type,
            "VersionId": info.version_id, "metadata": info.metadata,
        }  # fmt: skip

    @staticmethod
    def _dir_info(name: str) -> dict[str, Any]:
        return {"name": name.rstrip("/"), "size": 0, "type": "directory"}

    def _entry(self, bucket: str, entry: ObjectInfo | str) -> dict[str, Any]:
        """A listing entry: an object, or a common prefix (a ``str``), which is a directory."""
        return self._dir_info(f"{bucket}/{entry}") if isinstance(entry, str) else self._file_info(bucket, entry)

    def _key_of(self, path: str) -> tuple[str, str]:
        bucket, key = self.split_path(path)
        if not key:
            raise IsADirectoryError(errno.EISDIR, "a bucket is not an object", path)
        return bucket, key

    # metadata: info, listings, existence -------------------------------------------------------

    async def _info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        path = self._strip_protocol(path)
        bucket, key = self.split_path(path)
        if not bucket:
            return self._dir_info("")
        client = await self._client()
        with translated(path):
            if not key:
                if await client.bucket_exists(bucket):
                    return self._dir_info(bucket)
                raise _not_found(path)
            version_id = kwargs.get("version_id")
            info = await client.head(bucket, key, version_id)
            if info is not None:
                return self._file_info(bucket, info)
            if version_id is None and await self._has_children(client, bucket, key):
                return self._dir_info(path)
        raise _not_found(path)

    @staticmethod
    async def _has_children(client: AsyncClient, bucket: str, key: str) -> bool:
        async with contextlib.aclosing(client.list(bucket, key.rstrip("/") + "/", "/")) as entries:
            async for _ in entries:
                return True
        return False

    async def _exists(self, path: str, **kwargs: Any) -> bool:
        try:
            await self._info(path, **kwargs)
        except FileNotFoundError:
            return False
        return True

    async def _ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[dict[str, Any]] | list[str]:
        """One level: the buckets at the root; else the objects and common prefixes under ``path/``.

        ``ls`` of an object gives that object, as on a local filesystem. :raises FileNotFoundError:"""
        path = self._strip_protocol(path)
        bucket, key = self.split_path(path)
        client = await self._client()
        with translated(path):
            if not bucket:
                entries = [self._dir_info(name) for name in await client.list_buckets()]
            else:
                prefix = key.rstrip("/") + "/" if key else ""
                entries = [self._entry(bucket, e) async for e in client.list(bucket, prefix, "/")]
                if not entries and key:
                    info = await client.head(bucket, key)
                    if info is None:
                        raise _not_found(path)
                    entries = [self._file_info(bucket, info)]
        return entries if detail else [entry["name"] for entry in entries]

    async def _find(self, path: str, maxdepth: int | None = None, withdirs: bool = False, *,
                    detail: bool = False, prefix: str = "", **kwargs: Any) -> list[str] | dict[str, dict]:  # fmt: skip
        """Every object under ``path`` from one flat, paginated listing (no walk of the prefixes);
        directories, with ``withdirs``, are derived from the keys. ``prefix``: only keys under ``path``
        starting with it. With ``maxdepth`` (or at the root, over buckets) this is fsspec's walk."""
        path = self._strip_protocol(path)
        bucket, key = self.split_path(path)
        if maxdepth is not None or not bucket:
            return await super()._find(path, maxdepth=maxdepth, withdirs=withdirs, detail=detail, **kwargs)
        base = key.rstrip("/") + "/" if key else ""
        client = await self._client()
        found: dict[str, dict[str, Any]] = {}
        with translated(path):
            async for entry in client.list(bucket, base + prefix):
                info = self._file_info(bucket, entry)
                found[info["name"]] = info
                if withdirs:  # every directory between path and the key
                    parts = entry.key[len(base) :].split("/")[:-1]
                    for depth in range(1, len(parts) + 1):
                        name = f"{bucket}/{base}{'/'.join(parts[:depth])}"
                        found.setdefault(name, self._dir_info(name))
            if withdirs and found and not prefix:
                found.setdefault(path, self._dir_info(path))
            if not found and key and not prefix:  # find of an object gives the object
                info = await client.head(bucket, key)
                if info is not None:
                    found[path] = self._file_info(bucket, info)
        names = sorted(found)
        return {name: found[name] for name in names} if detail else names

    def modified(self, path: str) -> datetime:
        """When the latest version was committed (UTC)."""
        return self.info(path)["LastModified"]

    # reads -------------------------------------------------------------------------------------

    async def _cat_file(self, path: str, start: int | None = None, end: int | None = None,
                        version_id: str | None = None, **kwargs: Any) -> bytes:  # fmt: skip
        """Bytes ``[start, end)``; negative offsets count from the end (one more lookup for the size).

        Only the cells of the range are read from the data shards. :raises FileNotFoundError:"""
        bucket, key = self._key_of(path)
        client = await self._client()
        with translated(path):
            if (start is not None and start < 0) or (end is not None and end < 0):
                info = await client.head(bucket, key, version_id)
                if info is None:
                    raise _not_found(path)
                start = max(0, info.size + start) if start is not None and start < 0 else start
                end = max(0, info.size + end) if end is not None and end < 0 else end
            start = start or 0
            if end is not None and end <= start:
                return b""
            return await client.get(bucket, key, start, end, version_id=version_id)

    async def _cat_ranges(self, paths: list[str], starts: list[int] | int, ends: list[int] | int,
                          max_gap: int | None = None, batch_size: int | None = None, on_error: str = "return",
                          **kwargs: Any) -> list[bytes | Exception]:  # fmt: skip
        """Many ranges as one batch GET (``AsyncClient.get_batch``): one metadata call per 1,000 ranges and
        one request per storage node for each wave of them, at most ``batch_size`` ranges held (default:
        ``apollo.client.batch.WINDOW_DEFAULT``); results in order. A range counted
        from an object's end (negative) is read on its own, as it needs the size first. ``on_error="return"``
        gives a failed range's exception in its place, anything else raises the first."""
        starts = starts if isinstance(starts, list) else [starts] * len(paths)
        ends = ends if isinstance(ends, list) else [ends] * len(paths)
        if not len(paths) == len(starts) == len(ends):
            raise ValueError("paths, starts and ends must have the same length")
        client = await self._client()
        results: list[bytes | BaseException] = [b""] * len(paths)
        batched: list[tuple[int, BatchItem]] = []
        alone: list[int] = []
        for index, (path, start, end) in enumerate(zip(paths, starts, ends, strict=True)):
            if (start is not None and start < 0) or (end is not None and end < 0):
                alone.append(index)
                continue
            try:
                bucket, key = self._key_of(path)
            except Exception as exc:  # noqa: BLE001 - that range's error, in its place
                results[index] = exc
                continue
            if end is None or end > (start or 0):
                batched.append((index, BatchItem(bucket, key, None, start or 0, end)))
        window = batch_size if batch_size and batch_size > 0 else batch.WINDOW_DEFAULT
        answers = client.get_batch([item for _, item in batched], window=window)
        for (index, _), answer in zip(batched, [a async for a in answers], strict=True):
            if answer.ok or isinstance(answer.error, errors.InvalidRequest):  # a start past the end: b"", as cat_file
                results[index] = answer.data or b""
            else:
                results[index] = translated_error(paths[index], answer.error)
        for index, outcome in zip(alone, await asyncio.gather(
                *(self._cat_file(paths[i], starts[i], ends[i]) for i in alone), return_exceptions=True), strict=True):
            results[index] = outcome  # fmt: skip
        if on_error != "return":
            for result in results:
                if isinstance(result, BaseException):
                    raise result
        return results

    async def _get_file(self, rpath: str, lpath: str, callback=DEFAULT_CALLBACK, **kwargs: Any) -> None:
        """Stream an object to a local file, written on a thread a batch at a time; a failure removes the
        partial file. A directory (prefix) becomes a local directory."""
        if os.path.isdir(lpath):
            return
        bucket, key = self.split_path(rpath)
        client = await self._client()
        with translated(rpath):
            info = await client.head(bucket, key) if key else None
            if info is None:
                if (await self._info(rpath))["type"] == "directory":
                    os.makedirs(lpath, exist_ok=True)
                    return
                raise _not_found(rpath)
            callback.set_size(info.size)
            try:
                with open(lpath, "wb") as local:
                    batch: list[bytes | memoryview] = []
                    batched = 0
                    async for piece in client.stream(bucket, key, version_id=info.version_id):
                        batch.append(piece)
                        batched += len(piece)
                        if batched >= LOCAL_WRITE_BYTES:
                            await asyncio.to_thread(local.writelines, batch)
                            callback.relative_update(batched)
                            batch, batched = [], 0
                    await asyncio.to_thread(local.writelines, batch)
                    callback.relative_update(batched)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.remove(lpath)
                raise

    # writes ------------------------------------------------------------------------------------

    async def _pipe_file(self, path: str, value: bytes, mode: str = "overwrite", **kwargs: Any) -> None:
        """One put. ``mode="create"`` fails with ``FileExistsError`` if the key exists (checked in the commit)."""
        bucket, key = self._key_of(path)
        client = await self._client()
        with translated(path):
            await client.put(bucket, key, value, if_none_match=mode == "create",
                             content_type=kwargs.get("ContentType", "application/octet-stream"))  # fmt: skip

    async def _put_file(self, lpath: str, rpath: str, callback=DEFAULT_CALLBACK, mode: str = "overwrite",
                        **kwargs: Any) -> None:  # fmt: skip
        """A local file in one streamed put (large files become several segments, no multipart needed)."""
        if os.path.isdir(lpath):
            return  # prefixes are implicit: a local directory has nothing to create here
        bucket, key = self._key_of(rpath)
        size = os.path.getsize(lpath)
        callback.set_size(size)
        content_type = mimetypes.guess_type(lpath)[0] or "application/octet-stream"
        client = await self._client()
        with translated(rpath):
            await client.put(bucket, key, Path(lpath), content_type=content_type, if_none_match=mode == "create")
        callback.relative_update(size)

    async def _cp_file(self, path1: str, path2: str, _move: bool = False, **kwargs: Any) -> None:
        """Copy inside Apollo: the bytes go storage nodes -> this process -> storage nodes, never through a
        local file or a gateway; the copy shares no segment with its source. (``_move``: ``_mv`` reuses
        fsspec's ``_copy`` for which file goes where, and moves each one instead.)"""
        if _move:
            return await self._mv_file(path1, path2)
        source_bucket, source_key = self._key_of(path1)
        bucket, key = self._key_of(path2)
        client = await self._client()
        with translated(path1):
            await client.copy(source_bucket, source_key, bucket, key)

    async def _mv_file(self, path1: str, path2: str, **kwargs: Any) -> None:
        """In one bucket, one metadata transaction (``AsyncClient.rename``): the new name appears and the old
        one goes at once, with no byte moved, so a reader never sees both or neither (PyTorch's fsspec
        checkpoint writer commits a checkpoint by renaming its ``.metadata``). Across buckets, or where a
        rename is refused (a versioned bucket keeps the source's version; a snapshot pins it), a copy then
        a delete, which is not atomic."""
        source_bucket, source_key = self._key_of(path1)
        bucket, key = self._key_of(path2)
        if source_bucket == bucket:
            client = await self._client()
            try:
                await client.rename(bucket, source_key, key)
                return
            except errors.RenameRefused:
                pass
            except errors.ApolloError as exc:
                raise translated_error(path1, exc) from exc
        await self._cp_file(path1, path2)
        await self._rm_file(path1)

    async def _mv(self, path1: str | list[str], path2: str | list[str], recursive: bool = False,
                  maxdepth: int | None = None, **kwargs: Any) -> None:  # fmt: skip
        """fsspec's ``mv`` is a copy of everything, then a delete: here each file is moved by ``_mv_file``
        (one file moves atomically; several move one by one), to where ``copy`` would have put it."""
        if path1 == path2:
            return
        await self._copy(path1, path2, recursive=recursive, maxdepth=maxdepth, _move=True)  # errors as copy

    mv = sync_wrapper(_mv)
    mv_file = sync_wrapper(_mv_file)

    async def _rm_file(self, path: str, **kwargs: Any) -> None:
        bucket, key = self._key_of(path)
        client = await self._client()
        with translated(path):
            await client.delete(bucket, key)

    async def _rm(self, path: str | list[str], recursive: bool = False, batch_size: int | None = None,
                  maxdepth: int | None = None, **kwargs: Any) -> None:  # fmt: skip
        """Bulk delete: the expanded keys of each bucket in batches of ``limits.delete_objects_keys_max``;
        names that are only prefixes delete nothing. A bucket named with ``recursive`` goes too, after
        its keys. :raises FileNotFoundError: nothing matched; the first key that failed, after the rest."""
        paths = await self._expand_path(path, recursive=recursive, maxdepth=maxdepth)
        by_bucket: dict[str, list[str]] = {}
        buckets: list[str] = []
        for name in paths:
            bucket, key = self.split_path(name)
            if key:
                by_bucket.setdefault(bucket, []).append(key)
            elif bucket and recursive:
                buckets.append(bucket)
        client = await self._client()
        failures: list[Exception] = []
        for bucket, keys in by_bucket.items():
            for start in range(0, len(keys), limits.delete_objects_keys_max):
                with translated(bucket):
                    results = await client.delete_many(bucket, keys[start : start + limits.delete_objects_keys_max])
                failures += [r for r in results if r is not None]
        for bucket in buckets:
            with translated(bucket):
                await client.delete_bucket(bucket)
        if failures:
            raise failures[0]

    async def _mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        """A bucket is created; below a bucket nothing is (prefixes exist while keys do), except the bucket
        itself with ``create_parents``. :raises FileExistsError: the bucket exists (``mkdir`` of a bucket).
        :raises FileNotFoundError: the bucket is missing and ``create_parents`` is false."""
        bucket, key = self.split_path(path)
        if not bucket:
            raise PermissionError(errno.EACCES, "the root is not a bucket", path)
        client = await self._client()
        with translated(path):
            if not key:
                await client.create_bucket(bucket)
            elif not await client.bucket_exists(bucket):
                if not create_parents:
                    raise _not_found(bucket)
                await client.create_bucket(bucket)

    async def _makedirs(self, path: str, exist_ok: bool = False) -> None:
        try:
            await self._mkdir(path, create_parents=True)
        except FileExistsError:
            if not exist_ok:
                raise

    async def _rmdir(self, path: str) -> None:
        """Delete an empty bucket; a prefix needs nothing. :raises OSError: ENOTEMPTY, a key is under it."""
        bucket, key = self.split_path(path)
        client = await self._client()
        with translated(path):
            if not key:
                await client.delete_bucket(bucket)
            elif await self._has_children(client, bucket, key):
                raise OSError(errno.ENOTEMPTY, "keys exist under this prefix", path)

    rmdir = sync_wrapper(_rmdir)  # fsspec mirrors only the coroutines it knows; _rmdir is not one of them

    # files -------------------------------------------------------------------------------------

    def _open(self, path: str, mode: str = "rb", block_size: int | None = None, autocommit: bool = True,
              cache_options: dict | None = None, **kwargs: Any) -> ApolloFile:  # fmt: skip
        """A buffered file: reads fetch ranges of ``block_size`` (default ``READ_BLOCK_BYTES``) read-ahead;
        writes buffer ``block_size`` (default ``WRITE_BLOCK_BYTES``, at least the 5 MiB part minimum),
        small files become one put at close, larger ones a multipart upload committed at close."""
        if block_size is None:
            block_size = READ_BLOCK_BYTES if "r" in mode else WRITE_BLOCK_BYTES
        return ApolloFile(self, path, mode, block_size, autocommit, cache_options=cache_options, **kwargs)


class ApolloFile(AbstractBufferedFile):
    """An object opened for reading (range fetches) or for writing (one put, or parts committed at close).

    Write call sequence (fsspec's ``AbstractBufferedFile`` drives it)::

        write() ... buffer reaches block_size -> flush() -> _initiate_upload()   # create_upload
                                                         -> _upload_chunk()       # upload_part n
        close() -> flush(force=True) -> _upload_chunk(final=True)                 # last part, complete_upload
                   (a file that never filled a block: one put here, no upload)

    Nothing is visible before ``close``; leaving a ``with`` block by an exception discards the file
    (the upload is aborted, its parts go to GC), so no partial object is published. ``fsspec.open``'s
    ``OpenFile`` closes without telling the file about the exception; open with ``fs.open`` to get that.
    """

    def __init__(self, fs: ApolloFileSystem, path: str, mode: str = "rb", block_size: int = READ_BLOCK_BYTES,
                 autocommit: bool = True, **kwargs: Any) -> None:  # fmt: skip
        if mode == "ab":
            raise NotImplementedError("apollo:// objects cannot be appended to: write a new object")
        if mode != "rb" and block_size < limits.part_size_bytes_min:
            raise ValueError(f"block_size for writing must be at least {limits.part_size_bytes_min} (a part's minimum)")
        self.bucket, self.key = fs._key_of(path)
        if mode == "xb" and fs.exists(path):
            raise FileExistsError(errno.EEXIST, "the object exists", path)
        self.upload_id: str | None = None
        self.parts: list[tuple[int, str]] = []
        self.version_id: str | None = None
        super().__init__(fs, path, mode, block_size, autocommit, **kwargs)
        if mode == "rb" and self.details.get("VersionId", "null") != "null":
            # A real version id is immutable: every range reads that version, and its cached layout (no
            # metadata call per range). Unversioned buckets reuse the id "null", so each range looks up.
            self.version_id = self.details["VersionId"]

    def _call(self, method, *args: Any, **kwargs: Any) -> Any:
        """Run a coroutine method of the native client on the filesystem's loop, with the errors translated."""

        async def run() -> Any:
            client = await self.fs._client()
            with translated(self.path):
                return await getattr(client, method)(*args, **kwargs)

        return sync(self.fs.loop, run)

    def _fetch_range(self, start: int, end: int) -> bytes:
        return sync(self.fs.loop, self.fs._cat_file, self.path, start, end, self.version_id)

    def _initiate_upload(self) -> None:
        if self.forced:
            return  # closing with less than a block written: one put in _upload_chunk, no upload
        self.upload_id = self._call("create_upload", self.bucket, self.key)

    def _upload_chunk(self, final: bool = False) -> bool:
        data = self.buffer.getvalue()
        if self.upload_id is None:
            if final:
                self._call("put", self.bucket, self.key, data, if_none_match=self.mode == "xb")
            return True
        if data or not self.parts:
            number = len(self.parts) + 1
            self.parts.append((number, self._call("upload_part", self.bucket, self.key, self.upload_id, number,
                                                  data)))  # fmt: skip
        if final:
            self._call("complete_upload", self.bucket, self.key, self.upload_id, self.parts)
        return True

    def discard(self) -> None:
        """Drop what was written: abort the upload (its parts go to GC); nothing becomes visible."""
        if self.upload_id is not None:
            upload_id, self.upload_id = self.upload_id, None
            with contextlib.suppress(FileNotFoundError):
                self._call("abort_upload", self.bucket, self.key, upload_id)
        if self.writable():
            self.buffer = None
        self.closed = True

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        if exc_type is not None and self.writable():
            self.discard()
        else:
            self.close()
