"""ListObjects v1 and v2 through boto3: prefixes, delimiters, markers, tokens, encoding, order, paginators."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import unquote_plus

import pytest

from apollo.testing.s3error import s3_error

BIG_FOLDED = 2450  # keys under "many/": they fold into one common prefix
BIG_TOP = [f"z{n:02d}" for n in range(50)]  # keys after "many/" at the top level


def _put_all(s3, bucket: str, keys: list[str]) -> None:
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda key: s3.put_object(Bucket=bucket, Key=key, Body=b"x"), keys))


def _keys(page: dict) -> list[str]:
    return [o["Key"] for o in page.get("Contents", [])]


def _prefixes(page: dict) -> list[str]:
    return [p["Prefix"] for p in page.get("CommonPrefixes", [])]


@pytest.fixture(scope="module")
def big(server) -> tuple[str, list[str]]:
    """One bucket of 2,500 keys shared by the pagination tests (written in parallel, tiny bodies)."""
    s3 = server.s3(max_pool_connections=16)
    name = f"test-big-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=name)
    keys = [f"many/{n:04d}" for n in range(BIG_FOLDED)] + BIG_TOP
    _put_all(s3, name, keys)
    return name, sorted(keys)


@pytest.fixture
def tree(s3, bucket) -> str:
    _put_all(s3, bucket, ["a/1", "a/b/2", "a/b/3", "a/c/4", "b", "c/5", "d-x-1", "d-x-2", "d-y"])
    return bucket


# prefix and delimiter ----------------------------------------------------------------------------


def test_v2_prefix_returns_only_matching_keys(s3, tree):
    page = s3.list_objects_v2(Bucket=tree, Prefix="a/b")
    assert _keys(page) == ["a/b/2", "a/b/3"]
    assert page["Prefix"] == "a/b"
    assert page["KeyCount"] == 2
    assert page["IsTruncated"] is False


def test_prefix_matching_nothing_is_an_empty_listing(s3, tree):
    page = s3.list_objects_v2(Bucket=tree, Prefix="nothing/")
    assert "Contents" not in page and "CommonPrefixes" not in page
    assert page["KeyCount"] == 0


def test_delimiter_folds_keys_into_common_prefixes(s3, tree):
    page = s3.list_objects(Bucket=tree, Delimiter="/")
    assert _keys(page) == ["b", "d-x-1", "d-x-2", "d-y"]
    assert _prefixes(page) == ["a/", "c/"]
    assert page["Delimiter"] == "/"


def test_nested_common_prefixes_under_a_prefix(s3, tree):
    page = s3.list_objects_v2(Bucket=tree, Prefix="a/", Delimiter="/")
    assert _keys(page) == ["a/1"]
    assert _prefixes(page) == ["a/b/", "a/c/"]
    assert page["KeyCount"] == 3


def test_delimiter_other_than_slash(s3, tree):
    page = s3.list_objects_v2(Bucket=tree, Delimiter="-")
    assert _prefixes(page) == ["d-"]
    assert _keys(page) == ["a/1", "a/b/2", "a/b/3", "a/c/4", "b", "c/5"]
    page = s3.list_objects_v2(Bucket=tree, Prefix="d-", Delimiter="-")
    assert _prefixes(page) == ["d-x-"]
    assert _keys(page) == ["d-y"]


def test_multi_character_delimiter(s3, bucket):
    _put_all(s3, bucket, ["x::y::z", "x::w", "x:v"])
    page = s3.list_objects_v2(Bucket=bucket, Delimiter="::")
    assert _prefixes(page) == ["x::"]
    assert _keys(page) == ["x:v"]


# markers, tokens, max-keys -----------------------------------------------------------------------


def test_v1_marker_lists_keys_after_it(s3, tree):
    page = s3.list_objects(Bucket=tree, Marker="a/c/4")
    assert _keys(page) == ["b", "c/5", "d-x-1", "d-x-2", "d-y"]
    assert page["Marker"] == "a/c/4"


def test_v1_without_delimiter_omits_next_marker(s3, tree):
    page = s3.list_objects(Bucket=tree, MaxKeys=2)
    assert _keys(page) == ["a/1", "a/b/2"]
    assert page["IsTruncated"] is True
    assert "NextMarker" not in page


def test_v1_with_delimiter_returns_next_marker(s3, tree):
    page = s3.list_objects(Bucket=tree, Delimiter="/", MaxKeys=2)
    assert _prefixes(page) == ["a/"] and _keys(page) == ["b"]
    assert page["IsTruncated"] is True
    assert page["NextMarker"] == "b"
    page = s3.list_objects(Bucket=tree, Delimiter="/", MaxKeys=2, Marker=page["NextMarker"])
    assert _prefixes(page) == ["c/"] and _keys(page) == ["d-x-1"]
    assert page["NextMarker"] == "d-x-1"


def test_v1_next_marker_can_be_a_common_prefix(s3, tree):
    page = s3.list_objects(Bucket=tree, Delimiter="/", MaxKeys=1)
    assert page["NextMarker"] == "a/"
    page = s3.list_objects(Bucket=tree, Delimiter="/", MaxKeys=1, Marker="a/")
    assert _keys(page) == ["b"] and _prefixes(page) == []


def test_v2_continuation_token_walks_every_key_once(s3, tree):
    seen: list[str] = []
    token = None
    while True:
        kwargs = {"ContinuationToken": token} if token else {}
        page = s3.list_objects_v2(Bucket=tree, MaxKeys=4, **kwargs)
        assert page["KeyCount"] == len(_keys(page))
        seen += _keys(page)
        if not page["IsTruncated"]:
            assert "NextContinuationToken" not in page
            break
        assert page["KeyCount"] == 4
        token = page["NextContinuationToken"]
        assert page["MaxKeys"] == 4
    assert seen == ["a/1", "a/b/2", "a/b/3", "a/c/4", "b", "c/5", "d-x-1", "d-x-2", "d-y"]


def test_v2_echoes_continuation_token(s3, tree):
    first = s3.list_objects_v2(Bucket=tree, MaxKeys=1)
    second = s3.list_objects_v2(Bucket=tree, MaxKeys=1, ContinuationToken=first["NextContinuationToken"])
    assert second["ContinuationToken"] == first["NextContinuationToken"]
    assert _keys(second) == ["a/b/2"]


def test_v2_start_after(s3, tree):
    page = s3.list_objects_v2(Bucket=tree, StartAfter="c")
    assert _keys(page) == ["c/5", "d-x-1", "d-x-2", "d-y"]
    assert page["StartAfter"] == "c"


def test_v2_start_after_is_ignored_when_a_token_is_given(s3, tree):
    first = s3.list_objects_v2(Bucket=tree, MaxKeys=2)
    page = s3.list_objects_v2(Bucket=tree, StartAfter="d", ContinuationToken=first["NextContinuationToken"])
    assert _keys(page)[0] == "a/b/3"


def test_invalid_continuation_token_is_invalid_argument(s3, tree):
    with s3_error("InvalidArgument", 400):
        s3.list_objects_v2(Bucket=tree, ContinuationToken="!!not-a-token!!")


@pytest.mark.parametrize("version", [1, 2])
def test_max_keys_zero_returns_nothing_and_is_not_truncated(s3, tree, version):
    call = s3.list_objects if version == 1 else s3.list_objects_v2
    page = call(Bucket=tree, MaxKeys=0)
    assert _keys(page) == [] and _prefixes(page) == []
    assert page["IsTruncated"] is False
    assert page["MaxKeys"] == 0


def test_max_keys_above_1000_is_capped_at_1000(s3, big):
    name, keys = big
    page = s3.list_objects_v2(Bucket=name, MaxKeys=5000)
    assert _keys(page) == keys[:1000]
    assert page["KeyCount"] == 1000
    assert page["IsTruncated"] is True


def test_default_page_is_1000_keys(s3, big):
    name, keys = big
    page = s3.list_objects(Bucket=name)
    assert _keys(page) == keys[:1000]
    assert page["MaxKeys"] == 1000
    assert page["IsTruncated"] is True


def test_negative_max_keys_is_invalid_argument(s3, tree):
    with s3_error("InvalidArgument", 400):
        s3.list_objects_v2(Bucket=tree, MaxKeys=-1)


def test_key_count_counts_keys_and_prefixes(s3, tree):
    page = s3.list_objects_v2(Bucket=tree, Delimiter="/", MaxKeys=3)
    assert _prefixes(page) == ["a/", "c/"] and _keys(page) == ["b"]
    assert page["KeyCount"] == 3
    assert page["IsTruncated"] is True


# encoding, owner, order ----------------------------------------------------------------------------


def test_encoding_type_url_encodes_keys_on_the_wire(s3, bucket):
    keys = ["dir one/a b.txt", "dir one/plus+sign", "unicodé/ключ", "tab\tkey"]
    _put_all(s3, bucket, keys)
    raw: list[bytes] = []
    s3.meta.events.register(
        "before-parse.s3.ListObjectsV2", lambda response_dict, **kw: raw.append(response_dict["body"])
    )
    page = s3.list_objects_v2(Bucket=bucket)  # boto3 asks for encoding-type=url itself and decodes the reply
    assert _keys(page) == sorted(keys)
    body = raw[0].decode()
    assert "<EncodingType>url</EncodingType>" in body
    wire = [unquote_plus(k.split("</Key>")[0]) for k in body.split("<Key>")[1:]]
    assert wire == sorted(keys)
    assert "unicodé" not in body and "ключ" not in body and "dir one" not in body and "\t" not in body
    assert "plus%2Bsign" in body  # a literal '+' must not read back as a space


def test_encoding_type_url_encodes_common_prefixes_and_prefix(s3, bucket):
    _put_all(s3, bucket, ["é dir/x", "é dir/sub dir/y"])
    raw: list[bytes] = []
    s3.meta.events.register(
        "before-parse.s3.ListObjectsV2", lambda response_dict, **kw: raw.append(response_dict["body"])
    )
    page = s3.list_objects_v2(Bucket=bucket, Prefix="é dir/", Delimiter="/", EncodingType="url")
    # asked for explicitly, boto3 leaves the values encoded
    assert [unquote_plus(p) for p in _prefixes(page)] == ["é dir/sub dir/"]
    assert [unquote_plus(k) for k in _keys(page)] == ["é dir/x"]
    assert unquote_plus(page["Prefix"]) == "é dir/"
    assert "é" not in raw[0].decode() and " " not in _keys(page)[0]


@pytest.mark.parametrize("version", [1, 2])
def test_a_control_character_prefix_reads_back_as_sent(s3, bucket, version):
    """boto3 asks for encoding-type=url and decodes what AWS encodes: v1's Prefix is not among them, so it
    must come back as sent (a prefix of "\n" came back "%0A")."""
    _put_all(s3, bucket, ["\nkey", "other"])
    page = s3.list_objects(Bucket=bucket, Prefix="\n") if version == 1 else s3.list_objects_v2(
        Bucket=bucket, Prefix="\n")  # fmt: skip
    assert page["Prefix"] == "\n"
    assert _keys(page) == ["\nkey"]


def test_unknown_encoding_type_is_invalid_argument(s3, tree):
    s3.meta.events.register("before-sign.s3.ListObjectsV2", _set_query("encoding-type", "base64"))
    with s3_error("InvalidArgument", 400):
        s3.list_objects_v2(Bucket=tree)


def _set_query(name: str, value: str):
    def hook(request, **kwargs):
        from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

        parts = urlsplit(request.url)
        query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != name] + [(name, value)]
        request.url = urlunsplit(parts._replace(query=urlencode(query)))

    return hook


def test_v2_owner_only_with_fetch_owner(s3, tree):
    plain = s3.list_objects_v2(Bucket=tree, MaxKeys=1)
    assert "Owner" not in plain["Contents"][0]
    owned = s3.list_objects_v2(Bucket=tree, MaxKeys=1, FetchOwner=True)
    assert owned["Contents"][0]["Owner"]["ID"]


def test_v1_always_returns_owner(s3, tree):
    page = s3.list_objects(Bucket=tree, MaxKeys=1)
    assert page["Contents"][0]["Owner"]["ID"]


def test_entries_carry_size_etag_and_storage_class(s3, bucket):
    s3.put_object(Bucket=bucket, Key="k", Body=b"hello")
    entry = s3.list_objects_v2(Bucket=bucket)["Contents"][0]
    assert entry["Size"] == 5
    assert entry["ETag"] == '"5d41402abc4b2a76b9719d911017c592"'
    assert entry["StorageClass"] == "STANDARD"
    assert entry["LastModified"].tzinfo is not None


def test_keys_are_listed_in_utf8_byte_order(s3, bucket):
    keys = ["\U0001f600", "\uff21", "é", "Z", "a", "a/", "a-", "a0", "~"]
    _put_all(s3, bucket, keys)
    expected = sorted(keys, key=lambda k: k.encode())  # U+1F600 after U+FF21 (UTF-16 order would differ)
    assert _keys(s3.list_objects_v2(Bucket=bucket)) == expected
    assert _keys(s3.list_objects(Bucket=bucket)) == expected


def test_unicode_marker_and_prefix(s3, bucket):
    _put_all(s3, bucket, ["é/1", "é/2", "\uff21/1"])
    assert _keys(s3.list_objects(Bucket=bucket, Marker="é/1")) == ["é/2", "\uff21/1"]
    assert _prefixes(s3.list_objects_v2(Bucket=bucket, Delimiter="/", StartAfter="é/")) == ["\uff21/"]


def test_listing_a_missing_bucket_is_no_such_bucket(s3):
    for call in (s3.list_objects, s3.list_objects_v2):
        with s3_error("NoSuchBucket", 404):
            call(Bucket=f"missing-{uuid.uuid4().hex[:12]}")


# paginators over 2,500 keys --------------------------------------------------------------------------


def test_v2_paginator_returns_every_key_once_in_order(s3, big):
    name, keys = big
    pages = list(s3.get_paginator("list_objects_v2").paginate(Bucket=name, PaginationConfig={"PageSize": 700}))
    assert [len(_keys(p)) for p in pages] == [700, 700, 700, 400]
    assert [k for p in pages for k in _keys(p)] == keys


def test_v1_paginator_returns_every_key_once_in_order(s3, big):
    name, keys = big
    pages = list(s3.get_paginator("list_objects").paginate(Bucket=name))
    assert [len(_keys(p)) for p in pages] == [1000, 1000, 500]
    assert [k for p in pages for k in _keys(p)] == keys


def test_folded_prefix_is_not_repeated_across_pages(s3, big):
    name, _ = big
    for op in ("list_objects", "list_objects_v2"):
        pages = list(s3.get_paginator(op).paginate(Bucket=name, Delimiter="/", PaginationConfig={"PageSize": 1}))
        assert [p for page in pages for p in _prefixes(page)] == ["many/"]
        assert [k for page in pages for k in _keys(page)] == BIG_TOP
        assert len(pages) == 1 + len(BIG_TOP)


def test_prefix_and_delimiter_pagination_near_the_end(s3, big):
    name, _ = big
    page = s3.list_objects_v2(Bucket=name, Prefix="many/", Delimiter="/", MaxKeys=3, StartAfter="many/2447")
    assert _keys(page) == ["many/2448", "many/2449"]
    assert page["IsTruncated"] is False
