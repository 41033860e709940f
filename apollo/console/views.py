"""The console's pages: overview, buckets, a bucket's objects, an object's versions, download and upload.

Objects go through the ``ObjectEngine`` the S3 handlers use (listing, head + read, put_object), so
what the console shows and writes is exactly what S3 clients see; the overview renders the
``Status`` of ``apollo admin status`` (``Console.status``).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING
from urllib.parse import quote

from aiohttp import BodyPartReader, web

from apollo import errors, ids, limits
from apollo.console.activity import SAMPLE_S, chart
from apollo.console.render import SECURITY_HEADERS, esc, page, redirect, size, table, template, url, when
from apollo.console.sessions import Session
from apollo.console.state import CALLER, Console
from apollo.proto.records import ObjectAttrs

if TYPE_CHECKING:
    from apollo.cluster.tuning import Tuning
    from apollo.proto.cluster_map import ClusterMap

LIST_PAGE_KEYS = 100  # objects per listing page: a browser table stays quick to render
FORM_FIELD_BYTES_MAX = 4096  # the upload form's text fields (token, prefix, name) before the file
UPLOAD_CHUNK_BYTES = 1024 * 1024


def _state(state: str) -> str:
    return f'<span class="state-{esc(state)}">{esc(state)}</span>'


async def overview(console: Console, request: web.Request, session: Session) -> web.StreamResponse:
    """The figures of ``apollo admin status``, in its words where it has them: the operators' page (the root
    key's); every other key starts at its buckets."""
    if not request[CALLER].is_root:
        raise redirect(url("/buckets"))
    if console.cluster_map is not None:
        return _map_overview(console.cluster_map(), session)
    snapshot = await console.status()
    status, repair = snapshot.status, snapshot.status.repair
    used, total, online, filesystems = snapshot.capacity
    shared = f" (on {filesystems} filesystems, each counted once)" if filesystems < online else ""
    drives = [[f"<code>{esc(d.drive_id)}</code>", esc(d.path), _state(d.state), esc(when(d.state_since)),
               _used(d.total_bytes, d.free_bytes), f'<span class="num">{esc(size(d.free_bytes))}</span>',
               esc(status.pending_by_drive.get(d.drive_id, 0)), esc(d.replaced_by or "")]
              for d in status.drives]  # fmt: skip
    jobs = [[esc(job.kind), f"<code>{esc(job.drive_id)}</code>", esc(job.queued),
             esc(status.pending_by_drive.get(job.drive_id, 0)),
             esc(f"done {when(job.finished)}" if job.finished else f"walking group {job.cursor_pg}")]
            for job in status.jobs]  # fmt: skip
    at_risk = repair.get("at_risk")
    warnings = f'<p class="warning" id="shortfall">{esc(status.shortfall)}</p>' if status.shortfall else ""
    warnings += "".join(f'<p class="warning next-step">{esc(step)}</p>' for step in snapshot.next_steps)
    body = template("overview.html").substitute(
        warnings=warnings, scheme=esc(status.scheme),
        capacity=esc(f"{size(used)} used of {size(total)} on {online} online drives{shared}"),
        segments=esc(status.segments), backlog=esc(repair.get("backlog_now", 0)),
        degraded=esc(repair.get("degraded_groups", 0)),
        at_risk=esc("not counted yet (the rebalancer counts them on each pass)" if at_risk is None else at_risk),
        rate=esc(f"{size(repair.get('bytes_per_s', 0))}/s (limit {size(status.tuning.repair_bytes_per_s)}/s)"),
        drives=table(["drive", "path", "state", "since", "used", "free", "to repair", "replaced by"], drives),
        jobs=table(["job", "drive", "queued", "left", "progress"], jobs, "no drive jobs"),
        scrub=_scrub(status.scrub), now=esc(when(time.time())),
        controls=_controls(console, status.tuning, session.csrf, request.query.get("changed", "")),
    )  # fmt: skip
    return page("Overview", body, session.csrf, session.access_key)


