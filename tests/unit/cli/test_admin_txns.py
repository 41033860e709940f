"""``apollo admin txn``: an operator sees the transactions a crashed job left open, with what they hold,
and aborts one, whichever key began it; a malformed or unknown id gets one line, not a traceback."""

from __future__ import annotations

import time

from apollo.meta.location import DB_FILE
from apollo.meta.store import SqlStore
from apollo.proto.layout import ObjectData
from apollo.proto.records import ObjectAttrs
from apollo.testing.admin import admin, admin_refused
from apollo.testing.layouts import WRITER, etag


def test_list_shows_open_transactions_and_abort_ends_one(tmp_path):
    meta_dir = tmp_path / "meta"
    meta_dir.mkdir()
    store = SqlStore(meta_dir / DB_FILE)
    try:
        store.create_bucket("ckpt", 1.0)
        txn = store.begin_txn("ckpt", time.time(), WRITER, ttl_s=3600)
        data = ObjectData(3000, inline=b"x" * 3000)
        store.stage_put(txn.txn_id, "ckpt", "step-1/rank0", size=3000, etag=etag("r0"), attrs=ObjectAttrs(),
                        data=data, now=time.time(), owner=WRITER)  # fmt: skip
    finally:
        store.close()

    listed = admin("txn", "list", meta_dir=meta_dir)
    row = next(line for line in listed.splitlines() if line.startswith(txn.txn_id))
    assert "ckpt" in row and "open" in row and "2.9 KiB" in row and WRITER in row and " min" in row, listed
    assert admin("txn", "list", "elsewhere", meta_dir=meta_dir).strip() == "no transactions in elsewhere"

    assert "aborted transaction" in admin("txn", "abort", "ckpt", txn.txn_id, meta_dir=meta_dir)
    assert admin("txn", "list", meta_dir=meta_dir).strip() == "no transactions"
    assert "aborted" in admin("txn", "list", "--all", meta_dir=meta_dir)
    for args, why in ((("abort", "ckpt", "../../etc"), "bad transaction id"),
                      (("abort", "ckpt", "0" * 32), "has no transaction"),
                      (("abort", "ckpt"), "needs the bucket and the transaction id")):  # fmt: skip
        refused = admin_refused("txn", *args, meta_dir=meta_dir)
        assert why in refused and "Traceback" not in refused, refused
