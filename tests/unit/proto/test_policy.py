"""The policy language (``apollo.proto.policy``): AWS's documented bucket-policy examples, each with a request
it allows and one it refuses; the precedence of explicit Deny, Allow and implicit deny across identity and
bucket policies; every condition operator with the missing-key rules; every malformed-document rule with its
message; and properties (the wildcard matcher against a regex reference, random valid policies round-trip)."""

from __future__ import annotations

import json
import re
import string

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from apollo.invariant import InvariantError
from apollo.proto.policy import (
    BUCKET_POLICY_BYTES_MAX,
    Outcome,
    Policy,
    PolicyError,
    Request,
    evaluate,
    parse_policy,
    wildcard_match,
)
from apollo.proto.s3_actions import KNOWN_ACTIONS

B = "examplebucket"
ARN = f"arn:aws:s3:::{B}"
PROPS = settings(deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])


def doc(*statements: dict, version: str | None = "2012-10-17") -> str:
    body: dict = {"Statement": list(statements)}
    if version is not None:
        body = {"Version": version, **body}
    return json.dumps(body)


def bucket_policy(*statements: dict, version: str | None = "2012-10-17") -> Policy:
    return parse_policy(doc(*statements, version=version), kind="bucket", bucket=B)


def identity_policy(*statements: dict, version: str | None = "2012-10-17") -> Policy:
    return parse_policy(doc(*statements, version=version), kind="identity")


def req(
    action: str,
    key: str | None = None,
    principal: str | None = "alice",
    *,
    root: bool = False,
    **context: str | list[str],
) -> Request:
    """A request; ``context`` keys use ``__`` for ``:`` and ``_slash_`` for ``/`` (aws__SourceIp)."""
    ctx = {k.replace("__", ":").replace("_slash_", "/"): v for k, v in context.items()}
    resource = ARN if key is None else f"{ARN}/{key}"
    return Request(principal=principal, action=action, resource=resource, context=ctx, is_root=root)


def outcome(request: Request, identity: tuple[Policy, ...] = (), bucket: Policy | None = None) -> Outcome:
    return evaluate(request, identity, bucket).outcome


ALLOW, DENY, IMPLICIT = Outcome.ALLOW, Outcome.EXPLICIT_DENY, Outcome.IMPLICIT_DENY
ALICE_ALL = identity_policy({"Sid": "AliceAll", "Effect": "Allow", "Action": "s3:*", "Resource": [ARN, f"{ARN}/*"]})


# ---- AWS's bucket policy examples ------------------------------------------------------------------------


def test_public_read_for_a_prefix():
    """AWS: "Granting read-only permission to a public anonymous user" (restricted to a prefix)."""
    policy = bucket_policy(
        {
            "Sid": "PublicRead",
            "Effect": "Allow",
            "Principal": "*",
            "Action": ["s3:GetObject", "s3:GetObjectVersion"],
            "Resource": f"{ARN}/public/*",
        }
    )
    decision = evaluate(req("s3:GetObject", "public/logo.png", principal=None), (), policy)
    assert (decision.outcome, decision.sid, decision.source) == (ALLOW, "PublicRead", "bucket")
    assert outcome(req("s3:GetObject", "public/a/b", principal="bob"), bucket=policy) is ALLOW
    assert outcome(req("s3:GetObject", "private/logo.png", principal=None), bucket=policy) is IMPLICIT
    assert outcome(req("s3:GetObject", "publicity/x", principal=None), bucket=policy) is IMPLICIT
    assert outcome(req("s3:PutObject", "public/logo.png", principal=None), bucket=policy) is IMPLICIT
    assert outcome(req("s3:ListBucket", principal=None), bucket=policy) is IMPLICIT


def test_deny_unless_secure_transport():
    """AWS: "Managing access based on HTTP or HTTPS requests" (aws:SecureTransport)."""
    policy = bucket_policy(
        {
            "Sid": "TLSOnly",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:*",
            "Resource": [ARN, f"{ARN}/*"],
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        }
    )
    assert outcome(req("s3:GetObject", "k", aws__SecureTransport="true"), (ALICE_ALL,), policy) is ALLOW
    decision = evaluate(req("s3:GetObject", "k", aws__SecureTransport="false"), (ALICE_ALL,), policy)
    assert (decision.outcome, decision.sid) == (DENY, "TLSOnly")
    assert outcome(req("s3:ListBucket", aws__SecureTransport="false"), (ALICE_ALL,), policy) is DENY
    assert outcome(req("s3:GetObject", "k", principal=None, aws__SecureTransport="false"), bucket=policy) is DENY
    # Bool on a missing key is false, so this Deny does not fire: the gateway must always set the key.
    assert outcome(req("s3:GetObject", "k"), (ALICE_ALL,), policy) is ALLOW


def test_allow_only_from_an_address_range():
    """AWS: "Managing access based on specific IP addresses" (a NotIpAddress Deny), IPv4 and IPv6."""
    policy = bucket_policy(
        {
            "Sid": "IPAllow",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:*",
            "Resource": [ARN, f"{ARN}/*"],
            "Condition": {"NotIpAddress": {"aws:SourceIp": ["192.0.2.0/24", "2001:DB8:1234:5678::/64"]}},
        }
    )
    for address in ("192.0.2.7", "2001:db8:1234:5678::1", "::ffff:192.0.2.9"):
        assert outcome(req("s3:GetObject", "k", aws__SourceIp=address), (ALICE_ALL,), policy) is ALLOW, address
    for address in ("203.0.113.5", "2001:db8:1234:9999::1", "not-an-address"):
        assert outcome(req("s3:GetObject", "k", aws__SourceIp=address), (ALICE_ALL,), policy) is DENY, address
    # NotIpAddress on a missing key is true (a negated operator): the Deny fires.
    assert outcome(req("s3:GetObject", "k"), (ALICE_ALL,), policy) is DENY