def _controls(console: Console, tuning: Tuning, csrf: str, changed: str) -> str:
    """The background work's knobs, as ``apollo admin repair|scrub|rebalance`` set them."""
    if console.controls is None:
        return ""
    paused = " checked" if tuning.repair_paused else ""
    done = f'<p class="info" id="changed">{esc(changed)}</p>' if changed else ""
    action, token = esc(url("/background")), esc(csrf)
    passes = "".join(f'<button type="submit" name="start" value="{name}" id="start-{name}">{name} now</button> '
                     for name in console.controls.passes)  # fmt: skip
    return f"""{done}<form method="post" action="{action}" id="rates">
<input type="hidden" name="csrf" value="{token}">
<label>Repair rate <input name="repair_rate" value="{esc(size(tuning.repair_bytes_per_s))}/s"></label>
<label><input type="checkbox" name="repair_paused" value="1"{paused}> repair paused</label>
<label>Scrub rate <input name="scrub_rate" value="{esc(size(tuning.scrub_bytes_per_s))}/s"></label>
<button type="submit" id="set-rates">Set</button>
</form>
<form method="post" action="{action}" id="passes"><input type="hidden" name="csrf" value="{token}">{passes}</form>
<p class="note">Rates: e.g. 200MiB/s, 1GB/s, 0 for unlimited. Passes run at these rates.</p>"""


async def background(console: Console, request: web.Request, session: Session) -> web.StreamResponse:
    """The overview's forms: new rates (and the repair pause), or a pass started at once; root's only."""
    if not request[CALLER].is_root:
        raise errors.AccessDenied("the background work is the root key's to change")
    if console.controls is None:
        raise errors.InvalidRequest("this server's console does not change the background work")
    form = await request.post()
    start = str(form.get("start", ""))
    if start:
        await console.control(console.controls.start_pass, start)
        changed = f"{start} pass requested"
    else:
        rates = (str(form.get("repair_rate", "")), str(form.get("scrub_rate", "")), form.get("repair_paused") == "1")
        await console.control(console.controls.tune, *rates)
        changed = f"rates set: repair {rates[0]}{' (paused)' if rates[2] else ''}, scrub {rates[1]}"
    raise redirect(url("/", changed=changed))


def _map_overview(cluster: ClusterMap, session: Session) -> web.StreamResponse:
    """A gateway's overview: the cluster map it routes by (nodes, racks, drives and their states), which is
    what it knows; the full status is ``apollo admin status --database`` (or an all-in-one server's)."""
    now = time.time()
    nodes = [[esc(n.name), esc(n.rack or "-"), _state("online" if n.alive else "offline"),
              esc(f"{now - n.heartbeat:.0f} s ago" if n.heartbeat else "never")] for n in cluster.nodes]  # fmt: skip
    drives = [[f"<code>{esc(d.drive_id)}</code>", esc(d.node), _state(d.state), esc("yes" if d.writable else "no")]
              for d in cluster.drives]  # fmt: skip
    alive = sum(n.alive for n in cluster.nodes)
    online = sum(d.state == "online" for d in cluster.drives)
    body = (f'<section class="summary"><dl><dt>Cluster map</dt><dd id="epoch">epoch {cluster.epoch}</dd>'
            f'<dt>Storage nodes</dt><dd id="nodes-alive">{alive} of {len(cluster.nodes)} alive</dd>'
            f'<dt>Drives</dt><dd id="drives-online">{online} of {len(cluster.drives)} online</dd></dl></section>'
            "<h2>Storage nodes</h2>" + table(["node", "rack", "state", "last heartbeat"], nodes, "no nodes")
            + "<h2>Drives</h2>" + table(["drive", "node", "state", "takes writes"], drives, "no drives")
            + '<p class="note">This console runs on a gateway, which knows the cluster map it routes by. Capacity, '
            "repair, scrub and drive jobs: <code>apollo admin status --database URL</code>.</p>")  # fmt: skip
    return page("Overview", body, session.csrf, session.access_key)


def _used(total: int, free: int) -> str:
    if not total:
        return "-"
    return esc(f"{size(total - free)} ({100 * (1 - free / total):.1f}%)")


