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
    path.write_text(json.dumps([{"key_id": k.key_id, "secret": k.secret.hex(), "created": k.created}
                                for k in keyring.by_age()]))  # fmt: skip


def read_keyring(path: Path) -> tokens.Keyring:
    return tokens.Keyring([tokens.TokenKey(k["key_id"], bytes.fromhex(k["secret"]), k["created"])
                           for k in json.loads(path.read_text())])  # fmt: skip


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

    from apollo.proto.drive_format import read_format
    from apollo.storage.drive import format_drive
    from apollo.storage.node import LocalStorageNode
    from apollo.storage.service import build_storage_app

    parser = argparse.ArgumentParser()
    parser.add_argument("drives", nargs="+", type=Path)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--deployment", required=True)
    parser.add_argument("--keyring", type=Path, required=True)
    parser.add_argument("--ids", type=Path, required=True)
    args = parser.parse_args()
    for root in args.drives:
        root.mkdir(parents=True, exist_ok=True)
        if read_format(root) is None:
            format_drive(root, args.deployment)
    node = LocalStorageNode.open(args.drives, args.deployment)
    for drive in node.drives.values():
        drive.clear_tmp()  # writes this node never finished: their clients saw them fail
    tmp = args.ids.with_suffix(".tmp")
    tmp.write_text(json.dumps(node.drive_ids()))
    os.replace(tmp, args.ids)
    web.run_app(build_storage_app(node, read_keyring(args.keyring)), host="127.0.0.1", port=args.port,
                print=None, handle_signals=True)  # fmt: skip


if __name__ == "__main__":
    main()
