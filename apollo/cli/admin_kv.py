"""``apollo admin kv``: the KV namespaces (``docs/kv-cache.md``) with their budgets, TTLs and what they hold;
an operator's new namespace (a new bucket, owned by root), or change of one's budget or TTL (a smaller
budget evicts at once)."""

from __future__ import annotations

import argparse
import sys
import time

from apollo import errors
from apollo.cli.common import admin_store, parse_size, size_text, where_arguments


def register(admin_parsers: argparse._SubParsersAction) -> None:
    kv = admin_parsers.add_parser("kv", help="list KV namespaces, make one, or set one's budget and TTL")
    kv.add_argument("action", choices=["list", "create", "set"])
    kv.add_argument("bucket", nargs="?", help="create, set: the namespace's bucket")
    kv.add_argument("--budget", type=parse_size, help="create, set: the byte budget (e.g. 64GiB)")
    kv.add_argument("--ttl", type=float, default=None,
                    help="create, set: seconds a value lives after it is written (0: no TTL; set: default unchanged)")
    where_arguments(kv)
    kv.set_defaults(func=cmd_kv)


def cmd_kv(args: argparse.Namespace) -> None:
    store = admin_store(args)
    try:
        if args.action in ("create", "set"):
            if not (args.bucket and args.budget):
                sys.exit(f"error: {args.action} needs the bucket and --budget")
            if args.action == "create":
                namespace = store.create_kv_namespace(args.bucket, args.budget, args.ttl or 0.0, time.time())
            else:
                namespace = store.set_kv_namespace(args.bucket, args.budget, args.ttl, time.time())
            print(f"{namespace.bucket}: budget {size_text(namespace.budget_bytes)}, "
                  f"holds {size_text(namespace.used_bytes)} in {namespace.entries} values")  # fmt: skip
            return
        namespaces = store.list_kv_namespaces()
        if not namespaces:
            print("no KV namespaces")
            return
        print(f"{'namespace':24}  {'budget':>10}  {'used':>10}  {'full':>5}  {'values':>8}  ttl")
        for ns in namespaces:
            ttl = f"{ns.ttl_s:.0f} s" if ns.ttl_s else "none"
            print(f"{ns.bucket:24}  {size_text(ns.budget_bytes):>10}  {size_text(ns.used_bytes):>10}  "
                  f"{ns.used_bytes / ns.budget_bytes:5.0%}  {ns.entries:>8}  {ttl}")  # fmt: skip
    except (errors.BucketNotFound, errors.BucketExists, errors.InvalidRequest) as exc:
        sys.exit(f"error: {exc}")
    finally:
        store.close()
