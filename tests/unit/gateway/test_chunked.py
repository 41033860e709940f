"""aws-chunked request bodies: the three streaming modes decoded from a real aiohttp StreamReader.

The signed mode is checked against AWS's published chunked-upload example (two chunks of 'a', the
seed signature from the Authorization header chaining into each chunk signature); bodies encoded here
by an independent encoder then get one thing wrong at a time: a data byte, chunk order, a dropped
chunk, a trailer value or its signature, framing, truncation.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import zlib

import pytest
from multidict import CIMultiDict

from apollo.gateway.chunked import SIGNED, SIGNED_TRAILER, UNSIGNED_TRAILER, AwsChunkedReader
from apollo.gateway.s3errors import S3Error
from apollo.gateway.sigv4 import AuthContext, verify_request
from apollo.testing.streams import body_stream

AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
AWS_DATE = "20130524T000000Z"
SCOPE = "20130524/us-east-1/s3/aws4_request"
SEED = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
# The body of AWS's example "PUT Object" with chunked upload: 65536 + 1024 bytes of 'a', then the final chunk.
AWS_BODY = (
    b"10000;chunk-signature=ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648\r\n" + b"a" * 65536
    + b"\r\n400;chunk-signature=0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497\r\n" + b"a" * 1024
    + b"\r\n0;chunk-signature=b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9\r\n\r\n"
)  # fmt: skip


def _aws_auth() -> AuthContext:
    """The AuthContext the gateway derives from the example's Authorization header."""
    headers = CIMultiDict({
        "Host": "s3.amazonaws.com", "x-amz-date": AWS_DATE, "x-amz-storage-class": "REDUCED_REDUNDANCY",
        "Content-Encoding": "aws-chunked", "x-amz-decoded-content-length": "66560", "Content-Length": "66824",
        "x-amz-content-sha256": SIGNED,
        "Authorization": f"AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/{SCOPE},SignedHeaders=content-encoding;"
        f"content-length;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;x-amz-storage-class,"
        f"Signature={SEED}",
    })  # fmt: skip
    import datetime

    now = datetime.datetime(2013, 5, 24, 0, 0, 5, tzinfo=datetime.UTC)
    return verify_request("PUT", "/examplebucket/chunkObject.txt", "", headers, lambda key: AWS_SECRET, now)


