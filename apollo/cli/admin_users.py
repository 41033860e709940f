"""``apollo admin user|policy|key``: access keys and the identity policies that say what each may do;
``apollo admin snapshot``: the snapshots that pin objects (``apollo.meta.sql_snapshots``).

They change the metadata database directly (an all-in-one server's ``--meta-dir``, a cluster's
``--database``), beside running servers: these cache a key's rights for ``apollo.keycache.SECRET_TTL_S``,
so a change applies everywhere within that. ``apollo.proto.identity`` has the rules; docs/security.md
the how-to.
"""

from __future__ import annotations

import argparse
import functools
import json
import secrets
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from apollo import errors
from apollo.proto.identity import BUILTIN_POLICIES, check_access_key, check_policy_name
from apollo.proto.policy import PolicyError, parse_policy


def _store(args: argparse.Namespace):
    from apollo.roles.server import open_admin_store, open_store

    if args.database:  # a cluster's database: PostgreSQL keeps the keys safe, no drive journal
        return open_store(database=args.database)
    return open_admin_store(Path(args.meta_dir))


def _when(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds))


def _new_key(store, name: str | None, policies: list[str]) -> None:
    access = name or "AK" + secrets.token_hex(9).upper()
    try:
        check_access_key(access)
    except ValueError as exc:
        sys.exit(str(exc))
    if store.get_secret(access) is not None:
        sys.exit(f"access key {access} exists (delete it first to give it a new secret)")
    secret = secrets.token_urlsafe(30)
    store.put_key(access, secret, time.time(), policies=policies)
    print(f"access key: {access}\nsecret key: {secret}")
    print(f"policies:   {', '.join(policies) if policies else 'none (only what bucket policies grant it)'}")


def _run(args: argparse.Namespace, action: Callable[[Any, argparse.Namespace], None]) -> None:
    """``action`` on the database, closed after (which fsyncs the journal of the change); a refusal of the
    store (no such policy, secrets sealed and no key to seal a new one with...) is one line, exit 1."""
    store = _store(args)
    try:
        action(store, args)
    except errors.ApolloError as exc:
        sys.exit(f"apollo admin {args.admin} {args.action}: {exc}")
    finally:
        store.close()


def _key_action(store, args: argparse.Namespace) -> None:
    """The key commands from before identity policies: a key made here may do anything (``readwrite``)."""
    if args.action == "create":
        _new_key(store, args.access_key, ["readwrite"])
    elif args.action == "list":
        for info in store.list_keys():
            print(f"{info.access_key}\t{_when(info.created)}\t{'root' if info.is_root else ''}")
    elif args.action == "delete":
        _delete_key(store, args.access_key or "")


def _delete_key(store, access_key: str) -> None:
    if not store.delete_key(access_key):
        sys.exit(f"no such access key: {access_key}")
    print(f"deleted {access_key}")


def _user_action(store, args: argparse.Namespace) -> None:
    if args.action == "create":
        _new_key(store, args.name, args.policy or [])
    elif args.action == "list":
        print(f"{'ACCESS KEY':<24} {'CREATED (UTC)':<19}  POLICIES")
        for info in store.list_keys():
            rights = "root (every right)" if info.is_root else ", ".join(info.policies) or "-"
            print(f"{info.access_key:<24} {_when(info.created)}  {rights}")
    elif args.action == "info":
        infos = {info.access_key: info for info in store.list_keys()}
        info = infos.get(args.name or "")
        if info is None:
            sys.exit(f"no such access key: {args.name}")
        print(f"access key: {info.access_key}\ncreated:    {_when(info.created)} UTC")
        print(f"root:       {'yes: every right, policies do not apply' if info.is_root else 'no'}")
        print(f"policies:   {', '.join(info.policies) or 'none (only what bucket policies grant it)'}")
    elif args.action == "delete":
        _delete_key(store, args.name or "")


