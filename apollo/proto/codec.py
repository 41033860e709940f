"""Values on the wire between Apollo processes: JSON with tags for the few types JSON lacks.

Calls to the metadata service carry the same records the in-process ``MetaService``
takes and returns (``Version``, ``SegmentLayout``, ``ListPage``...). Each registered
dataclass travels as ``{"@": name, field: value...}``; bytes as ``{"@b": base64}``;
tuples as ``{"@t": [...]}``; dicts whose keys are not strings as ``{"@kv": [[k, v]...]}``;
plain dicts as ``{"@d": {...}}`` so that a user's metadata key can never pass for a tag.
Only registered types are rebuilt: a peer cannot make the decoder construct anything else.
A field this side's record does not have is dropped, as protobuf drops unknown fields: a record that
gained a field (with a default) still reaches a client of the version before (a native client on a GPU
host is upgraded on its own schedule); a field this side needs and the peer left out is an error.

An answer may come framed instead (``dumps_framed``, content type ``FRAMED``, when the caller's
``Accept`` asks for it): the same JSON, but each bytes value of ``BLOB_MIN`` or more is a reference
``{"@r": n}`` to the n-th of the raw blobs that follow the document. A batch lookup's answer is mostly
small objects' bytes: base64 inside JSON made it a third larger and cost more to build and parse than
the lookups themselves.

Numbers are JSON's as orjson reads and writes them: integers within 64 bits (a wider one from the wire
arrives as a float, which a field's own checks then refuse) and finite floats (NaN and infinities are
refused).

A framed answer may also be columnar (``FRAMED_COLUMNS``, for a caller whose ``Accept`` names it): a list of
``COLUMNS_MIN`` or more records of one type (None among them allowed) travels as ``{"@c": name, "n": count,
"f": {field: [one value per record]}}``, a column whose every value is the field's default left out, nested
lists of records columnar in turn, and a column of blobs as one ``{"@rs": [first, count]}``; each with
``"at"`` (the positions of its values) and ``"of"`` (the list's length) when Nones are among them. A batch
lookup of 1,000 versions is then a few dozen lists, not 4,000 tagged objects to build, parse and walk.
Decoders understand both; an encoder uses columns only for a caller that said it reads them (a native client
of an older version does not).

Errors travel as ``{"type": name, "message": text}`` and are raised again on the far side
as the same ``apollo.errors`` class, so callers handle them as in-process ones.
"""

from __future__ import annotations

import base64
import dataclasses
import itertools
import operator
import threading
from typing import Any

import orjson

from apollo import errors
from apollo.proto.cluster_map import ClusterMap, DriveInfo, DriveRecord, NodeInfo
from apollo.proto.layout import ObjectData, Scheme, SegmentLayout
from apollo.proto.records import (
    Bucket,
    Conditions,
    ConsoleSession,
    DeleteResult,
    KeyRights,
    KVNamespace,
    Lease,
    ListPage,
    Lookup,
    ObjectAttrs,
    Part,
    Snapshot,
    TxnInfo,
    Upload,
    Version,
)

_TYPES: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        Bucket,
        KeyRights,
        KVNamespace,
        ConsoleSession,
        Conditions,
        DeleteResult,
        ListPage,
        Lookup,
        ObjectAttrs,
        Part,
        Snapshot,
        TxnInfo,
        Upload,
        Version,
        ObjectData,
        DriveRecord,
        Lease,
        ClusterMap,
        NodeInfo,
        DriveInfo,
    )  # fmt: skip
}
_FIELD_NAMES: dict[type, tuple[str, ...]] = {
    cls: tuple(field.name for field in dataclasses.fields(cls)) for cls in _TYPES.values()
}
_FIELDS = {cls: frozenset(names) for cls, names in _FIELD_NAMES.items()}
_INIT_FIELDS = {cls: tuple(field for field in dataclasses.fields(cls) if field.init) for cls in _TYPES.values()}
_ABSENT = object()


def _default_of(field: dataclasses.Field) -> Any:
    """The value a field takes when a record on the wire leaves it out: its default (a factory's is made once,
    to compare with: the empty dict or list), or ``_ABSENT`` for a field every record must carry."""
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return _ABSENT


