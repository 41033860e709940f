"""Bucket and key name rules, and request addressing (path-style and virtual-host)."""

from __future__ import annotations

from urllib.parse import unquote

from apollo import ids, limits
from apollo.gateway.s3errors import s3error


def validate_bucket(name: str) -> None:
    """AWS general-purpose bucket naming rules (``apollo.ids.bucket_name``), as S3 says it."""
    try:
        ids.bucket_name(name)
    except ids.BadIdentifier:
        raise s3error("InvalidBucketName", f"The specified bucket is not valid: {name}", BucketName=name) from None


def validate_key(key: str) -> None:
    """A key a write may name: 1 to 1024 bytes of UTF-8, no NUL (which no metadata engine stores in text;
    a NUL in a request path is refused before this, but a DeleteObjects key arrives in XML)."""
    size = len(key.encode("utf-8", "surrogatepass"))
    if size > limits.key_length_bytes_max:
        raise s3error("KeyTooLongError", MaxSizeAllowed=str(limits.key_length_bytes_max), Size=str(size))
    if not key:
        raise s3error("InvalidArgument", "The object key must not be empty")
    if "\x00" in key:
        raise s3error("InvalidArgument", "Object keys must not contain the NUL character")
    if not key.isascii():  # a non-UTF-8 byte in a header (x-amz-copy-source) arrives as a lone surrogate
        try:
            key.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise s3error("InvalidArgument", "Object keys must be UTF-8") from exc


VERSION_ID = ids.VERSION_ID


def check_version_id(version_id: str | None) -> str | None:
    """AWS answers a version id it could never have issued with 400 InvalidArgument, not 404 NoSuchVersion."""
    if version_id is not None and not VERSION_ID.fullmatch(version_id):
        raise s3error("InvalidArgument", "Invalid version id specified", ArgumentName="versionId",
                      ArgumentValue=version_id)  # fmt: skip
    return version_id


def host_bucket(host: str, domain: str | None) -> str:
    """The bucket a virtual-host-style request names in its Host header (``bucket.domain``), or ""."""
    if not domain:
        return ""
    hostname = host.rsplit(":", 1)[0] if not host.endswith("]") else host
    return hostname[: -len(domain) - 1] if hostname.endswith("." + domain) else ""


def split_target(raw_path: str, host: str, domain: str | None) -> tuple[str, str]:
    """(bucket, key) from the raw request path and Host header; either may be empty."""
    path = raw_path.split("?", 1)[0]
    bucket_from_host = host_bucket(host, domain)
    if bucket_from_host:
        return bucket_from_host, unquote(path[1:], errors="strict") if path.startswith("/") else unquote(path)
    trimmed = path[1:] if path.startswith("/") else path
    bucket, _, key = trimmed.partition("/")
    return unquote(bucket, errors="strict"), unquote(key, errors="strict")


def part_number(raw: str) -> int:
    """A ``partNumber`` query parameter: ASCII digits naming 1..10000, else 400 InvalidArgument as on AWS."""
    number = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 5 else 0
    if not 1 <= number <= limits.part_number_max:
        raise s3error("InvalidArgument", "Part number must be an integer between 1 and 10000, inclusive",
                      ArgumentName="partNumber", ArgumentValue=raw)  # fmt: skip
    return number