def _policy_action(store, args: argparse.Namespace) -> None:
    if args.action == "list":
        print(f"{'POLICY':<24} {'KIND':<9} ATTACHED TO")
        for name, builtin, users in store.list_policies():
            print(f"{name:<24} {'built-in' if builtin else 'stored':<9} {', '.join(users) or '-'}")
        return
    name = _named(args.name)
    if args.action == "create":
        if len(args.rest) != 1:
            sys.exit("apollo admin policy create NAME FILE: FILE is the policy document (JSON; - for stdin)")
        source = args.rest[0]
        text = sys.stdin.read() if source == "-" else _read(source)
        try:
            policy = parse_policy(text, kind="identity")
        except PolicyError as exc:
            sys.exit(f"{source}: not a valid identity policy: {exc}")
        store.put_policy(name, policy.to_json(), time.time())
        print(f"stored policy {name}")
    elif args.action == "show":
        document = store.get_policy(name)
        if document is None:
            sys.exit(f"no such policy: {name}")
        print(json.dumps(json.loads(document), indent=2))
    elif args.action == "delete":
        store.delete_policy(name)
        print(f"deleted policy {name}")
    elif args.action in ("attach", "detach"):
        if not args.rest:
            sys.exit(f"apollo admin policy {args.action} NAME ACCESS_KEY...: name at least one access key")
        for user in args.rest:
            (store.attach_policy if args.action == "attach" else store.detach_policy)(user, name)
            print(f"{args.action}ed {name} {'to' if args.action == 'attach' else 'from'} {user}")


def _snapshot_action(store, args: argparse.Namespace) -> None:
    """``list [BUCKET]``: every snapshot, with what it pins and what only it keeps (deleting it frees that);
    ``delete BUCKET ID``: any key's snapshot (the operator's right: the native client lets only its taker)."""
    if args.action == "delete":
        if not (args.bucket and args.snapshot_id):
            sys.exit("apollo admin snapshot delete BUCKET SNAPSHOT_ID")
        store.delete_snapshot(args.bucket, args.snapshot_id, time.time())
        print(f"deleted snapshot {args.snapshot_id} of {args.bucket}: what only it kept goes to GC")
        return
    buckets = [args.bucket] if args.bucket else [bucket.name for bucket in store.list_buckets()]
    print(f"{'SNAPSHOT':<32}  {'BUCKET':<20} {'CREATED (UTC)':<19}  {'OBJECTS':>9} {'BYTES':>14} {'KEPT ALONE':>22}  "
          "OWNER  PREFIX")  # fmt: skip
    for bucket in buckets:
        retained = store.retained_by_snapshots(bucket)
        for snap in store.list_snapshots(bucket):
            kept, kept_bytes = retained.get(snap.snapshot_id, (0, 0))
            print(f"{snap.snapshot_id}  {bucket:<20} {_when(snap.created)}  {snap.objects:>9} {snap.bytes:>14} "
                  f"{f'{kept} ({kept_bytes} B)':>22}  {snap.owner.removeprefix('key:') or '-'}  {snap.prefix!r}")


def _named(name: str | None) -> str:
    try:
        return check_policy_name(name or "")
    except ValueError as exc:
        sys.exit(str(exc))


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        sys.exit(f"cannot read {path}: {exc}")


def _where(parser: argparse.ArgumentParser) -> None:
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--meta-dir", help="the metadata directory of an all-in-one server")
    where.add_argument("--database", help="a cluster's metadata database (postgresql://...)")


def register(admin: argparse._SubParsersAction) -> None:
    key = admin.add_parser("key", help="manage access keys that may do anything (see also: user, policy)")
    key.add_argument("action", choices=["create", "list", "delete"])
    key.add_argument("access_key", nargs="?")
    _where(key)
    key.set_defaults(func=functools.partial(_run, action=_key_action))
    user = admin.add_parser("user", help="access keys with identity policies: create, list, info, delete")
    user.add_argument("action", choices=["create", "list", "info", "delete"])
    user.add_argument("name", nargs="?", help="the access key (create: chosen for you if left out)")
    user.add_argument("--policy", action="append", metavar="NAME",
                      help=f"attach this policy (repeatable); built in: {', '.join(BUILTIN_POLICIES)}")  # fmt: skip
    _where(user)
    user.set_defaults(func=functools.partial(_run, action=_user_action))
    policy = admin.add_parser("policy", help="identity policies: create, list, show, delete, attach, detach")
    policy.add_argument("action", choices=["create", "list", "show", "delete", "attach", "detach"])
    policy.add_argument("name", nargs="?", help="the policy's name")
    policy.add_argument("rest", nargs="*", metavar="FILE|ACCESS_KEY",
                        help="create: the JSON document (- for stdin); attach/detach: access keys")  # fmt: skip
    _where(policy)
    policy.set_defaults(func=functools.partial(_run, action=_policy_action))
    snapshot = admin.add_parser("snapshot", help="snapshots that pin objects: list, delete")
    snapshot.add_argument("action", choices=["list", "delete"])
    snapshot.add_argument("bucket", nargs="?", help="list: only this bucket's; delete: the snapshot's bucket")
    snapshot.add_argument("snapshot_id", nargs="?", help="delete: the snapshot")
    _where(snapshot)
    snapshot.set_defaults(func=functools.partial(_run, action=_snapshot_action))
