"""AWS's JSON policy language for S3: parse a document as PutBucketPolicy validates it, and evaluate requests.

Pure (no I/O, standard library only), so that every front door decides the same way: the S3 gateway for
each request, the metadata service before it issues capability tokens to a native client.

Call sequence:

1. Storing a policy (PutBucketPolicy, or an access key's identity policy):
   ``parse_policy(text, kind="bucket", bucket=name)``; a ``PolicyError`` answers MalformedPolicy with its
   message. Store ``policy.to_json()`` (the text normalized: GetBucketPolicy returns it).
2. Each request: ``s3_actions.required(op, bucket, key, version_id)`` gives (action, resource) pairs; for
   each, ``evaluate(Request(...), identity_policies_of_the_key, bucket_policy_or_None)``. Go ahead only if
   every pair's ``Decision.allowed``; log ``Decision.sid`` of a denial.

Semantics (same-account S3, AWS's "policy evaluation logic"): an explicit Deny in any applicable statement
wins; else an Allow from the principal's identity policies, or from a bucket-policy statement whose Principal
names it (``"*"`` names anyone, anonymous included), allows; else the request is implicitly denied. Apollo's
choice where AWS has no equivalent: a root key is allowed unless a *bucket policy* explicitly denies it
(AWS's account root cannot be restricted by its own IAM policies either, but a bucket policy can lock it out;
we keep the latter so an operator can fence a bucket, and because a root key has no identity policies).
The same default allow goes to the key that created the bucket (``Request.is_owner``): each Apollo access
key is its own tenant, as an AWS account is, and S3 gives a bucket's owner full control by its default
ACL. An explicit Deny, in its own identity policies or the bucket's, still wins.
"""

from __future__ import annotations

import enum
import ipaddress
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Literal

from apollo.invariant import invariant
from apollo.proto.s3_actions import ARN_PREFIX, KNOWN_ACTIONS

Kind = Literal["bucket", "identity"]

BUCKET_POLICY_BYTES_MAX = 20 * 1024  # S3: "Bucket policies are limited to 20 KB"
IDENTITY_POLICY_CHARS_MAX = 6 * 1024  # IAM: 6,144 characters for a managed policy, white space not counted
VERSIONS = ("2012-10-17", "2008-10-17")
VERSION_DEFAULT = "2008-10-17"  # AWS's reading of a document without Version: no policy variables
PRINCIPAL_NAME = re.compile(r"[\w+=,.@-]{1,128}")  # IAM user name characters; Apollo key names fit them
USER_ARN = re.compile(r"arn:aws:iam::[^:]*:user/(?:[^*?]*/)?([\w+=,.@-]{1,128})")
_ACTION = re.compile(r"[A-Za-z0-9]+:[A-Za-z0-9*?]+")
_KNOWN_LOWER = tuple(sorted(a.lower() for a in KNOWN_ACTIONS))

_TOP = {"Version", "Id", "Statement"}
_ELEMENTS = {"Sid", "Effect", "Principal", "NotPrincipal", "Action", "NotAction", "Resource", "NotResource",
             "Condition"}  # fmt: skip

# Condition operators: name -> the positive test a value goes through; negated operators invert its result.
_OPERATORS = {
    "StringEquals": "StringEquals", "StringNotEquals": "StringEquals",
    "StringEqualsIgnoreCase": "StringEqualsIgnoreCase", "StringNotEqualsIgnoreCase": "StringEqualsIgnoreCase",
    "StringLike": "StringLike", "StringNotLike": "StringLike",
    "NumericEquals": "NumericEquals", "NumericNotEquals": "NumericEquals", "NumericLessThan": "NumericLessThan",
    "NumericLessThanEquals": "NumericLessThanEquals", "NumericGreaterThan": "NumericGreaterThan",
    "NumericGreaterThanEquals": "NumericGreaterThanEquals",
    "DateEquals": "DateEquals", "DateNotEquals": "DateEquals", "DateLessThan": "DateLessThan",
    "DateLessThanEquals": "DateLessThanEquals", "DateGreaterThan": "DateGreaterThan",
    "DateGreaterThanEquals": "DateGreaterThanEquals",
    "Bool": "Bool", "IpAddress": "IpAddress", "NotIpAddress": "IpAddress",
    "ArnEquals": "ArnLike", "ArnNotEquals": "ArnLike", "ArnLike": "ArnLike", "ArnNotLike": "ArnLike",
    "Null": "Null",
}  # fmt: skip
_NEGATED = frozenset({"StringNotEquals", "StringNotEqualsIgnoreCase", "StringNotLike", "NumericNotEquals",
                      "DateNotEquals", "NotIpAddress", "ArnNotEquals", "ArnNotLike"})  # fmt: skip
