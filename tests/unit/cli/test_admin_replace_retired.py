"""``apollo admin drive replace`` of a drive that was retired before the disk was swapped: a small failed drive
can be rebuilt elsewhere and retired within seconds (the seeded chaos run hit it), and the operator who then
swaps the disk and runs the documented command must not be refused. The new disk joins in its place."""

from __future__ import annotations

import shutil

from apollo.roles.server import open_store
from apollo.testing.admin import admin


def test_replacing_a_retired_drive_adds_the_new_disk_in_its_place(make_server):
    server = make_server(drives=4)
    disk = server.root / "disk8"
    disk.mkdir()
    admin("drive", "add", str(disk), meta_dir=server.meta_dir)
    admin("drive", "drain", str(disk), "--wait", "--timeout", "60", meta_dir=server.meta_dir)
    shutil.rmtree(disk)  # the old disk pulled, a new empty one mounted at the same path
    disk.mkdir()

    out = admin("drive", "replace", str(disk), meta_dir=server.meta_dir)
    assert "was retired already" in out and "added in its place" in out, out
    store = open_store(server.meta_dir)
    try:
        at_path = [r for r in store.list_drives() if r.path == str(disk.resolve())]
        old = next(r for r in at_path if r.state == "retired")
        new = next(r for r in at_path if r.state == "online")
        assert old.replaced_by == new.drive_id
        assert (disk / "apollo-drive.json").is_file()
    finally:
        store.close()