def _scrub(scrub: dict) -> str:
    lines = []
    if current := scrub.get("current"):
        lines.append(f"{current['mode']} pass started {when(current['started'])}: {current['segments']}/"
                     f"{current['total']} segments, {size(current['bytes'])} read, {current['errors']} problems")
    if last := scrub.get("last"):
        lines.append(f"last {last['mode']} pass {when(last['started'])} - {when(last['finished'])}: "
                     f"{last['segments']} segments, {size(last['bytes'])}, {last['errors']} problems")
    return "".join(f"<p>{esc(line)}</p>" for line in lines) or '<p class="empty">no scrub pass yet</p>'


async def activity(console: Console, request: web.Request, session: Session) -> web.StreamResponse:
    """The last minutes of S3 traffic from the server's own metrics; the browser reloads it every few
    seconds. The operators' page, as the overview."""
    if not request[CALLER].is_root:
        raise errors.AccessDenied("the server's activity is the root key's to see")
    history = console.activity.history()
    series = [("S3 requests", "req/s", "requests", [(r.at, r.requests) for r in history]),
              ("Server errors (5xx)", "req/s", "errors", [(r.at, r.server_errors) for r in history]),
              ("Mean latency", "ms", "latency", [(r.at, r.latency_ms) for r in history]),
              ("Received", "MB/s", "in", [(r.at, r.mb_in) for r in history]),
              ("Sent", "MB/s", "out", [(r.at, r.mb_out) for r in history])]  # fmt: skip
    body = "".join(chart(title, unit, points, f"chart-{name}") for title, unit, name, points in series)
    note = (f'<p class="note">All S3 traffic of this server (every worker), sampled every {SAMPLE_S:.0f} s; '
            "the page reloads itself. Prometheus keeps longer history (deploy/grafana).</p>")
    return page("Activity", body + note, session.csrf, session.access_key,
                headers={"Refresh": f"{SAMPLE_S:.0f}"})  # fmt: skip


async def keys(console: Console, request: web.Request, session: Session) -> web.StreamResponse:
    """Every access key with its policies, and every policy with its document: what ``apollo admin user
    list`` and ``policy list|show`` print, read-only (changes stay with the command). The root key's."""
    if not request[CALLER].is_root:
        raise errors.AccessDenied("the access keys are the root key's to see")
    directory = await console.directory()
    if directory is None:
        raise errors.InvalidRequest("this server's console does not show the access keys")
    nothing = "none: only what bucket policies grant"
    key_rows = [[f"<code>{esc(k.access_key)}</code>", esc("root" if k.is_root else ""), esc(when(k.created)),
                 esc(", ".join(k.policies) or ("every right" if k.is_root else nothing))]
                for k in directory.keys]  # fmt: skip
    policy_rows = [[f"<code>{esc(name)}</code>", esc("built in" if builtin else "stored"), esc(", ".join(users)),
                    f"<details><summary>document</summary><pre>{esc(document)}</pre></details>"]
                   for name, builtin, users, document in directory.policies]  # fmt: skip
    body = ('<h2>Access keys</h2>' + table(["access key", "", "created", "policies"], key_rows, "no keys")
            + '<h2>Identity policies</h2>' + table(["policy", "", "attached to", ""], policy_rows, "no policies")
            + '<p class="note">Secrets are never shown. Create, attach and delete with <code>apollo admin user'
            '</code> and <code>apollo admin policy</code> (docs/security.md).</p>')  # fmt: skip
    return page("Keys and policies", body, session.csrf, session.access_key)


async def buckets(console: Console, request: web.Request, session: Session) -> web.StreamResponse:
    """The buckets S3's ListBuckets shows this key."""
    await console.authorize(request, "ListBuckets", "")
    shown = await console.visible(request, await console.engine.list_buckets())
    rows = [[f'<a href="{esc(url("/buckets/" + quote(b.name)))}">{esc(b.name)}</a>', esc(when(b.created)),
             esc(b.versioning or "off")] for b in shown]  # fmt: skip
    body = table(["bucket", "created", "versioning"], rows, "no buckets yet (create one with any S3 client)")
    return page("Buckets", body, session.csrf, session.access_key)


