"""Batch GET for clients that are not Python: ``POST /{bucket}?batch`` with a JSON list of items, answered as
one TAR stream in request order. Field names and semantics follow AIStore's GetBatch (``docs/get_batch.md``
there), so its users find what they know:

    {"in": [{"objname": "a.jpg"},
            {"objname": "b.bin", "bucket": "other", "version": "<id>", "start": 0, "length": 4096}],
     "coer": true,      # continue on error: a failed item is an empty entry under __<status>__/
     "onob": false}     # entry names: bucket/objname (false) or objname alone (true)

Entries are named ``bucket/objname``; with ``coer``, an item that fails is an empty entry under
``__<status>__/`` of the S3 error a GET of it would get: ``__404__/`` when it does not exist, ``__403__/``
when the caller may not read it (a missing key is 403 too to a caller that may not list its bucket, as a
GET answers), ``__400__/`` for one above ``limits.batch_item_bytes_max``, ``__416__/`` for a range that
starts past its end, ``__503__/`` for one that could not be read (shards lost). Without ``coer``, an item
refused or missing is the request's S3 error, answered before any byte of the TAR; a read that fails once
the TAR is under way ends the stream short (the client's tar reader reports it truncated).

Every item is authorized as a GET of it alone. The lookups take one metadata call per 1,000 items; the reads
one request per storage node for each wave of items (``apollo.client.batch``). Memory is bounded per process:
a batch holds as many items read ahead of the stream as ``limits.batch_window_bytes`` takes at its largest
item's size, and reserves that from ``limits.batch_inflight_bytes_max``, else 503 SlowDown.
"""

from __future__ import annotations

import json
import logging
import tarfile
from collections.abc import AsyncIterator
from dataclasses import dataclass

from aiohttp import web

from apollo import errors, limits
from apollo.client.batch import BatchItem, find_members, read_looked_up
from apollo.client.engine import ObjectEngine
from apollo.eventloop import ByteBudget
from apollo.gateway.authorize import absent_key, check
from apollo.gateway.http import read_document
from apollo.gateway.names import check_version_id, validate_bucket, validate_key
from apollo.gateway.s3errors import S3Error, from_core, s3error
from apollo.gateway.state import CLIENT
from apollo.proto.records import Lookup
from apollo.proto.s3_actions import required

log = logging.getLogger("apollo.gateway.batch")
_BLOCK = 512


BUDGET = web.AppKey("batch_budget", ByteBudget)  # of limits.batch_inflight_bytes_max


@dataclass(frozen=True)
class BatchRequest:
    items: list[BatchItem]
    continue_on_error: bool
    names_only: bool


def parse_batch(body: bytes, default_bucket: str) -> BatchRequest:
    """:raises S3Error: not such a document (400 InvalidRequest), too many items, a malformed name."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise s3error("InvalidRequest", "A batch request is a JSON document") from exc
    entries = document.get("in") if isinstance(document, dict) else None
    if not isinstance(entries, list) or not entries:
        raise s3error("InvalidRequest", 'A batch request names its items in a non-empty list "in"')
    if len(entries) > limits.batch_request_items_max:
        raise s3error("InvalidRequest", f"A batch request names at most {limits.batch_request_items_max} items")
    items = [_item(entry, default_bucket) for entry in entries]
    return BatchRequest(items, document.get("coer") is True, document.get("onob") is True)


def _item(entry: object, default_bucket: str) -> BatchItem:
    if not isinstance(entry, dict) or not isinstance(entry.get("objname"), str):
        raise s3error("InvalidRequest", 'Each batch item is an object with its "objname"')
    bucket, start, length = entry.get("bucket", default_bucket), entry.get("start", 0), entry.get("length")
    if not isinstance(bucket, str) or type(start) is not int or start < 0 or (
            length is not None and (type(length) is not int or length < 0)):  # fmt: skip
        raise s3error("InvalidRequest", "A batch item's bucket is a name, its start and length whole numbers")
    validate_bucket(bucket)
    validate_key(entry["objname"])
    version, member = entry.get("version"), entry.get("archpath")
    if version is not None and not isinstance(version, str):
        raise s3error("InvalidRequest", "A batch item's version is a version id")
    if member is not None and not (isinstance(member, str) and member):
        raise s3error("InvalidRequest", "A batch item's archpath names a member of a tar archive")
    check_version_id(version)
    return BatchItem(bucket, entry["objname"], version, start, None if length is None else start + length,
                     member=member)  # fmt: skip


async def get_batch(request: web.Request, bucket: str, key: str) -> web.StreamResponse:
    spec = parse_batch(await read_document(request), bucket)
    engine = request.app[CLIENT]
    refusals = [await _refusal(request, item) for item in spec.items]
    allowed = [item for item, refusal in zip(spec.items, refusals, strict=True) if refusal is None]
    found = await engine.head_many([(i.bucket, i.key, i.version_id) for i in allowed])
    await find_members(engine, allowed, found)
    lookups = iter(found)
    outcomes: list[tuple[BatchItem, Lookup | S3Error]] = []
    for item, refusal in zip(spec.items, refusals, strict=True):
        outcome = refusal or await _looked_up(request, item, next(lookups))
        if isinstance(outcome, S3Error) and not spec.continue_on_error:
            raise outcome
        outcomes.append((item, outcome))
    largest = max((_size(i, o) for i, o in outcomes if isinstance(o, Lookup) and o.version), default=0)
    item_bytes = max(1, min(largest, limits.batch_item_bytes_max))
    window = max(2, min(limits.batch_request_items_max, limits.batch_window_bytes // item_bytes))
    reserved = item_bytes * window
    budget = request.app[BUDGET]
    if not budget.take(reserved):
        raise s3error("SlowDown", "Too many batch requests in progress; retry shortly")
    try:
        response = web.StreamResponse(headers={"Content-Type": "application/x-tar"})
        await response.prepare(request)
        if await _stream(response, engine, outcomes, window, spec.names_only, spec.continue_on_error):
            await response.write_eof()
        elif request.protocol is not None:
            request.protocol.force_close()
    finally:
        budget.give_back(reserved)
    return response


async def _refusal(request: web.Request, item: BatchItem) -> S3Error | None:
    """The item's error if the caller may not GET it (AccessDenied, or NoSuchBucket)."""
    try:
        await check(request, required("GetObject", item.bucket, item.key, item.version_id),
                    {(item.bucket, item.key): item.version_id})  # fmt: skip
    except S3Error as exc:
        return exc
    return None


