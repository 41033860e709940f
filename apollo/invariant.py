"""Pair-assertion helpers that survive ``python -O`` (unlike ``assert``)."""

from __future__ import annotations

from typing import NoReturn


class InvariantError(AssertionError):
    """A condition the code relies on did not hold: a bug, never bad input."""


def invariant(condition: object, message: str) -> None:
    if not condition:
        raise InvariantError(message)


def unreachable(message: str) -> NoReturn:
    raise InvariantError(f"unreachable: {message}")
