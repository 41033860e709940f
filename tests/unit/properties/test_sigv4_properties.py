"""SigV4 (``apollo.gateway.sigv4``): a request signed with the module's own signing path verifies, any single
change to what the signature covers makes it fail, and no input raises anything but ``S3Error``."""

from __future__ import annotations

import datetime
from urllib.parse import quote, unquote_to_bytes

from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict
from prop_strategies import any_text, wire_text

from apollo.gateway import sigv4
from apollo.gateway.s3errors import S3Error

KEY, SECRET, REGION = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "us-east-1"
NOW = datetime.datetime(2024, 5, 24, 12, 0, 0, tzinfo=datetime.UTC)
AMZ_DATE = NOW.strftime("%Y%m%dT%H%M%SZ")
SCOPE = f"{AMZ_DATE[:8]}/{REGION}/s3/aws4_request"


def lookup(access_key: str) -> str | None:
    return SECRET if access_key == KEY else None


def verify(method, path, query, headers):
    return sigv4.verify_request(method, path, query, headers, lookup, NOW)


def sign_header(method: str, path: str, query: str, headers: CIMultiDict, signed: list[str]) -> CIMultiDict:
    """Add an Authorization header computed with the module's own canonicalization and signing functions."""
    payload = headers["x-amz-content-sha256"]
    canonical = sigv4.canonical_request(method, path, sigv4.canonical_query(query), headers, signed, payload)
    key = sigv4.signing_key(SECRET, AMZ_DATE[:8], REGION, "s3")
    signature = sigv4.sign(key, sigv4._string_to_sign(AMZ_DATE, SCOPE, canonical))
    headers = CIMultiDict(headers)
    headers["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={KEY}/{SCOPE}, SignedHeaders={';'.join(signed)}, "
                                f"Signature={signature}")  # fmt: skip
    return headers


methods = st.sampled_from(["GET", "PUT", "HEAD", "DELETE", "POST"])
segments = st.text(st.characters(codec="utf-8"), max_size=12).map(lambda s: quote(s, safe="-_.~!$'()*,;=:@"))
paths = st.lists(segments, min_size=1, max_size=4).map(lambda parts: "/" + "/".join(parts))
query_items = st.lists(st.tuples(st.text(max_size=6), st.text(max_size=6)), max_size=4)
header_values = st.one_of(st.text(st.characters(codec="latin-1", exclude_characters="\r\n\x00"), max_size=20),
                          wire_text.filter(lambda v: not set(v) & set("\r\n\x00")))  # fmt: skip


def render_query(items) -> str:
    return "&".join(f"{quote(n, safe='', errors='surrogateescape')}={quote(v, safe='', errors='surrogateescape')}"
                    for n, v in items)  # fmt: skip


@st.composite
def signed_requests(draw):
    method, path, items = draw(methods), draw(paths), draw(query_items)
    query = render_query(items)
    headers = CIMultiDict({"Host": "s3.example.com", "x-amz-date": AMZ_DATE,
                           "x-amz-content-sha256": sigv4.EMPTY_SHA256})  # fmt: skip
    for name, value in draw(st.dictionaries(st.sampled_from(["x-amz-meta-a", "x-amz-meta-b", "content-type",
                                                             "range", "x-amz-tagging"]), header_values, max_size=3)).items():  # noqa: E501
        headers[name] = value
    signed = sorted({name.lower() for name in headers})
    return method, path, query, sign_header(method, path, query, headers, signed)


@settings(max_examples=150, deadline=None)
@given(signed_requests())
@example(("PUT", "/b/k", "", CIMultiDict({"Host": "h", "x-amz-date": AMZ_DATE,
                                          "x-amz-content-sha256": sigv4.EMPTY_SHA256,
                                          "x-amz-meta-a": "\udcff"})))  # found: a non-UTF-8 header byte: a 500
def test_a_request_signed_by_the_module_verifies(request):
    method, path, query, headers = request
    if "Authorization" not in headers:  # the explicit example is given unsigned
        headers = sign_header(method, path, query, headers, sorted({n.lower() for n in headers}))
    auth = verify(method, path, query, headers)
    assert auth.access_key == KEY and auth.scope == SCOPE and not auth.presigned


@settings(max_examples=200, deadline=None)
@given(signed_requests(), st.data())
def test_any_single_change_to_what_is_signed_fails(request, data):
    method, path, query, headers = request
    what = data.draw(st.sampled_from(["method", "path", "query", "header", "date", "signature"]))
    if what == "method":
        method = data.draw(methods.filter(lambda m: m != method))
    elif what == "path":
        changed = data.draw(paths)
        assume(unquote_to_bytes(changed) != unquote_to_bytes(path))
        path = changed
    elif what == "query":
        changed = render_query(data.draw(query_items))
        assume(sigv4.canonical_query(changed) != sigv4.canonical_query(query))
        query = changed
    elif what == "header":
        names = sorted(n for n in headers if n.lower() not in ("authorization", "x-amz-date"))
        name = data.draw(st.sampled_from(names))
        value = data.draw(header_values)
        assume(" ".join(value.split()) != " ".join(headers[name].split()))
        headers = CIMultiDict(headers)
        headers[name] = value
    elif what == "date":
        moved = NOW + datetime.timedelta(seconds=data.draw(st.integers(-600, 600).filter(bool)))
        headers = CIMultiDict(headers)
        headers["x-amz-date"] = moved.strftime("%Y%m%dT%H%M%SZ")
    else:
        auth = headers["Authorization"]
        position = data.draw(st.integers(len(auth) - 64, len(auth) - 1))
        digit = data.draw(st.sampled_from("0123456789abcdef").filter(lambda d: d != auth[position].lower()))
        headers = CIMultiDict(headers)
        headers["Authorization"] = auth[:position] + digit + auth[position + 1 :]
    try:
        verify(method, path, query, headers)
    except S3Error as exc:
        assert exc.status in (400, 403)
        if what != "date":
            assert exc.code == "SignatureDoesNotMatch"
    else:
        raise AssertionError(f"a request with its {what} changed still verified")


