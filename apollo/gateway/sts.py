"""STS ``AssumeRole`` on the S3 port: temporary credentials, so a training job never holds a long-lived key.

AWS's wire format (``POST /`` with a form body ``Action=AssumeRole&Version=2011-06-15&...``, SigV4 for the
service ``sts``), so ``boto3.client("sts", endpoint_url=...).assume_role(...)`` and the SDKs' credential
providers work unchanged; MinIO serves it the same way. What Apollo makes of it:

- Any access key but a temporary one may call it, for itself: the role it assumes is its own rights
  (``RoleArn`` is checked for form only), narrowed by the session ``Policy`` if one is given. A root key's
  session has every S3 right and no service rights.
- The new key, secret and session token are random; the database keeps the token's SHA-256, the parent, the
  policy and the expiry (``DurationSeconds``: 15 minutes to 12 hours, default 1 hour). S3 requests must carry
  the token (``X-Amz-Security-Token``, signed); the metadata RPC takes the key and secret alone (the native
  client). Deleting the parent key ends its sessions.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from urllib.parse import parse_qs
from xml.sax.saxutils import escape

from aiohttp import web

from apollo.gateway import expect
from apollo.gateway.s3errors import S3Error, s3error
from apollo.gateway.state import CLIENT
from apollo.gateway.xml import iso8601
from apollo.proto.bucket_access import ANONYMOUS
from apollo.proto.policy import PolicyError, parse_policy

BODY_BYTES_MAX = 16 * 1024  # a packed session policy is at most 2,048 characters; the rest is small
DURATION_S_MIN, DURATION_S_MAX, DURATION_S_DEFAULT = 900, 12 * 3600, 3600
SESSION_POLICY_CHARS_MAX = 2048  # STS: "The plaintext that you use for both inline and managed session policies can't exceed 2,048 characters"  # noqa: E501
NAMESPACE = "https://sts.amazonaws.com/doc/2011-06-15/"
_SESSION_NAME = re.compile(r"[\w+=,.@-]{2,64}")
_ROLE_ARN_CHARS = (20, 2048)


def is_sts(request: web.Request) -> bool:
    """A request signed for the service ``sts`` (its body must be read and hashed before it is verified)."""
    return request.method == "POST" and "/sts/aws4_request" in request.headers.get("Authorization", "")


async def read_body(request: web.Request) -> bytes:
    if request.content_length is None or request.content_length > BODY_BYTES_MAX:
        raise s3error("InvalidRequest", f"An STS request needs a Content-Length of at most {BODY_BYTES_MAX}")
    await expect.send_continue(request)  # its signature covers the body: nothing to check before it comes
    return await request.read()


def error_response(error: S3Error, request_id: str) -> web.Response:
    """STS's error document (``ErrorResponse``), which the SDKs' query protocol parses, unlike S3's."""
    kind = "Sender" if error.status < 500 else "Receiver"
    body = (f'<ErrorResponse xmlns="{NAMESPACE}"><Error><Type>{kind}</Type><Code>{escape(error.code)}</Code>'
            f"<Message>{escape(error.message)}</Message></Error><RequestId>{request_id}</RequestId></ErrorResponse>")
    return web.Response(status=error.status, body=body.encode(), content_type="text/xml")


def _validation(message: str) -> S3Error:
    return S3Error("ValidationError", message, 400)


def _form(body: bytes) -> dict[str, str]:
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body))
    except (UnicodeDecodeError, ValueError) as exc:
        raise _validation("The request body is not a form (application/x-www-form-urlencoded)") from exc
    if any(len(values) > 1 for values in fields.values()):
        raise _validation("A parameter is given more than once")
    return {name: values[0] for name, values in fields.items()}


async def assume_role(request: web.Request, bucket: str, key: str) -> web.Response:
    form = _form(request["sts_body"])
    if form.get("Action") != "AssumeRole":
        raise S3Error("InvalidAction", f"Apollo's STS serves AssumeRole, not {form.get('Action', '')!r}", 400)
    who = request.get("caller", ANONYMOUS)
    if who.principal is None:
        raise s3error("AccessDenied", "AssumeRole needs a signed request")
    if request.get("session_parent"):
        raise s3error("AccessDenied", "A temporary key cannot assume a role: ask with the key it was made for")
    role_arn, session_name = form.get("RoleArn", ""), form.get("RoleSessionName", "")
    if not _ROLE_ARN_CHARS[0] <= len(role_arn) <= _ROLE_ARN_CHARS[1]:
        raise _validation("RoleArn must be 20 to 2048 characters (Apollo assumes the caller's own rights)")
    if not _SESSION_NAME.fullmatch(session_name):
        raise _validation("RoleSessionName must be 2 to 64 of A-Z a-z 0-9 + = , . @ _ -")
    duration = _duration(form.get("DurationSeconds"))
    policy = _session_policy(form.get("Policy"))
    if any(name.startswith(("PolicyArns", "Tags", "TransitiveTagKeys", "SourceIdentity")) for name in form):
        raise _validation("Apollo's AssumeRole takes an inline Policy only (no PolicyArns, Tags, SourceIdentity)")
    access_key = "ASIA" + secrets.token_hex(8).upper()
    secret, token = secrets.token_urlsafe(30), secrets.token_urlsafe(96)
    expires = time.time() + duration
    await request.app[CLIENT].put_session(access_key, secret, hashlib.sha256(token.encode()).hexdigest(),
                                          who.principal, policy, expires)  # fmt: skip
    request_id = request["request_id"]
    body = (f'<AssumeRoleResponse xmlns="{NAMESPACE}"><AssumeRoleResult><Credentials>'
            f"<AccessKeyId>{access_key}</AccessKeyId><SecretAccessKey>{secret}</SecretAccessKey>"
            f"<SessionToken>{token}</SessionToken><Expiration>{iso8601(expires)}</Expiration></Credentials>"
            f"<AssumedRoleUser><AssumedRoleId>{access_key}:{session_name}</AssumedRoleId>"
            f"<Arn>arn:aws:sts::apollo:assumed-role/{escape(who.principal)}/{session_name}</Arn></AssumedRoleUser>"
            f"</AssumeRoleResult><ResponseMetadata><RequestId>{request_id}</RequestId></ResponseMetadata>"
            "</AssumeRoleResponse>")  # fmt: skip
    return web.Response(body=body.encode(), content_type="text/xml")


def _duration(raw: str | None) -> int:
    if raw is None:
        return DURATION_S_DEFAULT
    if not raw.isascii() or not raw.isdigit() or not DURATION_S_MIN <= int(raw) <= DURATION_S_MAX:
        raise _validation(f"DurationSeconds must be {DURATION_S_MIN} to {DURATION_S_MAX}")
    return int(raw)


def _session_policy(raw: str | None) -> str:
    if raw is None:
        return ""
    if len(raw) > SESSION_POLICY_CHARS_MAX:
        raise S3Error("PackedPolicyTooLarge", f"The session policy has {len(raw)} characters; at most "
                      f"{SESSION_POLICY_CHARS_MAX} are allowed", 400)  # fmt: skip
    try:
        return parse_policy(raw, kind="identity").to_json()
    except PolicyError as exc:
        raise S3Error("MalformedPolicyDocument", str(exc), 400) from exc
