"""Code-shape rules: module size, import layering (no upward import, no cycle), banned APIs."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "apollo"
MODULE_LINES_MAX = 800

# The layers, lowest first (docs/architecture.md draws them). A part of apollo is a package
# (apollo/meta) or one of the bottom modules (apollo/errors.py ...). Each part may import only the
# parts its entry names: the layers below it, or fewer (the front doors reach the core through the
# client library and the shared records only).
BOTTOM = {"errors", "limits", "ids", "invariant", "faults", "metrics", "eventloop", "tokens", "keycache"}
_BELOW_CLIENT = {"meta", "storage", "proto", "bottom"}
ALLOWED: dict[str, set[str]] = {
    "bottom": {"bottom"},
    "proto": {"bottom"},  # wire protocol and shared records
    "meta": {"proto", "bottom"},
    "storage": {"proto", "bottom"},
    "client": _BELOW_CLIENT,  # the object engine, the native client, stubs of the remote services
    "cluster": {"client"} | _BELOW_CLIENT,  # healing and cluster management
    "gateway": {"client", "proto", "bottom"},  # front doors
    "integrations": {"client", "proto", "bottom"},
    "torch": {"client", "proto", "bottom"},  # PyTorch datasets: a front door like the integrations
    "kv": {"client", "proto", "bottom"},  # the inference KV-cache tier and its LMCache connector
    "console": {"client", "proto", "bottom"},
    "roles": {"gateway", "console", "cluster", "client"} | _BELOW_CLIENT,  # processes, the all-in-one server
    "cli": {"roles", "cluster", "client", "proto", "bottom", "testing"},
    "testing": {"roles", "gateway", "cluster", "client"} | _BELOW_CLIENT,
    "__main__": {"cli"},
}
# Modules a part may import beyond its layers: the admin commands work on the files of a metadata
# directory (where the database is, its lock, its backups), not through the SQL store's internals.
ALSO_ALLOWED: dict[str, set[str]] = {"cli": {"apollo.meta.location", "apollo.meta.lock", "apollo.meta.backup"}}

BANNED = {
    "pickle": "no pickle on any wire or disk format: use JSON or struct",
    "eval": "never eval input",
}


def _modules():
    return sorted(ROOT.rglob("*.py"))


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str) -> bool:
    path = ROOT.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def _imports(path: Path) -> list[str]:
    """The Apollo modules ``path`` imports, at any depth (an import inside a function counts), except
    under ``if TYPE_CHECKING:``. ``from apollo.x import y`` names ``apollo.x.y`` when that is a module."""
    tree = ast.parse(path.read_text())
    guards = [node for node in ast.walk(tree) if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)]
    typing_only = {id(n) for guard in guards for n in ast.walk(guard)}
    names = []
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names += [f"{node.module}.{a.name}" if _is_module(f"{node.module}.{a.name}") else node.module
                      for a in node.names]  # fmt: skip
    return [name for name in names if name.startswith("apollo.")]


def _part(module: str) -> str:
    """The part of apollo a module belongs to: its package, or "bottom"."""
    first = module.split(".")[1]
    return "bottom" if first in BOTTOM else first


def test_modules_stay_small():
    big = {str(p.relative_to(ROOT)): n for p in _modules() if (n := len(p.read_text().splitlines())) > MODULE_LINES_MAX}
    assert big == {}


def test_every_part_has_a_place_in_the_layers():
    parts = {_part(_module_name(path)) for path in _modules() if _module_name(path) != "apollo"}
    assert parts <= ALLOWED.keys(), parts - ALLOWED.keys()


def test_imports_run_down_the_layers():
    offenders = []
    for path in _modules():
        module = _module_name(path)
        if module == "apollo":
            continue
        part = _part(module)
        for name in _imports(path):
            target = _part(name)
            if target != part and target not in ALLOWED[part] and name not in ALSO_ALLOWED.get(part, ()):
                offenders.append(f"{module} ({part}) imports {name} ({target})")
    assert offenders == []


def test_no_import_cycles():
    graph = {_module_name(path): {n for n in _imports(path) if _is_module(n)} for path in _modules()}
    cycles: list[str] = []
    state: dict[str, str] = {}

    def visit(module: str, stack: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                cycles.append(" -> ".join([*stack[stack.index(target) :], target]))
            elif target not in state:
                visit(target, [*stack, target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == []


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


# The front doors reach objects through the object engine (apollo/client/engine.py) only.
FRONT_DOORS = [*sorted((ROOT / "gateway").glob("*.py")), ROOT / "client" / "native.py"]


def test_front_doors_never_reach_the_metadata_service():
    """No ``<anything>.meta.<name>`` in the gateway or the native client: an operation written against
    the metadata service there would exist once per front door, beside the engine's."""
    found = [
        f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}"
        for path in FRONT_DOORS
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr == "meta"
    ]
    assert found == []
