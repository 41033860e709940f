"""The metadata RPC codec (``apollo.proto.codec``) and the service's argument binding (``rpc_service.impose``).

Any JSON a peer sends either decodes, or raises what the RPC service answers with 400 (``ValueError``,
``TypeError``, ``KeyError``); a decoded layout always satisfies ``apollo.ids``; what ``encode`` sends,
``decode`` rebuilds.
"""

from __future__ import annotations

import dataclasses
import json
import time

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from apollo import errors, ids, limits
from apollo.meta.rpc_service import MetaRpc, impose
from apollo.meta.service import MetaService
from apollo.proto import codec
from apollo.proto.layout import ObjectData, Scheme, SegmentLayout, ShardRef
from apollo.proto.meta_api import REMOTE
from apollo.proto.records import ObjectAttrs, Version

REFUSED = (ValueError, TypeError, KeyError)  # what rpc_service._answer turns into 400 InvalidRequest
TAGS = ["@", "@d", "@b", "@t", "@s", "@kv", "@layout", "@scheme"]
FIELDS = ["segment_id", "offset", "length", "scheme", "cell_size", "pg", "drives", "size", "inline", "segments",
          "bucket", "key", "etag", "attrs", "data", "name"]  # fmt: skip
hex_id = st.from_regex(r"[0-9a-f]{32}", fullmatch=True)
drive = st.one_of(st.just(""), st.from_regex(r"[0-9a-f]{16}", fullmatch=True))
# The wire carries 64-bit integers and finite floats (orjson); scalars for the RPC fuzzing go past them.
int64s = st.integers(-(2**63), 2**63 - 1)
finite_floats = st.floats(allow_nan=False, allow_infinity=False)
scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=False),
                    st.text(max_size=12), st.sampled_from(sorted(codec._TYPES)), st.sampled_from(["4+2", "rep3", "rep",
                    "+", "1+1", " 4+2", "٤+٢", "rep+3", "ab=="]), hex_id, drive)  # fmt: skip


def _extend(children):
    return st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(TAGS + FIELDS), st.text(max_size=4)), children, max_size=4),
        st.tuples(st.sampled_from(TAGS), children).map(lambda pair: {pair[0]: pair[1]}),
    )


json_values = st.recursive(scalars, _extend, max_leaves=25)


def _layouts(value):
    """Every SegmentLayout and ShardRef anywhere in a decoded value."""
    if isinstance(value, SegmentLayout | ShardRef):
        yield value
    if isinstance(value, list | tuple | set | frozenset):
        for item in value:
            yield from _layouts(item)
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _layouts(k)
            yield from _layouts(v)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for f in dataclasses.fields(value):
            yield from _layouts(getattr(value, f.name))


def _check_ids(layout) -> None:
    ids.segment_id(layout.segment_id)
    ids.placement_group(layout.pg)
    if isinstance(layout, SegmentLayout):
        assert all(d == "" or ids.drive_id(d) for d in layout.drives)
        assert len(layout.drives) == layout.scheme.width


@settings(max_examples=500, deadline=None)
@given(json_values)
@example({"@d": 1})  # found by this property: AttributeError ('int' object has no attribute 'items')
@example({"@scheme": 5})  # found: AttributeError from Scheme.parse
@example({"@layout": {"segment_id": "0" * 32, "offset": 0, "length": 0, "scheme": [], "cell_size": 4096, "pg": 0,
                      "drives": []}})  # fmt: skip
@example({"@b": "!!!!"})  # found: base64 dropped the characters it does not know and decoded b""
@example({"@t": "ab"})
def test_any_json_decodes_to_valid_records_or_is_refused(value):
    body = json.dumps(value).encode()
    try:
        decoded = codec.loads(body)
    except REFUSED:
        return
    for layout in _layouts(decoded):
        _check_ids(layout)


@pytest.mark.parametrize("body", [b"[" * 100_000 + b"]" * 100_000, b'{"@t":[' * 600 + b']}' * 600])
def test_deeply_nested_json_is_refused_not_a_recursion_error(body):
    """Found by hand next to the properties: json.loads and decode recurse, and RecursionError is a 500."""
    with pytest.raises(ValueError):
        codec.loads(body)


schemes = st.sampled_from(["2+1", "4+2", "8+3", "rep1", "rep3"]).map(Scheme.parse)


@st.composite
def layouts(draw):
    scheme = draw(schemes)
    return SegmentLayout(draw(hex_id), draw(st.integers(0, 2**50)), draw(st.integers(0, 2**40)), scheme,
                         draw(st.integers(limits.cell_size_bytes_min, limits.cell_size_bytes_max)),
                         draw(st.integers(0, ids.PLACEMENT_GROUPS_MAX - 1)),
                         tuple(draw(st.lists(drive, min_size=scheme.width, max_size=scheme.width))))  # fmt: skip


text_maps = st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3)
versions = st.builds(
    Version, bucket=st.text(max_size=10), key=st.text(max_size=20), version_id=st.one_of(st.just("null"), hex_id),
    is_latest=st.booleans(), delete_marker=st.booleans(), size=st.integers(0, 2**50), etag=hex_id,
    last_modified=st.floats(0, 2e9), attrs=st.builds(ObjectAttrs, st.text(max_size=8), text_maps, text_maps, text_maps),
    parts=st.lists(st.integers(0, 2**30), max_size=3),
    data=st.one_of(st.none(), st.builds(ObjectData, st.integers(0, 2**40), st.one_of(st.none(), st.binary(max_size=20)),
                                        st.lists(layouts(), max_size=2))),
)  # fmt: skip
wire_values = st.recursive(
    st.one_of(st.none(), st.booleans(), int64s, finite_floats, st.text(max_size=8),
              st.binary(max_size=16), layouts(), schemes, versions),
    lambda children: st.one_of(st.lists(children, max_size=3), st.tuples(children, children),
                               st.dictionaries(st.text(max_size=4), children, max_size=3),
                               st.dictionaries(int64s, children, max_size=3),
                               st.frozensets(int64s, max_size=3)),
    max_leaves=12,
)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(wire_values)
@example({"@d": "a user's metadata key that looks like a tag"})
def test_what_encode_sends_decode_rebuilds(value):
    decoded = codec.loads(codec.dumps(value))
    assert decoded == (set(value) if isinstance(value, frozenset) else value)


def _target(method: str):
    return getattr(MetaRpc, method, None) or getattr(MetaService, method)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(REMOTE)), json_values, json_values)
def test_binding_any_decoded_arguments_is_refused_or_imposes_the_services_own(method, args, kwargs):
    try:
        args, kwargs = codec.loads(json.dumps(args).encode()), codec.loads(json.dumps(kwargs).encode())
        bound_args, bound_kwargs = impose(_target(method), [None, *args] if isinstance(args, list) else args,
                                          kwargs, "key:me")  # fmt: skip
    except (*REFUSED, errors.InvalidRequest):
        return
    import inspect

    bound = inspect.signature(_target(method)).bind_partial(*bound_args, **bound_kwargs).arguments
    if "owner" in bound:
        assert bound["owner"] == "key:me"
    if "now" in bound:
        assert abs(bound["now"] - time.time()) < 60
    for name in ("max_keys", "max_parts", "max_uploads"):
        if name in bound:
            assert type(bound[name]) is int and 0 <= bound[name] <= limits.list_keys_max