# Per record type, (field name, default): a field equal to its default is left out of the wire, and the
# receiver's constructor puts the default back (a batch answer's 1,000 versions carry mostly empty tags,
# headers and checksums). A peer of another version must have the same defaults, as it has the same fields.
_FIELD_DEFAULTS: dict[type, tuple[tuple[str, Any], ...]] = {
    cls: tuple((field.name, _default_of(field)) for field in dataclasses.fields(cls)) for cls in _TYPES.values()
}
_PLAIN = frozenset({type(None), bool, int, float, str})
FRAMED = "application/x-apollo-framed"
FRAMED_COLUMNS = "application/x-apollo-framed-columns"
COLUMNS_MIN = 8  # records in a list before it goes as columns: fewer cost more in names than they save
COLUMN_LENGTH_MAX = 1 << 20  # a columnar list with Nones: what a peer may make the decoder allocate
BLOB_MIN = 1024  # smaller bytes stay inline as base64: a blob costs a reference and a size
_MAGIC = b"APF1"
_frame = threading.local()  # the blobs of the framed answer this thread is building (out) or reading (into)


def encode(value: Any) -> Any:
    kind = type(value)  # exact types first: a batch answer is tens of thousands of values
    if kind in _PLAIN:
        return value
    fields = _FIELD_DEFAULTS.get(kind)
    if fields is not None:
        record = {"@": kind.__name__}
        for name, default in fields:
            field_value = getattr(value, name)
            if default is _ABSENT or type(field_value) is not type(default) or field_value != default:
                record[name] = field_value if type(field_value) in _PLAIN else encode(field_value)
        return record
    if kind is list:
        if len(value) >= COLUMNS_MIN and getattr(_frame, "columns", False):
            columnar = _columns(value)
            if columnar is not None:
                return columnar
        return [encode(item) for item in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        blobs = getattr(_frame, "out", None)
        if blobs is not None and len(value) >= BLOB_MIN:
            blobs.append(value)
            return {"@r": len(blobs) - 1}
        return {"@b": base64.b64encode(value).decode()}
    if isinstance(value, SegmentLayout):
        return {"@layout": value.to_json()}
    if isinstance(value, Scheme):
        return {"@scheme": str(value)}
    if isinstance(value, list):
        return [encode(item) for item in value]
    if isinstance(value, tuple):
        return {"@t": [encode(item) for item in value]}
    if isinstance(value, set | frozenset):
        return {"@s": [encode(item) for item in sorted(value)]}
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value):
            return {"@d": {k: encode(v) for k, v in value.items()}}
        return {"@kv": [[encode(k), encode(v)] for k, v in value.items()]}
    name = type(value).__name__
    if dataclasses.is_dataclass(value) and _TYPES.get(name) is type(value):
        return {"@": name, **{f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}}
    raise TypeError(f"cannot send a {name} to another Apollo process")


def _columns(values: list) -> dict | None:
    """A list of records of one registered type (Nones among them) as columns; None: not such a list."""
    kinds = {type(item) for item in values} - {type(None)}
    if len(kinds) != 1:
        return None
    kind = kinds.pop()
    fields = _FIELD_DEFAULTS.get(kind)
    if fields is None:
        return None
    records = [item for item in values if item is not None]
    columns = {}
    for name, default in fields:  # C-speed passes over each column (map, set, count): 1,000 records a batch
        column = list(map(operator.attrgetter(name), records))
        kinds = set(map(type, column))
        if default is not _ABSENT and kinds == {type(default)} and column.count(default) == len(column):
            continue
        columns[name] = column if kinds <= _PLAIN else _column(column)
    return {"@c": kind.__name__, "n": len(records), "f": columns, **_places(values, len(records))}


def _column(column: list) -> Any:
    """A column of non-plain values: blobs (Nones among them allowed) go into the frame one after another, as
    one range."""
    blobs = getattr(_frame, "out", None)
    present = [value for value in column if value is not None]
    if blobs is None or not present or not all(type(v) is bytes and len(v) >= BLOB_MIN for v in present):
        return encode(column)
    answer = {"@rs": [len(blobs), len(present)], **_places(column, len(present))}
    blobs.extend(present)
    return answer


