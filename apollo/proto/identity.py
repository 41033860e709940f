"""Identity policies: what an access key may do, from the policies attached to it (``apollo admin policy``).

A key that is not root has exactly the rights its identity policies allow, plus what bucket policies grant
it and full control of the buckets it created (``apollo.proto.bucket_access``); a key with no policy
attached can do only the latter. Policies are attached by name: named documents an operator stored, or one
of ``BUILTIN_POLICIES``, which are part of Apollo (they cannot be changed or deleted, and a stored policy
cannot take their names).

The documents of a key's policies travel with its secret (``KeyRights``), and are parsed once per distinct
document text in a process (``parsed``), not once per request.
"""

from __future__ import annotations

import functools
import json
import re

from apollo.proto.policy import Policy, parse_policy

POLICY_NAME = re.compile(r"[A-Za-z0-9+=,.@_-]{1,128}")  # IAM's characters for a policy name
ACCESS_KEY = re.compile(r"[A-Za-z0-9+=,.@_-]{3,128}")  # what a Principal can name (``policy.PRINCIPAL_NAME``)
POLICIES_PER_KEY_MAX = 10  # IAM's default quota of managed policies per user


def _allow(sid: str, actions: list[str]) -> str:
    statement = {"Sid": sid, "Effect": "Allow", "Action": actions, "Resource": "*"}
    return json.dumps({"Version": "2012-10-17", "Statement": [statement]}, separators=(",", ":"))


# MinIO's three canned policies, as operators coming from it expect them; ``readwrite`` is also what every
# key created before identity policies existed was given (schema migration 6), and `apollo admin key create`.
BUILTIN_POLICIES: dict[str, str] = {
    "readwrite": _allow("ReadWrite", ["s3:*"]),
    "readonly": _allow("ReadOnly", [
        "s3:ListAllMyBuckets", "s3:ListBucket", "s3:ListBucketVersions", "s3:GetBucketLocation",
        "s3:GetBucketVersioning", "s3:GetObject", "s3:GetObjectVersion", "s3:GetObjectTagging",
        "s3:GetObjectVersionTagging", "s3:GetObjectAttributes", "s3:GetObjectVersionAttributes",
    ]),
    "writeonly": _allow("WriteOnly", [
        "s3:PutObject", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts", "s3:ListBucketMultipartUploads",
    ]),
}  # fmt: skip


def check_policy_name(name: str) -> str:
    """:raises ValueError: a name IAM would refuse."""
    if not POLICY_NAME.fullmatch(name):
        raise ValueError(f"bad policy name {name[:80]!r}: 1 to 128 of A-Z a-z 0-9 + = , . @ _ -")
    return name


def check_access_key(name: str) -> str:
    """:raises ValueError: a name a policy's Principal could not name."""
    if not ACCESS_KEY.fullmatch(name):
        raise ValueError(f"bad access key {name[:80]!r}: 3 to 128 of A-Z a-z 0-9 + = , . @ _ -")
    return name


@functools.lru_cache(maxsize=4096)
def _parse(document: str) -> Policy:
    return parse_policy(document, kind="identity")


def parsed(documents: tuple[str, ...]) -> tuple[Policy, ...]:
    """The documents of a key's policies, parsed (each text once per process).

    :raises PolicyError: a stored document that no longer parses (only an edited database holds one); the
        caller denies.
    """
    return tuple(_parse(document) for document in documents)


def grants_everything(policy: Policy) -> bool:
    """Whether ``policy`` allows every S3 action on every resource unconditionally and denies nothing: then a
    request needs no evaluation of it (``readwrite``; the common case, kept as cheap as no policy at all)."""
    if any(s.effect == "Deny" for s in policy.statements):
        return False
    return any(
        s.effect == "Allow" and not s.conditions and not s.not_action and not s.not_resource
        and any(a.lower() in ("*", "s3:*") for a in s.actions)
        and any(r in ("*", "arn:aws:s3:::*") for r in s.resources)
        for s in policy.statements
    )  # fmt: skip
