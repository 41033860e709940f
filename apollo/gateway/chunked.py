"""The aws-chunked body encoding: signed chunks, unsigned chunks and trailers.

Wire format (one chunk)::

    <hex size>[;chunk-signature=<64 hex>]\\r\\n<size bytes>\\r\\n

ended by a zero-size chunk, then optional trailer lines ``name:value`` and an
empty line. Signed chunks chain: each signature covers the previous one, so a
chunk cannot be dropped, reordered or altered without the next check failing.
A chunk is streamed through in bounded pieces: a client declaring a huge chunk
does not make the gateway buffer it; bytes already passed on belong to a write
that is not committed, and a failed signature aborts that write.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator

from aiohttp import StreamReader
from aiohttp.http_exceptions import LineTooLong

from apollo.gateway.s3errors import s3error
from apollo.gateway.sigv4 import EMPTY_SHA256, AuthContext, sign, signature_matches

SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
MODES = (SIGNED, SIGNED_TRAILER, UNSIGNED_TRAILER)
PIECE_BYTES = 1024 * 1024
LINE_BYTES_MAX = 4096
TRAILER_LINES_MAX = 16
# What framing may put around a value: HTTP's optional whitespace, SP and HTAB. Not str.strip()'s whitespace,
# which on a latin-1 line also takes VT, FF, \x1c-\x1f, \x85 and \xa0: a byte of a signed trailer changed to
# one of those would still verify.
OWS = " \t"
# A chunk size is hex digits and nothing else: int(text, 16) would also take "0x", signs, underscores and
# surrounding spaces. 16 digits hold any 64-bit size; the declared decoded length bounds it further.
_CHUNK_SIZE = re.compile(r"[0-9a-fA-F]{1,16}")


class AwsChunkedReader:
    """Decode (and for signed modes, verify) an aws-chunked request body."""

    def __init__(self, stream: StreamReader, mode: str, auth: AuthContext | None, decoded_length: int | None) -> None:
        if mode not in MODES:
            raise s3error("InvalidArgument", f"x-amz-content-sha256 {mode!r} is not a supported streaming mode")
        self.signed = mode != UNSIGNED_TRAILER
        if self.signed and (auth is None or auth.presigned):
            raise s3error("AccessDenied", "Signed streaming payloads need an Authorization header signature")
        self.with_trailer = mode != SIGNED
        self._stream = stream
        self._auth = auth
        self._previous = auth.seed_signature if auth else ""
        self._decoded_length = decoded_length
        self._declared = 0  # bytes the chunk headers so far announced
        self.trailers: dict[str, str] = {}

    async def _line(self, eof_ok: bool = False) -> str | None:
        """One CRLF-ended line; None at a clean end of body when ``eof_ok`` (after the final chunk)."""
        try:  # bounded: a client sending an endless header line must not make the gateway buffer it
            raw = await self._stream.readuntil(b"\n", max_size=LINE_BYTES_MAX)
        except (LineTooLong, ValueError) as exc:  # LineTooLong is not a ValueError
            raise s3error("InvalidRequest", "An aws-chunked header line is too long") from exc
        if eof_ok and not raw:
            return None
        if not raw.endswith(b"\n"):
            raise s3error("IncompleteBody", "The aws-chunked body ended inside a chunk header")
        if len(raw) > LINE_BYTES_MAX:
            raise s3error("InvalidRequest", "An aws-chunked header line is too long")
        return raw[: -2 if raw.endswith(b"\r\n") else -1].decode("latin-1")  # one line end: a stray CR stays in

    async def read_chunks(self) -> AsyncIterator[bytes]:
        while True:
            size, signature = self._parse_header(await self._line())
            digest = hashlib.sha256() if self.signed else None
            remaining = size
            while remaining:
                piece = await self._stream.readexactly(min(remaining, PIECE_BYTES))
                remaining -= len(piece)
                if digest is not None:
                    digest.update(piece)
                yield piece
            if digest is not None:
                self._check_chunk_signature(signature, digest.hexdigest())
            if size == 0:
                break
            if await self._stream.readexactly(2) != b"\r\n":
                raise s3error("IncompleteBody", "An aws-chunked chunk is not followed by CRLF")
        if self.with_trailer:
            await self._read_trailers()

    def _parse_header(self, line: str) -> tuple[int, str | None]:
        """(size, chunk signature) of a chunk header line. A chunk that would take the body past its declared
        decoded length (itself at most the object or part size limit) is refused here, before its bytes
        are read, not after they were streamed into a write."""
        size_text, _, extension = line.partition(";")
        if not _CHUNK_SIZE.fullmatch(size_text):
            raise s3error("IncompleteBody", f"Malformed aws-chunked chunk header {line[:80]!r}")
        size = int(size_text, 16)
        self._declared += size
        if self._decoded_length is not None and self._declared > self._decoded_length:
            raise s3error("IncompleteBody", "An aws-chunked chunk is larger than the declared decoded length")
        signature = None
        if extension.startswith("chunk-signature="):
            signature = extension.removeprefix("chunk-signature=").strip(OWS)
        if self.signed and signature is None:
            raise s3error("SignatureDoesNotMatch", "An aws-chunked chunk has no chunk-signature")
        return size, signature

    def _check_chunk_signature(self, signature: str | None, chunk_sha256: str) -> None:
        auth = self._auth
        text = "\n".join(("AWS4-HMAC-SHA256-PAYLOAD", auth.amz_date, auth.scope, self._previous, EMPTY_SHA256,
                          chunk_sha256))  # fmt: skip
        expected = sign(auth.signing_key, text)
        if not signature_matches(expected, signature or ""):  # a latin-1 line may carry non-ASCII
            raise s3error("SignatureDoesNotMatch", "A chunk signature of the aws-chunked body does not match")
        self._previous = expected

    async def _read_trailers(self) -> None:
        trailer_signature = None
        canonical = []
        for _ in range(TRAILER_LINES_MAX + 1):
            # The body may end right after the final chunk; whether EOF is already flagged when we get
            # here depends on packet timing, so a clean EOF is read as "no more trailers", not checked first.
            line = await self._line(eof_ok=True)
            if not line:
                break
            name, sep, value = line.partition(":")
            if not sep:
                raise s3error("InvalidRequest", f"Malformed trailer line {line[:80]!r}")
            name, value = name.strip(OWS).lower(), value.strip(OWS)
            if name == "x-amz-trailer-signature":
                trailer_signature = value
            else:
                self.trailers[name] = value
                canonical.append(f"{name}:{value}\n")
        else:
            raise s3error("InvalidRequest", "Too many trailer lines")
        if self.signed:
            auth = self._auth
            text = "\n".join(("AWS4-HMAC-SHA256-TRAILER", auth.amz_date, auth.scope, self._previous,
                              hashlib.sha256("".join(canonical).encode()).hexdigest()))  # fmt: skip
            if not signature_matches(sign(auth.signing_key, text), trailer_signature or ""):
                raise s3error("SignatureDoesNotMatch", "The trailer signature of the aws-chunked body does not match")
