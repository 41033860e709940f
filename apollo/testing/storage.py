"""Storage node processes for tests: real ``apollo.storage.service`` apps on loopback ports.

Until the cluster map hands storage nodes their deployment and token keys, a test gives
them both: the keyring in a JSON file, the deployment on the command line. Everything
else is the production code path: drives formatted and opened as the server does,
shards served over HTTP, tokens checked by the node.

    python -m apollo.testing.storage --port P --deployment D --keyring FILE DRIVE...
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from apollo import tokens
from apollo.testing.cluster import RoleProcess
from apollo.testing.server import free_port


def write_keyring(path: Path, keyring: tokens.Keyring) -> None:
    path.write_text(json.dumps(keyring.to_json()))


def read_keyring(path: Path) -> tokens.Keyring:
    keyring = tokens.Keyring()
    keyring.replace_from_json(json.loads(path.read_text()))
    return keyring


class StorageNodeProcess(RoleProcess):
    """A storage node serving ``drives`` directories, with a deployment and keyring given by the test."""

    def __init__(self, root: Path, deployment_id: str, keyring_file: Path, drives: int = 1) -> None:
        root = Path(root)
        self.drives = [root / f"drive{n}" for n in range(1, drives + 1)]
        self.ids_path = root / "drive-ids.json"
        port = free_port()
        args = ["--port", str(port), "--deployment", deployment_id, "--keyring", str(keyring_file), "--ids",
                str(self.ids_path), *map(str, self.drives)]  # fmt: skip
        super().__init__(root.name, args, port, root / "storage.log", module="apollo.testing.storage")

    def drive_ids(self) -> list[str]:
        return json.loads(self.ids_path.read_text())


def main() -> None:
    from aiohttp import web

    from apollo.storage.attach import attach_drives, clear_interrupted
    from apollo.storage.node import LocalStorageNode
    from apollo.storage.service import build_storage_app

    parser = argparse.ArgumentParser()
    parser.add_argument("drives", nargs="+", type=Path)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--deployment", required=True)
    parser.add_argument("--keyring", type=Path, required=True)
    parser.add_argument("--ids", type=Path, required=True)
    args = parser.parse_args()
    found = attach_drives(args.drives, args.deployment, {}, create_missing=True)
    if found.problems:
        raise SystemExit("; ".join(found.problems))
    clear_interrupted(found.drives)
    node = LocalStorageNode(found.drives)
    tmp = args.ids.with_suffix(".tmp")
    tmp.write_text(json.dumps(node.drive_ids()))
    os.replace(tmp, args.ids)
    web.run_app(build_storage_app(node, read_keyring(args.keyring)), host="127.0.0.1", port=args.port,
                print=None, handle_signals=True)  # fmt: skip


if __name__ == "__main__":
    main()
