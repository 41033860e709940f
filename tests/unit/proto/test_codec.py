"""The RPC codec (``apollo.proto.codec``): every registered record survives the wire unchanged, user data that
looks like a tag stays data, and nothing but a registered type is ever built from what a peer sends."""

from __future__ import annotations

import dataclasses
import json

import pytest

from apollo import errors
from apollo.ids import BadIdentifier
from apollo.proto import codec
from apollo.proto.cluster_map import ClusterMap, DriveInfo, DriveRecord, NodeInfo
from apollo.proto.layout import ObjectData, Scheme
from apollo.proto.records import (
    Bucket,
    Conditions,
    ConsoleSession,
    DeleteResult,
    Garbage,
    KeyRights,
    KVNamespace,
    Lease,
    ListPage,
    Lookup,
    ObjectAttrs,
    Part,
    RepairItem,
    Snapshot,
    TxnInfo,
    Upload,
    Version,
)
from apollo.testing.layouts import layout

TAGS_AS_DATA = {"@": "Version", "@b": "AAAA", "@d": {"x": 1}, "@layout": "x", "@t": [1], "@s": [], "@kv": []}
ATTRS = ObjectAttrs("text/plain", {"cache-control": "no-cache"}, {"owner": "ana", "@": "Bucket", "@b": "aGk="},
                    {"team": "ml"}, {"CRC32C": "4waSgw=="})  # fmt: skip
SEGMENT = layout("codec", length=5000, scheme="4+2")
VERSION = Version("b", "k/ü", "v1", True, False, 5000, "0" * 32, 1.7e9 + 0.123, ATTRS, [5 * 1024**2, 3],
                  ObjectData(5000, None, [SEGMENT]), seq=7, part_checksums=["a" * 44, "b" * 44])  # fmt: skip

# One sample of every registered record type; the test below fails when a type is registered without one.
SAMPLES = {
    "Bucket": Bucket("b", 1.7e9, "Enabled", '{"Statement":[]}', "AKOWNER", {"team": "ml"}),
    "KeyRights": KeyRights("secret", False, ('{"Statement":[]}',)),
    "ConsoleSession": ConsoleSession("AKUSER", "f" * 64, "c" * 43, 1.7e9 + 0.5),
    "Conditions": Conditions(if_none_match_star=True, if_match='"abc"'),
    "DeleteResult": DeleteResult(None, True),
    "ListPage": ListPage([VERSION, dataclasses.replace(VERSION, key="k2", data=None)], ["dir/"], True, "k2", None),
    "ObjectAttrs": ATTRS,
    "Part": Part(3, 5 * 1024**2, "1" * 32, 1.7e9, {"SHA256": "x" * 44}, "data-id"),
    "Upload": Upload("u1", "b", "k", 1.7e9, ATTRS, "CRC32", "COMPOSITE"),
    "Version": VERSION,
    "Lookup": Lookup(None, "ObjectNotFound", "b/k does not exist"),
    "ObjectData": ObjectData(11, b"\x00inline\xff\x01", []),
    "DriveRecord": DriveRecord("0" * 15 + "1", "node1", "/mnt/d1", "online", 2.0, "", 1.0, 10, 20, "ok"),
    "Lease": Lease("manager", "holder#w1", 1.5, 0.5, 1.0),
    "Snapshot": Snapshot("0" * 32, "b", "data/", 1.7e9, "key:AK", 3, 12_345),
    "KVNamespace": KVNamespace("kv", 64 << 30, 600.0, 1 << 30, 40),
    "TxnInfo": TxnInfo("1" * 32, "b", "key:AK", 1.7e9, 1.7e9 + 60, "open", "ckpt/step-1/", 7),
    "ClusterMap": ClusterMap(
        3, [NodeInfo("n1", "http://n1:9200", "r1", True, 1.0)], [DriveInfo("0" * 15 + "1", "n1", "online", True, 0.5)]
    ),
    "NodeInfo": NodeInfo("n1", "http://n1:9200", "", False, 0.0),
    "DriveInfo": DriveInfo("0" * 15 + "2", "n1", "draining", False),
}


def wire(value):
    """Through the wire as the RPC layers send it: bytes of JSON, then back."""
    return codec.loads(codec.dumps(value))


def test_every_registered_type_has_a_sample_here():
    assert set(codec._TYPES) == set(SAMPLES)
    assert all(type(sample).__name__ == name for name, sample in SAMPLES.items())


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_registered_record_round_trips_unchanged(name):
    sample = SAMPLES[name]
    back = wire(sample)
    assert type(back) is type(sample)
    assert back == sample


