"""Attacks by a native client holding an ordinary access key, on a real cluster.

Each test sends what an attacker would: raw signed metadata calls whose JSON the attacker
writes by hand (not through Apollo's own classes, which refuse to build such values), and
shard requests with made-up paths. Before the fix, a forged layout in ``commit_version``
read any file on a storage host, and deleting the object made the garbage collector delete
another tenant's shards; the client also chose the timestamps the server stored.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
import time
from dataclasses import replace
from urllib.parse import quote

import aiohttp
import console_http
import pytest

from apollo import errors, tokens
from apollo.client.remote_meta import RemoteMeta
from apollo.meta.store import SqlStore
from apollo.proto import codec, signing
from apollo.proto.bucket_access import BUCKET_TTL_S
from apollo.proto.layout import ObjectData, Scheme
from apollo.proto.records import ObjectAttrs

VICTIM, VICTIM_SECRET = "victim-user", "victim-user-secret-key"
ATTACKER, ATTACKER_SECRET = "attacker-user", "attacker-user-secret-key"
SECRET_TEXT = b"the root password of this storage host"


@pytest.fixture
def cluster(make_cluster):
    cluster = make_cluster(nodes=6)
    store = SqlStore(cluster.database)
    store.put_key(VICTIM, VICTIM_SECRET, time.time(), policies=["readwrite"])
    store.put_key(ATTACKER, ATTACKER_SECRET, time.time(), policies=["readwrite"])
    store.close()
    return cluster


def deny_attacker(cluster, bucket: str) -> None:
    """A bucket policy that denies the attacker everything on ``bucket``, in force on return (the metadata
    service's bucket records are ``BUCKET_TTL_S`` old at most)."""
    cluster.s3().put_bucket_policy(Bucket=bucket, Policy=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Deny", "Principal": {"AWS": [f"arn:aws:iam::000000000000:user/{ATTACKER}"]}, "Action": "s3:*",
         "Resource": [f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"]}]}))  # fmt: skip
    time.sleep(BUCKET_TTL_S + 0.2)


async def raw_call(session: aiohttp.ClientSession, meta_url: str, method: str, args: list, kwargs: dict | None = None
                   ) -> tuple[int, dict]:  # fmt: skip
    """A metadata call whose body the attacker wrote in the codec's JSON, not with Apollo's records;
    the reply comes back decoded."""
    path = f"/_apollo/rpc/{method}"
    body = json.dumps({"@d": {"args": args, "kwargs": {"@d": kwargs or {}}}}).encode()
    headers = signing.sign("POST", path, body, ATTACKER, ATTACKER_SECRET)
    async with session.post(meta_url.split(",")[0] + path, data=body, headers=headers) as response:
        return response.status, codec.loads(await response.read())


def wire_data(size: int, segments: list[dict]) -> dict:
    """An ``ObjectData`` as the codec puts it on the wire, holding the layouts given as plain dicts."""
    return {"@": "ObjectData", "size": size, "inline": None, "segments": [{"@layout": s} for s in segments]}


def commit_args(bucket: str, key: str, data: dict, size: int, now: float | None = None) -> tuple[list, dict]:
    kwargs = {"size": size, "etag": "0" * 32, "attrs": {"@": "ObjectAttrs", "content_type": "x/y"}, "data": data,
              "now": now if now is not None else time.time()}  # fmt: skip
    return [bucket, key], kwargs


def test_a_layout_naming_a_file_outside_the_drives_is_refused_by_meta_and_by_the_node(cluster):
    """Hole 1: a segment id of ``../`` steps read a file of the storage host through the shard route."""
    store = SqlStore(cluster.database)
    drive = next(d for d in store.list_drives() if d.node == "node0")
    group_dir = cluster.node_drives["node0"][0] / "shards" / f"{3:04x}"
    secret = cluster.root / "host-secret"
    secret.with_suffix(".0").write_bytes(SECRET_TEXT)  # a file outside the drives, as the node would name it
    traversal = os.path.relpath(secret, group_dir)  # ../../../../host-secret
    forged = {"segment_id": traversal, "offset": 0, "length": len(SECRET_TEXT), "scheme": "rep1",
              "cell_size": 1 << 20, "pg": 3, "drives": [drive.drive_id]}  # fmt: skip

    async def scenario():
        async with aiohttp.ClientSession() as session:
            status, reply = await raw_call(session, cluster.meta_urls, "create_bucket", ["attacker-bucket", 0.0])
            assert status == 200, reply
            args, kwargs = commit_args("attacker-bucket", "stolen", wire_data(len(SECRET_TEXT), [forged]),
                                       len(SECRET_TEXT))  # fmt: skip
            status, reply = await raw_call(session, cluster.meta_urls, "commit_version", args, kwargs)
            assert status == 400 and "bad segment id" in reply["error"]["message"], reply
            status, reply = await raw_call(session, cluster.meta_urls, "get_version", ["attacker-bucket", "stolen"])
            assert status == 200 and reply["result"] is None  # nothing was stored

            # The node refuses the path itself, even with a valid token for that segment id (as if the
            # metadata service had been fooled): aiohttp decodes %2F, so the check must come after.
            keyring = tokens.Keyring(store.token_keys())
            token = keyring.issue(tokens.READ, traversal, 60)
            node = cluster.nodes[0].endpoint
            url = f"{node}/_apollo/shards/{drive.drive_id}/3/{quote(traversal, safe='')}/0?offset=0&length=100"
            async with session.get(url, headers={"X-Apollo-Token": token}) as response:
                body = await response.read()
                assert response.status == 400 and SECRET_TEXT not in body, body
            lister = keyring.issue(tokens.LIST, tokens.ANY_SEGMENT, 60)
            for bad_drive in (quote("../drive0", safe=""), "0" * 15 + "G", quote(drive.drive_id + "/..", safe="")):
                url = f"{node}/_apollo/shards/{bad_drive}?limit=5"
                async with session.get(url, headers={"X-Apollo-Token": lister}) as response:
                    assert response.status == 400, await response.read()

    asyncio.run(scenario())
    store.close()


def test_another_keys_segments_cannot_be_committed_so_their_deletion_cannot_destroy_them(cluster):
    """Hole 2: commit the victim's layout, delete it, and the GC deletes the victim's shards."""
    payload = os.urandom(3 * 1024 * 1024 + 11)
    with cluster.native(VICTIM, VICTIM_SECRET) as victim:
        victim.create_bucket("victim-bucket")
        victim.put("victim-bucket", "weights", payload)
    store = SqlStore(cluster.database)
    layout = store.get_version("victim-bucket", "weights").data.segments[0]

    async def scenario():
        async with aiohttp.ClientSession() as session:
            await raw_call(session, cluster.meta_urls, "create_bucket", ["attacker-bucket", 0.0])
            args, kwargs = commit_args("attacker-bucket", "decoy", wire_data(layout.length, [layout.to_json()]),
                                       layout.length)  # fmt: skip
            status, reply = await raw_call(session, cluster.meta_urls, "commit_version", args, kwargs)
            assert status == 403 and reply["error"]["type"] == "AccessDenied", reply
            status, reply = await raw_call(session, cluster.meta_urls, "delete_object",
                                           ["attacker-bucket", "decoy", None, 0.0])  # fmt: skip
            assert status == 200, reply

    asyncio.run(scenario())
    assert store.one("SELECT COUNT(*) AS n FROM garbage WHERE segment_id = ?", (layout.segment_id,))["n"] == 0
    with cluster.native(VICTIM, VICTIM_SECRET) as victim:
        assert victim.get("victim-bucket", "weights") == payload
    store.close()


def inline_commit(bucket: str, key: str, body: bytes, **extra) -> dict:
    """One commit of a ``commit_versions`` batch: a small object, inline."""
    return {"bucket": bucket, "key": key, "size": len(body), "etag": hashlib.md5(body).hexdigest(),
            "attrs": ObjectAttrs(), "data": ObjectData(len(body), inline=body), **extra}  # fmt: skip


def test_a_batch_of_commits_is_held_to_what_each_commit_alone_is(cluster):
    """Commits sharing a call (``commit_versions``): one into a bucket whose policy denies the key refuses the
    whole batch, so nothing of it lands; the service's own arguments (``now``, ``owner``) cannot be named per
    commit; another key's segments are refused to that commit alone, and the others of the batch land."""
    payload = os.urandom(3 * 1024 * 1024 + 11)
    with cluster.native(VICTIM, VICTIM_SECRET) as victim:
        victim.create_bucket("victim-bucket")
        victim.put("victim-bucket", "weights", payload)
    deny_attacker(cluster, "victim-bucket")
    store = SqlStore(cluster.database)
    stolen = store.get_version("victim-bucket", "weights").data

    async def scenario():
        async with aiohttp.ClientSession() as session:
            meta = await RemoteMeta(cluster.meta_urls, ATTACKER, ATTACKER_SECRET, session).start()
            await meta.create_bucket("attacker-bucket", 0.0)
            with pytest.raises(errors.AccessDenied, match="PutObject"):
                await meta.call("commit_versions", [inline_commit("attacker-bucket", "mine", b"mine"),
                                                    inline_commit("victim-bucket", "weights", b"overwritten")])
            for field in ({"now": 1.0}, {"owner": f"key:{VICTIM}"}):
                with pytest.raises(errors.InvalidRequest, match="names a bucket, a key and at most"):
                    await meta.call("commit_versions", [inline_commit("attacker-bucket", "dated", b"x", **field)])
            theft = {**inline_commit("attacker-bucket", "decoy", b""), "size": stolen.size, "data": stolen}
            outcomes = await meta.call("commit_versions", [inline_commit("attacker-bucket", "mine", b"mine"), theft])
            assert outcomes[0].version is not None and outcomes[0].version.key == "mine"
            assert outcomes[1].version is None and outcomes[1].error == "AccessDenied", outcomes[1]
            assert abs(outcomes[0].version.last_modified - time.time()) < 60  # the service's clock
            await meta.close()

    asyncio.run(scenario())
    assert [v.key for v in store.list_objects("attacker-bucket", "", "", "", 10).entries] == ["mine"]
    assert store.get_version("attacker-bucket", "dated") is None
    garbage = store.one("SELECT COUNT(*) AS n FROM garbage WHERE segment_id = ?", (stolen.segments[0].segment_id,))
    assert garbage["n"] == 0
    with cluster.native(VICTIM, VICTIM_SECRET) as victim:
        assert victim.get("victim-bucket", "weights") == payload
    store.close()


def test_the_stored_layout_is_the_allocated_one_and_timestamps_are_the_servers(cluster):
    """A client commits its own segment but names other drives, a far past ``now`` and a wrong size."""
    store = SqlStore(cluster.database)

    async def scenario():
        async with aiohttp.ClientSession() as session:
            meta = await RemoteMeta(cluster.meta_urls, ATTACKER, ATTACKER_SECRET, session).start()
            await meta.create_bucket("attacker-bucket", 0.0)
            allocated = await meta.allocate_segment(Scheme.parse("4+2"), 1 << 20, 0)
            forged = {**allocated.to_json(), "length": 4096, "offset": 777, "drives": list(reversed(allocated.drives))}
            args, kwargs = commit_args("attacker-bucket", "k", wire_data(4096, [forged]), 4096, now=1.0)
            kwargs["size"] = 10**12
            status, reply = await raw_call(session, cluster.meta_urls, "commit_version", args, kwargs)
            assert status == 400 and reply["error"]["type"] == "InvalidRequest", reply  # size must be the data's
            kwargs["size"] = 4096
            status, reply = await raw_call(session, cluster.meta_urls, "commit_version", args, kwargs)
            assert status == 200, reply
            version = reply["result"]
            assert abs(version.last_modified - time.time()) < 60  # not 1970
            stored = store.get_version("attacker-bucket", "k").data.segments[0]
            assert stored.drives == allocated.drives and (stored.offset, stored.length) == (0, 4096)

            # A second commit of the same segment: it is no longer a write in progress.
            status, reply = await raw_call(session, cluster.meta_urls, "commit_version", args, kwargs)
            assert status == 403, reply
            # Deleting with ``now`` in 1970 would make the data due at once: the grace is the server's.
            status, reply = await raw_call(session, cluster.meta_urls, "delete_object",
                                           ["attacker-bucket", "k", None, 1.0])  # fmt: skip
            assert status == 200, reply
            due = store.one("SELECT due FROM garbage WHERE segment_id = ?", (allocated.segment_id,))["due"]
            assert due > time.time()
            await meta.close()

    asyncio.run(scenario())
    store.close()


def test_a_pending_write_may_move_only_its_own_shards_to_known_drives(cluster):
    store = SqlStore(cluster.database)
    store.put_key("other-user", "other-user-secret-key", time.time(), policies=["readwrite"])

    async def scenario():
        async with aiohttp.ClientSession() as session:
            meta = await RemoteMeta(cluster.meta_urls, ATTACKER, ATTACKER_SECRET, session).start()
            other = RemoteMeta(cluster.meta_urls, "other-user", "other-user-secret-key", session)
            allocated = await meta.allocate_segment(Scheme.parse("4+2"), 1 << 20, 0)
            with pytest.raises(errors.AccessDenied):
                await other.repoint_segment(allocated)
            unknown = allocated.drives[:5] + ("f" * 16,)
            for forged in (
                {**allocated.to_json(), "drives": list(unknown)},  # a drive the cluster does not have
                {**allocated.to_json(), "pg": (allocated.pg + 1) % 256},  # another placement group
                {**allocated.to_json(), "cell_size": 4096},
                {**allocated.to_json(), "drives": [allocated.drives[0]] * 6},  # one drive holding every shard
            ):
                status, reply = await raw_call(session, cluster.meta_urls, "repoint_segment", [{"@layout": forged}])
                assert status == 400 and reply["error"]["type"] == "InvalidRequest", (forged, reply)
            moved = [allocated.drives[1], allocated.drives[0], *allocated.drives[2:]]  # shards 0 and 1 swapped
            await meta.repoint_segment(replace(allocated, drives=tuple(moved)))
            await meta.close()
            return moved

    moved = asyncio.run(scenario())
    pending = json.loads(store.one("SELECT layout FROM garbage WHERE owner = ?", (f"key:{ATTACKER}",))["layout"])
    assert pending["drives"] == moved
    store.close()


def test_damage_reports_name_real_shards_only(cluster):
    async def scenario():
        async with aiohttp.ClientSession() as session:
            for args in (["../../x", 0, "0" * 16, "r", 0.0], ["0" * 32, 0, "0" * 16, "r", 0.0],
                         ["0" * 32, 99, "0" * 16, "r", 0.0]):  # fmt: skip
                status, reply = await raw_call(session, cluster.meta_urls, "report_damage", args)
                assert status == 400 and reply["error"]["type"] == "InvalidRequest", reply

    asyncio.run(scenario())
    store = SqlStore(cluster.database)
    assert store.one("SELECT COUNT(*) AS n FROM repair_queue")["n"] == 0
    store.close()


def test_a_batch_lookup_gives_no_object_or_read_token_a_single_lookup_would_refuse(cluster):
    """A key a bucket policy denies reads its objects neither one by one nor by the batch: every item of
    its batch is AccessDenied, found or not, and the answer carries no read token; a batch over the cap or
    of malformed items is refused whole."""
    with cluster.native(VICTIM, VICTIM_SECRET) as victim:
        victim.create_bucket("victim-data")
        victim.put("victim-data", "small", SECRET_TEXT)
        victim.put("victim-data", "large", os.urandom(3_000_000))
    deny_attacker(cluster, "victim-data")

    async def scenario():
        async with aiohttp.ClientSession() as session:
            status, reply = await raw_call(session, cluster.meta_urls, "get_version", ["victim-data", "small"])
            assert status == 403, reply  # as for one object
            items = [["victim-data", key, None] for key in ("small", "large", "missing")]
            status, reply = await raw_call(session, cluster.meta_urls, "get_versions", [items])
            assert status == 200, reply
            assert [(lookup.version, lookup.error) for lookup in reply["result"]] == [(None, "AccessDenied")] * 3
            assert reply["tokens"] == {}
            for args in ([[["victim-data", "small", None]] * 1001], [[["victim-data", "small"]]],
                         [[["victim-data", 5, None]]], ["not a list"]):  # fmt: skip
                status, reply = await raw_call(session, cluster.meta_urls, "get_versions", args)
                assert status == 400 and reply["error"]["type"] == "InvalidRequest", reply

    asyncio.run(scenario())
    with cluster.native(ATTACKER, ATTACKER_SECRET) as attacker:
        results = list(attacker.get_batch([("victim-data", "small"), ("victim-data", "large")]))
    assert [type(r.error) for r in results] == [errors.AccessDenied, errors.AccessDenied]


def test_snapshots_are_held_to_the_reads_and_listings_they_stand_for_and_to_their_taker(cluster):
    """A key a bucket policy denies can neither snapshot the bucket nor read through a snapshot whose id it
    learnt (each item AccessDenied, no read token); a key that may list a bucket cannot delete another key's
    snapshot, not even by naming itself the deployment (``owner`` is the service's to set); a snapshot id not
    of Apollo's form is refused before it reaches a query."""
    with cluster.native(VICTIM, VICTIM_SECRET) as victim:
        for bucket in ("victim-data", "shared-data"):
            victim.create_bucket(bucket)
            victim.put(bucket, "small", SECRET_TEXT)
            victim.put(bucket, "large", os.urandom(300_000))
        private = victim.snapshot("victim-data").snapshot_id
        shared = victim.snapshot("shared-data").snapshot_id
    deny_attacker(cluster, "victim-data")

    async def scenario():
        async with aiohttp.ClientSession() as session:
            for method, args in (("create_snapshot", ["victim-data", "", 0.0]),
                                 ("list_snapshot", ["victim-data", private, "", "", "", 10]),
                                 ("list_snapshots", ["victim-data"]),
                                 ("delete_snapshot", ["victim-data", private, 0.0])):  # fmt: skip
                status, reply = await raw_call(session, cluster.meta_urls, method, args)
                assert status == 403 and reply["error"]["type"] == "AccessDenied", (method, reply)
            status, reply = await raw_call(session, cluster.meta_urls, "get_snapshot_versions",
                                           ["victim-data", private, ["small", "large"]])  # fmt: skip
            assert status == 200, reply
            assert [(lookup.version, lookup.error) for lookup in reply["result"]] == [(None, "AccessDenied")] * 2
            assert reply["tokens"] == {}
            status, reply = await raw_call(session, cluster.meta_urls, "delete_snapshot", ["shared-data", shared],
                                           {"now": 0.0, "owner": ""})  # fmt: skip
            assert status == 403 and "another key" in reply["error"]["message"], reply
            for bad in ("../../etc/passwd", "0" * 31, private.upper()):
                status, reply = await raw_call(session, cluster.meta_urls, "get_snapshot_versions",
                                               ["shared-data", bad, ["small"]])  # fmt: skip
                assert status == 400 and reply["error"]["type"] == "InvalidRequest", reply
            status, reply = await raw_call(session, cluster.meta_urls, "create_snapshot", ["shared-data", ""],
                                           {"now": 1.0, "owner": f"key:{VICTIM}"})  # fmt: skip
            assert status == 200 and reply["result"].owner == f"key:{ATTACKER}" and reply["result"].created > 1e9

    asyncio.run(scenario())
    with cluster.native(ATTACKER, ATTACKER_SECRET) as attacker:
        results = list(attacker.get_batch([("victim-data", "small", None, 0, None, private)]))
        assert isinstance(results[0].error, errors.AccessDenied)
        assert attacker.get("shared-data", "small", snapshot=shared) == SECRET_TEXT  # it may read that bucket
    with cluster.native(VICTIM, VICTIM_SECRET) as victim:
        assert [s.snapshot_id for s in victim.snapshots("victim-data")] == [private]
        assert victim.get("victim-data", "small", snapshot=private) == SECRET_TEXT
        victim.delete_snapshot("shared-data", shared)


def test_a_rename_needs_the_rights_of_a_copy_and_a_delete(cluster):
    """A rename is a read of the key, a write of the new key and a delete of the old one, in one: a key that
    may not write where it renames to, or may not delete what it renames, changes nothing."""
    store = SqlStore(cluster.database)
    store.put_policy("no-writes-under-final", json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "s3:*", "Resource": ["arn:aws:s3:::*"]},
        {"Effect": "Deny", "Action": "s3:PutObject", "Resource": ["arn:aws:s3:::renames/final/*"]},
        {"Effect": "Deny", "Action": "s3:DeleteObject", "Resource": ["arn:aws:s3:::renames/kept/*"]}]}),
        time.time())  # fmt: skip
    store.put_key("renamer", "renamer-secret-key", time.time(), policies=["no-writes-under-final"])
    store.close()
    with cluster.native(VICTIM, VICTIM_SECRET) as victim:
        victim.create_bucket("renames")
        victim.put("renames", "draft", b"draft bytes")
        victim.put("renames", "kept/one", b"kept bytes")
    with cluster.native("renamer", "renamer-secret-key") as renamer:
        with pytest.raises(errors.AccessDenied, match="PutObject"):
            renamer.rename("renames", "draft", "final/published")
        with pytest.raises(errors.AccessDenied, match="DeleteObject"):
            renamer.rename("renames", "kept/one", "elsewhere")
        assert renamer.rename("renames", "draft", "published").key == "published"
    with cluster.native(VICTIM, VICTIM_SECRET) as victim:
        assert sorted(o.key for o in victim.list("renames")) == ["kept/one", "published"]
        assert victim.get("renames", "kept/one") == b"kept bytes"


