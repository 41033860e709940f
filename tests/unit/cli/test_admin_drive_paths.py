"""``apollo admin drive``: drive paths take the brace ranges ``apollo server`` takes.

The operator's report: ``apollo admin drive add /mnt/disk{8...9}`` registered one drive literally
named ``disk{8...9}``, where ``apollo server /mnt/disk{1...6}`` had meant six drives.
"""

from __future__ import annotations

from apollo.roles.server import open_store
from apollo.testing.admin import admin, admin_refused


def test_drive_commands_expand_brace_ranges_like_the_server(make_server):
    server = make_server(drives=4)  # 2+2: two drives more can leave again
    pattern = str(server.root / "disk{8...9}")
    for name in ("disk8", "disk9"):  # two freshly mounted, empty disks
        (server.root / name).mkdir()

    added = admin("drive", "add", pattern, meta_dir=server.meta_dir)
    assert added.count("added drive") == 2, added
    store = open_store(server.meta_dir)
    try:
        paths = {r.path: r for r in store.list_drives()}
        assert not [p for p in paths if "{" in p], sorted(paths)
        new = [paths[str(server.root / name)] for name in ("disk8", "disk9")]
        assert all(r.state == "online" for r in new)
        assert (server.root / "disk8" / "apollo-drive.json").is_file()

        one = admin_refused("drive", "replace", pattern, meta_dir=server.meta_dir)
        assert "replace takes one drive" in one and "names 2" in one, one

        drained = admin("drive", "drain", pattern, "--wait", "--timeout", "60", meta_dir=server.meta_dir)
        assert drained.count("draining drive") == 2, drained
        ids = {r.drive_id for r in new}
        assert {r.drive_id: r.state for r in store.list_drives() if r.drive_id in ids} == dict.fromkeys(ids, "retired")

        removed = admin("drive", "remove", pattern, meta_dir=server.meta_dir)
        assert removed.count("removed drive") == 2, removed
        assert not ids & {r.drive_id for r in store.list_drives()}
    finally:
        store.close()
