"""S3 XML request bodies (``apollo.gateway.xml``): any body either parses into values that follow S3's rules or
is refused with an S3 error; a document rendered by ``xml.render`` parses back to the values rendered."""

from __future__ import annotations

import re
from xml.sax.saxutils import escape

from hypothesis import example, given, settings
from hypothesis import strategies as st

from apollo import limits
from apollo.gateway.s3errors import S3Error
from apollo.gateway.xml import parse_complete, parse_delete, parse_tagging, parse_versioning, render

PARSERS = [parse_complete, parse_delete, parse_tagging, parse_versioning]
NAMES = ["CompleteMultipartUpload", "Part", "PartNumber", "ETag", "Delete", "Object", "Key", "VersionId", "Quiet",
         "Tagging", "TagSet", "Tag", "Value", "VersioningConfiguration", "Status", "MfaDelete", "x:Key"]  # fmt: skip
NS = ' xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'
# Text XML can carry (no control characters, no lone surrogates, no U+FFFE/U+FFFF).
xml_text = st.text(st.characters(exclude_categories=["Cs", "Cc"], exclude_characters="\ufffe\uffff")
                   | st.sampled_from("\t\n\r"), max_size=20)  # fmt: skip
leaf_text = st.one_of(xml_text, st.sampled_from(["1", " 2 ", "+3", "-1", "1_0", "٣", "10001", "0", "9" * 30,
                                                  "Enabled", "Suspended", "true", "TRUE", "aws:x", ""]))  # fmt: skip


def _element(children):
    return st.tuples(st.sampled_from(NAMES), st.sampled_from(["", NS]), st.lists(children, max_size=4)).map(
        lambda t: f"<{t[0]}{t[1]}>{''.join(t[2])}</{t[0].split(':')[-1] if ':' in t[0] else t[0]}>")


documents = st.recursive(leaf_text.map(escape), _element, max_leaves=30).map(lambda d: d.encode())
bodies = st.one_of(documents, st.binary(max_size=200),
                   st.tuples(st.sampled_from([b"", b'<?xml version="1.0" encoding="UTF-8"?>',
                                              b'<?xml version="1.0" encoding="utf-16"?>',
                                              b'<?xml version="1.0" encoding="shift_jis"?>',
                                              b'<?xml version="1.0" encoding="nope"?>', b"<!DOCTYPE x>"]),
                             documents).map(b"".join))  # fmt: skip


def _check_result(parser, result) -> None:
    if parser is parse_complete:
        assert result and all(type(n) is int and 0 <= n < 10**19 and type(e) is str for n, e in result)
    elif parser is parse_delete:
        objects, quiet = result
        assert 1 <= len(objects) <= limits.delete_objects_keys_max and type(quiet) is bool
        assert all(type(k) is str and (v is None or type(v) is str) for k, v in objects)
    elif parser is parse_tagging:
        assert len(result) <= limits.tags_per_object_max
        for key, value in result.items():
            assert 1 <= len(key) <= 128 and len(value) <= 256 and not key.lower().startswith("aws:")
    else:
        assert result in ("Enabled", "Suspended")


@settings(max_examples=400, deadline=None)
@given(bodies, st.sampled_from(PARSERS))
@example(b"<CompleteMultipartUpload><Part><PartNumber>\xd9\xa3</PartNumber><ETag>a</ETag></Part>"
         b"</CompleteMultipartUpload>", parse_complete)  # found by this property: "٣" (Arabic 3) was part 3
@example(b"<CompleteMultipartUpload><Part><PartNumber>1_0</PartNumber><ETag>a</ETag></Part>"
         b"</CompleteMultipartUpload>", parse_complete)  # and "1_0" part 10
@example(b"<!DOCTYPE d [<!ENTITY e 'x'>]><Delete><Object><Key>&e;</Key></Object></Delete>", parse_delete)
@example(b'<?xml version="1.0" encoding="shift_jis"?><Delete/>', parse_delete)  # found: ValueError from expat
@example(b'<?xml version="" encoding="n"?>', parse_complete)  # found: LookupError from expat
def test_a_body_parses_into_valid_values_or_is_refused_with_an_s3_error(body, parser):
    try:
        result = parser(body)
    except S3Error as exc:
        assert exc.status == 400 and exc.code in ("MalformedXML", "InvalidTag"), exc.code
        return
    _check_result(parser, result)
    if parser is parse_complete:
        numbers = re.findall(rb"<PartNumber(?: [^>]*)?>([^<]*)</PartNumber>", body)
        assert all(re.fullmatch(rb"\s*[0-9]+\s*", n) for n in numbers), numbers


keys = xml_text.filter(bool)
etags = st.from_regex(r'"?[0-9a-f]{32}(-[0-9]{1,4})?"?', fullmatch=True)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 10000), etags), min_size=1, max_size=20), st.booleans())
def test_a_rendered_complete_request_parses_back(parts, namespace):
    body = render("CompleteMultipartUpload", {"Part": [{"PartNumber": n, "ETag": e} for n, e in parts]},
                  namespace=namespace)  # fmt: skip
    assert parse_complete(body) == parts


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(keys, st.one_of(st.none(), st.just("null"), st.from_regex(r"[0-9a-f]{32}", fullmatch=True))),
                min_size=1, max_size=20), st.booleans())  # fmt: skip
@example([("a\rb", None)], False)  # found by this property: a CR was rendered raw and read back as LF
def test_a_rendered_delete_request_parses_back(objects, quiet):
    body = render("Delete", {"Object": [{"Key": k, "VersionId": v} for k, v in objects], "Quiet": quiet})
    assert parse_delete(body) == (objects, quiet)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(xml_text.filter(lambda k: 1 <= len(k) <= 128 and not k.lower().startswith("aws:")),
                       xml_text, max_size=limits.tags_per_object_max))  # fmt: skip
def test_rendered_tags_parse_back(tags):
    body = render("Tagging", {"TagSet": {"Tag": [{"Key": k, "Value": v} for k, v in tags.items()]}})
    assert parse_tagging(body) == tags


@settings(max_examples=20, deadline=None)
@given(st.sampled_from(["Enabled", "Suspended"]))
def test_a_rendered_versioning_configuration_parses_back(status):
    assert parse_versioning(render("VersioningConfiguration", {"Status": status})) == status