def _places(values: list, present: int) -> dict:
    """Where the ``present`` values that are not None sit among ``values`` (``_placed`` puts them back): nothing
    when there is no None."""
    if present == len(values):
        return {}
    return {"at": [n for n, value in enumerate(values) if value is not None], "of": len(values)}


def _decode_columns(value: dict) -> list:
    """:raises ValueError, TypeError: columns ``_columns`` would not have sent."""
    name, count, columns = value["@c"], _tagged(value, "n", int), _tagged(value, "f", dict)
    cls = _TYPES.get(name) if type(name) is str else None
    if cls is None:
        raise ValueError(f"unknown record type on the wire: {name!r}")
    known = _FIELDS[cls]
    present: dict[str, list] = {}
    for field_name, column in columns.items():
        if field_name not in known:
            continue
        if type(column) is dict:  # nested columns, or a range of blobs: decoded whole, values final
            column = decode(column)
        elif type(column) is list:
            column = [item if type(item) in _PLAIN else decode(item) for item in column]
        if type(column) is not list or len(column) != count:
            raise ValueError(f"column {field_name!r} of {name} is not a list of {count} values")
        present[field_name] = column
    return _placed(value, _records(cls, count, present))


def _records(cls: type, count: int, columns: dict[str, list]) -> list:
    """``count`` records of ``cls`` from its columns, built with positional arguments: keyword arguments cost
    six times as much (a third of a batch lookup's decoding). A field left out before the last one sent takes
    its default; one with no default is an error. :raises ValueError:"""
    positional: list = []
    for field in _INIT_FIELDS[cls]:
        if not columns:
            break
        column = columns.pop(field.name, None)
        if column is None:
            if field.default is not dataclasses.MISSING:
                column = itertools.repeat(field.default, count)
            elif field.default_factory is not dataclasses.MISSING:
                column = [field.default_factory() for _ in range(count)]
            else:
                raise ValueError(f"{cls.__name__} on the wire lacks its field {field.name!r}")
        positional.append(column)
    return list(map(cls, *positional)) if positional else [cls() for _ in range(count)]


def _placed(value: dict, items: list) -> list:
    """``items`` at the positions ``value["at"]`` says, Nones between, in a list of ``value["of"]``; as they are
    when it says none. :raises ValueError, TypeError:"""
    if "at" not in value:
        return items
    positions, length = _tagged(value, "at", list), _tagged(value, "of", int)
    if not (len(positions) == len(items) <= length <= COLUMN_LENGTH_MAX
            and all(type(n) is int and 0 <= n < length for n in positions)):  # fmt: skip
        raise ValueError(f"a columnar list of {length} places {len(positions)} values for {len(items)}")
    placed: list = [None] * length
    for position, item in zip(positions, items, strict=True):
        placed[position] = item
    return placed


def decode(value: Any) -> Any:
    """:raises ValueError, TypeError, KeyError: a value ``encode`` would not have sent (a 400 to the caller).

    Records first, and plain values without a call: a batch answer is tens of thousands of values."""
    kind = type(value)
    if kind is list:
        return [item if type(item) in _PLAIN else decode(item) for item in value]
    if kind is not dict:
        return value
    if "@c" in value:
        return _decode_columns(value)
    name = value.get("@")
    if name is not None:
        cls = _TYPES.get(name) if type(name) is str else None
        if cls is None:
            raise ValueError(f"unknown record type on the wire: {name!r}")
        known = _FIELDS[cls]
        return cls(**{k: v if type(v) in _PLAIN else decode(v) for k, v in value.items() if k in known})
    if "@d" in value:
        return {k: decode(v) for k, v in _tagged(value, "@d", dict).items()}
    if "@b" in value:
        return base64.b64decode(_tagged(value, "@b", str), validate=True)
    if "@r" in value:
        blobs, index = getattr(_frame, "into", None), _tagged(value, "@r", int)
        if blobs is None or not 0 <= index < len(blobs):
            raise ValueError(f"a reference to blob {index} outside a frame that has it")
        return bytes(blobs[index])
    if "@rs" in value:
        blobs, span = getattr(_frame, "into", None), _tagged(value, "@rs", list)
        if not (blobs is not None and len(span) == 2 and all(type(n) is int for n in span) and span[0] >= 0
                and span[1] >= 0 and span[0] + span[1] <= len(blobs)):  # fmt: skip
            raise ValueError(f"a range of blobs {span!r:.40} outside a frame that has them")
        return _placed(value, [bytes(blob) for blob in blobs[span[0] : span[0] + span[1]]])
    if "@layout" in value:
        layout = _tagged(value, "@layout", dict)
        _tagged(layout, "scheme", str)
        return SegmentLayout.from_json(layout)
    if "@scheme" in value:
        return Scheme.parse(_tagged(value, "@scheme", str))
    if "@t" in value:
        return tuple(decode(item) for item in _tagged(value, "@t", list))
    if "@s" in value:
        return {decode(item) for item in _tagged(value, "@s", list)}
    if "@kv" in value:
        return {decode(k): decode(v) for k, v in _tagged(value, "@kv", list)}
    raise ValueError(f"unknown record type on the wire: an untagged object with keys {sorted(value)[:5]!r}")