_SET_PREFIXES = ("ForAnyValue:", "ForAllValues:")
# Condition keys Apollo's front doors fill in. Others are allowed (AWS allows them): they are simply absent.
KNOWN_CONDITION_KEYS = (
    "aws:SourceIp", "aws:SecureTransport", "aws:username", "aws:CurrentTime", "aws:EpochTime", "aws:UserAgent",
    "aws:Referer", "s3:prefix", "s3:delimiter", "s3:max-keys", "s3:ExistingObjectTag/<key>",
    "s3:RequestObjectTag/<key>", "s3:RequestObjectTagKeys", "s3:x-amz-acl", "s3:VersionId", "s3:signatureversion",
    "s3:authType", "s3:x-amz-content-sha256", "s3:x-amz-copy-source", "s3:x-amz-metadata-directive",
)  # fmt: skip


class PolicyError(ValueError):
    """The document is not a valid policy (S3 answers MalformedPolicy with this message)."""


# ---- wildcards and policy variables ------------------------------------------------------------------------

_STAR, _ONE = -1, -2  # wildcard tokens of a compiled pattern; every other token is one literal character
Token = str | int


@dataclass(frozen=True)
class _Var:
    """``${key}`` or ``${key, 'default'}`` inside a pattern, resolved from the request context."""

    key: str
    default: str | None


_VAR = re.compile(r"\$\{([^}]*)\}")
_VAR_BODY = re.compile(r"\s*([\w:/.\-]+)\s*(?:,\s*'([^']*)'\s*)?")
_LITERAL_VARS = {"*": "*", "?": "?", "$": "$"}  # ${*} ${?} ${$}: the character itself, never a wildcard


def _match(tokens: Sequence[Token], text: str) -> bool:
    """Glob match with ``*`` (any run) and ``?`` (one character), the whole text.

    The greedy two-pointer walk backtracks only to the last ``*``: O(len(tokens) * len(text)) at worst, where
    a regex of many ``.*`` can take polynomial time of a high degree (a policy is attacker-supplied text up to
    20 KiB, a key 1 KiB). ``fnmatch`` is no substitute: it has ``[...]`` classes AWS does not.
    """
    p = t = 0
    star_p, star_t = -1, 0
    n, m = len(tokens), len(text)
    while t < m:
        if p < n and tokens[p] == _STAR:
            star_p, star_t = p, t
            p += 1
        elif p < n and (tokens[p] == _ONE or tokens[p] == text[t]):
            p += 1
            t += 1
        elif star_p >= 0:
            p, star_t = star_p + 1, star_t + 1
            t = star_t
        else:
            return False
    while p < n and tokens[p] == _STAR:
        p += 1
    return p == n


def wildcard_match(pattern: str, text: str, *, ignore_case: bool = False) -> bool:
    """AWS's wildcard match (Action, Resource, StringLike): ``*`` any run, ``?`` one character, nothing else."""
    if ignore_case:
        pattern, text = pattern.lower(), text.lower()
    return _match(_tokens(pattern, wild=True, variables=False), text)


def _tokens(text: str, *, wild: bool, variables: bool) -> tuple[Token | _Var, ...]:
    """Tokens of a policy string: characters, wildcards (``wild``), and ``${...}`` variables (``variables``:
    only under Version 2012-10-17, as in AWS; otherwise ``${`` is plain text)."""

    def chars(s: str) -> list[Token]:
        return [(_STAR if c == "*" else _ONE if c == "?" else c) if wild else c for c in s]

    if not variables or "${" not in text:
        return tuple(chars(text))
    tokens: list[Token | _Var] = []
    end = 0
    for found in _VAR.finditer(text):
        tokens += chars(text[end : found.start()])
        body = found.group(1)
        if body in _LITERAL_VARS:
            tokens.append(_LITERAL_VARS[body])
        elif var := _VAR_BODY.fullmatch(body):
            tokens.append(_Var(var.group(1), var.group(2)))
        else:
            tokens += chars(found.group(0))
        end = found.end()
    tokens += chars(text[end:])
    return tuple(tokens)


