"""S3 XML (``apollo.gateway.xml``): responses rendered as S3 clients parse them, request documents parsed with
namespaces stripped, and every malformed body refused with the S3 error AWS gives for it."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from apollo import limits
from apollo.gateway.s3errors import S3Error, s3error
from apollo.gateway.xml import (
    S3_NS,
    error_body,
    http_date,
    iso8601,
    parse,
    parse_complete,
    parse_delete,
    parse_tagging,
    parse_versioning,
    render,
    text,
    validate_tags,
)


def refused(code: str, call, *args) -> S3Error:
    with pytest.raises(S3Error) as caught:
        call(*args)
    assert (caught.value.code, caught.value.status) == (code, 400), caught.value
    return caught.value


def tagging(*pairs: tuple[str, str]) -> bytes:
    tags = "".join(f"<Tag><Key>{k}</Key><Value>{v}</Value></Tag>" for k, v in pairs)
    return f'<Tagging xmlns="{S3_NS}"><TagSet>{tags}</TagSet></Tagging>'.encode()


# rendering -------------------------------------------------------------------------------------------------


def test_render_nests_dicts_repeats_lists_and_omits_none():
    body = render("ListBucketResult", {"Name": "b", "Missing": None, "Contents": [{"Key": "a", "Size": 1},
                  {"Key": "b", "Size": 2}], "IsTruncated": False, "Prefix": ""})  # fmt: skip
    root = ET.fromstring(body)
    assert root.tag == f"{{{S3_NS}}}ListBucketResult"
    ns = {"s3": S3_NS}
    assert [c.findtext("s3:Key", namespaces=ns) for c in root.findall("s3:Contents", ns)] == ["a", "b"]
    assert root.findtext("s3:IsTruncated", namespaces=ns) == "false"
    assert root.find("s3:Missing", ns) is None
    assert root.findtext("s3:Prefix", namespaces=ns) == ""
    assert body.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n')
    assert b"<Prefix />" in body


def test_render_escapes_text_so_any_key_round_trips():
    key = "a<b>&c\"d'e ü/日本"
    root = ET.fromstring(render("R", {"Key": key}, namespace=False))
    assert root.tag == "R" and root.findtext("Key") == key


def test_error_body_carries_code_message_fields_resource_and_request_id():
    body = error_body(s3error("NoSuchKey", Key="k"), "/bucket/k", "req-1")
    root = ET.fromstring(body)
    assert root.tag == "Error"  # error documents carry no namespace
    assert [(c.tag, c.text) for c in root] == [
        ("Code", "NoSuchKey"), ("Message", "The specified key does not exist."), ("Key", "k"),
        ("Resource", "/bucket/k"), ("RequestId", "req-1"),
    ]  # fmt: skip


def test_error_body_percent_encodes_what_xml_cannot_carry_in_the_resource():
    root = ET.fromstring(error_body(s3error("NoSuchBucket"), "/b/a\x01b\x0b\ufffe", "r"))
    assert root.findtext("Resource") == "/b/a%01b%0B%EF%BF%BE"


def test_error_body_is_well_formed_whatever_the_key():
    """NoSuchKey echoes the key: one with a control character in its name must still make a valid document."""
    root = ET.fromstring(error_body(s3error("NoSuchKey", Key="a\x01b"), "/b/a\x01b", "r"))
    assert root.findtext("Key") == "a%01b"


def test_timestamps_are_s3_s_formats():
    assert iso8601(0) == "1970-01-01T00:00:00.000Z"
    assert iso8601(1_700_000_000.9999) == "2023-11-14T22:13:20.999Z"  # milliseconds, truncated
    assert http_date(1_700_000_000.9) == "Tue, 14 Nov 2023 22:13:20 GMT"


# parsing ---------------------------------------------------------------------------------------------------


def test_parse_strips_namespaces_and_checks_the_root():
    root = parse(b'<a:Delete xmlns:a="urn:x"><a:Object><a:Key>k</a:Key></a:Object></a:Delete>', "Delete")
    assert root.tag == "Delete" and text(root.find("Object"), "Key") == "k"
    error = refused("MalformedXML", parse, b"<Tagging/>", "Delete")
    assert "expected a Delete document, got Tagging" in error.message


@pytest.mark.parametrize("body", [b"", b"not xml", b"<Delete>", b"<Delete></Tagging>", b"<Delete>\x00</Delete>",
                                  b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
                                  b"<Delete><Object><Key>&e;</Key></Object></Delete>"])  # fmt: skip
def test_malformed_documents_are_malformed_xml(body):
    refused("MalformedXML", parse, body, "Delete")


def test_a_document_over_the_limit_is_refused_before_it_is_parsed():
    huge = b"<Delete>" + b" " * limits.xml_body_bytes_max + b"</Delete>"
    assert "too large" in refused("MalformedXML", parse, huge, "Delete").message


def test_missing_required_elements_are_malformed_xml_and_optional_ones_are_none():
    root = parse(b"<VersioningConfiguration><MfaDelete/></VersioningConfiguration>", "VersioningConfiguration")
    assert text(root, "Status", required=False) is None
    assert text(root, "MfaDelete") == ""
    assert "missing element Status" in refused("MalformedXML", text, root, "Status").message


def test_complete_multipart_upload_lists_part_numbers_and_etags():
    body = (b'<CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
            b'<Part><PartNumber>1</PartNumber><ETag>"a"</ETag></Part>'
            b"<Part><ETag>b</ETag><PartNumber> 2 </PartNumber></Part></CompleteMultipartUpload>")  # fmt: skip
    assert parse_complete(body) == [(1, '"a"'), (2, "b")]


@pytest.mark.parametrize("body", [
    b"<CompleteMultipartUpload/>",
    b"<CompleteMultipartUpload><Part><PartNumber>one</PartNumber><ETag>a</ETag></Part></CompleteMultipartUpload>",
    b"<CompleteMultipartUpload><Part><ETag>a</ETag></Part></CompleteMultipartUpload>",
    b"<CompleteMultipartUpload><Part><PartNumber>1</PartNumber></Part></CompleteMultipartUpload>",
])  # fmt: skip
def test_a_complete_request_without_well_formed_parts_is_malformed_xml(body):
    refused("MalformedXML", parse_complete, body)


def test_delete_lists_keys_versions_and_quiet():
    body = (b"<Delete><Quiet>TRUE</Quiet><Object><Key>a</Key></Object>"
            b"<Object><Key>b</Key><VersionId>v1</VersionId></Object></Delete>")  # fmt: skip
    assert parse_delete(body) == ([("a", None), ("b", "v1")], True)
    assert parse_delete(b"<Delete><Object><Key>a</Key></Object></Delete>")[1] is False


def test_delete_of_no_keys_or_too_many_is_malformed_xml():
    refused("MalformedXML", parse_delete, b"<Delete><Quiet>true</Quiet></Delete>")
    many = b"<Delete>" + b"<Object><Key>k</Key></Object>" * (limits.delete_objects_keys_max + 1) + b"</Delete>"
    assert f"at most {limits.delete_objects_keys_max}" in refused("MalformedXML", parse_delete, many).message
    exactly = b"<Delete>" + b"<Object><Key>k</Key></Object>" * limits.delete_objects_keys_max + b"</Delete>"
    assert len(parse_delete(exactly)[0]) == limits.delete_objects_keys_max


def test_tagging_parses_to_a_dict():
    assert parse_tagging(tagging(("team", "ml"), ("empty", ""))) == {"team": "ml", "empty": ""}
    assert parse_tagging(b"<Tagging><TagSet/></Tagging>") == {}


@pytest.mark.parametrize(("body", "message"), [
    (tagging(("k", "1"), ("k", "2")), "multiple Tags with the same key"),
    (tagging(*[(f"k{n}", "v") for n in range(11)]), "cannot be greater than 10"),
    (tagging(("", "v")), "TagKey you have provided is invalid"),
    (tagging(("k" * 129, "v")), "TagKey you have provided is invalid"),
    (tagging(("k", "v" * 257)), "TagKey you have provided is invalid"),
    (tagging(("AWS:cost", "v")), "cannot be prefixed with aws:"),
])  # fmt: skip
def test_bad_tags_are_invalid_tag(body, message):
    assert message in refused("InvalidTag", parse_tagging, body).message


def test_tags_at_the_limits_are_accepted():
    validate_tags({f"k{n}": "v" for n in range(10)})
    validate_tags({"k" * 128: "v" * 256, "awsx:": ""})


def test_tagging_without_a_tag_set_is_malformed_xml():
    refused("MalformedXML", parse_tagging, b"<Tagging/>")


@pytest.mark.parametrize("status", ["Enabled", "Suspended"])
def test_versioning_status_is_enabled_or_suspended(status):
    body = f"<VersioningConfiguration><Status>{status}</Status></VersioningConfiguration>".encode()
    assert parse_versioning(body) == status


@pytest.mark.parametrize("status", ["", "<Status>On</Status>", "<Status>enabled</Status>", "<Status/>"])
def test_any_other_versioning_status_is_malformed_xml(status):
    refused("MalformedXML", parse_versioning, f"<VersioningConfiguration>{status}</VersioningConfiguration>".encode())