def _tagged(value: dict, tag: str, kind: type) -> Any:
    """The payload of ``tag``, of the JSON type ``encode`` gives it (a str's items are not a tuple's)."""
    if not isinstance(value[tag], kind):
        raise TypeError(f"{tag} on the wire must be a {kind.__name__}, not {type(value[tag]).__name__}")
    return value[tag]


def dumps(value: Any) -> bytes:
    return orjson.dumps(encode(value))


def loads(body: bytes) -> Any:
    """:raises ValueError, TypeError, KeyError: a body ``dumps`` would not have sent."""
    try:
        return decode(orjson.loads(body))
    except RecursionError as exc:  # "[[[[..." nested deeper than the interpreter's stack: a bad call, not a 500
        raise ValueError("a value on the wire is nested too deeply") from exc


def dumps_framed(value: Any, columns: bool = False) -> bytes:
    """``FRAMED``: magic, the length of a JSON head {"doc": the document, "sizes": [blob sizes]}, the head,
    then the blobs, raw. ``columns``: lists of records as columns (``FRAMED_COLUMNS``)."""
    blobs: list = []
    _frame.out, _frame.columns = blobs, columns
    try:
        document = encode(value)
    finally:
        _frame.out, _frame.columns = None, False
    head = orjson.dumps({"doc": document, "sizes": [len(blob) for blob in blobs]})
    return b"".join([_MAGIC, len(head).to_bytes(4, "big"), head, *blobs])


def loads_framed(body: bytes) -> Any:
    """:raises ValueError, TypeError, KeyError: a body ``dumps_framed`` would not have sent."""
    if body[:4] != _MAGIC or len(body) < 8:
        raise ValueError("not a framed answer")
    size = int.from_bytes(body[4:8], "big")
    head = orjson.loads(memoryview(body)[8 : 8 + size])
    sizes = head.get("sizes") if isinstance(head, dict) else None
    if not (isinstance(sizes, list) and all(type(n) is int and n >= 0 for n in sizes)
            and sum(sizes) == len(body) - 8 - size):  # fmt: skip
        raise ValueError("a framed answer's blob sizes do not match its length")
    view, blobs, offset = memoryview(body)[8 + size :], [], 0
    for length in sizes:
        blobs.append(view[offset : offset + length])
        offset += length
    _frame.into = blobs
    try:
        return decode(head["doc"])
    except RecursionError as exc:
        raise ValueError("a value on the wire is nested too deeply") from exc
    finally:
        _frame.into = None


def error_to_wire(exc: BaseException) -> dict:
    return {"type": type(exc).__name__, "message": str(exc)}


def error_from_wire(error: dict) -> Exception:
    """The same ``apollo.errors`` class; anything else (a bug on the far side) as ``RemoteError``."""
    cls = getattr(errors, error.get("type", ""), None)
    if isinstance(cls, type) and issubclass(cls, errors.ApolloError):
        return cls(error.get("message", ""))
    return errors.RemoteError(f"{error.get('type')}: {error.get('message')}")