async def objects(console: Console, request: web.Request, session: Session) -> web.StreamResponse:
    """One page of keys under ``prefix``, folders (common prefixes at ``/``) first; ``after`` pages on."""
    bucket = request.match_info["bucket"]
    prefix, after = request.query.get("prefix", ""), request.query.get("after", "")
    await console.authorize(request, "ListObjectsV2", bucket, context={
        "s3:prefix": prefix, "s3:delimiter": "/", "s3:max-keys": str(LIST_PAGE_KEYS)})  # fmt: skip
    listing = await console.engine.list_objects(bucket, prefix, "/", after, LIST_PAGE_KEYS)
    versioned = (await console.engine.get_bucket(bucket)).versioning != ""  # Enabled, or Suspended with history
    base = "/buckets/" + quote(bucket)
    rows = [[f'<a class="folder" href="{esc(url(base, prefix=p))}">{esc(p[len(prefix):])}</a>', "", "", ""]
            for p in listing.prefixes]  # fmt: skip
    rows += [[esc(v.key[len(prefix):]), f'<span class="num">{esc(size(v.size))}</span>', esc(when(v.last_modified)),
              f'<a class="download" href="{esc(url(base + "/download", key=v.key))}">download</a>'
              + (f' <a class="versions" href="{esc(url(base + "/versions", key=v.key))}">versions</a>'
                 if versioned else "")]
             for v in listing.entries]  # fmt: skip
    more = ""
    if listing.truncated and listing.next_marker:
        following = url(base, prefix=prefix, after=listing.next_marker)
        more = f'<p><a id="next-page" href="{esc(following)}">next page</a></p>'
    crumbs, upto = [f'<a href="{esc(url(base))}">{esc(bucket)}</a>'], ""
    for part in prefix.split("/")[:-1]:
        upto += part + "/"
        crumbs.append(f'/ <a href="{esc(url(base, prefix=upto))}">{esc(part)}</a>')
    uploaded = request.query.get("uploaded", "")
    message = f'<p class="info" id="uploaded">Uploaded {esc(uploaded)}.</p>' if uploaded else ""
    body = template("objects.html").substitute(
        message=message, crumbs=" ".join(crumbs), listing=table(["name", "size", "last modified", ""], rows, "empty"),
        more=more, upload=esc(url(base + "/upload")), csrf=esc(session.csrf), prefix=esc(prefix),
        prefix_shown=esc(prefix or "the bucket's top"),
    )  # fmt: skip
    return page(f"Bucket {bucket}", body, session.csrf, session.access_key)


async def versions(console: Console, request: web.Request, session: Session) -> web.StreamResponse:
    """Every version and delete marker of ``key``, newest first, each version downloadable (the
    ``LIST_PAGE_KEYS`` newest: an object rewritten more often than that is a job for an S3 client)."""
    bucket, key = request.match_info["bucket"], request.query.get("key", "")
    if not key:
        raise errors.InvalidRequest("Name the object whose versions to show")
    await console.authorize(request, "ListObjectVersions", bucket, context={"s3:prefix": key})
    listing = await console.engine.list_versions(bucket, key, "", "", "", LIST_PAGE_KEYS)
    base = "/buckets/" + quote(bucket)
    rows = []
    for v in (v for v in listing.entries if v.key == key):
        link = "" if v.delete_marker else (
            f'<a class="download" href="{esc(url(base + "/download", key=key, version=v.version_id))}">download</a>')
        rows.append([f"<code>{esc(v.version_id)}</code>", esc("latest" if v.is_latest else ""),
                     esc("delete marker" if v.delete_marker else size(v.size)), esc(when(v.last_modified)), link])
    body = (f'<p><a href="{esc(url(base, prefix=key.rpartition("/")[0] + "/" if "/" in key else ""))}">'
            f'{esc(bucket)}</a> / {esc(key)}</p>'
            + table(["version", "", "size", "last modified", ""], rows, "no versions"))  # fmt: skip
    return page(f"Versions of {key}", body, session.csrf, session.access_key)


