"""Index-ordered listing with prefix, delimiter and markers, shared by all list calls.

The walker asks the database for the next few rows after a cursor. When a
delimiter folds keys into a common prefix, it seeks straight past every key
under that prefix instead of reading them, so a page costs O(page) index
seeks, never a bucket scan. Rows a listing hides (delete markers) are stepped
over, but at most ``limits.list_hidden_rows_max`` of them a page: a bucket of
a million delete markers then answers a short, truncated page that says where
to resume, as S3 may, instead of reading every marker in one request.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from apollo import limits


def successor(prefix: str) -> str | None:
    """The smallest string greater than every string starting with ``prefix`` (None: no bound)."""
    while prefix:
        last = ord(prefix[-1])
        if last < 0x10FFFF:
            nxt = last + 1
            if 0xD800 <= nxt <= 0xDFFF:  # skip surrogates: not encodable in UTF-8
                nxt = 0xE000
            return prefix[:-1] + chr(nxt)
        prefix = prefix[:-1]
    return None


@dataclass
class Cursor:
    """Resume point: rows strictly after ``key`` (or at/after it when ``inclusive``)."""

    key: str
    inclusive: bool = False
    seq: int | None = None  # versions: also rows of ``key`` older than this version sequence


# fetch(cursor, upper_bound_exclusive, limit) -> rows sorted by key; each row has a `.key`.
Fetch = Callable[[Cursor, "str | None", int], list]


def walk(
    fetch: Fetch,
    prefix: str,
    delimiter: str,
    start: Cursor,
    max_items: int,
    cursor_after: Callable[[object], Cursor] = lambda row: Cursor(row.key),
    visible: Callable[[object], bool] = lambda row: True,
) -> tuple[list, list[str], bool, str | None]:
    """Collect up to ``max_items`` rows and common prefixes; returns (rows, prefixes, truncated, stopped at).

    Rows that are not ``visible`` (delete markers in an object listing) are stepped over without
    counting, and do not start a common prefix; after ``limits.list_hidden_rows_max`` of them the page
    ends truncated, and ``stopped at`` is the key of the last one (resume after it). Else it is None.
    """
    rows: list = []
    prefixes: list[str] = []
    hidden = 0
    if max_items <= 0:
        return rows, prefixes, False, None  # AWS: max-keys=0 is an empty, untruncated page (no marker)
    upper = successor(prefix) if prefix else None
    cursor = start if start.key >= prefix else Cursor(prefix, inclusive=True)
    folded = _common_prefix(cursor.key, prefix, delimiter) if not cursor.inclusive else None
    if folded is not None:  # the marker is a common prefix (or under one) returned on an earlier page
        skip_to = successor(folded)
        if skip_to is None:
            return rows, prefixes, False, None
        cursor = Cursor(skip_to, inclusive=True)
    batch = min(max(max_items, 1) + 1, 1001)
    while True:
        fetched = fetch(cursor, upper, batch)
        if not fetched:
            return rows, prefixes, False, None
        for row in fetched:
            if not visible(row):
                cursor = cursor_after(row)
                hidden += 1
                if hidden >= limits.list_hidden_rows_max:
                    return rows, prefixes, True, row.key
                continue
            if len(rows) + len(prefixes) >= max_items:
                return rows, prefixes, True, None
            common = _common_prefix(row.key, prefix, delimiter)
            if common is None:
                rows.append(row)
                cursor = cursor_after(row)
                continue
            prefixes.append(common)
            skip_to = successor(common)
            if skip_to is None:
                return rows, prefixes, False, None
            cursor = Cursor(skip_to, inclusive=True)
            break  # re-seek past everything under the common prefix
        else:
            if len(fetched) < batch:
                return rows, prefixes, False, None


def _common_prefix(key: str, prefix: str, delimiter: str) -> str | None:
    if not delimiter:
        return None
    found = key.find(delimiter, len(prefix))
    return None if found < 0 else key[: found + len(delimiter)]
