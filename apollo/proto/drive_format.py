"""A drive's identity on disk: ``<root>/apollo-drive.json`` (drive id, deployment id, format version).

Storage nodes format and open drives by it; the metadata journal, which keeps copies on the
data drives, and metadata recovery find drives by it, so the format lives below both.
"""

from __future__ import annotations

import json
from pathlib import Path

from apollo.errors import DriveError

FORMAT_FILE = "apollo-drive.json"
DRIVE_FORMAT_VERSION = 1


def read_format(root: Path) -> dict | None:
    """The drive's identity, or None when the directory carries no format file."""
    try:
        return json.loads((root / FORMAT_FILE).read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise DriveError(f"drive {root}: unreadable format file: {exc}") from exc
