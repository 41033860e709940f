"""The one access decision every door makes: the S3 gateway for every request (``apollo.gateway.authorize``),
the metadata RPC for a native client's calls (``apollo.meta.call_policy``), the console for its pages.

Each (action, resource) an operation needs (``apollo.proto.s3_actions``) is evaluated for the ``Caller`` (its
identity policies, ``apollo.proto.identity``) against the bucket's policy and owner (``BucketAccess``), by
each door's ``AccessDecider``. Bucket records are kept ``BUCKET_TTL_S``: a policy changed through one process
applies in every other one within that; identity policies come with the key's secret (``apollo.keycache``,
``SECRET_TTL_S``).

Most requests need no evaluation at all (``Caller.needs_no_check``): a key whose policies grant everything
(``readwrite``) or the bucket's owner, on a bucket without a policy. That case costs a dictionary lookup.
"""

from __future__ import annotations

import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

from apollo import errors
from apollo.proto import identity
from apollo.proto.policy import Decision, Policy, PolicyError, Request, evaluate, parse_policy
from apollo.proto.records import Bucket, KeyRights, Version
from apollo.proto.s3_actions import ARN_PREFIX

log = logging.getLogger("apollo.access")

BUCKET_TTL_S = 2.0
EXISTING_TAG_PREFIX = "s3:existingobjecttag/"
# The actions AWS evaluates s3:ExistingObjectTag for: those on an object that already exists.
EXISTING_TAG_ACTIONS = frozenset(a.lower() for a in (
    "s3:GetObject", "s3:GetObjectVersion", "s3:GetObjectTagging", "s3:GetObjectVersionTagging",
    "s3:PutObjectTagging", "s3:PutObjectVersionTagging", "s3:DeleteObjectTagging", "s3:DeleteObjectVersionTagging",
    "s3:GetObjectAcl", "s3:GetObjectVersionAcl", "s3:PutObjectAcl", "s3:PutObjectVersionAcl",
    "s3:GetObjectAttributes", "s3:GetObjectVersionAttributes",
))  # fmt: skip
_DENY_ALL = parse_policy('{"Version":"2012-10-17","Statement":[{"Sid":"Unreadable","Effect":"Deny",'
                         '"Action":"s3:*","Resource":"*"}]}', kind="identity")  # fmt: skip


@functools.lru_cache(maxsize=1024)
def _grants_everything(policies: tuple[Policy, ...]) -> bool:
    return any(identity.grants_everything(p) for p in policies) and not _denies(policies)


@functools.lru_cache(maxsize=1024)
def _denies(policies: tuple[Policy, ...]) -> bool:
    return any(s.effect == "Deny" for p in policies for s in p.statements)


@functools.lru_cache(maxsize=1024)
def uses_existing_tags(policy: Policy) -> bool:
    """Whether a condition of ``policy`` reads an existing object's tags (then the door looks them up)."""
    return any(c.key.lower().startswith(EXISTING_TAG_PREFIX) for s in policy.statements for c in s.conditions)


@dataclass(frozen=True)
class Caller:
    """Who makes a request: an access key (``principal``) with its identity policies, or anonymous (None)."""

    principal: str | None
    is_root: bool = False
    policies: tuple[Policy, ...] = ()
    # A temporary key's session policy (STS): it can only narrow what ``policies`` allow.
    session: Policy | None = None

    @classmethod
    def of(cls, access_key: str, rights: KeyRights) -> Caller:
        """A key's caller: a temporary key acts as its parent, narrowed by its session policy. A stored policy
        that does not parse (only an edited database holds one) denies everything: fail closed, and say so."""
        try:
            policies = identity.parsed(rights.policies)
            session = identity.parsed((rights.session_policy,))[0] if rights.session_policy else None
        except PolicyError as exc:
            log.error("access key %s has an identity policy that does not parse (%s): denying it everything",
                      access_key, exc)  # fmt: skip
            policies, session = (_DENY_ALL,), None
        return cls(rights.parent or access_key, rights.is_root, policies, session)

    @property
    def grants_everything(self) -> bool:
        return self.principal is not None and (self.is_root or _grants_everything(self.policies)) and (
            self.session is None or _grants_everything((self.session,)))  # fmt: skip

    def needs_no_check(self, access: BucketAccess | None) -> bool:
        """Allowed without evaluation on a bucket with this access (None: no bucket, or none yet): nothing a
        bucket policy could deny, and the caller's policies grant everything or it owns the bucket."""
        if self.principal is None or access is not None and access.policy is not None:
            return False
        if self.session is not None and not _grants_everything((self.session,)):
            return False
        return self.grants_everything or self.owns(access) and not _denies(self.policies)

    def owns(self, access: BucketAccess | None) -> bool:
        return self.principal is not None and access is not None and access.owner == self.principal