def test_tar_member_ranges_are_held_to_reads_of_their_archive(cluster):
    """A key a bucket policy denies learns no member range of an archive there (None, as for no member) and
    cannot list its members; a made-up version row id, or another key's, finds nothing; a malformed lookup
    is refused whole."""
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("secret.txt")
        info.size = len(SECRET_TEXT)
        tar.addfile(info, io.BytesIO(SECRET_TEXT))
    with cluster.native(VICTIM, VICTIM_SECRET) as victim:
        victim.create_bucket("victim-tars")
        victim.put("victim-tars", "shard.tar", buffer.getvalue())
        victim.create_bucket("open-tars")
        victim.put("open-tars", "shard.tar", buffer.getvalue())
        victim.put("open-tars", "other.tar", buffer.getvalue())
        assert victim.get("victim-tars", "shard.tar", member="secret.txt") == SECRET_TEXT
    store = SqlStore(cluster.database)
    vid = store.get_version("victim-tars", "shard.tar").seq
    open_vid = store.get_version("open-tars", "shard.tar").seq
    store.close()
    deny_attacker(cluster, "victim-tars")

    async def scenario():
        async with aiohttp.ClientSession() as session:
            status, reply = await raw_call(session, cluster.meta_urls, "get_tar_members",
                                           ["victim-tars", [["shard.tar", vid, "secret.txt"]]])  # fmt: skip
            assert status == 200 and reply["result"] == [None], reply
            status, reply = await raw_call(session, cluster.meta_urls, "list_tar_members", ["victim-tars", "shard.tar"])
            assert status == 403, reply
            status, reply = await raw_call(session, cluster.meta_urls, "get_tar_members", ["open-tars", [
                ["shard.tar", vid, "secret.txt"], ["other.tar", open_vid, "secret.txt"],
                ["shard.tar", open_vid, "secret.txt"]]])  # fmt: skip
            assert status == 200 and reply["result"] == [None, None, [512, len(SECRET_TEXT)]], reply
            for items in ([["shard.tar", "1", "x"]], [["shard.tar", 1]], "x", [["shard.tar", 1, "x"]] * 1001):
                status, reply = await raw_call(session, cluster.meta_urls, "get_tar_members", ["open-tars", items])
                assert status == 400 and reply["error"]["type"] == "InvalidRequest", reply

    asyncio.run(scenario())


