"""Access control lists: Apollo has none, as an AWS bucket whose Object Ownership is ``BucketOwnerEnforced``
(the default for new AWS buckets since April 2023). Access is decided by policies (``apollo.gateway.authorize``);
every object belongs to its bucket's owner.

AWS documents that setting exactly ("Controlling ownership of objects and disabling ACLs"): ACL reads answer
the owner's full control; a request that sets an ACL is accepted only when the ACL says no more than that
(the canned ``private`` or ``bucket-owner-full-control``, or the owner's ``FULL_CONTROL`` as a grant header or
XML), and anything else fails with ``AccessControlListNotSupported`` (``InvalidBucketAclWithObjectOwnership``
on CreateBucket). So a tool that re-sends the ACL it read, or names the owner, just works, and an ACL that
would open an object is refused instead of being ignored.
"""

from __future__ import annotations

from aiohttp import web

from apollo.gateway.s3errors import S3Error, s3error
from apollo.gateway.state import OWNER
from apollo.gateway.xml import parse, render

OWNER_ONLY_CANNED = frozenset({"private", "bucket-owner-full-control"})
GRANT_HEADERS = ("x-amz-grant-full-control", "x-amz-grant-read", "x-amz-grant-write", "x-amz-grant-read-acp",
                 "x-amz-grant-write-acp")  # fmt: skip
_XSI = "{http://www.w3.org/2001/XMLSchema-instance}type"


def check_acl_headers(request: web.Request, creating_bucket: bool = False) -> None:
    """Refuse ACL headers (of a PUT, copy, multipart start, bucket creation or ACL call) that grant more
    than the owner's full control."""
    headers = request.headers
    canned = headers.get("x-amz-acl")
    grants = {name: headers[name] for name in GRANT_HEADERS if name in headers}
    if canned is not None and grants:
        raise s3error("InvalidRequest", "Specifying both Canned ACLs and Header Grants is not allowed")
    if canned is not None and canned not in OWNER_ONLY_CANNED or any(
            name != "x-amz-grant-full-control" or not _names_only_the_owner(value)
            for name, value in grants.items()):  # fmt: skip
        _refuse(creating_bucket)


def check_acl_document(body: bytes) -> None:
    """Refuse an ``AccessControlPolicy`` document that grants anything but the owner's full control; one
    that is not such a document is ``MalformedACLError``, as AWS."""
    try:
        document = parse(body, "AccessControlPolicy")
    except S3Error as exc:
        raise s3error("MalformedACLError") from exc
    owner = document.findtext("Owner/ID")
    grants = document.findall("AccessControlList/Grant")
    if owner is not None and owner != OWNER["ID"]:
        _refuse(False)
    for grant in grants:
        grantee = grant.find("Grantee")
        if grantee is None or grant.findtext("Permission") is None:
            raise s3error("MalformedACLError")
        if grantee.get(_XSI, "CanonicalUser") != "CanonicalUser" or grantee.findtext("ID") != OWNER["ID"] or (
                grant.findtext("Permission") != "FULL_CONTROL"):  # fmt: skip
            _refuse(False)


def check_expected_owner(request: web.Request) -> None:
    """``x-amz-expected-bucket-owner`` (and the copy source's) must name the owner, else 403 as AWS: a
    client that checks whose bucket it writes to is not served by another's."""
    for name in ("x-amz-expected-bucket-owner", "x-amz-source-expected-bucket-owner"):
        expected = request.headers.get(name)
        if expected is not None and expected != OWNER["ID"]:
            raise s3error("AccessDenied", f"The bucket is not owned by {expected} ({name})")


def _names_only_the_owner(value: str) -> bool:
    """``id="apollo"`` (a grant header lists grantees as type=value pairs, comma-separated)."""
    grantees = [part.strip() for part in value.split(",")]
    return all(grantee.partition("=")[0].strip().lower() == "id" and
               grantee.partition("=")[2].strip().strip('"') == OWNER["ID"] for grantee in grantees)  # fmt: skip


def _refuse(creating_bucket: bool) -> None:
    if creating_bucket:
        raise s3error("InvalidBucketAclWithObjectOwnership")
    raise s3error("AccessControlListNotSupported")


def acl_response() -> web.Response:
    """What Get{Bucket,Object}Acl answer: the owner's full control, as AWS answers with ACLs disabled."""
    grant = {"Grantee": {"ID": OWNER["ID"], "DisplayName": OWNER["DisplayName"]}, "Permission": "FULL_CONTROL"}
    body = render("AccessControlPolicy", {"Owner": OWNER, "AccessControlList": {"Grant": grant}})
    # AWS types every grantee with xsi:type; SDKs read it as Grantee.Type (the renderer has no attributes).
    body = body.replace(b"<Grantee>", b'<Grantee xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
                        b'xsi:type="CanonicalUser">')  # fmt: skip
    return web.Response(body=body, content_type="application/xml")


def ownership_controls_response() -> web.Response:
    """GetBucketOwnershipControls: the one setting there is."""
    body = {"Rule": {"ObjectOwnership": "BucketOwnerEnforced"}}
    return web.Response(body=render("OwnershipControls", body), content_type="application/xml")
