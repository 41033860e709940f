# ruff: noqa: E501  (AWS messages are kept verbatim)
"""S3 error codes: the gateway's one translation table.

Handlers raise ``S3Error`` directly for protocol problems; core errors
(``apollo.errors``) are translated by ``from_core`` using ``CORE_ERROR_TABLE``.
So is the one environment failure a client must be told about rather than
hidden behind InternalError: the metadata database's filesystem being full.

A client reads the core's own message for errors of its request (4xx). A
server-side failure (5xx) answers with fixed words (``SERVER_MESSAGES``) or
AWS's generic message, never the core's text: that names drive paths, segments
and service endpoints (an OSError from a drive carries its absolute path),
which are no business of a client; ``to_s3_error`` logs it instead. One
exception: a 507 says why the write was refused (how many drives are writable,
which shard ran out of space, the metadata filesystem), as operations.md
promises, with file names, paths and URLs taken out (``scrub``).
"""

from __future__ import annotations

import logging
import re
import sqlite3

from apollo import errors

log = logging.getLogger("apollo.gateway")


class S3Error(Exception):
    """An S3 error response: code, HTTP status, message and extra XML fields."""

    def __init__(self, code: str, message: str, status: int = 400, **fields: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.status = status
        self.fields = fields
        self.headers: dict[str, str] = {}


# Statuses and default messages as AWS documents them (ErrorResponses in the S3 API reference).
S3_CODES: dict[str, tuple[int, str]] = {
    "AccessControlListNotSupported": (400, "The bucket does not allow ACLs"),
    "AccessDenied": (403, "Access Denied"),
    "ExpiredToken": (400, "The provided token has expired."),
    "InvalidToken": (400, "The provided token is malformed or otherwise invalid."),
    "AuthorizationHeaderMalformed": (400, "The authorization header is malformed."),
    "AuthorizationQueryParametersError": (400, "Error parsing the X-Amz-Credential parameter."),
    "BadDigest": (400, "The Content-MD5 you specified did not match what we received."),
    "BucketAlreadyExists": (409, "The requested bucket name is not available."),
    "BucketAlreadyOwnedByYou": (
        409,
        "Your previous request to create the named bucket succeeded and you already own it.",
    ),
    "BucketNotEmpty": (409, "The bucket you tried to delete is not empty"),
    "ConditionalRequestConflict": (
        409,
        "A conflicting conditional operation is currently in progress against this resource.",
    ),
    "EntityTooLarge": (400, "Your proposed upload exceeds the maximum allowed size"),
    "EntityTooSmall": (400, "Your proposed upload is smaller than the minimum allowed object size."),
    "IncompleteBody": (400, "You did not provide the number of bytes specified by the Content-Length HTTP header."),
    "InsufficientStorage": (507, "Not enough healthy drives with free space to store the object."),
    "InternalError": (500, "We encountered an internal error. Please try again."),
    "InvalidBucketAclWithObjectOwnership": (
        400, "Bucket cannot have ACLs set with ObjectOwnership's BucketOwnerEnforced setting"),
    "InvalidAccessKeyId": (403, "The AWS Access Key Id you provided does not exist in our records."),
    "InvalidArgument": (400, "Invalid Argument"),
    "InvalidBucketName": (400, "The specified bucket is not valid."),
    "InvalidDigest": (400, "The Content-MD5 you specified is not valid."),
    "InvalidPart": (400, "One or more of the specified parts could not be found."),
    "InvalidPartOrder": (400, "The list of parts was not in ascending order."),
    "InvalidURI": (400, "Couldn't parse the specified URI."),
    "InvalidRange": (416, "The requested range is not satisfiable"),
    "InvalidRequest": (400, "Invalid Request"),
    "InvalidTag": (400, "The tag provided was not a valid tag."),
    "InvalidStorageClass": (400, "The storage class you specified is not valid"),
    "KeyTooLongError": (400, "Your key is too long"),
    "MalformedACLError": (
        400, "The XML you provided was not well-formed or did not validate against our published schema"),
    "MalformedPolicy": (400, "Policies must be valid JSON and the first byte must be '{'"),
    "MalformedXML": (400, "The XML you provided was not well-formed or did not validate against our published schema."),
    "MethodNotAllowed": (405, "The specified method is not allowed against this resource."),
    "MetadataTooLarge": (400, "Your metadata headers exceed the maximum allowed metadata size."),
    "MissingContentLength": (411, "You must provide the Content-Length HTTP header."),
    "MissingSecurityHeader": (400, "Your request was missing a required header."),
    "NoSuchBucket": (404, "The specified bucket does not exist"),
    "NoSuchBucketPolicy": (404, "The bucket policy does not exist"),
    "NoSuchKey": (404, "The specified key does not exist."),
    "NoSuchTagSet": (404, "The TagSet does not exist"),
    "NoSuchUpload": (
        404,
        "The specified upload does not exist. The upload ID may be invalid, or the upload may have been aborted or completed.",
    ),
    "NoSuchVersion": (404, "The specified version does not exist."),
    "NotImplemented": (501, "A header you provided implies functionality that is not implemented."),
    "NotModified": (304, "Not Modified"),
    "PreconditionFailed": (412, "At least one of the pre-conditions you specified did not hold"),
    "RequestTimeout": (400, "Your socket connection to the server was not read from or written to within "
                             "the timeout period. Idle connections will be closed."),  # fmt: skip
    "RequestTimeTooSkewed": (403, "The difference between the request time and the server's time is too large."),
    "ServiceUnavailable": (503, "Please reduce your request rate."),
    "SignatureDoesNotMatch": (
        403,
        "The request signature we calculated does not match the signature you provided. Check your key and signing method.",
    ),
    "SlowDown": (503, "Please reduce your request rate."),
    "XAmzContentSHA256Mismatch": (400, "The provided 'x-amz-content-sha256' header does not match what was computed."),
}


def s3error(code: str, message: str | None = None, **fields: str) -> S3Error:
    """Build an S3Error with AWS's status (and default message) for ``code``."""
    status, default_message = S3_CODES[code]
    return S3Error(code, message or default_message, status, **fields)


CORE_ERROR_TABLE: list[tuple[type[errors.ApolloError], str]] = [
    (errors.BucketNotFound, "NoSuchBucket"),
    (errors.ObjectNotFound, "NoSuchKey"),
    (errors.VersionNotFound, "NoSuchVersion"),
    (errors.UploadNotFound, "NoSuchUpload"),
    (errors.BucketExists, "BucketAlreadyOwnedByYou"),
    (errors.BucketNotEmpty, "BucketNotEmpty"),
    (errors.PreconditionFailed, "PreconditionFailed"),
    (errors.ConditionalRequestConflict, "ConditionalRequestConflict"),
    (errors.InvalidPart, "InvalidPart"),
    (errors.InvalidPartOrder, "InvalidPartOrder"),
    (errors.EntityTooSmall, "EntityTooSmall"),
    (errors.EntityTooLarge, "EntityTooLarge"),
    (errors.BadDigest, "BadDigest"),
    (errors.IncompleteBody, "IncompleteBody"),
    (errors.InvalidRequest, "InvalidRequest"),
    (errors.InsufficientStorage, "InsufficientStorage"),
    (errors.InsufficientFragments, "ServiceUnavailable"),
    (errors.MetadataUnavailable, "ServiceUnavailable"),
]


# Server-side errors whose cause the client is told (scrubbed): a refused write it should not simply retry.
CAUSE_SHOWN = frozenset({"InsufficientStorage"})
# The words other server-side core errors answer with: what happened, nothing of the deployment in them.
SERVER_MESSAGES: dict[type[errors.ApolloError], str] = {
    errors.InsufficientFragments: "Too few of the object's shards can be read right now; retry later.",
    errors.MetadataUnavailable: "The metadata service is unavailable; retry later.",
}
# What a message must not show: the file name an OSError appends ("[Errno 28] No space left on device:
# '/mnt/disk3/tmp/...'"), internal URLs, and any other absolute path.
_OSERROR_FILES = re.compile(r"""(\[Errno \d+\] [^:\]]+): (?:'[^']*'|"[^"]*")(?: -> (?:'[^']*'|"[^"]*"))?""")
_URLS = re.compile(r"""\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s'",;)]*""")
_PATHS = re.compile(r"""(?<![\w.~-])/[^\s'",;)]+""")


def scrub(text: str) -> str:
    """``text`` without file names, URLs and absolute paths; the cause ("No space left on device") stays."""
    text = _OSERROR_FILES.sub(r"\1", text)
    return _PATHS.sub("<path>", _URLS.sub("<url>", text))


def _core_message(code: str, exc: Exception) -> str | None:
    """The message a client sees for a core error of ``code``, or None for AWS's default."""
    text = str(exc)
    if S3_CODES[code][0] < 500:
        return text or None
    if code in CAUSE_SHOWN:
        return scrub(text) or None
    return next((message for kind, message in SERVER_MESSAGES.items() if isinstance(exc, kind)), None)


def from_core(exc: Exception) -> S3Error:
    """Translate a core error; the first matching row wins, so subclasses come first. A server error's
    message holds nothing of the deployment (see the module docstring)."""
    for exc_type, code in CORE_ERROR_TABLE:
        if isinstance(exc, exc_type):
            return s3error(code, _core_message(code, exc))
    if _metadata_disk_full(exc):
        return s3error("InsufficientStorage", "The metadata database's filesystem is full.")
    return s3error("InternalError")


def to_s3_error(exc: Exception, context: str) -> S3Error:
    """``from_core``, logging what a server-side failure does not tell the client: the traceback of a bug
    (InternalError), the core's message otherwise. ``context`` says what failed ("PUT /bucket/key")."""
    error = from_core(exc)
    if error.code == "InternalError":
        log.error("internal error on %s", context, exc_info=exc)
    elif error.status >= 500:
        log.error("%s failed: %s", context, exc)
    return error


def _metadata_disk_full(exc: Exception) -> bool:
    """SQLite's "database or disk is full": the store raises it as is, and it passes once space returns."""
    return isinstance(exc, sqlite3.Error) and exc.sqlite_errorcode == sqlite3.SQLITE_FULL