def _signing_key() -> bytes:
    key = ("AWS4" + AWS_SECRET).encode()
    for part in ("20130524", "us-east-1", "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return key


def _hmac_hex(text: str) -> str:
    return hmac.new(_signing_key(), text.encode(), hashlib.sha256).hexdigest()


def encode(data: bytes, sizes: list[int], *, signed: bool, trailers: dict[str, str] | None = None,
           previous: str = SEED) -> bytes:  # fmt: skip
    """An aws-chunked body as AWS documents it, written independently of the gateway's decoder."""
    out, offset = [], 0
    for size in [*sizes, 0]:
        chunk, offset = data[offset : offset + size], offset + size
        header = f"{len(chunk):x}"
        if signed:
            previous = _hmac_hex("\n".join(("AWS4-HMAC-SHA256-PAYLOAD", AWS_DATE, SCOPE, previous, EMPTY_SHA256,
                                            hashlib.sha256(chunk).hexdigest())))  # fmt: skip
            header += f";chunk-signature={previous}"
        out.append(header.encode() + b"\r\n" + chunk + (b"\r\n" if chunk else b""))
    assert offset >= len(data)
    if trailers is None:
        return b"".join(out) + b"\r\n"
    lines = "".join(f"{name}:{value}\n" for name, value in trailers.items())
    body = b"".join(out) + "".join(f"{n}:{v}\r\n" for n, v in trailers.items()).encode()
    if signed:
        signature = _hmac_hex("\n".join(("AWS4-HMAC-SHA256-TRAILER", AWS_DATE, SCOPE, previous,
                                         hashlib.sha256(lines.encode()).hexdigest())))  # fmt: skip
        body += f"x-amz-trailer-signature:{signature}\r\n".encode()
    return body + b"\r\n"


def crc32_b64(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


async def _decode_async(body: bytes, mode: str, auth, decoded_length, piece: int) -> tuple[bytes, dict, list[int]]:
    loop = asyncio.get_running_loop()
    stream = body_stream(loop)

    async def feed() -> None:  # the body arrives in network-sized pieces, not at once
        for start in range(0, len(body), piece):
            stream.feed_data(body[start : start + piece])
            await asyncio.sleep(0)
        stream.feed_eof()

    feeder = asyncio.ensure_future(feed())
    reader = AwsChunkedReader(stream, mode, auth, decoded_length)
    try:
        pieces = [p async for p in reader.read_chunks()]
    finally:
        await feeder
    return b"".join(pieces), reader.trailers, [len(p) for p in pieces]


def decode(body: bytes, mode: str = SIGNED, auth="aws", decoded_length: int | None = None, piece: int = 7001):
    auth = _aws_auth() if auth == "aws" else auth
    return asyncio.run(_decode_async(body, mode, auth, decoded_length, piece))


def _error(body: bytes, mode: str = SIGNED, **kwargs) -> tuple[str, int]:
    with pytest.raises(S3Error) as exc:
        decode(body, mode, **kwargs)
    return exc.value.code, exc.value.status


def _chunks(body: bytes) -> list[bytes]:
    """Split an encoded body into its chunk records (header line + data + CRLF)."""
    records, offset = [], 0
    while True:
        end = body.index(b"\r\n", offset)
        size = int(body[offset:end].split(b";")[0], 16)
        stop = end + 2 + size + (2 if size else 0)
        records.append(body[offset:stop])
        offset = stop
        if size == 0:
            return records + [body[offset:]]


# --- AWS's published example --------------------------------------------------------------------------


def test_aws_documented_signed_chunks_decode_to_the_object():
    data, trailers, _ = decode(AWS_BODY, decoded_length=66560)
    assert data == b"a" * 66560
    assert trailers == {}


def test_independent_encoder_reproduces_the_aws_example_byte_for_byte():
    assert encode(b"a" * 66560, [65536, 1024], signed=True) == AWS_BODY


def test_aws_example_with_one_data_byte_changed_does_not_match():
    body = bytearray(AWS_BODY)
    body[AWS_BODY.index(b"\r\n") + 2 + 1000] = ord("b")
    assert _error(bytes(body)) == ("SignatureDoesNotMatch", 403)


def test_aws_example_with_a_signature_digit_changed_does_not_match():
    body = AWS_BODY.replace(b"chunk-signature=0055627c", b"chunk-signature=1055627c")
    assert _error(body) == ("SignatureDoesNotMatch", 403)


def test_aws_example_with_another_seed_does_not_match():
    auth = _aws_auth()
    other = AuthContext(auth.access_key, auth.signing_key, auth.amz_date, auth.scope, "0" * 64, SIGNED, False)
    assert _error(AWS_BODY, auth=other) == ("SignatureDoesNotMatch", 403)


# --- STREAMING-AWS4-HMAC-SHA256-PAYLOAD -----------------------------------------------------------------


@pytest.mark.parametrize("sizes", [[], [1], [8192, 8192, 3], [3 * 1024 * 1024 + 17]])
def test_signed_chunks_round_trip(sizes):
    data = bytes(range(256)) * (sum(sizes) // 256 + 1)
    data = data[: sum(sizes)]
    decoded, _, _ = decode(encode(data, sizes, signed=True), decoded_length=len(data), piece=65536)
    assert decoded == data


def test_a_huge_chunk_is_passed_on_in_bounded_pieces():
    data = b"z" * (3 * 1024 * 1024 + 5)
    _, _, lengths = decode(encode(data, [len(data)], signed=True), piece=1 << 20)
    assert sum(lengths) == len(data)
    assert len(lengths) >= 4 and max(lengths) <= 1024 * 1024


def test_reordered_chunks_do_not_match():
    records = _chunks(encode(b"x" * 8192 + b"y" * 8192, [8192, 8192], signed=True))
    swapped = records[1] + records[0] + b"".join(records[2:])
    assert _error(swapped) == ("SignatureDoesNotMatch", 403)


def test_dropped_chunk_does_not_match():
    records = _chunks(encode(b"x" * 8192 + b"y" * 8192, [8192, 8192], signed=True))
    assert _error(records[0] + b"".join(records[2:])) == ("SignatureDoesNotMatch", 403)


def test_dropped_final_chunk_is_incomplete():
    records = _chunks(encode(b"x" * 100, [100], signed=True))
    with pytest.raises((S3Error, EOFError)) as exc:
        decode(records[0])
    assert isinstance(exc.value, EOFError) or exc.value.code == "IncompleteBody"


def test_chunk_without_signature_in_signed_mode_does_not_match():
    body = encode(b"abc", [3], signed=False)
    assert _error(body) == ("SignatureDoesNotMatch", 403)


def test_truncated_chunk_data_raises_end_of_stream():
    body = encode(b"q" * 5000, [5000], signed=True)
    with pytest.raises(EOFError):  # asyncio.IncompleteReadError; RequestBody turns it into IncompleteBody
        decode(body[:2000])


def test_body_ending_inside_a_chunk_header_is_incomplete():
    body = encode(b"q" * 10, [10], signed=True)
    cut = body.index(b"\r\n0;") + 10
    assert _error(body[:cut]) == ("IncompleteBody", 400)


def test_chunk_data_not_followed_by_crlf_is_incomplete():
    body = encode(b"q" * 10, [10], signed=True)
    broken = body.replace(b"q" * 10 + b"\r\n", b"q" * 10 + b"XX", 1)
    assert _error(broken) == ("IncompleteBody", 400)


def test_non_hex_chunk_size_is_rejected():
    assert _error(b"zz;chunk-signature=" + b"0" * 64 + b"\r\nabc\r\n") == ("IncompleteBody", 400)


def test_chunk_larger_than_the_decoded_length_is_rejected():
    body = encode(b"a" * 100, [100], signed=True)
    assert _error(body, decoded_length=50) == ("IncompleteBody", 400)


def test_overlong_chunk_header_line_is_rejected():
    assert _error(b"1" + b"0" * 5000 + b";chunk-signature=x\r\n") == ("InvalidRequest", 400)


def test_chunk_header_line_without_end_longer_than_the_buffer_is_rejected():
    assert _error(b"0" * 300_000, piece=65536) == ("InvalidRequest", 400)


def test_signed_mode_with_presigned_auth_is_refused():
    auth = _aws_auth()
    presigned = AuthContext(auth.access_key, auth.signing_key, auth.amz_date, auth.scope, SEED, SIGNED, True)
    assert _error(AWS_BODY, auth=presigned) == ("AccessDenied", 403)


def test_signed_mode_without_auth_is_refused():
    assert _error(AWS_BODY, auth=None) == ("AccessDenied", 403)


def test_unknown_streaming_mode_is_invalid_argument():
    assert _error(AWS_BODY, mode="STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD") == ("InvalidArgument", 400)


# --- STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER -----------------------------------------------------------


def test_signed_chunks_with_signed_trailer_decode_and_expose_the_checksum():
    data = b"trailer data " * 1000
    body = encode(data, [8192, len(data) - 8192], signed=True, trailers={"x-amz-checksum-crc32": crc32_b64(data)})
    decoded, trailers, _ = decode(body, SIGNED_TRAILER, decoded_length=len(data))
    assert decoded == data
    assert trailers == {"x-amz-checksum-crc32": crc32_b64(data)}


def test_changed_trailer_value_does_not_match():
    data = b"x" * 9000
    body = encode(data, [9000], signed=True, trailers={"x-amz-checksum-crc32": crc32_b64(data)})
    body = body.replace(crc32_b64(data).encode(), crc32_b64(b"other").encode())
    assert _error(body, SIGNED_TRAILER) == ("SignatureDoesNotMatch", 403)


def test_wrong_trailer_signature_does_not_match():
    data = b"x" * 9000
    body = encode(data, [9000], signed=True, trailers={"x-amz-checksum-crc32": crc32_b64(data)})
    head, _, _ = body.rpartition(b"x-amz-trailer-signature:")
    assert _error(head + b"x-amz-trailer-signature:" + b"0" * 64 + b"\r\n\r\n", SIGNED_TRAILER) == (
        "SignatureDoesNotMatch", 403)  # fmt: skip


def test_missing_trailer_signature_does_not_match():
    data = b"x" * 9000
    body = encode(data, [9000], signed=True, trailers={"x-amz-checksum-crc32": crc32_b64(data)})
    head, _, _ = body.rpartition(b"x-amz-trailer-signature:")
    assert _error(head + b"\r\n", SIGNED_TRAILER) == ("SignatureDoesNotMatch", 403)


# --- STREAMING-UNSIGNED-PAYLOAD-TRAILER (boto3's default for PutObject) -----------------------------------


def test_unsigned_chunks_with_trailer_decode_without_any_auth():
    data = bytes(range(256)) * 300
    body = encode(data, [65536, len(data) - 65536], signed=False, trailers={"x-amz-checksum-crc32": crc32_b64(data)})
    decoded, trailers, _ = decode(body, UNSIGNED_TRAILER, auth=None, decoded_length=len(data))
    assert decoded == data
    assert trailers == {"x-amz-checksum-crc32": crc32_b64(data)}


def test_unsigned_trailer_names_are_lowercased_and_values_trimmed():
    body = encode(b"abc", [3], signed=False, trailers={"X-Amz-Checksum-CRC32": f" {crc32_b64(b'abc')} "})
    _, trailers, _ = decode(body, UNSIGNED_TRAILER, auth=None)
    assert trailers == {"x-amz-checksum-crc32": crc32_b64(b"abc")}


def test_unsigned_body_ending_after_the_final_chunk_has_no_trailers():
    _, trailers, _ = decode(b"3\r\nabc\r\n0\r\n", UNSIGNED_TRAILER, auth=None)
    assert trailers == {}


def test_malformed_trailer_line_is_invalid_request():
    assert _error(b"3\r\nabc\r\n0\r\nno-colon-here\r\n\r\n", UNSIGNED_TRAILER, auth=None) == ("InvalidRequest", 400)


def test_too_many_trailer_lines_are_refused():
    lines = b"".join(b"x-amz-meta-%d:v\r\n" % n for n in range(40))
    assert _error(b"3\r\nabc\r\n0\r\n" + lines + b"\r\n", UNSIGNED_TRAILER, auth=None) == ("InvalidRequest", 400)


def test_unsigned_truncated_body_raises_end_of_stream():
    with pytest.raises(EOFError):
        decode(b"10\r\nabc", UNSIGNED_TRAILER, auth=None)