fragments = st.one_of(any_text, st.sampled_from(["", KEY, SCOPE, AMZ_DATE, "host", "s3", "aws4_request", "/", ";", ",",
                                                 "x-amz-date", "20240524", "0" * 64, "é", "\udcff"]))  # fmt: skip
credentials = st.lists(fragments, max_size=6).map("/".join)
dates = st.one_of(st.just(AMZ_DATE), any_text, st.from_regex(r"[0-9٠-٩+ ]{8}T[0-9+ ]{6}Z", fullmatch=True),
                  st.sampled_from(["2024+524T120000Z", "20240524T120000Z\n", "99991231T235959Z"]))  # fmt: skip
http_dates = st.one_of(any_text, st.sampled_from(["Fri, 31 Dec 9999 23:00:00 -0200", "Fri, 24 May 2024 12:00:00 GMT",
                                                  "Mon, 01 Jan 0001 00:00:00 +0100",
                                                  "24 May 2024 12:00 +2400"]))  # fmt: skip


@st.composite
def hostile_requests(draw):
    headers = CIMultiDict({"Host": "s3.example.com"})
    for name, strategy in (("x-amz-date", dates), ("Date", http_dates), ("x-amz-content-sha256", fragments),
                           ("x-amz-meta-a", header_values)):  # fmt: skip
        if draw(st.booleans()):
            headers[name] = draw(strategy)
    kind = draw(st.sampled_from(["v4", "v2", "raw", "presigned", "none"]))
    if kind == "v4":
        signed = draw(st.sampled_from(["host", "host;x-amz-date", "x-amz-date", draw(fragments)]))
        signature = draw(st.from_regex(r"[0-9a-f]{0,66}", fullmatch=True))
        headers["Authorization"] = (f"AWS4-HMAC-SHA256 Credential={draw(credentials)}, SignedHeaders={signed},"
                                    f" Signature={signature}")  # fmt: skip
    elif kind == "v2":
        headers["Authorization"] = f"AWS {draw(st.sampled_from([KEY, '', draw(fragments)]))}:{draw(fragments)}"
    elif kind == "raw":
        headers["Authorization"] = draw(any_text)
    query = draw(st.one_of(any_text, st.just("")))
    if kind == "presigned":
        params = {"X-Amz-Algorithm": draw(st.sampled_from([sigv4.ALGORITHM, draw(fragments)])),
                  "X-Amz-Credential": draw(st.sampled_from([f"{KEY}/{SCOPE}", draw(credentials)])),
                  "X-Amz-Date": draw(dates),
                  "X-Amz-Expires": draw(st.one_of(st.integers(-10, 10**6).map(str), fragments)),
                  "X-Amz-SignedHeaders": draw(st.sampled_from(["host", draw(fragments)])),
                  "X-Amz-Signature": draw(fragments)}  # fmt: skip
        query = render_query([(n, v) for n, v in params.items() if draw(st.integers(0, 9))]) + "&" + query
    return draw(methods), draw(st.one_of(paths, any_text)), query, headers


def _presigned(signature: str) -> str:
    return render_query([("X-Amz-Algorithm", sigv4.ALGORITHM), ("X-Amz-Credential", f"{KEY}/{SCOPE}"),
                         ("X-Amz-Date", AMZ_DATE), ("X-Amz-Expires", "60"), ("X-Amz-SignedHeaders", "host"),
                         ("X-Amz-Signature", signature)])  # fmt: skip


@settings(max_examples=600, deadline=None)
@given(hostile_requests())
@example(("GET", "/b/k", "", CIMultiDict({"Host": "h", "Date": "Fri, 31 Dec 9999 23:00:00 -0200",
          "Authorization": f"AWS4-HMAC-SHA256 Credential={KEY}/{SCOPE}, SignedHeaders=host, Signature=00"})))  # found: OverflowError  # noqa: E501  # fmt: skip
@example(("GET", "/b/k", _presigned("é" * 64), CIMultiDict({"Host": "h"})))  # found: TypeError from compare_digest
@example(("GET", "/b/k", "", CIMultiDict({"Host": "h", "x-amz-date": "2024+524T120000Z",
          "Authorization": f"AWS4-HMAC-SHA256 Credential={KEY}/2024+524/{REGION}/s3/aws4_request, SignedHeaders=host, "
                           "Signature=00"})))  # found: int() took "+5" as a month  # fmt: skip
@example(("GET", "/b/k", "", CIMultiDict({"Host": "h", "x-amz-date": AMZ_DATE, "x-amz-content-sha256": "x",
          "Authorization": f"AWS4-HMAC-SHA256 Credential={KEY}/{AMZ_DATE[:8]}/\udcff/s3/aws4_request, "
                           "SignedHeaders=host, Signature=00"})))  # found: a non-UTF-8 region, a 500  # fmt: skip
@example(("GET", "/b/k", "Signature=x&AWSAccessKeyId=" + KEY + "&Expires=" + "9" * 5000, CIMultiDict({"Host": "h"})))
def test_any_request_verifies_or_raises_an_s3_error(request):
    method, path, query, headers = request
    try:
        auth = verify(method, path, query, headers)
    except S3Error as exc:
        assert 400 <= exc.status < 500, exc.code
        return
    if auth is not None:  # only a request that needs no secret can pass without one: it is anonymous
        raise AssertionError(f"a made-up request verified as {auth.access_key}")
