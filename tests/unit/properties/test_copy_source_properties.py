"""``x-amz-copy-source`` (``apollo.gateway.handlers_object.parse_copy_source``): a header either names a valid
bucket, a valid key and an optional version id (checked where it is read), or is refused with an S3 error."""

from __future__ import annotations

from types import SimpleNamespace
from urllib.parse import quote, unquote_to_bytes

from hypothesis import example, given, settings
from hypothesis import strategies as st
from prop_strategies import any_text, wire_text
from test_names_properties import aws_bucket_rules, bucket_valid

from apollo.gateway.handlers_object import parse_copy_source
from apollo.gateway.names import check_version_id, validate_key
from apollo.gateway.s3errors import S3Error


def _parse(header: str):
    return parse_copy_source(SimpleNamespace(headers={"x-amz-copy-source": header}))


percent = st.lists(st.integers(0, 255), max_size=4).map(lambda raw: "".join(f"%{b:02X}" for b in raw))
headers = st.one_of(
    any_text,
    st.tuples(st.sampled_from(["", "/", "//"]), st.one_of(bucket_valid, wire_text), st.sampled_from(["/", "%2F", ""]),
              st.one_of(wire_text, percent), st.sampled_from(["", "?versionId=", "?versionId=null", "?x=1"]),
              st.one_of(st.just(""), wire_text)).map("".join),
)  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(headers)
@example("/bucket/%FF")  # found by this property: the byte was read as U+FFFD, another key than the one named
@example("/bucket/\udcff")  # a non-UTF-8 byte in the header itself
@example("/bucket/a%00")
@example("/bucket\n/key")
def test_a_copy_source_names_a_valid_bucket_and_key_or_is_refused(header):
    try:
        bucket, key, version_id = _parse(header)
        check_version_id(version_id)  # what the handler checks next (resolve)
    except S3Error as exc:
        assert exc.status == 400, exc.code
        return
    assert aws_bucket_rules(bucket)
    validate_key(key)
    path = header.partition("?")[0].encode("utf-8", "surrogateescape")
    unquote_to_bytes(path).decode("utf-8")  # what was accepted is UTF-8 once percent-decoded


@settings(max_examples=200, deadline=None)
@given(bucket_valid, st.text(min_size=1, max_size=40).filter(lambda k: "\x00" not in k),
       st.one_of(st.none(), st.just("null"), st.from_regex(r"[0-9a-f]{32}", fullmatch=True)),
       st.booleans())  # fmt: skip
def test_a_copy_source_rendered_by_a_client_parses_back(bucket, key, version_id, leading_slash):
    header = ("/" if leading_slash else "") + f"{bucket}/{quote(key, safe='/')}"
    if version_id is not None:
        header += f"?versionId={version_id}"
    assert _parse(header) == (bucket, key, version_id)
