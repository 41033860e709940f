"""The access decision both doors share: which requests skip evaluation, owners, tags, and failing closed."""

from __future__ import annotations

import json

from apollo.proto.bucket_access import ANONYMOUS, BucketAccess, Caller, Check, denial
from apollo.proto.identity import BUILTIN_POLICIES
from apollo.proto.policy import parse_policy
from apollo.proto.records import KeyRights

ARN = "arn:aws:s3:::b"


def _identity(*statements: dict) -> str:
    return json.dumps({"Version": "2012-10-17", "Statement": list(statements)})


def _bucket(*statements: dict):
    return parse_policy(json.dumps({"Version": "2012-10-17", "Statement": list(statements)}), kind="bucket",
                        bucket="b")  # fmt: skip


def _caller(*documents: str, name: str = "AKUSER") -> Caller:
    return Caller.of(name, KeyRights("s", False, documents))


def _allowed(caller: Caller, action: str, resource: str, access: BucketAccess | None, tags=None) -> bool:
    return denial(caller, {}, [Check(action, resource, access, tags)]) is None


def test_only_callers_nothing_could_deny_skip_evaluation():
    plain = BucketAccess(None, "")
    with_policy = BucketAccess(_bucket({"Effect": "Deny", "Principal": "*", "Action": "s3:GetObject",
                                        "Resource": f"{ARN}/*"}), "")  # fmt: skip
    readwrite = _caller(BUILTIN_POLICIES["readwrite"])
    assert readwrite.needs_no_check(plain) and readwrite.needs_no_check(None)
    assert not readwrite.needs_no_check(with_policy)  # a bucket policy may deny
    assert not _caller(BUILTIN_POLICIES["readwrite"], _identity(
        {"Effect": "Deny", "Action": "s3:DeleteObject", "Resource": "*"})).needs_no_check(plain)  # its own Deny
    assert not _caller(BUILTIN_POLICIES["readonly"]).needs_no_check(plain)
    assert not ANONYMOUS.needs_no_check(plain)
    assert _caller().needs_no_check(BucketAccess(None, "AKUSER"))  # its own bucket
    assert Caller("admin", is_root=True).needs_no_check(plain)


def test_an_owner_may_do_anything_its_policies_and_the_bucket_do_not_deny():
    owned = BucketAccess(None, "AKUSER")
    assert _allowed(_caller(), "s3:DeleteObject", f"{ARN}/k", owned)
    assert not _allowed(_caller(name="AKOTHER"), "s3:DeleteObject", f"{ARN}/k", owned)
    no_deletes = _identity({"Effect": "Deny", "Action": "s3:DeleteObject", "Resource": "*"})
    assert not _allowed(_caller(no_deletes), "s3:DeleteObject", f"{ARN}/k", owned)
    fenced = BucketAccess(_bucket({"Effect": "Deny", "Principal": "*", "Action": "s3:*", "Resource": f"{ARN}/*"}),
                          "AKUSER")  # fmt: skip
    assert not _allowed(_caller(), "s3:GetObject", f"{ARN}/k", fenced)


def test_existing_object_tags_are_read_only_for_the_actions_aws_reads_them_for():
    public = _caller(_identity({"Effect": "Allow", "Action": ["s3:GetObject", "s3:DeleteObject"], "Resource": "*",
                                "Condition": {"StringEquals": {"s3:ExistingObjectTag/class": "public"}}}))
    plain = BucketAccess(None, "")
    assert _allowed(public, "s3:GetObject", f"{ARN}/k", plain, {"class": "public"})
    assert not _allowed(public, "s3:GetObject", f"{ARN}/k", plain, {"class": "secret"})
    assert not _allowed(public, "s3:GetObject", f"{ARN}/k", plain, None)
    assert not _allowed(public, "s3:DeleteObject", f"{ARN}/k", plain, {"class": "public"})  # AWS: no such key


def test_a_stored_policy_that_no_longer_parses_denies_everything():
    broken = _caller('{"Statement": "not a statement"}', BUILTIN_POLICIES["readwrite"])
    assert not broken.grants_everything
    assert not _allowed(broken, "s3:GetObject", f"{ARN}/k", BucketAccess(None, ""))


def test_a_session_policy_only_narrows_and_is_never_skipped():
    reads = _identity({"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"{ARN}/data/*"})
    session = Caller.of("ASIATEMP", KeyRights("s", False, (BUILTIN_POLICIES["readwrite"],), parent="AKUSER",
                                              session_policy=reads, expires=1e10))  # fmt: skip
    assert session.principal == "AKUSER"  # acts as its parent: bucket policies and ownership name the parent
    plain, owned = BucketAccess(None, ""), BucketAccess(None, "AKUSER")
    assert not session.needs_no_check(plain) and not session.needs_no_check(owned)
    assert _allowed(session, "s3:GetObject", f"{ARN}/data/x", plain)
    assert not _allowed(session, "s3:PutObject", f"{ARN}/data/x", plain)  # the parent may; the session not
    assert not _allowed(session, "s3:PutObject", f"{ARN}/data/x", owned)  # not even in the parent's bucket
    narrow_parent = Caller.of("ASIATEMP", KeyRights("s", False, (BUILTIN_POLICIES["readonly"],), parent="AKUSER",
                                                    session_policy=BUILTIN_POLICIES["readwrite"], expires=1e10))
    assert not _allowed(narrow_parent, "s3:PutObject", f"{ARN}/k", plain)  # a session never widens