HOME = identity_policy(
    {
        "Sid": "AllowRootAndHomeListingOfCompanyBucket",
        "Effect": "Allow",
        "Action": "s3:ListBucket",
        "Resource": ARN,
        "Condition": {"StringEquals": {"s3:prefix": ["", "home/"], "s3:delimiter": ["/"]}},
    },
    {
        "Sid": "AllowListingOfUserFolder",
        "Effect": "Allow",
        "Action": "s3:ListBucket",
        "Resource": ARN,
        "Condition": {"StringLike": {"s3:prefix": ["home/${aws:username}/*", "home/${aws:username}"]}},
    },
    {
        "Sid": "AllowAllS3ActionsInUserFolder",
        "Effect": "Allow",
        "Action": "s3:*",
        "Resource": f"{ARN}/home/${{aws:username}}/*",
    },
)


def test_home_folder_with_policy_variables():
    """AWS: "Allow IAM users to access their own home directory in S3" (``${aws:username}``, s3:prefix)."""
    assert outcome(req("s3:ListBucket", s3__prefix="home/", s3__delimiter="/"), (HOME,)) is ALLOW
    assert outcome(req("s3:ListBucket", s3__prefix="home/", s3__delimiter=""), (HOME,)) is IMPLICIT
    assert outcome(req("s3:ListBucket", s3__prefix="home/alice/photos/"), (HOME,)) is ALLOW
    assert outcome(req("s3:ListBucket", s3__prefix="home/alice"), (HOME,)) is ALLOW
    assert outcome(req("s3:ListBucket", s3__prefix="home/bob/"), (HOME,)) is IMPLICIT
    assert outcome(req("s3:ListBucket"), (HOME,)) is IMPLICIT  # no prefix: the whole bucket
    assert outcome(req("s3:GetObject", "home/alice/notes.txt"), (HOME,)) is ALLOW
    assert outcome(req("s3:PutObject", "home/alice/a/b"), (HOME,)) is ALLOW
    assert outcome(req("s3:GetObject", "home/bob/notes.txt"), (HOME,)) is IMPLICIT
    assert outcome(req("s3:GetObject", "home/bob/x", principal="bob"), (HOME,)) is ALLOW
    # aws:username comes from the principal, never from the caller's context
    assert outcome(req("s3:GetObject", "home/bob/x", aws__username="bob"), (HOME,)) is IMPLICIT
    # anonymous requests have no identity policies (and no aws:username)
    assert outcome(req("s3:GetObject", "home/alice/x", principal=None), (HOME,)) is IMPLICIT