ANONYMOUS = Caller(None)


@dataclass(frozen=True)
class BucketAccess:
    """What of a bucket the decision needs: its policy (parsed) and its owner ("" for none: root's)."""

    policy: Policy | None
    owner: str

    @property
    def reads_tags(self) -> bool:
        return self.policy is not None and uses_existing_tags(self.policy)


def _stored_bucket_policy(record: Bucket) -> Policy | None:
    """The bucket's policy, parsed. One that does not parse (only a database edit, or an older version that
    stored unchecked documents, holds one) denies everyone everything but its owner's policy calls: fail
    closed, say so, and leave the owner the means to replace it."""
    if not record.policy:
        return None
    try:
        return parse_policy(record.policy, kind="bucket", bucket=record.name)
    except PolicyError as exc:
        log.error("bucket %s has a policy that does not parse (%s): denying every request until it is "
                  "replaced", record.name, exc)  # fmt: skip
        arn = ARN_PREFIX + record.name
        return parse_policy(json.dumps({"Version": "2012-10-17", "Statement": [
            {"Sid": "Unreadable", "Effect": "Deny", "Principal": "*", "Action": "s3:*",
             "Resource": [arn, arn + "/*"]}]}), kind="bucket", bucket=record.name)  # fmt: skip


@dataclass(frozen=True)
class Check:
    """One (action, resource) to decide, with its bucket's access (None: no bucket) and, for an object that
    exists, its tags (the values of ``s3:ExistingObjectTag/<key>``)."""

    action: str
    resource: str
    access: BucketAccess | None
    tags: Mapping[str, str] | None = field(default=None)


# The calls AWS lets a bucket's owner make whatever the bucket's policy says (``keeps_policy_rights``).
OWNER_ALWAYS = frozenset({"GetBucketPolicy", "PutBucketPolicy", "DeleteBucketPolicy"})


def keeps_policy_rights(caller: Caller, access: BucketAccess | None, action: str, resource: str,
                        context: dict[str, str]) -> bool:  # fmt: skip
    """Get/Put/DeleteBucketPolicy as AWS lets the bucket owner make them whatever the bucket's policy says (so
    that no policy locks its owner out): root always; the owner unless its own identity policies deny it or
    it is a temporary key whose session policy does not allow it (a job must not open its parent's bucket)."""
    if caller.is_root:
        return True
    if not caller.owns(access):
        return False
    return denial(caller, context, [Check(action, resource, BucketAccess(None, access.owner))]) is None


def reads_tags(caller: Caller, access: BucketAccess | None) -> bool:
    """Whether some policy in play reads existing objects' tags (then the door looks up the object's)."""
    own = caller.policies if caller.session is None else (*caller.policies, caller.session)
    return (access is not None and access.reads_tags) or any(uses_existing_tags(p) for p in own)


def denial(caller: Caller, context: dict[str, str], checks: Iterable[Check]) -> tuple[Check, Decision] | None:
    """The first check not allowed to ``caller``, with its decision; None when every one is."""
    for check in checks:
        extra = dict(context)
        if check.tags is not None and check.action.lower() in EXISTING_TAG_ACTIONS:
            extra.update({f"s3:ExistingObjectTag/{k}": v for k, v in check.tags.items()})
        policy = check.access.policy if check.access is not None else None
        request = Request(principal=caller.principal, action=check.action, resource=check.resource, context=extra,
                          is_root=caller.is_root, is_owner=caller.owns(check.access))  # fmt: skip
        decision = evaluate(request, caller.policies, policy)
        if decision.allowed and caller.session is not None:  # AWS: the session policy must allow it too
            decision = evaluate(replace(request, is_root=False, is_owner=False), (caller.session,), None)
        if not decision.allowed:
            return check, decision
    return None