def test_console_session_calls_are_the_front_doors_and_refused_to_a_native_clients_key(cluster):
    """Console sessions live in the metadata store behind service calls. An ordinary key calling them itself
    could plant a session for the victim's key under a token it chose (a console login as the victim without
    the secret), read a live session's CSRF token, or log the victim out: each is refused before it runs."""

    async def scenario():
        async with console_http.new_http() as http, aiohttp.ClientSession() as session:
            token = await console_http.login(http, cluster.gateways[0].endpoint, VICTIM, VICTIM_SECRET)
            chosen = secrets.token_urlsafe(32)
            planted = [hashlib.sha256(chosen.encode()).hexdigest(), VICTIM, "0" * 64, secrets.token_urlsafe(32),
                       time.time()]  # fmt: skip
            victims = hashlib.sha256(token.encode()).hexdigest()
            for method, args in (("open_console_session", planted), ("console_session", [victims, time.time()]),
                                 ("close_console_session", [victims])):  # fmt: skip
                status, reply = await raw_call(session, cluster.meta_urls, method, args)
                assert status == 403 and reply["error"]["type"] == "AccessDenied", (method, reply)
                assert "result" not in reply
            status, _ = await console_http.get(http, cluster.gateways[0].endpoint, "/buckets", chosen)
            assert status == 303  # no session: to the login form
            status, page = await console_http.get(http, cluster.gateways[0].endpoint, "/buckets", token)
            assert status == 200 and VICTIM in page  # still logged in

    asyncio.run(scenario())
    store = SqlStore(cluster.database)
    assert [r["access_key"] for r in store.all("SELECT access_key FROM console_sessions")] == [VICTIM]
    store.close()