async def _looked_up(request: web.Request, item: BatchItem, lookup: Lookup) -> Lookup | S3Error:
    """The lookup of an item that can be read, else the S3 error a GET of it would answer."""
    if lookup.version is not None and item.member is not None and lookup.member is None:
        return s3error("NoSuchKey", f"{item.key} has no tar member {item.member!r} (or was not indexed)")
    if lookup.version is not None:
        size = _size(item, lookup)
        if size > limits.batch_item_bytes_max:
            return s3error("EntityTooLarge", f"{item.key} is larger than {limits.batch_item_bytes_max} bytes, the "
                           "most a batch item may be: GET it on its own")  # fmt: skip
        end = size if item.end is None else item.end
        if item.start > size or end < item.start:
            return s3error("InvalidRange", ActualObjectSize=str(size))
        return lookup
    if lookup.error == "ObjectNotFound":
        return await absent_key(request, item.bucket, item.key)
    return from_core(getattr(errors, lookup.error, errors.RemoteError)(lookup.message))


def _size(item: BatchItem, lookup: Lookup) -> int:
    """What the item reads from: its tar member, or its object."""
    return lookup.member[1] if item.member is not None and lookup.member else lookup.version.size


async def _stream(response: web.StreamResponse, engine: ObjectEngine, outcomes: list, window: int,
                  names_only: bool, continue_on_error: bool) -> bool:  # fmt: skip
    """Write the TAR; False when it had to stop short."""

    async def readable() -> AsyncIterator[tuple[BatchItem, Lookup]]:
        for item, outcome in outcomes:
            if isinstance(outcome, Lookup):
                yield item, outcome

    reads = read_looked_up(engine, readable(), ordered=True, window=window)
    try:
        for item, outcome in outcomes:
            name = item.key if names_only else f"{item.bucket}/{item.key}"
            name = name if item.member is None else f"{name}/{item.member}"
            if isinstance(outcome, S3Error):
                await response.write(_entry(f"__{outcome.status}__/{name}", b"", 0.0))
                continue
            result = await anext(reads)
            if result.error is not None:
                log.warning("batch GET: reading %s/%s failed: %r", item.bucket, item.key, result.error)
                if not continue_on_error:  # the TAR so far is sent: end it short, which its reader reports
                    return False
                status = from_core(result.error).status if isinstance(result.error, errors.ApolloError) else 500
                await response.write(_entry(f"__{status}__/{name}", b"", 0.0))
                continue
            await response.write(_entry(name, result.data, outcome.version.last_modified))
        await response.write(b"\0" * (2 * _BLOCK))
        return True
    finally:
        await reads.aclose()


def _entry(name: str, data: bytes, mtime: float) -> bytes:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), int(mtime), 0o644
    padding = -len(data) % _BLOCK
    return info.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8") + data + b"\0" * padding