# Policy strings only (bounded by the policies in use), never request values: a cache keyed by what clients
# send would hold up to maxsize of their largest headers.
_compile = lru_cache(maxsize=8192)(_tokens)


def _resolve(tokens: tuple[Token | _Var, ...], ctx: _Context) -> tuple[Token, ...] | None:
    """Substitute variables; None when one names a key the request lacks (and has no default) or a key with
    several values: the pattern then matches nothing, as in AWS."""
    if not any(isinstance(t, _Var) for t in tokens):
        return tokens
    out: list[Token] = []
    for token in tokens:
        if not isinstance(token, _Var):
            out.append(token)
            continue
        value = ctx.single(token.key)
        if value is None:
            value = token.default
        if value is None:
            return None
        out += value  # literal characters: a "*" in a user name is no wildcard
    return tuple(out)


# ---- the parsed form ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Condition:
    """One (operator, key, values) test; values are the policy's, as strings (JSON numbers/booleans too)."""

    operator: str  # as written, e.g. "ForAnyValue:StringLikeIfExists"
    base: str  # "StringLike"
    set_op: str | None  # "ForAnyValue", "ForAllValues" or None
    if_exists: bool
    key: str
    values: tuple[str, ...]

    @property
    def negated(self) -> bool:
        return self.base in _NEGATED


@dataclass(frozen=True)
class Statement:
    sid: str | None
    effect: Literal["Allow", "Deny"]
    principals: tuple[str, ...] | None  # access key names or "*"; None: no Principal element (identity policy)
    not_principal: bool
    actions: tuple[str, ...]
    not_action: bool
    resources: tuple[str, ...]
    not_resource: bool
    conditions: tuple[Condition, ...] = ()


@dataclass(frozen=True)
class Policy:
    kind: Kind
    version: str
    statements: tuple[Statement, ...]
    id: str | None = None
    bucket: str | None = None
    text: str = field(default="", repr=False)

    def to_json(self) -> str:
        """The document as parsed, normalized: compact, key order and values kept (GetBucketPolicy's answer)."""
        return self.text


# ---- parsing -----------------------------------------------------------------------------------------------


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """A repeated key would let ``{"Effect": "Deny", "Effect": "Allow"}`` mean what the last one says, which a
    reviewer may not read; refuse it."""
    out: dict[str, object] = {}
    for key, value in pairs:
        if key in out:
            raise PolicyError(f"Policy has a duplicate element: {key}")
        out[key] = value
    return out


def _refuse_constant(name: str) -> object:
    raise PolicyError(f"Policy has an invalid number: {name}")