async def download(console: Console, request: web.Request, session: Session) -> web.StreamResponse:
    """The latest version of ``key``, or the one ``version`` names, streamed through the object engine
    (degraded reads included).

    Always an attachment of type application/octet-stream, never the stored content type: an HTML
    object rendered on the console's origin could act with the viewer's session.
    """
    bucket, key = request.match_info["bucket"], request.query.get("key", "")
    version_id = request.query.get("version") or None
    if version_id is not None and not ids.VERSION_ID.fullmatch(version_id):
        raise errors.InvalidRequest("Not a version id")
    if key:
        await console.authorize(request, "GetObject", bucket, key, version_id=version_id)
    version = await console.engine.head(bucket, key, version_id) if key else None
    if version is None or version.delete_marker:
        raise errors.ObjectNotFound(f"no object {key!r} in bucket {bucket!r}")
    name = key.rsplit("/", 1)[-1] or "download"
    fallback = "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in name)
    headers = {**SECURITY_HEADERS, "Content-Security-Policy": "sandbox; default-src 'none'",
               "Content-Type": "application/octet-stream", "Content-Length": str(version.size), "ETag": version.etag,
               "Content-Disposition": f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"}
    response = web.StreamResponse(headers=headers)
    async with contextlib.aclosing(aiter(console.engine.read(version))) as chunks:
        first = await anext(chunks, b"")  # a read that fails at once still gets an error page
        await response.prepare(request)
        try:
            if first:
                await response.write(first)
            async for chunk in chunks:
                await response.write(chunk)
        except ConnectionError:
            pass  # the browser went away; nothing to tell it
    return response


async def upload(console: Console, request: web.Request, session: Session) -> web.StreamResponse:
    """A multipart form: ``csrf``, ``prefix`` and ``key`` fields, then ``file``, streamed into put_object.

    The token is checked before a byte of the file is read: the form puts its fields before the file,
    as browsers send them in document order, and a file before a valid token is refused (403).
    """
    bucket = request.match_info["bucket"]
    if not request.content_type.startswith("multipart/"):
        form = await request.post()
        if not session.csrf_matches(str(form.get("csrf", ""))):
            raise web.HTTPForbidden(text="Missing or wrong CSRF token: reload the page and try again.")
        raise web.HTTPBadRequest(text="Upload with the form: it sends multipart/form-data.")
    reader = await request.multipart()
    fields: dict[str, str] = {}
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            raise web.HTTPBadRequest(text="Nested multipart bodies are not accepted.")
        if part.name != "file":
            value = await part.read_chunk(FORM_FIELD_BYTES_MAX + 1)
            if len(value) > FORM_FIELD_BYTES_MAX or await part.read_chunk(1):
                raise web.HTTPRequestEntityTooLarge(FORM_FIELD_BYTES_MAX, len(value))
            fields[part.name or ""] = value.decode("utf-8", "replace")
            continue
        if not session.csrf_matches(fields.get("csrf")):
            raise web.HTTPForbidden(text="Missing or wrong CSRF token: reload the page and try again.")
        prefix = fields.get("prefix", "")
        key = prefix + (fields.get("key", "").strip() or part.filename or "")
        _check_key(key, prefix)
        await console.authorize(request, "PutObject", bucket, key)  # before a byte of the file is read
        attrs = ObjectAttrs(content_type=part.headers.get("Content-Type") or "application/octet-stream")
        await console.engine.put_object(bucket, key, _limited(part), attrs)
        raise redirect(url("/buckets/" + quote(bucket), prefix=prefix, uploaded=key))
    if not session.csrf_matches(fields.get("csrf")):
        raise web.HTTPForbidden(text="Missing or wrong CSRF token: reload the page and try again.")
    raise web.HTTPBadRequest(text="The form sent no file.")


def _check_key(key: str, prefix: str) -> None:
    """The names S3 would accept: non-empty, at most 1024 bytes of UTF-8, no NUL (see gateway/names.py)."""
    if key == prefix:
        raise errors.InvalidRequest("Name the object, or choose a file")
    if "\0" in key or len(key.encode()) > limits.key_length_bytes_max:
        raise errors.InvalidRequest(f"Object names are at most {limits.key_length_bytes_max} bytes, without NUL")


async def _limited(part: BodyPartReader) -> AsyncIterator[bytes]:
    """The file's bytes, refused past the single-PUT limit (put_object then releases what it wrote)."""
    received = 0
    while chunk := await part.read_chunk(UPLOAD_CHUNK_BYTES):
        received += len(chunk)
        if received > limits.put_object_size_bytes_max:
            raise errors.EntityTooLarge(f"a console upload is at most {size(limits.put_object_size_bytes_max)}")
        yield chunk
