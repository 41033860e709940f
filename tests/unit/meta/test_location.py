"""``make_private`` (``apollo.meta.location``): owner-only modes on a metadata directory, and a file that
another process removes while it works (a worker's checkpoint temp file: a CI run saw that worker exit) is
skipped, not an error."""

from __future__ import annotations

import stat
from pathlib import Path

from apollo.meta.location import make_private


def test_the_directory_and_its_files_become_owner_only(tmp_path: Path):
    (tmp_path / "kept").write_bytes(b"secret")
    (tmp_path / "kept").chmod(0o644)
    tmp_path.chmod(0o755)
    make_private(tmp_path)
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "kept").stat().st_mode) == 0o600


def test_a_file_removed_while_the_directory_is_walked_is_skipped(tmp_path: Path, monkeypatch):
    for name in ("a-kept", "b-gone", "c-kept"):
        (tmp_path / name).write_bytes(b"x")
        (tmp_path / name).chmod(0o644)
    real_is_file = Path.is_file

    def removed_meanwhile(path: Path) -> bool:
        answer = real_is_file(path)
        if path.name == "b-gone":
            path.unlink()  # another process's temp file, gone between the listing and the chmod
        return answer

    monkeypatch.setattr(Path, "is_file", removed_meanwhile)
    make_private(tmp_path)
    assert not (tmp_path / "b-gone").exists()
    assert all(stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600 for name in ("a-kept", "c-kept"))