def _load(text: str | bytes, kind: Kind) -> tuple[dict[str, object], str]:
    raw = text.encode() if isinstance(text, str) else text
    if len(raw) > BUCKET_POLICY_BYTES_MAX:
        raise PolicyError(f"Policies must be at most {BUCKET_POLICY_BYTES_MAX} bytes; this one has {len(raw)}")
    try:
        decoded = raw.decode("utf-8")
        doc = json.loads(decoded, object_pairs_hook=_no_duplicates, parse_constant=_refuse_constant)
    except UnicodeDecodeError as exc:
        raise PolicyError("Policies must be UTF-8 text") from exc
    except RecursionError as exc:
        raise PolicyError("Policy nests too deeply") from exc
    except json.JSONDecodeError as exc:
        raise PolicyError(f"Policies must be valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from exc
    if not isinstance(doc, dict):
        raise PolicyError("Policies must be a JSON object")
    normalized = json.dumps(doc, separators=(",", ":"), ensure_ascii=False)
    if kind == "identity" and len(normalized) > IDENTITY_POLICY_CHARS_MAX:
        raise PolicyError(f"Identity policies must be at most {IDENTITY_POLICY_CHARS_MAX} characters without "
                          f"white space; this one has {len(normalized)}")  # fmt: skip
    return doc, normalized


def parse_policy(text: str | bytes, *, kind: Kind, bucket: str | None = None) -> Policy:
    """Validate ``text`` as AWS does and return its immutable parsed form.

    ``kind="bucket"`` needs ``bucket``: every Resource must lie inside it, every statement names a Principal.
    ``kind="identity"``: no Principal (the policy belongs to the key it is attached to).

    :raises PolicyError: anything malformed, with a message for the client.
    """
    invariant(kind in ("bucket", "identity"), f"unknown policy kind {kind!r}")
    invariant(kind == "identity" or bool(bucket), "a bucket policy is parsed for its bucket")
    doc, normalized = _load(text, kind)
    if unknown := sorted(doc.keys() - _TOP):
        raise PolicyError(f"Policy has an invalid element: {unknown[0]}")
    version = doc.get("Version", VERSION_DEFAULT)
    if version not in VERSIONS:
        raise PolicyError(f'Policy has an invalid Version {version!r}: use "2012-10-17"')
    policy_id = doc.get("Id")
    if policy_id is not None and not isinstance(policy_id, str):
        raise PolicyError("Policy Id must be a string")
    if "Statement" not in doc:
        raise PolicyError("Policy is missing required element: Statement")
    raw = doc["Statement"]
    raws = [raw] if isinstance(raw, dict) else raw
    if not isinstance(raws, list) or not raws or not all(isinstance(s, dict) for s in raws):
        raise PolicyError("Statement must be an object or a non-empty list of objects")
    statements = tuple(_statement(s, kind, bucket) for s in raws)
    sids = [s.sid for s in statements if s.sid]
    if len(sids) != len(set(sids)):
        raise PolicyError("Statement IDs (Sid) in a policy must be unique")
    return Policy(kind, version, statements, policy_id, bucket if kind == "bucket" else None, normalized)


def _one_of(raw: dict[str, object], name: str) -> tuple[object, bool]:
    """(value, negated) of ``name`` or ``Not<name>``: exactly one must be present."""
    has, has_not = name in raw, f"Not{name}" in raw
    if has and has_not:
        raise PolicyError(f"Statement cannot have both {name} and Not{name}")
    if not has and not has_not:
        raise PolicyError(f"Statement is missing required element: {name} or Not{name}")
    return (raw[f"Not{name}"], True) if has_not else (raw[name], False)


def _strings(value: object, element: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(v, str) and v for v in items):
        raise PolicyError(f"{element} must be a non-empty string or a non-empty list of non-empty strings")
    return tuple(items)


def _statement(raw: dict[str, object], kind: Kind, bucket: str | None) -> Statement:
    if unknown := sorted(raw.keys() - _ELEMENTS):
        raise PolicyError(f"Statement has an invalid element: {unknown[0]}")
    sid = raw.get("Sid")
    if sid is not None and not isinstance(sid, str):
        raise PolicyError("Sid must be a string")
    if sid and kind == "identity" and not (sid.isascii() and sid.isalnum()):
        raise PolicyError(f"Sid {sid!r} must contain only letters and digits in an identity policy")
    effect = raw.get("Effect")
    if effect not in ("Allow", "Deny"):
        raise PolicyError(f'Statement has an invalid Effect {effect!r}: use "Allow" or "Deny"')
    principals, not_principal = _principals(raw, kind)
    action_raw, not_action = _one_of(raw, "Action")
    actions = tuple(_action(a) for a in _strings(action_raw, "Action"))
    resource_raw, not_resource = _one_of(raw, "Resource")
    resources = tuple(_resource(r, kind, bucket) for r in _strings(resource_raw, "Resource"))
    conditions = _conditions(raw.get("Condition", {}))
    return Statement(sid or None, effect, principals, not_principal, actions, not_action, resources,
                     not_resource, conditions)  # fmt: skip


def _principals(raw: dict[str, object], kind: Kind) -> tuple[tuple[str, ...] | None, bool]:
    present = [name for name in ("Principal", "NotPrincipal") if name in raw]
    if kind == "identity":
        if present:
            raise PolicyError(f"Identity policies cannot have {present[0]}: they apply to the key they belong to")
        return None, False
    if len(present) != 1:
        raise PolicyError("Bucket policy statements need exactly one of Principal and NotPrincipal")
    value = raw[present[0]]
    if value == "*":
        return ("*",), present[0] == "NotPrincipal"
    if not isinstance(value, dict) or set(value) != {"AWS"}:
        raise PolicyError('Invalid principal in policy: use "*" or {"AWS": ...} with access key names')
    return tuple(_principal(p) for p in _strings(value["AWS"], "Principal AWS")), present[0] == "NotPrincipal"


def _principal(text: str) -> str:
    """An access key name, or an IAM user ARN mapped to its user name (a policy written for AWS works)."""
    if text == "*" or PRINCIPAL_NAME.fullmatch(text):
        return text
    if user := USER_ARN.fullmatch(text):
        return user.group(1)
    raise PolicyError(f"Invalid principal in policy: {text!r}")


def _action(text: str) -> str:
    if text == "*":
        return text
    if not _ACTION.fullmatch(text):
        raise PolicyError(f"Policy has invalid action: {text!r}")
    if text.split(":", 1)[0].lower() != "s3":
        raise PolicyError(f"Policy has invalid action: {text!r} is not an S3 action")
    tokens = _compile(text.lower(), wild=True, variables=False)
    if not any(_match(tokens, known) for known in _KNOWN_LOWER):
        raise PolicyError(f"Policy has invalid action: {text!r} names no S3 action")
    return text


def _resource(text: str, kind: Kind, bucket: str | None) -> str:
    if any(ord(c) < 0x20 for c in text):
        raise PolicyError(f"Policy has invalid resource: {text!r}")
    if text == "*" and kind == "identity":
        return text
    if not text.startswith(ARN_PREFIX) or len(text) == len(ARN_PREFIX):
        raise PolicyError(f"Policy has invalid resource: {text!r} (use arn:aws:s3:::bucket or arn:aws:s3:::bucket/key)")
    if kind == "bucket" and text[len(ARN_PREFIX) :].split("/", 1)[0] != bucket:
        raise PolicyError(f"Policy has invalid resource: {text!r} is not inside bucket {bucket!r}")
    return text


def _condition_value(value: object) -> str:
    """AWS compares condition values as strings; JSON booleans and numbers are written as such."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float) and math.isfinite(value):
        return json.dumps(value)
    if isinstance(value, str):
        return value
    raise PolicyError(f"Condition values must be strings, numbers or booleans, not {json.dumps(value)[:40]}")


def _conditions(raw: object) -> tuple[Condition, ...]:
    if not isinstance(raw, dict):
        raise PolicyError("Condition must be an object of operators")
    out = []
    for operator, block in raw.items():
        set_op, base, if_exists = _operator(operator)
        if not isinstance(block, dict) or not block:
            raise PolicyError(f"Condition {operator} must be a non-empty object of condition keys")
        for key, value in block.items():
            if not key or any(c.isspace() for c in key):
                raise PolicyError(f"Condition {operator} has an invalid key {key!r}")
            items = value if isinstance(value, list) else [value]
            if not items:
                raise PolicyError(f"Condition {operator} {key} has no values")
            values = tuple(_condition_value(v) for v in items)
            for v in values:
                _check_value(operator, base, v)
            out.append(Condition(operator, base, set_op, if_exists, key, values))
    return tuple(out)


def _operator(operator: str) -> tuple[str | None, str, bool]:
    set_op = next((p[:-1] for p in _SET_PREFIXES if operator.startswith(p)), None)
    name = operator[len(set_op) + 1 :] if set_op else operator
    if_exists = name.endswith("IfExists") and name != "IfExists"
    base = name[: -len("IfExists")] if if_exists else name
    if base not in _OPERATORS:
        raise PolicyError(f"Policy has an invalid condition operator: {operator}")
    if base == "Null" and (if_exists or set_op):
        raise PolicyError(f"Policy has an invalid condition operator: {operator} (Null takes no prefix or suffix)")
    return set_op, base, if_exists


def _check_value(operator: str, base: str, value: str) -> None:
    kind = _OPERATORS[base]
    bad = (
        (kind.startswith("Numeric") and _number(value) is None)
        or (kind.startswith("Date") and _timestamp(value) is None)
        or (kind in ("Bool", "Null") and value.lower() not in ("true", "false"))
        or (kind == "IpAddress" and _network(value) is None)
    )
    if bad:
        raise PolicyError(f"Condition {operator} has an invalid value {value!r}")


_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")
_EPOCH = re.compile(r"[+-]?\d+(\.\d+)?")


def _number(text: str) -> Decimal | None:
    """Exact decimal: float would make ``NumericEquals 0.1`` depend on binary rounding."""
    if not _NUMBER.fullmatch(text) or len(text) > 64:
        return None
    try:
        return Decimal(text)
    except InvalidOperation:
        return None


def _timestamp(text: str) -> float | None:
    """Seconds since the epoch of an ISO 8601 date/time (UTC when it names no zone) or of an epoch number."""
    if _EPOCH.fullmatch(text):
        return float(text) if len(text) <= 20 else None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


@lru_cache(maxsize=4096)
def _network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network | None:
    try:
        return ipaddress.ip_network(text, strict=False)
    except ValueError:
        return None


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The request's address; an IPv4-mapped IPv6 address (a dual-stack socket's) counts as its IPv4."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


# ---- evaluation --------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Request:
    """One (action, resource) check. ``principal`` is the access key name, None for anonymous.

    ``context`` holds condition keys (names compare case-insensitively, as AWS's do, except the part after a
    ``/``: tag keys are case-sensitive). ``aws:username`` is set from ``principal``, never taken from context.
    """

    principal: str | None
    action: str
    resource: str
    context: Mapping[str, str | list[str]] = field(default_factory=dict)
    is_root: bool = False
    is_owner: bool = False  # the principal created the bucket of ``resource``


class Outcome(enum.Enum):
    ALLOW = "Allow"
    EXPLICIT_DENY = "ExplicitDeny"
    IMPLICIT_DENY = "ImplicitDeny"


@dataclass(frozen=True)
class Decision:
    """The outcome, and for logging the Sid of the deciding statement and where it came from:
    ``"identity"``, ``"bucket"``, ``"root"`` (a root key's default allow), ``"owner"`` (the bucket owner's)
    or ``""`` (implicit deny)."""

    outcome: Outcome
    sid: str | None = None
    source: str = ""

    @property
    def allowed(self) -> bool:
        return self.outcome is Outcome.ALLOW


def _key_name(key: str) -> str:
    head, slash, tail = key.partition("/")
    return head.lower() + slash + tail


class _Context:
    """The request's condition keys, by case-insensitive name, each as a tuple of values."""

    def __init__(self, request: Request) -> None:
        self.values: dict[str, tuple[str, ...]] = {}
        for key, value in request.context.items():
            self.values[_key_name(key)] = (value,) if isinstance(value, str) else tuple(value)
        self.values.pop("aws:username", None)
        if request.principal is not None:
            self.values["aws:username"] = (request.principal,)

    def get(self, key: str) -> tuple[str, ...]:
        return self.values.get(_key_name(key), ())

    def single(self, key: str) -> str | None:
        values = self.get(key)
        return values[0] if len(values) == 1 else None


def _value_matches(kind: str, policy_value: str, value: str, ctx: _Context, variables: bool) -> bool:
    """Does one request value satisfy the positive operator ``kind`` against one policy value?"""
    if kind in ("StringEquals", "StringEqualsIgnoreCase"):
        tokens = _resolve(_compile(policy_value, wild=False, variables=variables), ctx)
        if tokens is None:
            return False
        wanted = "".join(tokens)
        return wanted == value if kind == "StringEquals" else wanted.casefold() == value.casefold()
    if kind in ("StringLike", "ArnLike"):
        tokens = _resolve(_compile(policy_value, wild=True, variables=variables), ctx)
        return tokens is not None and _match(tokens, value)
    if kind == "Bool":
        return policy_value.lower() == value.lower()
    if kind == "IpAddress":
        address, network = _address(value), _network(policy_value)
        return address is not None and network is not None and address in network
    if kind.startswith("Numeric"):
        a, b = _number(value), _number(policy_value)
    else:
        a, b = _timestamp(value), _timestamp(policy_value)
    if a is None or b is None:
        return False
    op = kind.removeprefix("Numeric").removeprefix("Date")
    return {"Equals": a == b, "LessThan": a < b, "LessThanEquals": a <= b, "GreaterThan": a > b,
            "GreaterThanEquals": a >= b}[op]  # fmt: skip


def _condition_holds(cond: Condition, ctx: _Context, variables: bool) -> bool:
    """AWS's rules: a missing key fails a positive operator and passes a negated one (StringNotEquals...);
    ``...IfExists`` passes on a missing key; ``Null`` tests presence. With a set prefix, ForAllValues passes
    on a missing or empty key (every one of no values matches) and ForAnyValue fails on it."""
    values = ctx.get(cond.key)
    if cond.base == "Null":
        return any((v.lower() == "true") == (not values) for v in cond.values)
    if not values:
        if cond.if_exists or cond.set_op == "ForAllValues":
            return True
        return cond.set_op is None and cond.negated
    kind = _OPERATORS[cond.base]

    def hit(value: str) -> bool:
        return any(_value_matches(kind, v, value, ctx, variables) for v in cond.values)

    if cond.set_op == "ForAllValues":
        return all(hit(v) != cond.negated for v in values)
    if cond.set_op == "ForAnyValue":
        return any(hit(v) != cond.negated for v in values)
    return any(hit(v) for v in values) != cond.negated  # several values, no set prefix: any one matches


def _resource_hit(pattern: str, resource: str, ctx: _Context, variables: bool) -> bool:
    if resource == "*":  # an action without resource-level permissions (ListAllMyBuckets)
        return pattern in ("*", ARN_PREFIX + "*")
    tokens = _resolve(_compile(pattern, wild=True, variables=variables), ctx)
    return tokens is not None and _match(tokens, resource)


def _applies(stmt: Statement, request: Request, ctx: _Context, variables: bool) -> bool:
    """Do the statement's Action, Resource and Condition all cover the request? (Principal is the caller's.)"""
    action = request.action.lower()
    hit = any(_match(_compile(a.lower(), wild=True, variables=False), action) for a in stmt.actions)
    if hit == stmt.not_action:
        return False
    hit = any(_resource_hit(r, request.resource, ctx, variables) for r in stmt.resources)
    if hit == stmt.not_resource:
        return False
    return all(_condition_holds(c, ctx, variables) for c in stmt.conditions)


def _names(stmt: Statement, principal: str | None) -> bool:
    """Does a bucket-policy statement's Principal (or NotPrincipal) cover ``principal``?"""
    listed = stmt.principals is not None and ("*" in stmt.principals or principal in stmt.principals)
    return listed != stmt.not_principal


def evaluate(request: Request, identity_policies: Sequence[Policy], bucket_policy: Policy | None) -> Decision:
    """Decide one (action, resource) of a request; see the module docstring for the rules.

    ``identity_policies`` are the policies of ``request.principal``; an anonymous request has none (any passed
    are ignored, so a caller's slip cannot grant anonymous access). ``bucket_policy`` is the policy of the
    bucket the resource lies in, or None.
    """
    invariant(all(p.kind == "identity" for p in identity_policies), "identity_policies holds a bucket policy")
    invariant(bucket_policy is None or bucket_policy.kind == "bucket", "bucket_policy is not a bucket policy")
    ctx = _Context(request)
    candidates: list[tuple[str, Statement, bool]] = []
    if request.principal is not None and not request.is_root:  # a root key has no identity policies
        for policy in identity_policies:
            variables = policy.version == "2012-10-17"
            candidates += [("identity", s, variables) for s in policy.statements]
    if bucket_policy is not None:
        variables = bucket_policy.version == "2012-10-17"
        candidates += [("bucket", s, variables) for s in bucket_policy.statements if _names(s, request.principal)]
    allow: Decision | None = None
    for source, stmt, variables in candidates:
        if not _applies(stmt, request, ctx, variables):
            continue
        if stmt.effect == "Deny":
            return Decision(Outcome.EXPLICIT_DENY, stmt.sid, source)
        allow = allow or Decision(Outcome.ALLOW, stmt.sid, source)
    if allow is not None:
        return allow
    if request.is_root:
        return Decision(Outcome.ALLOW, None, "root")
    if request.is_owner and request.principal is not None:
        return Decision(Outcome.ALLOW, None, "owner")
    return Decision(Outcome.IMPLICIT_DENY)