def test_another_keys_transaction_cannot_be_staged_into_committed_or_aborted(cluster):
    """A transaction id is no capability: a key that learnt another key's id can neither stage into it,
    commit it, abort it, look at it nor allocate segments for it, not even by naming itself the owner (the
    service sets ``owner``); a
    key may stage only what it may put or delete; a malformed transaction id is refused before any query."""
    store = SqlStore(cluster.database)
    store.put_policy("no-puts-under-locked", json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "s3:*", "Resource": ["arn:aws:s3:::*"]},
        {"Effect": "Deny", "Action": "s3:PutObject", "Resource": ["arn:aws:s3:::txns/locked/*"]},
        {"Effect": "Deny", "Action": "s3:DeleteObject", "Resource": ["arn:aws:s3:::txns/kept/*"]}]}),
        time.time())  # fmt: skip
    store.put_key("stager", "stager-secret-key", time.time(), policies=["no-puts-under-locked"])
    with cluster.native(VICTIM, VICTIM_SECRET) as victim:
        victim.create_bucket("txns")
        victim.put("txns", "kept/one", b"kept")
        txn = victim.transaction("txns").begin()
        txn.put("ckpt/a", b"the victim's checkpoint")

        async def scenario():
            async with aiohttp.ClientSession() as session:
                forged = {"owner": f"key:{VICTIM}", "now": 0.0}
                put_kwargs = {**forged, **commit_args("txns", "x", wire_data(0, []), 0)[1]}
                for method, args, kwargs in (
                    ("commit_txn", [txn.id, "txns"], forged),
                    ("abort_txn", [txn.id, "txns"], forged),
                    ("get_txn", [txn.id, "txns"], {"owner": f"key:{VICTIM}"}),
                    ("stage_delete", [txn.id, "txns", "ckpt/a"], forged),
                    ("stage_put", [txn.id, "txns", "ckpt/a"], put_kwargs),
                ):  # fmt: skip
                    status, reply = await raw_call(session, cluster.meta_urls, method, args, kwargs)
                    assert status == 403 and "another key" in reply["error"]["message"], (method, reply)
                # Segments allocated for a staged put end with its transaction: only with one of the caller's own.
                meta = await RemoteMeta(cluster.meta_urls, ATTACKER, ATTACKER_SECRET, session).start()
                with pytest.raises(errors.AccessDenied, match="another key"):
                    await meta.allocate_segment(Scheme.parse("4+2"), 1 << 20, 0, txn=["txns", txn.id])
                for bad_txn in (["txns", "../../etc/passwd"], ["../x", txn.id], "txns", ["txns", txn.id, "x"]):
                    with pytest.raises(errors.InvalidRequest):
                        await meta.allocate_segment(Scheme.parse("4+2"), 1 << 20, 0, txn=bad_txn)
                for bad in ("../../etc/passwd", "0" * 31, txn.id.upper(), txn.id + "\n"):
                    status, reply = await raw_call(session, cluster.meta_urls, "commit_txn", [bad, "txns", 0.0])
                    assert status == 400 and "bad transaction id" in reply["error"]["message"], reply
                    status, reply = await raw_call(session, cluster.meta_urls, "stage_delete",
                                                   [bad, "txns", "k", 0.0])  # fmt: skip
                    assert status == 400 and "bad transaction id" in reply["error"]["message"], reply

        asyncio.run(scenario())
        assert txn.commit().items == 1
        assert victim.get("txns", "ckpt/a") == b"the victim's checkpoint"
    with cluster.native("stager", "stager-secret-key") as stager:
        own = stager.transaction("txns").begin()
        with pytest.raises(errors.AccessDenied, match="PutObject"):
            own.put("locked/x", b"refused")
        with pytest.raises(errors.AccessDenied, match="DeleteObject"):
            own.delete("kept/one")
        own.put("open/x", b"allowed")
        own.commit()
        assert stager.get("txns", "open/x") == b"allowed" and stager.head("txns", "locked/x") is None
        assert stager.get("txns", "kept/one") == b"kept"
    assert store.one("SELECT COUNT(*) AS n FROM txn_items")["n"] == 0
    store.close()


