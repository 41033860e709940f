"""Code-shape rules: module size, import layering, banned APIs."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "apollo"
MODULE_LINES_MAX = 800

# Packages that may only reach the core through the client library and the shared types.
FRONT_DOORS = ("apollo/gateway/", "apollo/cli/", "apollo/integrations/", "apollo/console/")
FORBIDDEN_FOR_FRONT_DOORS = ("apollo.storage.drive", "apollo.storage.node", "apollo.meta.sql", "apollo.meta.store")

BANNED = {
    "pickle": "no pickle on any wire or disk format: use JSON or struct",
    "eval": "never eval input",
}


def _modules():
    return sorted(ROOT.rglob("*.py"))


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


def test_modules_stay_small():
    big = {str(p.relative_to(ROOT)): n for p in _modules() if (n := len(p.read_text().splitlines())) > MODULE_LINES_MAX}
    assert big == {}


def test_front_doors_do_not_import_storage_or_meta_internals():
    offenders = []
    for path in _modules():
        rel = str(path.relative_to(ROOT.parent))
        if rel.startswith(FRONT_DOORS):
            offenders += [f"{rel}: {name}" for name in _imports(path) if name.startswith(FORBIDDEN_FOR_FRONT_DOORS)]
    assert offenders == []


def test_banned_apis():
    found = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                found += [f"{path.name}: {BANNED[n]}" for n in names if n in BANNED]
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in BANNED:
                found.append(f"{path.name}: {BANNED[node.func.id]}")
            if isinstance(node, ast.Assert):
                found.append(f"{path.name}:{node.lineno}: use apollo.invariant.invariant(), not assert")
    assert found == []
