"""SigV2 (``apollo.gateway.sigv2``): a request signed with the module's own string to sign verifies, any single
change to what it covers makes it fail, and no input raises anything but ``S3Error``."""

from __future__ import annotations

import datetime
import email.utils

from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict
from prop_strategies import any_text, wire_text

from apollo.gateway import sigv2
from apollo.gateway.s3errors import S3Error

KEY, SECRET = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
NOW = datetime.datetime(2024, 5, 24, 12, 0, 0, tzinfo=datetime.UTC)
DATE = email.utils.format_datetime(NOW, usegmt=True)
SKEW_S = 900


def lookup(access_key: str) -> str | None:
    return SECRET if access_key == KEY else None


header_values = st.one_of(st.text(st.characters(codec="latin-1", exclude_characters="\r\n\x00"), max_size=16),
                          wire_text.filter(lambda v: not set(v) & set("\r\n\x00")))  # fmt: skip
paths = st.from_regex(r"/[a-z0-9]{3,8}(/[A-Za-z0-9%._~-]{0,12}){0,2}", fullmatch=True)
queries = st.sampled_from(["", "acl", "versionId=null", "uploads", "tagging&x=1", "max-keys=2"])


@st.composite
def signed(draw):
    method, path, query = draw(st.sampled_from(["GET", "PUT", "DELETE"])), draw(paths), draw(queries)
    headers = CIMultiDict({"Host": "h", "Date": DATE})
    for name in draw(st.sets(st.sampled_from(["Content-Type", "Content-MD5", "x-amz-meta-a", "x-amz-acl"]))):
        headers[name] = draw(header_values)
    text = sigv2._string_to_sign(method, path, sigv2.parse_query(query), headers, DATE)
    headers["Authorization"] = f"AWS {KEY}:{sigv2._signature(SECRET, text)}"
    return method, path, query, headers


def verify(method, path, query, headers):
    return sigv2.verify_header(method, path, query, headers, headers["Authorization"], lookup, NOW, SKEW_S)


@settings(max_examples=150, deadline=None)
@given(signed())
def test_a_request_signed_by_the_module_verifies(request):
    assert verify(*request) == KEY


@settings(max_examples=200, deadline=None)
@given(signed(), st.data())
def test_any_single_change_to_what_is_signed_fails(request, data):
    method, path, query, headers = request
    headers = CIMultiDict(headers)
    what = data.draw(st.sampled_from(["method", "path", "subresource", "header", "date"]))
    if what == "method":
        method = data.draw(st.sampled_from(["HEAD", "POST"]))
    elif what == "path":
        changed = data.draw(paths)
        assume(changed not in (path, path + "/", path.rstrip("/")))
        path = changed
    elif what == "subresource":
        changed = data.draw(queries)
        assume({k: v for k, v in sigv2.parse_query(changed).items() if k in sigv2.SUBRESOURCES}
               != {k: v for k, v in sigv2.parse_query(query).items() if k in sigv2.SUBRESOURCES})  # fmt: skip
        query = changed
    elif what == "header":
        name = data.draw(st.sampled_from(["Content-Type", "Content-MD5", "x-amz-meta-a", "x-amz-acl"]))
        value = data.draw(header_values)
        assume(" ".join(value.split()) != " ".join(headers.get(name, "").split()) and (value or name in headers))
        headers[name] = value
    else:
        headers["Date"] = email.utils.format_datetime(NOW + datetime.timedelta(seconds=data.draw(
            st.integers(-600, 600).filter(bool))), usegmt=True)  # fmt: skip
    try:
        verify(method, path, query, headers)
    except S3Error as exc:
        assert exc.code == "SignatureDoesNotMatch"
    else:
        raise AssertionError(f"a request with its {what} changed still verified")


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(["GET", "PUT"]), st.one_of(paths, any_text), st.one_of(queries, any_text),
       st.sampled_from(["header", "presigned"]), st.one_of(st.just(KEY), any_text), any_text,
       st.one_of(st.just(DATE), any_text, st.sampled_from(["Fri, 31 Dec 9999 23:00:00 -0200"])),
       st.one_of(st.integers(-10, 10**7).map(lambda d: str(int(NOW.timestamp()) + d)), any_text, st.just("9" * 5000)))  # fmt: skip  # noqa: E501
@example("GET", "/b/k", "", "header", KEY, "\udcff", DATE, "")  # found: a non-UTF-8 signature byte, a 500
@example("GET", "/b/k", "", "presigned", KEY, "x", DATE, "9" * 5000)  # found: int() refuses 4300+ digits, a 500
def test_any_request_verifies_or_raises_an_s3_error(method, path, query, kind, key, signature, date, expires):
    headers = CIMultiDict({"Host": "h", "Date": date, "x-amz-meta-a": signature})
    try:
        if kind == "header":
            sigv2.verify_header(method, path, query, headers, f"AWS {key}:{signature}", lookup, NOW, SKEW_S)
        else:
            query = f"{query}&AWSAccessKeyId={key}&Expires={expires}&Signature={signature}"
            sigv2.verify_presigned(method, path, query, headers, lookup, NOW, SKEW_S)
    except S3Error as exc:
        assert 400 <= exc.status < 500, exc.code
        return
    raise AssertionError("a made-up request verified")