def test_a_clients_tokens_cannot_make_a_storage_node_rebuild_shards(cluster):
    """``/_apollo/rebuild`` makes a node read a segment's survivors and write shards where the job says: only a
    ``repair`` token opens it, which the metadata service mints for itself alone. The attacker holds read and
    write tokens of a segment of its own, and tries them (and none, and a forged one) on the victim's."""
    with cluster.native(VICTIM, VICTIM_SECRET) as victim:
        victim.create_bucket("victim")
        victim.put("victim", "k", os.urandom(1 << 20))
    store = SqlStore(cluster.database)
    (row,) = store.all("SELECT layout FROM segments")
    layout = json.loads(row["layout"])
    node_of = {r.drive_id: r.node for r in store.list_drives()}
    store.close()
    before = {p: p.read_bytes() for p in cluster.shard_files()}
    target = layout["drives"][1]  # asked to write shard 0 beside shard 1: refused before anything is read
    endpoint = next(n.endpoint for n in cluster.nodes if n.name == node_of[target])

    async def scenario():
        async with aiohttp.ClientSession() as session:
            meta = await RemoteMeta(cluster.meta_urls, ATTACKER, ATTACKER_SECRET, session).start()
            own = await meta.allocate_segment(Scheme.parse("4+2"), 1 << 20, 0)
            offered = [meta.token_for(tokens.WRITE, own.segment_id), meta.token_for(tokens.READ, own.segment_id),
                       "", "v1.00000000.e30.AAAA"]  # fmt: skip
            for job_layout in (layout, own.to_json()):  # the victim's segment, and its own
                for token in offered:
                    body = json.dumps({"layout": job_layout, "targets": {"0": target}, "copy_from": {}})
                    async with session.post(endpoint + "/_apollo/rebuild", data=body,
                                            headers={"X-Apollo-Token": token}) as response:  # fmt: skip
                        assert response.status == 403, (token[:20], response.status, await response.text())
            await meta.close()

    asyncio.run(scenario())
    assert {p: p.read_bytes() for p in cluster.shard_files()} == before  # nothing written, nothing changed
