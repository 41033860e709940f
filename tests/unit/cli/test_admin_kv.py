"""``apollo admin kv``: an operator sees every KV namespace with what it holds, and shrinks one's budget,
which evicts at once; a bucket that cannot be a namespace gets one line, not a traceback."""

from __future__ import annotations

from apollo.meta.location import DB_FILE
from apollo.meta.store import SqlStore
from apollo.proto.layout import ObjectData
from apollo.proto.records import ObjectAttrs
from apollo.testing.admin import admin, admin_refused
from apollo.testing.layouts import WRITER, etag


def test_list_shows_namespaces_and_set_changes_a_budget(tmp_path):
    meta_dir = tmp_path / "meta"
    meta_dir.mkdir()
    store = SqlStore(meta_dir / DB_FILE)
    try:
        store.create_bucket("plain", 1.0)
        store.create_kv_namespace("cache", 4096, 600.0, 1.0)
        for n in range(3):
            store.commit_version("cache" if n < 2 else "plain", f"k{n}", size=1000, etag=etag(f"k{n}"),
                                 attrs=ObjectAttrs(), data=ObjectData(1000, inline=b"v" * 1000), now=2.0 + n,
                                 owner=WRITER)  # fmt: skip
    finally:
        store.close()

    assert admin("kv", "list", meta_dir=tmp_path / "empty").strip() == "no KV namespaces"
    row = next(line for line in admin("kv", "list", meta_dir=meta_dir).splitlines() if line.startswith("cache"))
    assert row.split() == ["cache", "4.0", "KiB", "2.0", "KiB", "49%", "2", "600", "s"], row
    assert "holds 1000 B in 1 values" in admin("kv", "set", "cache", "--budget", "1500", meta_dir=meta_dir)
    assert "budget 1.0 GiB, holds 0 B in 0 values" in admin("kv", "create", "new", "--budget", "1GiB",
                                                            meta_dir=meta_dir)  # fmt: skip
    listed = admin("kv", "list", meta_dir=meta_dir)
    assert "600 s" in listed and "none" in listed, listed  # set kept cache's TTL; new has none
    for args, why in ((("set", "plain", "--budget", "1GiB"), "not a KV namespace"),
                      (("create", "plain", "--budget", "1GiB"), "already exists"),
                      (("set", "missing", "--budget", "1GiB"), "does not exist"),
                      (("set", "cache"), "needs the bucket and --budget")):  # fmt: skip
        assert why in admin_refused("kv", *args, meta_dir=meta_dir)
