"""Named fault points in production code, off unless a test turns them on.

A test names points in ``APOLLO_FAULTS`` (``name=action[,name=action]``) for a
server subprocess, or uses :func:`enabled` in-process. Actions: ``crash`` (the
process dies at once, like kill -9 at that line), ``error`` (raises
:class:`InjectedFault`). Points cost one dict lookup when nothing is enabled.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


class InjectedFault(Exception):
    """Raised at a fault point whose action is ``error``."""


def _parse(spec: str) -> dict[str, str]:
    table: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, action = item.partition("=")
        table[name] = action or "error"
    return table


_active: dict[str, str] = _parse(os.environ.get("APOLLO_FAULTS", ""))


def point(name: str) -> None:
    """Mark a place where a failure can be injected."""
    if not _active:
        return
    action = _active.get(name)
    if action == "crash":
        os._exit(137)
    if action == "error":
        raise InjectedFault(name)


@contextlib.contextmanager
def enabled(**points: str) -> Iterator[None]:
    """Enable fault points for the duration of a ``with`` block (tests only)."""
    saved = dict(_active)
    _active.update({name.replace("__", "."): action for name, action in points.items()})
    try:
        yield
    finally:
        _active.clear()
        _active.update(saved)
