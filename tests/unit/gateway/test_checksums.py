"""The additional checksums (``apollo.gateway.checksums``): each algorithm's published check value, the headers
that declare one, and the checksum of a completed multipart upload (FULL_OBJECT and COMPOSITE)."""

from __future__ import annotations

import base64
import hashlib
import random
import zlib

import crc32c
import pytest

from apollo.gateway.checksums import (
    ALGORITHMS,
    checksum_from_headers,
    checksum_type_of,
    combine_part_checksums,
    multipart_checksum_type,
    new_checksummer,
)
from apollo.gateway.s3errors import S3Error

CHECK = b"123456789"  # the CRC catalogue's check input


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def b64_int(value: int, width: int) -> str:
    return b64(value.to_bytes(width, "big"))


KNOWN = {  # algorithm -> (input, base64 of the big-endian digest)
    "CRC32": (CHECK, b64_int(0xCBF43926, 4)),  # CRC-32/ISO-HDLC check value
    "CRC32C": (CHECK, b64_int(0xE3069283, 4)),  # CRC-32/ISCSI (Castagnoli)
    "CRC64NVME": (CHECK, b64_int(0xAE8B14860A799888, 8)),  # CRC-64/NVME
    "SHA1": (b"abc", b64(bytes.fromhex("a9993e364706816aba3e25717850c26c9cd0d89d"))),  # FIPS 180 example
    "SHA256": (b"abc", b64(bytes.fromhex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"))),
}


def checksum(algorithm: str, data: bytes) -> str:
    summer = new_checksummer(algorithm)
    summer.update(data)
    return summer.b64digest()


def refused(call, *args) -> S3Error:
    with pytest.raises(S3Error) as caught:
        call(*args)
    assert (caught.value.code, caught.value.status) == ("InvalidRequest", 400), caught.value
    return caught.value


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_every_algorithm_gives_its_published_check_value(algorithm):
    data, expected = KNOWN[algorithm]
    assert checksum(algorithm, data) == expected
    assert b64_int(0xCBF43926, 4) == "y/Q5Jg==" and b64_int(0xE3069283, 4) == "4waSgw=="  # as AWS spells them


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_a_running_checksum_over_pieces_equals_one_over_the_whole(algorithm):
    data = random.Random(1).randbytes(100_003)
    summer = new_checksummer(algorithm)
    for start in range(0, len(data), 7_777):
        summer.update(data[start : start + 7_777])
    assert summer.b64digest() == checksum(algorithm, data)


def test_the_checksum_of_nothing():
    assert checksum("CRC32", b"") == checksum("CRC32C", b"") == "AAAAAA=="
    assert checksum("SHA256", b"") == b64(hashlib.sha256(b"").digest())


def test_an_unknown_algorithm_is_invalid_request():
    assert "MD5 is not supported" in refused(new_checksummer, "MD5").message


# the headers that declare a checksum ---------------------------------------------------------------------


def test_a_declared_checksum_header_names_its_algorithm_and_value():
    assert checksum_from_headers({"x-amz-checksum-crc32c": " 4waSgw== "}) == ("CRC32C", "4waSgw==")
    assert checksum_from_headers({"X-Amz-Checksum-SHA256": KNOWN["SHA256"][1]}) == ("SHA256", KNOWN["SHA256"][1])
    assert checksum_from_headers({"x-amz-checksum-crc32": "y/Q5Jg==-3"}) == ("CRC32", "y/Q5Jg==-3")  # COMPOSITE


def test_headers_that_name_a_mode_or_an_algorithm_carry_no_value():
    headers = {"x-amz-checksum-mode": "ENABLED", "x-amz-checksum-algorithm": "CRC32", "x-amz-checksum-type": "X"}
    assert checksum_from_headers(headers) is None
    assert checksum_from_headers({}) is None


def test_a_trailer_declares_the_algorithm_and_the_value_comes_later():
    assert checksum_from_headers({"x-amz-trailer": "x-amz-checksum-crc64nvme"}) == ("CRC64NVME", None)


@pytest.mark.parametrize("headers", [
    {"x-amz-checksum-crc32": "y/Q5Jg==", "x-amz-checksum-sha1": KNOWN["SHA1"][1]},  # two values
    {"x-amz-checksum-crc32": "y/Q5Jg==", "x-amz-trailer": "x-amz-checksum-crc32"},  # a value and a trailer
    {"x-amz-checksum-md5": "y/Q5Jg=="},  # no such algorithm
    {"x-amz-trailer": "x-amz-checksum-adler32"},
    {"x-amz-checksum-crc32": "not base64!"},
    {"x-amz-checksum-crc32": "4waSgw"},  # unpadded
    {"x-amz-checksum-crc32": "AAAAAAA="},  # five bytes for a four-byte CRC
    {"x-amz-checksum-sha256": "y/Q5Jg=="},  # four bytes for a SHA-256
    {"x-amz-checksum-crc32": "y/Q5Jg==-x"},  # a part count that is not a number
])  # fmt: skip
def test_malformed_declarations_are_invalid_request(headers):
    refused(checksum_from_headers, headers)


# multipart uploads ----------------------------------------------------------------------------------------


def test_the_checksum_type_of_an_upload_follows_aws_s_defaults_and_restrictions():
    assert multipart_checksum_type("CRC64NVME", None) == "FULL_OBJECT"
    for algorithm in ("CRC32", "CRC32C", "SHA1", "SHA256"):
        assert multipart_checksum_type(algorithm, None) == "COMPOSITE"
    for algorithm in ("CRC32", "CRC32C", "CRC64NVME"):
        assert multipart_checksum_type(algorithm, "full_object") == "FULL_OBJECT"
    refused(multipart_checksum_type, "CRC64NVME", "COMPOSITE")  # CRC64NVME only combines
    refused(multipart_checksum_type, "SHA256", "FULL_OBJECT")  # SHA digests only compose
    refused(multipart_checksum_type, "CRC32", "PARTIAL")


@pytest.mark.parametrize("algorithm", ["CRC32", "CRC32C", "CRC64NVME"])
def test_a_full_object_crc_combined_from_parts_is_the_crc_of_the_whole_object(algorithm):
    parts = [CHECK[:4], CHECK[4:5], CHECK[5:]]
    combined = combine_part_checksums(algorithm, "FULL_OBJECT", [(checksum(algorithm, p), len(p)) for p in parts])
    assert combined == KNOWN[algorithm][1]  # the check value of "123456789", never reread
    rng = random.Random(2)
    big = [rng.randbytes(n) for n in (1024**2, 1024**2 + 1, 17)]
    combined = combine_part_checksums(algorithm, "FULL_OBJECT", [(checksum(algorithm, p), len(p)) for p in big])
    assert combined == checksum(algorithm, b"".join(big))
    assert checksum_type_of(combined) == "FULL_OBJECT"


def test_a_composite_checksum_is_the_checksum_of_the_part_digests_and_their_count():
    parts = [b"part one", b"part two", b"3"]
    sha = combine_part_checksums("SHA256", "COMPOSITE", [(checksum("SHA256", p), len(p)) for p in parts])
    assert sha == b64(hashlib.sha256(b"".join(hashlib.sha256(p).digest() for p in parts)).digest()) + "-3"
    crc = combine_part_checksums("CRC32C", "COMPOSITE", [(checksum("CRC32C", p), len(p)) for p in parts])
    inner = b"".join(crc32c.crc32c(p).to_bytes(4, "big") for p in parts)
    assert crc == b64_int(crc32c.crc32c(inner), 4) + "-3"
    crc32 = combine_part_checksums("CRC32", "COMPOSITE", [(checksum("CRC32", b"x"), 1)])
    assert crc32 == b64_int(zlib.crc32(zlib.crc32(b"x").to_bytes(4, "big")), 4) + "-1"
    assert checksum_type_of(sha) == "COMPOSITE"
