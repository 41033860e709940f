"""Read-your-writes when a metadata service answers reads from PostgreSQL standbys.

Every write call's answer carries the primary's WAL position after its commit
(``WRITTEN_AT``); the caller keeps the highest it has seen and sends it with every call
(``READ_AFTER``). The service answers a read from a standby only once that standby has
replayed the WAL up to there, so whoever wrote sees their write: a native client its own,
a gateway those of every S3 client it serves.

A position is PostgreSQL's ``pg_lsn`` text, two hex numbers (``16/B374D848``): the
high and low 32 bits of a byte offset in the WAL.
"""

from __future__ import annotations

import re

from apollo import errors

WRITTEN_AT = "Apollo-Written-At"  # answer header: the WAL position after the call's commit
READ_AFTER = "Apollo-Read-After"  # call header: read nothing older than this position
_LSN = re.compile(r"([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})")


def parse(text: str) -> int:
    """A ``pg_lsn`` as one integer. :raises InvalidRequest: anything else."""
    match = _LSN.fullmatch(text)
    if match is None:
        raise errors.InvalidRequest(f"a WAL position is two hex numbers, HIGH/LOW: {text[:40]!r}")
    return int(match[1], 16) << 32 | int(match[2], 16)


def format_lsn(position: int) -> str:
    return f"{position >> 32:X}/{position & 0xFFFFFFFF:X}"
