"""Bucket and key names (``apollo.gateway.names``): what is accepted follows AWS's rules, what is not is
refused with an S3 error, and nothing raises anything else."""

from __future__ import annotations

import ipaddress
import string
from urllib.parse import quote

from hypothesis import example, given, settings
from hypothesis import strategies as st
from prop_strategies import any_text

from apollo import limits
from apollo.gateway.names import check_version_id, part_number, split_target, validate_bucket, validate_key
from apollo.gateway.s3errors import S3Error

BUCKET_CHARS = set(string.ascii_lowercase + string.digits + ".-")
ENDS = set(string.ascii_lowercase + string.digits)


def aws_bucket_rules(name: str) -> bool:
    """AWS's general-purpose bucket naming rules, written out independently of the gateway."""
    try:
        ipaddress.IPv4Address(name)
        ip_form = True
    except ValueError:
        ip_form = False
    return (
        3 <= len(name) <= 63
        and set(name) <= BUCKET_CHARS
        and name[0] in ENDS
        and name[-1] in ENDS
        and ".." not in name
        and ".-" not in name
        and "-." not in name
        and not ip_form
        and not name.startswith(("xn--", "sthree-"))
        and not name.endswith(("-s3alias", "--ol-s3"))
    )


def _accepted(check, value) -> bool:
    try:
        check(value)
    except S3Error as exc:
        assert exc.status == 400, exc.code
        return False
    return True


bucket_like = st.text(alphabet="abz09.-", min_size=0, max_size=66)
ip_like = st.tuples(*[st.integers(0, 300)] * 4).map(lambda octets: ".".join(map(str, octets)))
affixed = st.tuples(st.sampled_from(["", "xn--", "sthree-"]), st.from_regex(r"[a-z0-9]{1,10}", fullmatch=True),
                    st.sampled_from(["", "-s3alias", "--ol-s3"])).map("".join)  # fmt: skip
suffixed = st.tuples(bucket_like, st.sampled_from(["\n", "\r\n", " ", "\t", "\x00", "A", "é", "_"])).map("".join)
bucket_names = st.one_of(bucket_like, ip_like, affixed, suffixed, any_text)


@settings(max_examples=400, deadline=None)
@given(bucket_names)
@example("abc\n")  # found by this property: the pattern's ``$`` also matched before a final newline
@example("my.bucket\n")
@example("192.168.5.4")
def test_a_bucket_name_is_accepted_exactly_when_it_follows_the_aws_rules(name):
    assert _accepted(validate_bucket, name) == aws_bucket_rules(name), name


key_text = st.one_of(any_text, st.text(min_size=1000, max_size=1100), st.text(alphabet="\x00a/", max_size=5))


@settings(max_examples=300, deadline=None)
@given(key_text)
@example("\udcff")  # found by this property: a non-UTF-8 byte in a header (x-amz-copy-source) passed as a key
@example("a" * limits.key_length_bytes_max)
@example("é" * (limits.key_length_bytes_max // 2 + 1))
def test_a_key_is_accepted_exactly_when_it_is_1_to_1024_bytes_of_utf8_without_nul(key):
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        size = None
    expected = size is not None and 1 <= size <= limits.key_length_bytes_max and "\x00" not in key
    assert _accepted(validate_key, key) == expected


@settings(max_examples=200, deadline=None)
@given(st.one_of(any_text, st.from_regex(r"null|[0-9a-fA-F]{31,33}\n?", fullmatch=True)))
def test_a_version_id_is_accepted_only_in_the_form_apollo_issues(value):
    accepted = _accepted(check_version_id, value)
    assert accepted == (value == "null" or (len(value) == 32 and set(value) <= set("0123456789abcdef")))


@settings(max_examples=200, deadline=None)
@given(st.one_of(any_text, st.integers(-5, 20000).map(str), st.from_regex(r"[0-9٠-٩+ _-]{1,7}", fullmatch=True)))
def test_a_part_number_is_accepted_only_as_ascii_digits_naming_1_to_10000(raw):
    try:
        number = part_number(raw)
    except S3Error as exc:
        assert (exc.code, exc.status) == ("InvalidArgument", 400)
        return
    assert raw.isascii() and raw.isdigit() and int(raw) == number and 1 <= number <= limits.part_number_max


bucket_valid = st.from_regex(r"[a-z0-9]([a-z0-9-]{1,20}\.?)[a-z0-9]", fullmatch=True).filter(aws_bucket_rules)


@settings(max_examples=200, deadline=None)
@given(bucket_valid, st.text(max_size=40), st.booleans())
@example("000", "/", False)  # a virtual-host key "/" is the path "//"
def test_a_target_rendered_by_a_client_parses_back(bucket, key, escape_slashes):
    raw_path = f"/{bucket}/" + quote(key, safe="" if escape_slashes else "/")
    assert split_target(raw_path, "localhost:9000", None) == (bucket, key)
    host = f"{bucket}.s3.example.com:9000"
    assert split_target("/" + quote(key, safe="/"), host, "s3.example.com") == (bucket, key)