def test_plain_values_round_trip_with_their_python_types():
    value = {"none": None, "yes": True, "int": 2**62, "float": 0.1, "text": "ü\x00", "bytes": b"\x00\xff",
             "list": [1, [2, b"3"]], "tuple": (1, "2", (3,)), "set": {"a", "b"}, "frozen": frozenset({1, 2}),
             "int keys": {1: "a", 2: (b"b",)}, "tuple keys": {(1, 2): "x"}, "scheme": Scheme.parse("rep3"),
             "layout": SEGMENT}  # fmt: skip
    back = wire(value)
    assert back == {**value, "frozen": {1, 2}}
    assert type(back["tuple"]) is tuple and type(back["tuple"][2]) is tuple and type(back["set"]) is set
    assert wire(bytearray(b"ab")) == b"ab" and wire(memoryview(b"cd")) == b"cd"


def test_a_user_s_dict_that_looks_like_a_tag_stays_a_dict():
    assert wire(TAGS_AS_DATA) == TAGS_AS_DATA
    for key, value in TAGS_AS_DATA.items():
        assert wire({key: value}) == {key: value}
    attrs = wire(ATTRS)
    assert attrs.user_meta == {"owner": "ana", "@": "Bucket", "@b": "aGk="}  # not a Bucket, not bytes


def test_a_record_s_fields_are_tagged_on_the_wire_and_those_at_their_default_left_out():
    sent = json.loads(codec.dumps(Bucket("b", 1.0, "", owner="k", tags={"a": "1"})))
    assert sent == {"@": "Bucket", "name": "b", "created": 1.0, "versioning": "", "owner": "k",
                    "tags": {"@d": {"a": "1"}}}  # fmt: skip
    assert codec.loads(codec.dumps(Bucket("b", 1.0, ""))) == Bucket("b", 1.0, "")
    # A value equal to its default but of another type (False for 0, 0 for 0.0) still goes: the type is kept.
    sent = json.loads(codec.dumps(Lookup(error=0, member=[])))  # type: ignore[arg-type]
    assert sent == {"@": "Lookup", "error": 0, "member": []}


@pytest.mark.parametrize("name", ["Garbage", "RepairItem", "Path", "os.system", "", "__class__"])
def test_a_peer_cannot_have_an_unregistered_type_built(name):
    with pytest.raises(ValueError, match="unknown record type"):
        codec.loads(json.dumps({"@": name, "args": []}).encode())


def test_an_untagged_dict_from_a_peer_is_refused():
    with pytest.raises(ValueError, match="unknown record type"):
        codec.loads(b'{"bucket": "b"}')


def test_fields_a_record_does_not_have_are_dropped_and_missing_ones_refused():
    """A newer peer's record (a field added since) still decodes here; nothing a peer adds reaches the
    constructor, and a record without a field it needs is refused."""
    bucket = codec.loads(b'{"@": "Bucket", "name": "b", "created": 1, "versioning": "", "__init__": 1, '
                         b'"added_later": {"@d": {}}}')  # fmt: skip
    assert bucket == Bucket("b", 1, "")
    with pytest.raises(TypeError):
        codec.loads(b'{"@": "Bucket", "name": "b"}')


def test_a_layout_naming_a_path_apollo_would_never_generate_is_refused():
    bad = {**SEGMENT.to_json(), "segment_id": "../../etc/passwd"}
    with pytest.raises(BadIdentifier):
        codec.loads(json.dumps({"@layout": bad}).encode())


def test_only_registered_records_may_be_sent():
    for unregistered in (Garbage(SEGMENT, "w"), RepairItem("s", 0, "d", "r", 0), object(), ValueError("x")):
        with pytest.raises(TypeError, match="cannot send"):
            codec.dumps(unregistered)

    @dataclasses.dataclass
    class Bucket:  # same name as a registered record, another class
        name: str

    with pytest.raises(TypeError, match="cannot send"):
        codec.dumps(Bucket("b"))


def test_errors_come_back_as_the_same_apollo_error_class():
    for exc in (errors.ObjectNotFound("no key k"), errors.PreconditionFailed("etag"), errors.ApolloError("x")):
        back = codec.error_from_wire(json.loads(json.dumps(codec.error_to_wire(exc))))
        assert type(back) is type(exc) and str(back) == str(exc)


@pytest.mark.parametrize("name", ["KeyError", "SystemExit", "annotations", "", "RemoteErrorX", "NotApollo"])
def test_anything_but_an_apollo_error_comes_back_as_a_remote_error(name, monkeypatch):
    monkeypatch.setattr(errors, "NotApollo", KeyError, raising=False)  # a class the module holds, not ours
    back = codec.error_from_wire({"type": name, "message": "boom"})
    assert type(back) is errors.RemoteError
    assert str(back) == f"{name}: boom"


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_every_record_round_trips_framed_too(name):
    assert codec.loads_framed(codec.dumps_framed(SAMPLES[name])) == SAMPLES[name]


def test_a_framed_answer_carries_large_bytes_raw_and_small_ones_inline():
    big, small = bytes(range(256)) * 40, b"\x00tiny"
    body = codec.dumps_framed({"result": [big, small, ObjectData(len(big), big, [])]})
    assert body.count(big) == 2 and b'"@r":0' in body and b'"@r":1' in body  # each raw, once per value
    assert codec.loads_framed(body) == {"result": [big, small, ObjectData(len(big), big, [])]}


