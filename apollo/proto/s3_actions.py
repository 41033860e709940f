"""Which IAM actions an S3 operation needs, and on which resource: one table, ``OPERATIONS``.

Call sequence: the gateway names each request's operation (``request["op"]`` in ``gateway/app.py``),
then asks ``required(op, bucket, key, version_id)`` for the (action, resource ARN) pairs and evaluates
each with ``apollo.proto.policy.evaluate``; the request goes ahead only if *every* pair is allowed.
DeleteObjects has no action of its own: the gateway calls ``required`` once per key of the request body,
and answers AccessDenied for the keys refused (as S3 does, per key, inside a 200 answer).

The table follows AWS's "Actions, resources, and condition keys for Amazon S3" and each operation's API
reference. Where an operation names a specific version (``versionId``) S3 checks the ``...Version...``
action instead (GetObject -> s3:GetObjectVersion); we decide that on the presence of a version id,
because that is what the request names (S3's own wording, "if the bucket is versioned", for
GetObjectAttributes, amounts to the same for a request that names no version).

What the table does not express, the gateway adds: a PutObject / CopyObject / CreateMultipartUpload
that carries ``x-amz-acl`` or grant headers also needs s3:PutObjectAcl, one with ``x-amz-tagging``
also needs s3:PutObjectTagging (``extra_for_headers``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from apollo.invariant import invariant

ARN_PREFIX = "arn:aws:s3:::"
SERVICE_RESOURCE = "*"  # actions without resource-level permissions (ListAllMyBuckets) are checked on "*"


class Target(Enum):
    """What an action is checked against: the service, the bucket ARN, or the object ARN."""

    SERVICE = "service"
    BUCKET = "bucket"
    OBJECT = "object"


@dataclass(frozen=True)
class Need:
    """One action an operation needs; ``versioned`` is the action used when a version id is named."""

    action: str
    target: Target
    versioned: str | None = None
    source: bool = False  # checked on the copy source rather than on the request's own object


def _obj(action: str, versioned: str | None = None) -> Need:
    return Need(action, Target.OBJECT, versioned)


def _bucket(action: str) -> Need:
    return Need(action, Target.BUCKET)


# op -> needs. Every op the gateway sets must have an entry (tests/unit/proto/test_s3_actions.py reads
# the gateway's source to hold us to it); an op missing here raises KeyError and callers deny.
OPERATIONS: dict[str, tuple[Need, ...]] = {
    # service
    "ListBuckets": (Need("s3:ListAllMyBuckets", Target.SERVICE),),
    # buckets
    "CreateBucket": (_bucket("s3:CreateBucket"),),
    "DeleteBucket": (_bucket("s3:DeleteBucket"),),
    "HeadBucket": (_bucket("s3:ListBucket"),),  # S3: "you must have permissions to perform s3:ListBucket"
    "ListObjects": (_bucket("s3:ListBucket"),),
    "ListObjectsV2": (_bucket("s3:ListBucket"),),
    "ListObjectVersions": (_bucket("s3:ListBucketVersions"),),
    "ListMultipartUploads": (_bucket("s3:ListBucketMultipartUploads"),),
    "GetBucketLocation": (_bucket("s3:GetBucketLocation"),),
    "GetBucketVersioning": (_bucket("s3:GetBucketVersioning"),),
    "PutBucketVersioning": (_bucket("s3:PutBucketVersioning"),),
    "GetBucketAcl": (_bucket("s3:GetBucketAcl"),),
    "GetBucketOwnershipControls": (_bucket("s3:GetBucketOwnershipControls"),),
    "PutBucketAcl": (_bucket("s3:PutBucketAcl"),),
    "GetBucketPolicy": (_bucket("s3:GetBucketPolicy"),),
    "PutBucketPolicy": (_bucket("s3:PutBucketPolicy"),),
    "DeleteBucketPolicy": (_bucket("s3:DeleteBucketPolicy"),),
    "GetBucketPolicyStatus": (_bucket("s3:GetBucketPolicyStatus"),),
    "GetBucketTagging": (_bucket("s3:GetBucketTagging"),),
    "PutBucketTagging": (_bucket("s3:PutBucketTagging"),),
    "DeleteBucketTagging": (_bucket("s3:PutBucketTagging"),),  # S3 has no s3:DeleteBucketTagging
    # A KV namespace's budget and TTL (``apollo.meta.sql_kv``) decide when its objects go, as a lifecycle does.
    "PutBucketLifecycleConfiguration": (_bucket("s3:PutLifecycleConfiguration"),),
    # objects
    "GetObject": (_obj("s3:GetObject", "s3:GetObjectVersion"),),
    "HeadObject": (_obj("s3:GetObject", "s3:GetObjectVersion"),),
    "PutObject": (_obj("s3:PutObject"),),
    "DeleteObject": (_obj("s3:DeleteObject", "s3:DeleteObjectVersion"),),
    "DeleteObjects": (_obj("s3:DeleteObject", "s3:DeleteObjectVersion"),),  # once per key of the body
    "GetBatch": (_obj("s3:GetObject", "s3:GetObjectVersion"),),  # Apollo's batch GET: once per item
    "GetObjectTagging": (_obj("s3:GetObjectTagging", "s3:GetObjectVersionTagging"),),
    "PutObjectTagging": (_obj("s3:PutObjectTagging", "s3:PutObjectVersionTagging"),),
    "DeleteObjectTagging": (_obj("s3:DeleteObjectTagging", "s3:DeleteObjectVersionTagging"),),
    "GetObjectAcl": (_obj("s3:GetObjectAcl", "s3:GetObjectVersionAcl"),),
    "PutObjectAcl": (_obj("s3:PutObjectAcl", "s3:PutObjectVersionAcl"),),
    # GetObjectAttributes: "s3:GetObject and s3:GetObjectAttributes" (versioned: the Version pair)
    "GetObjectAttributes": (
        _obj("s3:GetObject", "s3:GetObjectVersion"),
        _obj("s3:GetObjectAttributes", "s3:GetObjectVersionAttributes"),
    ),
    "CopyObject": (Need("s3:GetObject", Target.OBJECT, "s3:GetObjectVersion", source=True), _obj("s3:PutObject")),
    # multipart: every step of writing an object is s3:PutObject, as in S3
    "CreateMultipartUpload": (_obj("s3:PutObject"),),
    "UploadPart": (_obj("s3:PutObject"),),
    "UploadPartCopy": (Need("s3:GetObject", Target.OBJECT, "s3:GetObjectVersion", source=True), _obj("s3:PutObject")),
    "CompleteMultipartUpload": (_obj("s3:PutObject"),),
    "AbortMultipartUpload": (_obj("s3:AbortMultipartUpload"),),
    "ListParts": (_obj("s3:ListMultipartUploadParts"),),
}

COPY_OPERATIONS = frozenset(op for op, needs in OPERATIONS.items() if any(n.source for n in needs))


def bucket_arn(bucket: str) -> str:
    return f"{ARN_PREFIX}{bucket}"


def object_arn(bucket: str, key: str) -> str:
    """The key goes in as it is (no escaping): policies match the raw key, as S3's do."""
    return f"{ARN_PREFIX}{bucket}/{key}"