def test_policy_variables_need_version_2012():
    old = identity_policy(
        {"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"{ARN}/home/${{aws:username}}/*"},
        version="2008-10-17",
    )
    assert outcome(req("s3:GetObject", "home/alice/x"), (old,)) is IMPLICIT
    assert outcome(req("s3:GetObject", "home/${aws:username}/x"), (old,)) is ALLOW  # plain text there
    no_version = identity_policy(
        {"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"{ARN}/${{aws:username}}"}, version=None
    )
    assert no_version.version == "2008-10-17"
    assert outcome(req("s3:GetObject", "alice"), (no_version,)) is IMPLICIT


def test_literal_variables_and_defaults():
    policy = identity_policy(
        {"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"{ARN}/a${{*}}b${{?}}c${{$}}d"},
        {"Effect": "Allow", "Action": "s3:PutObject", "Resource": f"{ARN}/team/${{aws:PrincipalTag/team, 'none'}}/*"},
        {"Effect": "Allow", "Action": "s3:DeleteObject", "Resource": f"{ARN}/x/${{s3:missing}}/*"},
    )
    assert outcome(req("s3:GetObject", "a*b?c$d"), (policy,)) is ALLOW
    assert outcome(req("s3:GetObject", "aXXbYc$d"), (policy,)) is IMPLICIT  # ${*} is no wildcard
    assert outcome(req("s3:PutObject", "team/none/f"), (policy,)) is ALLOW
    assert outcome(req("s3:PutObject", "team/red/f", aws__PrincipalTag_slash_team="red"), (policy,)) is ALLOW
    assert outcome(req("s3:PutObject", "team/none/f", aws__PrincipalTag_slash_team="red"), (policy,)) is IMPLICIT
    assert outcome(req("s3:DeleteObject", "x/${s3:missing}/f"), (policy,)) is IMPLICIT  # unresolved: no match
    assert outcome(req("s3:DeleteObject", "x//f"), (policy,)) is IMPLICIT


def test_existing_object_tag():
    """AWS: "Restricting access to objects by tag" (s3:ExistingObjectTag/<key>), with a principal's user ARN."""
    policy = bucket_policy(
        {
            "Sid": "TagGet",
            "Effect": "Allow",
            "Principal": {"AWS": "arn:aws:iam::111122223333:user/JohnDoe"},
            "Action": "s3:GetObject",
            "Resource": f"{ARN}/*",
            "Condition": {"StringEquals": {"s3:ExistingObjectTag/environment": "production"}},
        }
    )
    assert policy.statements[0].principals == ("JohnDoe",)
    tag = "s3__ExistingObjectTag_slash_environment"
    assert outcome(req("s3:GetObject", "k", "JohnDoe", **{tag: "production"}), bucket=policy) is ALLOW
    assert outcome(req("s3:GetObject", "k", "JohnDoe", **{tag: "dev"}), bucket=policy) is IMPLICIT
    assert outcome(req("s3:GetObject", "k", "JohnDoe"), bucket=policy) is IMPLICIT
    assert outcome(req("s3:GetObject", "k", "alice", **{tag: "production"}), bucket=policy) is IMPLICIT
    # key names are case-insensitive, the tag key after "/" is not
    lower = req("s3:GetObject", "k", "JohnDoe", s3__existingobjecttag_slash_environment="production")
    assert outcome(lower, bucket=policy) is ALLOW
    other = req("s3:GetObject", "k", "JohnDoe", s3__ExistingObjectTag_slash_Environment="production")
    assert outcome(other, bucket=policy) is IMPLICIT


# ---- precedence -----------------------------------------------------------------------------------------


def test_deny_in_either_policy_beats_allow_in_the_other():
    bucket_deny = bucket_policy(
        {
            "Sid": "NoDelete",
            "Effect": "Deny",
            "Principal": {"AWS": "alice"},
            "Action": "s3:DeleteObject",
            "Resource": f"{ARN}/*",
        }
    )
    decision = evaluate(req("s3:DeleteObject", "k"), (ALICE_ALL,), bucket_deny)
    assert (decision.outcome, decision.sid, decision.source) == (DENY, "NoDelete", "bucket")
    assert outcome(req("s3:GetObject", "k"), (ALICE_ALL,), bucket_deny) is ALLOW

    identity_deny = identity_policy({"Sid": "NoPut", "Effect": "Deny", "Action": "s3:Put*", "Resource": "*"})
    bucket_allow = bucket_policy(
        {"Sid": "All", "Effect": "Allow", "Principal": "*", "Action": "s3:*", "Resource": f"{ARN}/*"}
    )
    decision = evaluate(req("s3:PutObject", "k"), (identity_deny,), bucket_allow)
    assert (decision.outcome, decision.sid, decision.source) == (DENY, "NoPut", "identity")
    assert outcome(req("s3:GetObject", "k"), (identity_deny,), bucket_allow) is ALLOW
    # an allow from either side alone suffices
    assert evaluate(req("s3:GetObject", "k"), (), bucket_allow).source == "bucket"
    assert evaluate(req("s3:GetObject", "k"), (ALICE_ALL,), None).sid == "AliceAll"
    assert evaluate(req("s3:GetObject", "k"), (), None) == evaluate(req("s3:GetObject", "k"), (), None)
    assert evaluate(req("s3:GetObject", "k"), (), None).sid is None


def test_principal_matching():
    named = bucket_policy(
        {
            "Effect": "Allow",
            "Principal": {"AWS": ["alice", "arn:aws:iam::1:user/ops/bob"]},
            "Action": "s3:GetObject",
            "Resource": f"{ARN}/*",
        }
    )
    assert named.statements[0].principals == ("alice", "bob")
    assert outcome(req("s3:GetObject", "k", "alice"), bucket=named) is ALLOW
    assert outcome(req("s3:GetObject", "k", "bob"), bucket=named) is ALLOW
    assert outcome(req("s3:GetObject", "k", "Alice"), bucket=named) is IMPLICIT  # names are exact
    assert outcome(req("s3:GetObject", "k", None), bucket=named) is IMPLICIT
    anyone = bucket_policy(
        {"Effect": "Allow", "Principal": {"AWS": "*"}, "Action": "s3:GetObject", "Resource": f"{ARN}/*"}
    )
    assert outcome(req("s3:GetObject", "k", None), bucket=anyone) is ALLOW


def test_not_action_not_resource_not_principal():
    not_action = bucket_policy(
        {"Sid": "ReadOnly", "Effect": "Deny", "Principal": "*", "NotAction": "s3:Get*", "Resource": f"{ARN}/*"}
    )
    assert outcome(req("s3:PutObject", "k"), (ALICE_ALL,), not_action) is DENY
    assert outcome(req("s3:GetObject", "k"), (ALICE_ALL,), not_action) is ALLOW
    not_resource = bucket_policy(
        {"Effect": "Deny", "Principal": "*", "Action": "s3:*", "NotResource": [f"{ARN}/public/*", ARN]}
    )
    assert outcome(req("s3:GetObject", "secret/k"), (ALICE_ALL,), not_resource) is DENY
    assert outcome(req("s3:GetObject", "public/k"), (ALICE_ALL,), not_resource) is ALLOW
    assert outcome(req("s3:ListBucket"), (ALICE_ALL,), not_resource) is ALLOW
    not_principal = bucket_policy(
        {"Effect": "Deny", "NotPrincipal": {"AWS": "admin"}, "Action": "s3:DeleteObject", "Resource": f"{ARN}/*"}
    )
    admin_all = identity_policy({"Effect": "Allow", "Action": "s3:*", "Resource": "*"})
    assert outcome(req("s3:DeleteObject", "k", "alice"), (ALICE_ALL,), not_principal) is DENY
    assert outcome(req("s3:DeleteObject", "k", None), (), not_principal) is DENY
    assert outcome(req("s3:DeleteObject", "k", "admin"), (admin_all,), not_principal) is ALLOW
    nobody = bucket_policy({"Effect": "Deny", "NotPrincipal": "*", "Action": "s3:*", "Resource": f"{ARN}/*"})
    assert outcome(req("s3:DeleteObject", "k"), (ALICE_ALL,), nobody) is ALLOW


def test_root_is_allowed_unless_a_bucket_policy_denies_it():
    assert evaluate(req("s3:DeleteBucket", principal="root", root=True), (), None).source == "root"
    deny_all = bucket_policy(
        {"Sid": "Fence", "Effect": "Deny", "Principal": "*", "Action": "s3:*", "Resource": [ARN, f"{ARN}/*"]}
    )
    assert outcome(req("s3:GetObject", "k", "root", root=True), bucket=deny_all) is DENY
    identity_deny = identity_policy({"Effect": "Deny", "Action": "s3:*", "Resource": "*"})
    assert outcome(req("s3:GetObject", "k", "root", root=True), (identity_deny,)) is ALLOW  # roots have none


def test_anonymous_requests_ignore_identity_policies():
    assert outcome(req("s3:GetObject", "k", principal=None), (ALICE_ALL,)) is IMPLICIT


def test_actions_are_case_insensitive_resources_are_not():
    policy = identity_policy({"Effect": "Allow", "Action": "S3:getobject", "Resource": f"{ARN}/Docs/*"})
    assert outcome(req("s3:GetObject", "Docs/a"), (policy,)) is ALLOW
    assert outcome(req("S3:GETOBJECT", "Docs/a"), (policy,)) is ALLOW
    assert outcome(req("s3:GetObject", "docs/a"), (policy,)) is IMPLICIT


def test_service_level_actions_match_star_resources():
    for resource in ("*", "arn:aws:s3:::*"):
        policy = identity_policy({"Effect": "Allow", "Action": "s3:ListAllMyBuckets", "Resource": resource})
        assert outcome(Request(principal="alice", action="s3:ListAllMyBuckets", resource="*"), (policy,)) is ALLOW
    policy = identity_policy({"Effect": "Allow", "Action": "s3:ListAllMyBuckets", "Resource": ARN})
    assert outcome(Request(principal="alice", action="s3:ListAllMyBuckets", resource="*"), (policy,)) is IMPLICIT


def test_policy_kinds_are_checked():
    with pytest.raises(InvariantError):
        evaluate(
            req("s3:GetObject", "k"),
            (bucket_policy({"Effect": "Allow", "Principal": "*", "Action": "s3:*", "Resource": f"{ARN}/*"}),),
            None,
        )
    with pytest.raises(InvariantError):
        evaluate(req("s3:GetObject", "k"), (), ALICE_ALL)
    with pytest.raises(InvariantError):
        parse_policy(doc({"Effect": "Allow"}), kind="bucket")


# ---- condition operators ---------------------------------------------------------------------------------

T, F = True, False
CONDITIONS = [
    # operator, policy value(s), request value (None: the key is absent), allowed?
    ("StringEquals", "abc", "abc", T),
    ("StringEquals", "abc", "ABC", F),
    ("StringEquals", "a*", "abc", F),
    ("StringEquals", ["x", "abc"], "abc", T),
    ("StringEquals", "abc", None, F),
    ("StringNotEquals", "abc", "abd", T),
    ("StringNotEquals", ["x", "abc"], "abc", F),
    ("StringNotEquals", "abc", None, T),
    ("StringEqualsIgnoreCase", "AbC", "aBc", T),
    ("StringEqualsIgnoreCase", "abc", "abd", F),
    ("StringNotEqualsIgnoreCase", "AbC", "abc", F),
    ("StringNotEqualsIgnoreCase", "AbC", "x", T),
    ("StringLike", "a*c", "abbbc", T),
    ("StringLike", "a?c", "abc", T),
    ("StringLike", "a?c", "abbc", F),
    ("StringLike", "A*", "abc", F),
    ("StringLike", "a*", None, F),
    ("StringNotLike", "a*", "bcd", T),
    ("StringNotLike", "a*", "abc", F),
    ("StringNotLike", "a*", None, T),
    ("NumericEquals", 10, "10", T),
    ("NumericEquals", "10", "10.0", T),
    ("NumericEquals", 10, "11", F),
    ("NumericEquals", 10, "ten", F),
    ("NumericNotEquals", 10, "11", T),
    ("NumericNotEquals", 10, "10", F),
    ("NumericLessThan", 100, "99", T),
    ("NumericLessThan", 100, "100", F),
    ("NumericLessThanEquals", 100, "100", T),
    ("NumericGreaterThan", 0.5, "0.6", T),
    ("NumericGreaterThan", 0.5, "0.5", F),
    ("NumericGreaterThanEquals", "0.1", "0.10", T),
    ("NumericLessThan", 100, None, F),
    ("DateLessThan", "2030-01-01T00:00:00Z", "2024-05-01T12:00:00Z", T),
    ("DateLessThan", "2020-01-01T00:00:00Z", "2024-05-01T12:00:00Z", F),
    ("DateGreaterThan", "2020-01-01", "2024-05-01T12:00:00+02:00", T),
    ("DateEquals", "2024-01-01T00:00:00Z", "1704067200", T),
    ("DateNotEquals", "1704067200", "1704067201", T),
    ("DateLessThanEquals", 1704067200, "2024-01-01T00:00:00Z", T),
    ("DateGreaterThanEquals", "2024-01-01", "x", F),
    ("Bool", "true", "true", T),
    ("Bool", True, "TRUE", T),
    ("Bool", "false", "true", F),
    ("Bool", "true", None, F),
    ("IpAddress", "10.0.0.0/8", "10.1.2.3", T),
    ("IpAddress", "10.0.0.0/8", "11.1.2.3", F),
    ("IpAddress", "10.1.2.3", "10.1.2.3", T),
    ("IpAddress", "2001:db8::/32", "2001:db8::5", T),
    ("IpAddress", "10.0.0.0/8", None, F),
    ("NotIpAddress", "10.0.0.0/8", "11.0.0.1", T),
    ("NotIpAddress", "10.0.0.0/8", "10.0.0.1", F),
    ("ArnLike", "arn:aws:s3:::b/*", "arn:aws:s3:::b/k", T),
    ("ArnEquals", "arn:aws:s3:::b/*", "arn:aws:s3:::b/k", T),
    ("ArnNotLike", "arn:aws:s3:::b/*", "arn:aws:s3:::c/k", T),
    ("Null", "true", None, T),
    ("Null", "true", "x", F),
    ("Null", "false", "x", T),
    ("Null", False, None, F),
    ("StringEqualsIfExists", "abc", None, T),
    ("StringEqualsIfExists", "abc", "abd", F),
    ("StringNotLikeIfExists", "a*", None, T),
    ("NumericLessThanIfExists", 5, None, T),
    ("NumericLessThanIfExists", 5, "6", F),
    ("BoolIfExists", "true", None, T),
    ("ForAnyValue:StringEquals", ["a", "b"], ["c", "b"], T),
    ("ForAnyValue:StringEquals", ["a"], ["c", "d"], F),
    ("ForAnyValue:StringEquals", ["a"], None, F),
    ("ForAnyValue:StringEquals", ["a"], [], F),
    ("ForAllValues:StringEquals", ["a", "b"], ["a", "b"], T),
    ("ForAllValues:StringEquals", ["a"], ["a", "z"], F),
    ("ForAllValues:StringEquals", ["a"], None, T),
    ("ForAllValues:StringEquals", ["a"], [], T),
    ("ForAllValues:StringLike", ["a*"], ["ab", "ac"], T),
    ("ForAnyValue:StringNotEquals", ["a"], ["a", "b"], T),
    ("ForAllValues:StringNotEquals", ["a"], ["b", "a"], F),
    ("ForAnyValue:StringNotEquals", ["a"], None, F),
    ("ForAnyValue:StringLikeIfExists", ["a*"], None, T),
    ("StringEquals", "b", ["a", "b"], T),
    ("StringNotEquals", "b", ["a", "b"], F),  # several values, no prefix
    ("StringEquals", "${aws:username}", "alice", T),
    ("StringLike", "home/${aws:username}/*", "home/alice/x", T),
    ("StringEquals", "${aws:username}", "bob", F),
]


@pytest.mark.parametrize(("operator", "wanted", "value", "allowed"), CONDITIONS)
def test_condition_operator(operator, wanted, value, allowed):
    policy = identity_policy(
        {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*", "Condition": {operator: {"test:Key": wanted}}}
    )
    context = {} if value is None else {"test:key": value}
    request = Request(principal="alice", action="s3:GetObject", resource=f"{ARN}/k", context=context)
    assert evaluate(request, (policy,), None).allowed is allowed


def test_conditions_and_across_keys_and_operators():
    policy = identity_policy(
        {
            "Effect": "Allow",
            "Action": "s3:ListBucket",
            "Resource": ARN,
            "Condition": {
                "StringLike": {"s3:prefix": "logs/*", "s3:delimiter": "/"},
                "NumericLessThanEquals": {"s3:max-keys": 100},
            },
        }
    )
    assert (
        outcome(req("s3:ListBucket", s3__prefix="logs/a", s3__delimiter="/", **{"s3__max-keys": "50"}), (policy,))
        is ALLOW
    )
    assert (
        outcome(req("s3:ListBucket", s3__prefix="logs/a", s3__delimiter="/", **{"s3__max-keys": "500"}), (policy,))
        is IMPLICIT
    )
    assert outcome(req("s3:ListBucket", s3__prefix="logs/a", **{"s3__max-keys": "50"}), (policy,)) is IMPLICIT


def test_current_time_window():
    policy = identity_policy(
        {
            "Effect": "Allow",
            "Action": "s3:GetObject",
            "Resource": "*",
            "Condition": {
                "DateGreaterThan": {"aws:CurrentTime": "2024-01-01T00:00:00Z"},
                "DateLessThan": {"aws:EpochTime": "2025-01-01T00:00:00Z"},
            },
        }
    )
    assert (
        outcome(
            req("s3:GetObject", "k", aws__CurrentTime="2024-06-01T00:00:00Z", aws__EpochTime="1717200000"), (policy,)
        )
        is ALLOW
    )
    assert (
        outcome(
            req("s3:GetObject", "k", aws__CurrentTime="2025-06-01T00:00:00Z", aws__EpochTime="1748736000"), (policy,)
        )
        is IMPLICIT
    )


# ---- parsing: what is accepted, what is refused -----------------------------------------------------------


def test_accepted_forms():
    policy = parse_policy(
        b'{"Version": "2008-10-17", "Id": "p1", "Statement": {"Sid": "Any thing-1", "Effect": '
        b'"Allow", "Principal": "*", "Action": ["S3:Get*", "*"], "Resource": "arn:aws:s3:::examplebucket"}}',
        kind="bucket",
        bucket=B,
    )
    assert (policy.version, policy.id, policy.bucket, len(policy.statements)) == ("2008-10-17", "p1", B, 1)
    assert policy.statements[0].sid == "Any thing-1" and policy.statements[0].actions == ("S3:Get*", "*")
    with pytest.raises(AttributeError):
        policy.version = "x"  # type: ignore[misc]


def test_to_json_is_the_document_normalized():
    text = (
        '{\n  "Version": "2012-10-17",\n  "Statement": [ {"Effect": "Allow", "Action": "s3:GetObject", '
        '"Resource": "arn:aws:s3:::b/café", "Condition": {"NumericLessThan": {"s3:max-keys": 10}}, "Sid": "S1"} ]\n}'
    )
    policy = parse_policy(text, kind="identity")
    assert policy.to_json() == (
        '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject",'
        '"Resource":"arn:aws:s3:::b/café","Condition":{"NumericLessThan":{"s3:max-keys":10}},'
        '"Sid":"S1"}]}'
    )
    assert parse_policy(policy.to_json(), kind="identity") == policy


def _ok(**statement) -> dict:
    base = {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": f"{ARN}/*"}
    return {k: v for k, v in {**base, **statement}.items() if v is not ...}


MALFORMED = [
    # (document text or statement dict, kind, message fragment)
    ("{not json", "bucket", "valid JSON"),
    ("[]", "bucket", "a JSON object"),
    ('{"Version": "2012-10-17", "Statement": [], "Statement": []}', "bucket", "duplicate element: Statement"),
    ('{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Effect": "Deny"}]}', "bucket", "duplicate"),
    ('{"Version": "2012-10-17", "Statement": NaN}', "bucket", "invalid number"),
    (b'{"Version": "\xff"}', "bucket", "UTF-8"),
    ("[" * 5000 + "]" * 5000, "bucket", "nests too deeply"),
    ('{"Version": "2012-10-18", "Statement": []}', "bucket", "invalid Version"),
    ('{"Version": "2012-10-17", "Statements": []}', "bucket", "invalid element: Statements"),
    ('{"Version": "2012-10-17"}', "bucket", "missing required element: Statement"),
    ('{"Version": "2012-10-17", "Statement": []}', "bucket", "non-empty list"),
    ('{"Version": "2012-10-17", "Statement": ["x"]}', "bucket", "non-empty list"),
    ('{"Version": "2012-10-17", "Id": 5, "Statement": {}}', "bucket", "Id must be a string"),
    (_ok(Effect="allow"), "bucket", "invalid Effect"),
    (_ok(Effect=...), "bucket", "invalid Effect"),
    (_ok(Extra=1), "bucket", "invalid element: Extra"),
    (_ok(Sid=7), "bucket", "Sid must be a string"),
    (_ok(Action=...), "bucket", "missing required element: Action"),
    (_ok(NotAction="s3:PutObject"), "bucket", "both Action and NotAction"),
    (_ok(Action="iam:CreateUser"), "bucket", "not an S3 action"),
    (_ok(Action="s3:GetObjekt"), "bucket", "names no S3 action"),
    (_ok(Action="s3:Frob*"), "bucket", "names no S3 action"),
    (_ok(Action="GetObject"), "bucket", "invalid action"),
    (_ok(Action="s3:Get Object"), "bucket", "invalid action"),
    (_ok(Action=[]), "bucket", "non-empty"),
    (_ok(Action=["s3:GetObject", 3]), "bucket", "non-empty"),
    (_ok(Action=""), "bucket", "non-empty"),
    (_ok(Resource=...), "bucket", "missing required element: Resource"),
    (_ok(NotResource=ARN), "bucket", "both Resource and NotResource"),
    (_ok(Resource="arn:aws:s3:::otherbucket/*"), "bucket", "not inside bucket"),
    (_ok(Resource="arn:aws:s3:::examplebucket*"), "bucket", "not inside bucket"),
    (_ok(Resource="arn:aws:s3:::*"), "bucket", "not inside bucket"),
    (_ok(Resource="*"), "bucket", "invalid resource"),
    (_ok(Resource="examplebucket/*"), "bucket", "invalid resource"),
    (_ok(Resource="arn:aws:iam::1:user/x"), "bucket", "invalid resource"),
    (_ok(Resource="arn:aws:s3:::"), "bucket", "invalid resource"),
    (_ok(Resource=f"{ARN}/a\nb"), "bucket", "invalid resource"),
    (_ok(Principal=...), "bucket", "exactly one of Principal and NotPrincipal"),
    (_ok(NotPrincipal="*"), "bucket", "exactly one of Principal and NotPrincipal"),
    (_ok(Principal={"Service": "ec2.amazonaws.com"}), "bucket", "Invalid principal"),
    (_ok(Principal={"AWS": "arn:aws:iam::111122223333:root"}), "bucket", "Invalid principal"),
    (_ok(Principal={"AWS": "al ice"}), "bucket", "Invalid principal"),
    (_ok(Principal={"AWS": []}), "bucket", "non-empty"),
    (_ok(Principal="alice"), "bucket", "Invalid principal"),
    (_ok(Principal="*", Resource="*"), "identity", "Identity policies cannot have Principal"),
    (_ok(Principal=..., NotPrincipal="*", Resource="*"), "identity", "cannot have NotPrincipal"),
    (_ok(Principal=..., Sid="not ok", Resource="*"), "identity", "letters and digits"),
    (_ok(Condition=[]), "bucket", "Condition must be an object"),
    (_ok(Condition={"StringEqualz": {"aws:username": "a"}}), "bucket", "invalid condition operator: StringEqualz"),
    (_ok(Condition={"ForSomeValues:StringEquals": {"k:k": "a"}}), "bucket", "invalid condition operator"),
    (_ok(Condition={"IfExists": {"k:k": "a"}}), "bucket", "invalid condition operator"),
    (_ok(Condition={"stringequals": {"k:k": "a"}}), "bucket", "invalid condition operator"),
    (_ok(Condition={"NullIfExists": {"k:k": "true"}}), "bucket", "Null takes no prefix"),
    (_ok(Condition={"ForAnyValue:Null": {"k:k": "true"}}), "bucket", "Null takes no prefix"),
    (_ok(Condition={"BinaryEquals": {"k:k": "QmluYXJ5"}}), "bucket", "invalid condition operator"),
    (_ok(Condition={"StringEquals": {}}), "bucket", "non-empty object"),
    (_ok(Condition={"StringEquals": "x"}), "bucket", "non-empty object"),
    (_ok(Condition={"StringEquals": {"": "x"}}), "bucket", "invalid key"),
    (_ok(Condition={"StringEquals": {"k:k": []}}), "bucket", "has no values"),
    (_ok(Condition={"StringEquals": {"k:k": None}}), "bucket", "strings, numbers or booleans"),
    (_ok(Condition={"StringEquals": {"k:k": {"a": 1}}}), "bucket", "strings, numbers or booleans"),
    (_ok(Condition={"NumericLessThan": {"s3:max-keys": "ten"}}), "bucket", "invalid value 'ten'"),
    (_ok(Condition={"DateLessThan": {"aws:CurrentTime": "tomorrow"}}), "bucket", "invalid value"),
    (_ok(Condition={"Bool": {"aws:SecureTransport": "yes"}}), "bucket", "invalid value"),
    (_ok(Condition={"IpAddress": {"aws:SourceIp": "10.0.0.0/33"}}), "bucket", "invalid value"),
    (_ok(Condition={"NotIpAddress": {"aws:SourceIp": ["10.0.0.0/8", "x"]}}), "bucket", "invalid value 'x'"),
    (_ok(Condition={"Null": {"k:k": "maybe"}}), "bucket", "invalid value"),
]


@pytest.mark.parametrize(("document", "kind", "message"), MALFORMED, ids=[m[2] for m in MALFORMED])
def test_malformed_documents_are_refused(document, kind, message):
    text = document if isinstance(document, str | bytes) else doc(document)
    with pytest.raises(PolicyError, match=re.escape(message)):
        parse_policy(text, kind=kind, bucket=B if kind == "bucket" else None)


def test_duplicate_sids_are_refused():
    with pytest.raises(PolicyError, match="must be unique"):
        parse_policy(doc(_ok(Sid="A"), _ok(Sid="A")), kind="bucket", bucket=B)
    assert len(parse_policy(doc(_ok(Sid=""), _ok(Sid="")), kind="bucket", bucket=B).statements) == 2


def test_size_limits():
    padding = "x" * (BUCKET_POLICY_BYTES_MAX - 200)
    fits = doc(_ok(Sid=padding))
    assert len(fits.encode()) <= BUCKET_POLICY_BYTES_MAX
    parse_policy(fits, kind="bucket", bucket=B)
    with pytest.raises(PolicyError, match="at most 20480 bytes"):
        parse_policy(doc(_ok(Sid=padding + "y" * 400)), kind="bucket", bucket=B)
    statement = {"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"{ARN}/" + "k" * 5900}
    parse_policy(doc(statement), kind="identity")
    # white space does not count toward an identity policy's limit, characters beyond it do
    parse_policy(json.dumps(json.loads(doc(statement)), indent=8), kind="identity")
    with pytest.raises(PolicyError, match="at most 6144 characters"):
        parse_policy(doc({**statement, "Resource": f"{ARN}/" + "k" * 6200}), kind="identity")


# ---- properties -------------------------------------------------------------------------------------------


def _reference(pattern: str, text: str) -> bool:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, text, re.DOTALL) is not None


@PROPS
@given(st.text(alphabet="ab*?.\\[]\n", max_size=12), st.text(alphabet="ab.\\[]*?\n", max_size=16))
@example("a*a*a*b", "a" * 40)
@example("*", "")
@example("?", "")
@example("[ab]", "a")
def test_wildcard_match_agrees_with_a_regex(pattern, text):
    assert wildcard_match(pattern, text) is _reference(pattern, text)


@PROPS
@given(st.text(max_size=12), st.text(max_size=12))
def test_wildcard_match_ignore_case(pattern, text):
    assert wildcard_match(pattern, text, ignore_case=True) is _reference(pattern.lower(), text.lower())


@PROPS
@given(st.text(alphabet=string.ascii_letters + "/-_.", max_size=20))
def test_a_pattern_without_wildcards_matches_only_itself(text):
    assert wildcard_match(text, text)
    assert not wildcard_match(text, text + "x")


_NAMES = st.text(alphabet=string.ascii_letters + string.digits + "_.-@", min_size=1, max_size=12)
_KEY_PATTERNS = st.text(alphabet=string.ascii_letters + "/*?-_.", max_size=16)
_ACTIONS = st.one_of(st.sampled_from(sorted(KNOWN_ACTIONS)), st.sampled_from(["s3:*", "*", "s3:Get*", "s3:List?ucket"]))
_CONDITION_VALUES = {
    "StringEquals": st.text(max_size=8),
    "StringNotLike": st.text(max_size=8),
    "StringEqualsIgnoreCase": _NAMES,
    "NumericLessThan": st.integers(-(10**6), 10**6),
    "NumericGreaterThanEquals": st.floats(-1e6, 1e6),
    "DateLessThan": st.sampled_from(["2024-01-01T00:00:00Z", "2030-06-01", "1700000000"]),
    "Bool": st.booleans(),
    "IpAddress": st.sampled_from(["10.0.0.0/8", "192.0.2.1", "2001:db8::/32"]),
    "Null": st.sampled_from(["true", "false", True]),
}


@st.composite
def _conditions(draw: st.DrawFn) -> dict:
    out: dict = {}
    for operator in draw(st.lists(st.sampled_from(sorted(_CONDITION_VALUES)), max_size=3, unique=True)):
        prefix = "" if operator == "Null" else draw(st.sampled_from(["", "ForAnyValue:", "ForAllValues:"]))
        suffix = "" if operator == "Null" else draw(st.sampled_from(["", "IfExists"]))
        key = draw(st.sampled_from(["aws:SourceIp", "s3:prefix", "s3:ExistingObjectTag/Team", "x:unknown"]))
        values = draw(st.lists(_CONDITION_VALUES[operator], min_size=1, max_size=3))
        out[prefix + operator + suffix] = {key: values if len(values) > 1 else values[0]}
    return out


@st.composite
def _statements(draw: st.DrawFn, sid: str) -> dict:
    statement: dict = {"Sid": sid, "Effect": draw(st.sampled_from(["Allow", "Deny"]))}
    principal = draw(st.one_of(st.just("*"), st.builds(lambda n: {"AWS": n}, st.lists(_NAMES, min_size=1, max_size=3))))
    statement["NotPrincipal" if draw(st.booleans()) else "Principal"] = principal
    statement["NotAction" if draw(st.booleans()) else "Action"] = draw(st.lists(_ACTIONS, min_size=1, max_size=4))
    resources = draw(st.lists(st.builds(lambda k: f"{ARN}/{k}", _KEY_PATTERNS) | st.just(ARN), min_size=1, max_size=3))
    statement["NotResource" if draw(st.booleans()) else "Resource"] = resources
    if conditions := draw(_conditions()):
        statement["Condition"] = conditions
    return statement


@st.composite
def _documents(draw: st.DrawFn) -> dict:
    n = draw(st.integers(1, 4))
    return {
        "Version": draw(st.sampled_from(["2012-10-17", "2008-10-17"])),
        "Statement": [draw(_statements(f"S{i}")) for i in range(n)],
    }


@PROPS
@given(_documents())
def test_a_random_valid_policy_parses_and_round_trips(document):
    text = json.dumps(document, indent=draw_indent(document))
    policy = parse_policy(text, kind="bucket", bucket=B)
    assert json.loads(policy.to_json()) == document
    again = parse_policy(policy.to_json(), kind="bucket", bucket=B)
    assert again == policy and again.to_json() == policy.to_json()
    assert [s.sid for s in policy.statements] == [s["Sid"] for s in document["Statement"]]


def draw_indent(document: dict) -> int | None:
    """Some documents pretty-printed, some compact: normalization must not depend on the layout."""
    return 2 if len(document["Statement"]) % 2 else None


@PROPS
@given(
    _documents(),
    st.sampled_from([None, "alice", "root"]),
    st.sampled_from(sorted(KNOWN_ACTIONS)),
    st.text(max_size=12),
    st.dictionaries(
        st.sampled_from(["aws:SourceIp", "s3:prefix", "x:unknown"]),
        st.text(max_size=6) | st.lists(st.text(max_size=4), max_size=3),
    ),
)
def test_a_blanket_deny_wins_over_any_policy(document, principal, action, key, context):
    """Whatever else a bucket policy says, a statement denying everything to everyone decides every request,
    even a root key's; and evaluation of random documents never raises."""
    request = Request(
        principal=principal, action=action, resource=f"{ARN}/{key}", context=context, is_root=principal == "root"
    )
    evaluate(request, (ALICE_ALL,), parse_policy(json.dumps(document), kind="bucket", bucket=B))
    fenced = {
        **document,
        "Statement": [
            *document["Statement"],
            {"Sid": "Fence", "Effect": "Deny", "Principal": "*", "Action": "*", "Resource": f"{ARN}/*"},
        ],
    }
    decision = evaluate(request, (ALICE_ALL,), parse_policy(json.dumps(fenced), kind="bucket", bucket=B))
    assert decision.outcome is DENY


def test_many_stars_take_no_exponential_time():
    """A regex of 200 ``.*`` against 300 characters runs for minutes (measured: still running after 10 s); the
    two-pointer walk answers at once. Policies are client text, so this is a denial-of-service bound."""
    assert not wildcard_match("*a" * 200 + "b", "a" * 1024)
    assert wildcard_match("*a" * 200 + "*", "a" * 1024)
