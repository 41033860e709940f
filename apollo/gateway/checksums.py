"""The additional checksums S3 clients send (x-amz-checksum-*): compute, parse, name.

Values travel base64-encoded, big-endian for the CRCs, exactly as AWS returns them.
zlib, crc32c, awscrt and hashlib all release the GIL on large buffers, so the
writer can run these on its worker threads next to MD5 and erasure coding.
"""

from __future__ import annotations

import base64
import hashlib
import zlib
from collections.abc import Mapping

import crc32c
from awscrt import checksums as crt_checksums

from apollo.gateway.s3errors import s3error

ALGORITHMS = ("CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256")
# x-amz-checksum-* headers that name a mode or an algorithm rather than carry a value.
_NOT_VALUES = ("x-amz-checksum-mode", "x-amz-checksum-algorithm", "x-amz-checksum-type")
_DIGEST_BYTES = {"CRC32": 4, "CRC32C": 4, "CRC64NVME": 8, "SHA1": 20, "SHA256": 32}


class _Crc:
    def __init__(self, update, width: int) -> None:
        self._update = update
        self._width = width
        self._value = 0

    def update(self, data: bytes) -> None:
        self._value = self._update(data, self._value)

    def b64digest(self) -> str:
        return base64.b64encode(self._value.to_bytes(self._width, "big")).decode()


class _Hash:
    def __init__(self, name: str) -> None:
        self._hash = hashlib.new(name)

    def update(self, data: bytes) -> None:
        self._hash.update(data)

    def b64digest(self) -> str:
        return base64.b64encode(self._hash.digest()).decode()


def new_checksummer(algorithm: str) -> _Crc | _Hash:
    """A running checksum with ``update(bytes)`` and ``b64digest()``."""
    if algorithm == "CRC32":
        return _Crc(zlib.crc32, 4)
    if algorithm == "CRC32C":
        return _Crc(crc32c.crc32c, 4)
    if algorithm == "CRC64NVME":
        return _Crc(crt_checksums.crc64nvme, 8)
    if algorithm in ("SHA1", "SHA256"):
        return _Hash(algorithm.lower())
    raise s3error("InvalidRequest", f"Checksum algorithm {algorithm} is not supported")


def _algorithm_of(header: str) -> str:
    name = header.lower().removeprefix("x-amz-checksum-").upper()
    if name not in ALGORITHMS:
        raise s3error("InvalidRequest", f"Value for x-amz-checksum-{name.lower()} is not a supported algorithm")
    return name


def _check_value(algorithm: str, value: str) -> str:
    """A well-formed value; a COMPOSITE multipart checksum carries a ``-<parts>`` suffix after the digest."""
    digest, _, parts = value.partition("-")
    try:
        if parts and not parts.isdigit():
            raise ValueError(value)
        decoded = base64.b64decode(digest, validate=True)
    except ValueError as exc:
        raise s3error("InvalidRequest", f"Value for x-amz-checksum-{algorithm.lower()} header is invalid.") from exc
    if len(decoded) != _DIGEST_BYTES[algorithm]:
        raise s3error("InvalidRequest", f"Value for x-amz-checksum-{algorithm.lower()} header is invalid.")
    return value


def checksum_from_headers(headers: Mapping[str, str]) -> tuple[str, str | None] | None:
    """The checksum a request declares: (algorithm, expected base64) or (algorithm, None) when it
    arrives as a trailer. At most one may be given, as on AWS."""
    found = [(name, value) for name, value in headers.items()
             if name.lower().startswith("x-amz-checksum-") and name.lower() not in _NOT_VALUES]  # fmt: skip
    trailer = headers.get("x-amz-trailer")
    if len(found) > 1 or (found and trailer):
        raise s3error("InvalidRequest", "Expecting a single x-amz-checksum- header. "
                      "Multiple checksum Types are not allowed.")  # fmt: skip
    if found:
        algorithm = _algorithm_of(found[0][0])
        return algorithm, _check_value(algorithm, found[0][1].strip())
    if trailer:
        return _algorithm_of(trailer.strip()), None
    return None


CHECKSUM_TYPES = ("COMPOSITE", "FULL_OBJECT")
_CRC_COMBINE = {"CRC32": crt_checksums.combine_crc32, "CRC32C": crt_checksums.combine_crc32c,
                "CRC64NVME": crt_checksums.combine_crc64nvme}  # fmt: skip


def multipart_checksum_type(algorithm: str, requested: str | None) -> str:
    """The checksum type of a new multipart upload, with AWS's defaults and restrictions:
    CRC64NVME only combines as a full-object CRC; SHA digests only compose."""
    if requested is None:
        return "FULL_OBJECT" if algorithm == "CRC64NVME" else "COMPOSITE"
    requested = requested.upper()
    if requested not in CHECKSUM_TYPES:
        raise s3error("InvalidRequest", f"Value for x-amz-checksum-type header is invalid: {requested}")
    allowed = algorithm in _CRC_COMBINE if requested == "FULL_OBJECT" else algorithm != "CRC64NVME"
    if not allowed:
        raise s3error("InvalidRequest", f"The {requested} checksum type cannot be used with the "
                      f"{algorithm.lower()} checksum algorithm.")  # fmt: skip
    return requested


def combine_part_checksums(algorithm: str, checksum_type: str, parts: list[tuple[str, int]]) -> str:
    """The object checksum of a completed multipart upload from its parts' (base64 checksum, size).

    FULL_OBJECT: the CRC of the whole object, combined from the part CRCs without
    rereading data. COMPOSITE: the checksum of the concatenated part checksums,
    suffixed with ``-<part count>``, as AWS computes it.
    """
    raw = [base64.b64decode(value) for value, _ in parts]
    if checksum_type == "FULL_OBJECT":
        combine = _CRC_COMBINE[algorithm]
        crc = int.from_bytes(raw[0], "big")
        for digest, (_, size) in zip(raw[1:], parts[1:], strict=True):
            crc = combine(crc, int.from_bytes(digest, "big"), size)
        return base64.b64encode(crc.to_bytes(_DIGEST_BYTES[algorithm], "big")).decode()
    outer = new_checksummer(algorithm)
    for digest in raw:
        outer.update(digest)
    return f"{outer.b64digest()}-{len(parts)}"


def checksum_type_of(value: str) -> str:
    """COMPOSITE values carry a ``-<parts>`` suffix; everything else covers the whole object."""
    return "COMPOSITE" if "-" in value else "FULL_OBJECT"