def required(
    op: str,
    bucket: str | None,
    key: str | None,
    version_id: str | None = None,
    *,
    copy_source: tuple[str, str, str | None] | None = None,
) -> list[tuple[str, str]]:
    """The (action, resource ARN) pairs ``op`` needs; the caller allows the request only if all are allowed.

    ``copy_source`` is (bucket, key, version id or None) of CopyObject's and UploadPartCopy's source.

    :raises KeyError: ``op`` is not in the table (the caller denies: an op nobody classified is no grant).
    :raises apollo.invariant.InvariantError: a bucket or object op without its bucket/key, a copy without
        its source; a caller bug, and an empty answer would read as "nothing to check".
    """
    needs = OPERATIONS[op]
    pairs = []
    for need in needs:
        if need.source:
            invariant(copy_source is not None, f"{op} needs copy_source")
            src_bucket, src_key, src_version = copy_source
            action = need.versioned if src_version is not None and need.versioned else need.action
            pairs.append((action, object_arn(src_bucket, src_key)))
            continue
        if need.target is Target.SERVICE:
            pairs.append((need.action, SERVICE_RESOURCE))
            continue
        invariant(bool(bucket), f"{op} needs a bucket")
        if need.target is Target.BUCKET:
            pairs.append((need.action, bucket_arn(bucket)))
            continue
        invariant(key is not None and key != "", f"{op} needs a key")
        action = need.versioned if version_id is not None and need.versioned else need.action
        pairs.append((action, object_arn(bucket, key)))
    invariant(bool(pairs), f"{op} requires nothing: every entry of the table names an action")
    return pairs


def extra_for_headers(op: str, bucket: str, key: str, headers: frozenset[str]) -> list[tuple[str, str]]:
    """Pairs a write needs beyond the table because of its headers (lower-case names): ACL headers need
    s3:PutObjectAcl, ``x-amz-tagging`` needs s3:PutObjectTagging (S3's PutObject documentation)."""
    if op not in {"PutObject", "CopyObject", "CreateMultipartUpload"}:
        return []
    pairs = []
    if headers & {"x-amz-acl", "x-amz-grant-read", "x-amz-grant-read-acp", "x-amz-grant-write-acp",
                  "x-amz-grant-full-control"}:  # fmt: skip
        pairs.append(("s3:PutObjectAcl", object_arn(bucket, key)))
    if "x-amz-tagging" in headers:
        pairs.append(("s3:PutObjectTagging", object_arn(bucket, key)))
    return pairs


