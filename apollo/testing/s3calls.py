"""Small boto3 shorthands the S3 behaviour tests share."""

from __future__ import annotations

import hashlib
from urllib.parse import urlsplit, urlunsplit


def response_headers(response: dict) -> dict[str, str]:
    """The raw HTTP headers of a boto3 response (lower-case names)."""
    return response["ResponseMetadata"]["HTTPHeaders"]


def md5_etag(data: bytes) -> str:
    """The quoted ETag S3 gives a single PUT of ``data``."""
    return f'"{hashlib.md5(data).hexdigest()}"'


def put_bytes(s3, bucket: str, key: str, data: bytes, **kwargs) -> dict:
    return s3.put_object(Bucket=bucket, Key=key, Body=data, **kwargs)


def get_bytes(s3, bucket: str, key: str, **kwargs) -> bytes:
    return s3.get_object(Bucket=bucket, Key=key, **kwargs)["Body"].read()


def virtual_host_s3(port: int, domain: str, access_key: str, secret_key: str):
    """A boto3 client using virtual-host-style addressing (``bucket.domain``), sent to 127.0.0.1:``port``
    with that Host header instead of relying on DNS."""
    import boto3
    from botocore.config import Config

    s3 = boto3.client("s3", endpoint_url=f"http://{domain}:{port}", aws_access_key_id=access_key,
                      aws_secret_access_key=secret_key, region_name="us-east-1",
                      config=Config(s3={"addressing_style": "virtual"}, retries={"max_attempts": 1}))  # fmt: skip

    def to_loopback(request, **_):
        parts = urlsplit(request.url)
        request.headers["Host"] = parts.netloc
        request.url = urlunsplit(parts._replace(netloc=f"127.0.0.1:{port}"))

    s3.meta.events.register("before-send.s3", to_loopback)
    return s3