class AccessDecider:
    """One door's decisions (the gateway's, the metadata RPC's, the console's): the buckets' access, each
    kept ``ttl_s`` so that a request costs a dictionary lookup, and the version lookup that
    ``s3:ExistingObjectTag`` conditions read (the engine's ``head``, the service's ``get_version``)."""

    def __init__(self, bucket_record: Callable[[str], Awaitable[Bucket]],
                 get_version: Callable[..., Awaitable[Version | None]], ttl_s: float = BUCKET_TTL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self._bucket_record = bucket_record  # raises BucketNotFound
        self._get_version = get_version
        self._ttl_s = ttl_s
        self._clock = clock
        self._cache: dict[str, tuple[float, BucketAccess]] = {}

    async def access(self, bucket: str) -> BucketAccess | None:
        """None when no bucket is named (ListBuckets, CreateBucket) or none has the name (a copy source that
        is gone: the operation's own answer says which)."""
        if not bucket:
            return None
        now = self._clock()
        hit = self._cache.get(bucket)
        if hit is not None and now - hit[0] < self._ttl_s:
            return hit[1]
        try:
            record = await self._bucket_record(bucket)
        except errors.BucketNotFound:
            return None
        access = BucketAccess(_stored_bucket_policy(record), record.owner)
        if len(self._cache) > 100_000:
            self._cache.clear()
        self._cache[bucket] = (now, access)
        return access

    def forget(self, bucket: str) -> None:
        self._cache.pop(bucket, None)

    async def first_denial(self, caller: Caller, pairs: Iterable[tuple[str, str]], context: dict[str, str],
                           versions: Mapping[tuple[str, str], str | None] | None = None,
                           ) -> tuple[Check, Decision] | None:  # fmt: skip
        """The whole decision for (action, resource) pairs (``s3_actions.required``): each pair on its bucket's
        access, skipping those nothing could deny, with the tags of the object it names when a policy reads
        them (``versions``: (bucket, key) -> the version id the request names of that object, its own or a
        copy source's; the latest for any other)."""
        checks = []
        for action, resource in pairs:
            bucket, _, key = resource.removeprefix(ARN_PREFIX).partition("/") if resource != "*" else ("", "", "")
            access = await self.access(bucket)
            if caller.needs_no_check(access):
                continue
            tags = None
            if key and reads_tags(caller, access):
                tags = await self._tags(bucket, key, (versions or {}).get((bucket, key)))
            checks.append(Check(action, resource, access, tags))
        return denial(caller, context, checks)

    async def visible(self, caller: Caller, buckets: list[Bucket], context: dict[str, str]) -> list[Bucket]:
        """The buckets ListBuckets shows ``caller``: all to root and keys whose policies grant everything;
        else those it owns or may list (s3:ListBucket), as AWS shows an account its own and MinIO a user
        those its policies reach."""
        if caller.grants_everything:
            return buckets
        shown = []
        for bucket in buckets:
            access = await self.access(bucket.name)
            if caller.owns(access) or denial(caller, context, [Check("s3:ListBucket", ARN_PREFIX + bucket.name,
                                                                     access)]) is None:  # fmt: skip
                shown.append(bucket)
        return shown

    async def _tags(self, bucket: str, key: str, version_id: str | None) -> dict[str, str]:
        """The named version's tags, else the latest's; none of an object, version or bucket that does not
        exist (the operation's own answer comes after the decision)."""
        try:
            version = await self._get_version(bucket, key, version_id, with_data=False)
        except errors.BucketNotFound:
            return {}
        return dict(version.attrs.tags) if version is not None and not version.delete_marker else {}


def request_context(source_ip: str, secure: bool, now: float) -> dict[str, str]:
    """The global condition keys every request carries (the door adds its operation's own)."""
    return {
        "aws:SourceIp": source_ip,
        "aws:SecureTransport": "true" if secure else "false",
        "aws:CurrentTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        "aws:EpochTime": str(int(now)),
    }