# Every action of Amazon S3's service authorization reference. A policy naming an action (or a wildcard
# pattern) that matches none of them is refused, as PutBucketPolicy does ("Policy has invalid action"):
# a typo in a Deny must not pass silently as a statement that never applies.
KNOWN_ACTIONS: frozenset[str] = frozenset(
    "s3:" + name
    for name in """
    AbortMultipartUpload AssociateAccessGrantsIdentityCenter BypassGovernanceRetention CreateAccessGrant
    CreateAccessGrantsInstance CreateAccessGrantsLocation CreateAccessPoint CreateAccessPointForObjectLambda
    CreateBucket CreateBucketMetadataTableConfiguration CreateJob CreateMultiRegionAccessPoint CreateSession
    CreateStorageLensGroup DeleteAccessGrant DeleteAccessGrantsInstance DeleteAccessGrantsInstanceResourcePolicy
    DeleteAccessGrantsLocation DeleteAccessPoint DeleteAccessPointForObjectLambda DeleteAccessPointPolicy
    DeleteAccessPointPolicyForObjectLambda DeleteBucket DeleteBucketMetadataTableConfiguration
    DeleteBucketOwnershipControls DeleteBucketPolicy DeleteBucketWebsite DeleteJobTagging
    DeleteMultiRegionAccessPoint DeleteObject DeleteObjectTagging DeleteObjectVersion DeleteObjectVersionTagging
    DeleteStorageLensConfiguration DeleteStorageLensConfigurationTagging DeleteStorageLensGroup DescribeJob
    DescribeMultiRegionAccessPointOperation DissociateAccessGrantsIdentityCenter GetAccelerateConfiguration
    GetAccessGrant GetAccessGrantsInstance GetAccessGrantsInstanceForPrefix GetAccessGrantsInstanceResourcePolicy
    GetAccessGrantsLocation GetAccessPoint GetAccessPointConfigurationForObjectLambda GetAccessPointForObjectLambda
    GetAccessPointPolicy GetAccessPointPolicyForObjectLambda GetAccessPointPolicyStatus
    GetAccessPointPolicyStatusForObjectLambda GetAccountPublicAccessBlock GetAnalyticsConfiguration GetBucketAcl
    GetBucketCORS GetBucketLocation GetBucketLogging GetBucketMetadataTableConfiguration GetBucketNotification
    GetBucketObjectLockConfiguration GetBucketOwnershipControls GetBucketPolicy GetBucketPolicyStatus
    GetBucketPublicAccessBlock GetBucketRequestPayment GetBucketTagging GetBucketVersioning GetBucketWebsite
    GetDataAccess GetEncryptionConfiguration GetIntelligentTieringConfiguration GetInventoryConfiguration
    GetJobTagging GetLifecycleConfiguration GetMetricsConfiguration GetMultiRegionAccessPoint
    GetMultiRegionAccessPointPolicy GetMultiRegionAccessPointPolicyStatus GetMultiRegionAccessPointRoutes
    GetObject GetObjectAcl GetObjectAttributes GetObjectLegalHold GetObjectRetention GetObjectTagging
    GetObjectTorrent GetObjectVersion GetObjectVersionAcl GetObjectVersionAttributes GetObjectVersionForReplication
    GetObjectVersionTagging GetObjectVersionTorrent GetReplicationConfiguration GetStorageLensConfiguration
    GetStorageLensConfigurationTagging GetStorageLensDashboard GetStorageLensGroup InitiateReplication
    ListAccessGrants ListAccessGrantsInstances ListAccessGrantsLocations ListAccessPoints
    ListAccessPointsForObjectLambda ListAllMyBuckets ListBucket ListBucketMultipartUploads ListBucketVersions
    ListCallerAccessGrants ListJobs ListMultiRegionAccessPoints ListMultipartUploadParts
    ListStorageLensConfigurations ListStorageLensGroups ListTagsForResource ObjectOwnerOverrideToBucketOwner
    PauseReplication PutAccelerateConfiguration PutAccessGrantsInstanceResourcePolicy
    PutAccessPointConfigurationForObjectLambda PutAccessPointPolicy PutAccessPointPolicyForObjectLambda
    PutAccessPointPublicAccessBlock PutAccountPublicAccessBlock PutAnalyticsConfiguration PutBucketAcl
    PutBucketCORS PutBucketLogging PutBucketNotification PutBucketObjectLockConfiguration
    PutBucketOwnershipControls PutBucketPolicy PutBucketPublicAccessBlock PutBucketRequestPayment PutBucketTagging
    PutBucketVersioning PutBucketWebsite PutEncryptionConfiguration PutIntelligentTieringConfiguration
    PutInventoryConfiguration PutJobTagging PutLifecycleConfiguration PutMetricsConfiguration
    PutMultiRegionAccessPointPolicy PutObject PutObjectAcl PutObjectLegalHold PutObjectRetention PutObjectTagging
    PutObjectVersionAcl PutObjectVersionTagging PutReplicationConfiguration PutStorageLensConfiguration
    PutStorageLensConfigurationTagging ReplicateDelete ReplicateObject ReplicateTags RestoreObject
    SubmitMultiRegionAccessPointRoutes TagResource UntagResource UpdateAccessGrantsLocation UpdateJobPriority
    UpdateJobStatus UpdateStorageLensGroup
    """.split()  # noqa: SIM905 (one word per action reads better than 170 quoted strings)
)
