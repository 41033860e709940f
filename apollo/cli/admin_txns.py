"""``apollo admin txn``: the transactions over many objects (``docs/transactions.md``) an operator may need to
see or end. A job that crashed with its transaction open holds its staged data until the TTL it asked for
(up to 24 h) ends; ``abort`` hands that data to GC now, whichever key began it."""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime

from apollo import errors, ids
from apollo.cli.common import admin_store, size_text, where_arguments


def register(admin_parsers: argparse._SubParsersAction) -> None:
    txn = admin_parsers.add_parser("txn", help="list transactions over many objects, or abort one")
    txn.add_argument("action", choices=["list", "abort"])
    txn.add_argument("bucket", nargs="?", help="list: only this bucket's; abort: the transaction's bucket")
    txn.add_argument("txn_id", nargs="?", help="abort: the transaction (32 hex digits, as list shows it)")
    txn.add_argument("--all", action="store_true", help="list: also committed and aborted ones not yet forgotten")
    where_arguments(txn)
    txn.set_defaults(func=cmd_txn)


def cmd_txn(args: argparse.Namespace) -> None:
    store = admin_store(args)
    try:
        if args.action == "list":
            _list(store, args.bucket, args.all)
            return
        if not (args.bucket and args.txn_id):
            sys.exit("error: abort needs the bucket and the transaction id (apollo admin txn list shows them)")
        store.abort_txn(args.txn_id, args.bucket, time.time())  # no owner: the operator may end any key's
        print(f"aborted transaction {args.txn_id} in {args.bucket}: its staged data goes to GC")
    except (errors.TransactionNotFound, errors.TransactionClosed, ids.BadIdentifier) as exc:
        sys.exit(f"error: {exc}")
    finally:
        store.close()


def _list(store, bucket: str | None, finished: bool) -> None:
    found = store.list_txns(bucket, finished=finished)
    if not found:
        print("no transactions" + (f" in {bucket}" if bucket else ""))
        return
    now = time.time()
    print(f"{'transaction':32}  {'bucket':20}  {'state':10}  {'keys':>6}  {'staged':>10}  {'began (UTC)':19}  "
          f"ends in  owner")  # fmt: skip
    for info, staged in found:
        began = datetime.fromtimestamp(info.created, UTC).strftime("%Y-%m-%d %H:%M:%S")
        left = info.expires - now
        ends = f"{left / 60:.0f} min" if left > 0 else "expired"
        print(f"{info.txn_id:32}  {info.bucket:20}  {info.state:10}  {info.items:>6}  {size_text(staged):>10}  "
              f"{began:19}  {ends:>7}  {info.owner}")  # fmt: skip