def _frame(head: bytes, blobs: bytes = b"") -> bytes:
    return b"APF1" + len(head).to_bytes(4, "big") + head + blobs


@pytest.mark.parametrize("body", [
    b"not framed at all",
    _frame(b'{"doc":1}'),  # no sizes
    _frame(b'{"doc":1,"sizes":[5]}', b"abc"),  # blobs shorter than they say
    _frame(b'{"doc":{"@r":3},"sizes":[]}'),  # a reference to no blob
    _frame(b'{"doc":1,"sizes":[-1]}', b""),
])  # fmt: skip
def test_a_frame_that_does_not_add_up_is_refused(body):
    with pytest.raises((ValueError, TypeError, KeyError)):
        codec.loads_framed(body)


def test_a_blob_reference_outside_a_frame_is_refused():
    with pytest.raises(ValueError, match="outside a frame"):
        codec.loads(b'{"@r": 0}')


def _columnar(value):
    return codec.loads_framed(codec.dumps_framed(value, columns=True))


def test_lists_of_records_go_as_columns_and_come_back_equal():
    """A batch lookup's answer: found versions (inline bytes of many sizes, layouts, defaults and not), and
    lookups without one among them; nested lists of records are columns in turn, blobs one range."""
    inline = [bytes([n]) * (2000 + n) for n in range(20)]
    versions = [dataclasses.replace(VERSION, key=f"k{n}", seq=n, data=ObjectData(len(inline[n]), inline[n], []))
                for n in range(20)]  # fmt: skip
    versions[3] = dataclasses.replace(VERSION, data=ObjectData(5000, segments=[SEGMENT]))
    lookups = [Lookup(version) for version in versions] + [Lookup(error="ObjectNotFound", message="no")] * 3
    answer = {"result": lookups, "tokens": {}, "pages": [ListPage([VERSION] * 9, [], False, None, None)]}
    body = codec.dumps_framed(answer, columns=True)
    assert b'"@c":"Lookup"' in body and b'"@rs"' in body and b'"@":"Version"' not in body
    assert _columnar(answer) == answer
    assert _columnar([None] * 5 + [SAMPLES["Bucket"]] * 8 + [None]) == [None] * 5 + [SAMPLES["Bucket"]] * 8 + [None]
    mixed = [SAMPLES["Bucket"]] * 8 + [SAMPLES["Snapshot"]]  # not one type: one record each, as before
    assert b'"@c"' not in codec.dumps_framed(mixed, columns=True) and _columnar(mixed) == mixed
    assert b'"@c"' not in codec.dumps_framed(answer)  # only for a caller that asked for columns


def test_fields_left_out_of_columns_take_their_defaults_each_record_its_own():
    """Columns are built into records positionally: a field left out before one that was sent takes its
    default, and a factory's (a dict) is made per record, not shared between them."""
    attrs = [ObjectAttrs(tags={"n": str(n)}) for n in range(10)]
    got = _columnar(attrs)
    assert got == attrs and b'"headers"' not in codec.dumps_framed(attrs, columns=True)
    got[0].headers["x"] = "y"
    assert got[1].headers == {}


@pytest.mark.parametrize("document", [
    {"@c": "Bucket", "n": 2, "f": {"name": ["a"], "created": [1, 2], "versioning": ["", ""]}},  # short column
    {"@c": "Bucket", "n": 1, "f": {"name": "a", "created": [1], "versioning": [""]}},  # not a list
    {"@c": "Bucket", "n": 1, "f": {"name": ["a"]}},  # a field it needs is missing
    {"@c": "Bucket", "n": 1, "f": {"name": ["a"], "versioning": [""]}},  # ... before one that is sent
    {"@c": "Garbage", "n": 0, "f": {}},  # an unregistered type
    {"@c": "Bucket", "n": 1, "f": {"name": ["a"], "created": [1], "versioning": [""]}, "at": [5], "of": 2},
    {"@c": "Bucket", "n": 0, "f": {}, "at": [], "of": 1 << 40},  # a list the decoder would have to allocate
    {"@c": "ObjectData", "n": 1, "f": {"size": [1], "inline": {"@rs": [0, 2]}}},  # blobs the frame lacks
    {"@c": "ObjectData", "n": 1, "f": {"size": [1], "inline": {"@rs": [-1, 1]}}},
    {"@c": "ObjectData", "n": 2, "f": {"size": [1, 2], "inline": {"@rs": [0, 1], "at": [3], "of": 2}}},
])  # fmt: skip
def test_columns_that_do_not_add_up_are_refused(document):
    head = json.dumps({"doc": document, "sizes": [3]}).encode()
    with pytest.raises((ValueError, TypeError)):
        codec.loads_framed(_frame(head, b"abc"))
