"""The S3 operation -> IAM action table (``apollo.proto.s3_actions``): every operation the gateway names has an
entry (read from the gateway's source, so a new route without one fails here), the entries follow AWS's
documentation, and the pairs ``required`` returns evaluate as a policy author expects."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from apollo.invariant import InvariantError
from apollo.proto.policy import Request, evaluate, parse_policy
from apollo.proto.s3_actions import KNOWN_ACTIONS, OPERATIONS, extra_for_headers, required

GATEWAY = Path(__file__).resolve().parents[3] / "apollo" / "gateway"
# Names the gateway gives requests that are no S3 operation: nothing to authorize (health, metrics) or
# nothing served (an unrouted request answers NotImplemented before any handler runs).
# Not S3 operations: no bucket or object action to check. AssumeRole (STS) gives a key its own rights, narrowed.
NOT_OPERATIONS = {"unknown", "NotImplemented", "Health", "Metrics", "AssumeRole"}
B, ARN = "photos", "arn:aws:s3:::photos"


def gateway_ops() -> set[str]:
    """Every string the gateway assigns to ``request["op"]``, and the op names of its ``ROUTES`` table."""
    ops: set[str] = set()
    for path in sorted(GATEWAY.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Assign):
                continue
            targets = {ast.unparse(t) for t in node.targets}
            if "request['op']" in targets and isinstance(node.value, ast.Constant):
                ops.add(node.value.value)
            elif "ROUTES" in targets and isinstance(node.value, ast.Dict):
                ops |= {v.elts[0].value for v in node.value.values if isinstance(v, ast.Tuple)}
    return ops


def test_every_operation_the_gateway_names_has_an_entry():
    ops = gateway_ops()
    assert {"GetObject", "CopyObject", "ListBuckets", "CompleteMultipartUpload", "Health"} <= ops  # the scan works
    assert len(ops - NOT_OPERATIONS) >= 28
    assert sorted(ops - NOT_OPERATIONS - OPERATIONS.keys()) == []


def test_every_action_in_the_table_is_an_s3_action():
    actions = {need.action for needs in OPERATIONS.values() for need in needs}
    actions |= {need.versioned for needs in OPERATIONS.values() for need in needs if need.versioned}
    assert sorted(actions - KNOWN_ACTIONS) == []


EXPECTED = [
    # op, bucket, key, version id, pairs (AWS's API reference and service authorization reference)
    ("ListBuckets", None, None, None, [("s3:ListAllMyBuckets", "*")]),
    ("CreateBucket", B, None, None, [("s3:CreateBucket", ARN)]),
    ("DeleteBucket", B, None, None, [("s3:DeleteBucket", ARN)]),
    ("HeadBucket", B, None, None, [("s3:ListBucket", ARN)]),
    ("ListObjects", B, None, None, [("s3:ListBucket", ARN)]),
    ("ListObjectsV2", B, None, None, [("s3:ListBucket", ARN)]),
    ("ListObjectVersions", B, None, None, [("s3:ListBucketVersions", ARN)]),
    ("ListMultipartUploads", B, None, None, [("s3:ListBucketMultipartUploads", ARN)]),
    ("GetBucketLocation", B, None, None, [("s3:GetBucketLocation", ARN)]),
    ("GetBucketVersioning", B, None, None, [("s3:GetBucketVersioning", ARN)]),
    ("PutBucketVersioning", B, None, None, [("s3:PutBucketVersioning", ARN)]),
    ("GetBucketAcl", B, None, None, [("s3:GetBucketAcl", ARN)]),
    ("PutBucketAcl", B, None, None, [("s3:PutBucketAcl", ARN)]),
    ("GetBucketPolicy", B, None, None, [("s3:GetBucketPolicy", ARN)]),
    ("PutBucketPolicy", B, None, None, [("s3:PutBucketPolicy", ARN)]),
    ("DeleteBucketPolicy", B, None, None, [("s3:DeleteBucketPolicy", ARN)]),
    ("GetObject", B, "a/b.jpg", None, [("s3:GetObject", f"{ARN}/a/b.jpg")]),
    ("GetObject", B, "a/b.jpg", "v1", [("s3:GetObjectVersion", f"{ARN}/a/b.jpg")]),
    ("HeadObject", B, "k", None, [("s3:GetObject", f"{ARN}/k")]),
    ("HeadObject", B, "k", "v1", [("s3:GetObjectVersion", f"{ARN}/k")]),
    ("PutObject", B, "k", None, [("s3:PutObject", f"{ARN}/k")]),
    ("DeleteObject", B, "k", None, [("s3:DeleteObject", f"{ARN}/k")]),
    ("DeleteObject", B, "k", "v1", [("s3:DeleteObjectVersion", f"{ARN}/k")]),
    ("DeleteObjects", B, "k", None, [("s3:DeleteObject", f"{ARN}/k")]),
    ("DeleteObjects", B, "k", "v1", [("s3:DeleteObjectVersion", f"{ARN}/k")]),
    ("GetObjectTagging", B, "k", None, [("s3:GetObjectTagging", f"{ARN}/k")]),
    ("GetObjectTagging", B, "k", "v", [("s3:GetObjectVersionTagging", f"{ARN}/k")]),
    ("PutObjectTagging", B, "k", None, [("s3:PutObjectTagging", f"{ARN}/k")]),
    ("PutObjectTagging", B, "k", "v", [("s3:PutObjectVersionTagging", f"{ARN}/k")]),
    ("DeleteObjectTagging", B, "k", None, [("s3:DeleteObjectTagging", f"{ARN}/k")]),
    ("DeleteObjectTagging", B, "k", "v", [("s3:DeleteObjectVersionTagging", f"{ARN}/k")]),
    ("GetObjectAcl", B, "k", None, [("s3:GetObjectAcl", f"{ARN}/k")]),
    ("GetObjectAcl", B, "k", "v", [("s3:GetObjectVersionAcl", f"{ARN}/k")]),
    ("PutObjectAcl", B, "k", None, [("s3:PutObjectAcl", f"{ARN}/k")]),
    ("PutObjectAcl", B, "k", "v", [("s3:PutObjectVersionAcl", f"{ARN}/k")]),
    ("GetObjectAttributes", B, "k", None, [("s3:GetObject", f"{ARN}/k"), ("s3:GetObjectAttributes", f"{ARN}/k")]),
    (
        "GetObjectAttributes",
        B,
        "k",
        "v",
        [("s3:GetObjectVersion", f"{ARN}/k"), ("s3:GetObjectVersionAttributes", f"{ARN}/k")],
    ),
    ("CreateMultipartUpload", B, "k", None, [("s3:PutObject", f"{ARN}/k")]),
    ("UploadPart", B, "k", None, [("s3:PutObject", f"{ARN}/k")]),
    ("CompleteMultipartUpload", B, "k", None, [("s3:PutObject", f"{ARN}/k")]),
    ("AbortMultipartUpload", B, "k", None, [("s3:AbortMultipartUpload", f"{ARN}/k")]),
    ("ListParts", B, "k", None, [("s3:ListMultipartUploadParts", f"{ARN}/k")]),
]


@pytest.mark.parametrize(
    ("op", "bucket", "key", "version_id", "pairs"), EXPECTED, ids=[f"{e[0]}-{e[3]}" for e in EXPECTED]
)
def test_required(op, bucket, key, version_id, pairs):
    assert required(op, bucket, key, version_id) == pairs


def test_copies_need_read_on_the_source_and_write_on_the_target():
    for op in ("CopyObject", "UploadPartCopy"):
        assert required(op, B, "dst", copy_source=("src", "a/b", None)) == [
            ("s3:GetObject", "arn:aws:s3:::src/a/b"),
            ("s3:PutObject", f"{ARN}/dst"),
        ]
        assert required(op, B, "dst", copy_source=("src", "a/b", "v7"))[0] == (
            "s3:GetObjectVersion",
            "arn:aws:s3:::src/a/b",
        )
        with pytest.raises(InvariantError, match="copy_source"):
            required(op, B, "dst")


def test_unknown_operations_and_missing_targets_are_refused():
    with pytest.raises(KeyError):
        required("SelectObjectContent", B, "k")
    with pytest.raises(InvariantError, match="needs a key"):
        required("GetObject", B, None)
    with pytest.raises(InvariantError, match="needs a key"):
        required("DeleteObjects", B, "")
    with pytest.raises(InvariantError, match="needs a bucket"):
        required("ListObjects", None, None)


def test_keys_go_into_the_arn_as_they_are():
    assert required("GetObject", B, "a b/ü?*")[0][1] == f"{ARN}/a b/ü?*"


def test_headers_that_need_more_than_the_table():
    headers = frozenset({"x-amz-acl", "x-amz-tagging", "content-type"})
    assert extra_for_headers("PutObject", B, "k", headers) == [
        ("s3:PutObjectAcl", f"{ARN}/k"),
        ("s3:PutObjectTagging", f"{ARN}/k"),
    ]
    assert extra_for_headers("PutObject", B, "k", frozenset({"content-type"})) == []
    assert extra_for_headers("GetObject", B, "k", headers) == []


def _allowed(policy_statements: list[dict], op: str, bucket: str | None, key: str | None, **kw) -> bool:
    policy = parse_policy(json.dumps({"Version": "2012-10-17", "Statement": policy_statements}), kind="identity")
    return all(
        evaluate(Request(principal="alice", action=action, resource=resource), (policy,), None).allowed
        for action, resource in required(op, bucket, key, **kw)
    )


def test_the_pairs_evaluate_as_a_policy_author_expects():
    read_only = [{"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"], "Resource": [ARN, f"{ARN}/*"]}]
    assert _allowed(read_only, "GetObject", B, "k")
    assert _allowed(read_only, "HeadObject", B, "k")
    assert _allowed(read_only, "ListObjectsV2", B, None)
    assert _allowed(read_only, "HeadBucket", B, None)
    assert not _allowed(read_only, "GetObject", B, "k", version_id="v1")  # needs s3:GetObjectVersion
    assert not _allowed(read_only, "PutObject", B, "k")
    assert not _allowed(read_only, "GetObjectAttributes", B, "k")  # needs s3:GetObjectAttributes too
    assert not _allowed(read_only, "CopyObject", B, "dst", copy_source=(B, "src", None))
    copier = read_only + [{"Effect": "Allow", "Action": "s3:PutObject", "Resource": "arn:aws:s3:::backup/*"}]
    assert _allowed(copier, "CopyObject", "backup", "dst", copy_source=(B, "src", None))
    assert not _allowed(copier, "CopyObject", B, "dst", copy_source=("backup", "src", None))
    everything = [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]
    for op, needs in OPERATIONS.items():
        source = (B, "src", None) if any(n.source for n in needs) else None
        assert _allowed(everything, op, B, "k", copy_source=source), op
        only_list_buckets = [{"Effect": "Allow", "Action": "s3:ListAllMyBuckets", "Resource": "*"}]
        assert _allowed(only_list_buckets, op, B, "k", copy_source=source) is (op == "ListBuckets"), op
    assert not _allowed(read_only, "ListBuckets", None, None)
    assert _allowed([{"Effect": "Allow", "Action": "s3:ListAllMyBuckets", "Resource": "arn:aws:s3:::*"}],
                    "ListBuckets", None, None)  # fmt: skip
