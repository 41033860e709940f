"""User metadata values (``x-amz-meta-*``) as HTTP headers carry them: RFC 2047 encoded-words for text that
is not US-ASCII, as S3 does.

S3 decodes encoded-words in a metadata value before storing it and answers a stored value that is not
printable US-ASCII as one ``=?UTF-8?B?...?=`` word ("Object metadata" in the S3 user guide). Stored text is
therefore the text the client meant, whichever door wrote it: a native client's ``put`` stores and reads
plain strings, and the S3 door stays within what a header may carry.

Raw bytes beyond US-ASCII in a header are not what S3 expects, but Go and Rust clients send a string's UTF-8
so: valid UTF-8 is read as UTF-8 (``Hello Worldé`` comes back as the word for ``Hello Worldé``, not for
``Hello WorldÃ©``); other bytes, which only a Latin-1 client sends, as ISO-8859-1.
"""

from __future__ import annotations

import base64
import binascii
import email.errors
import email.header
import re

_ENCODED_WORD = re.compile(r"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=")
_PRINTABLE_ASCII = re.compile(r"[\t\x20-\x7e]*")


def decode_value(raw: str) -> str:
    """The text a metadata header value means. ``raw`` is as aiohttp hands it over: UTF-8 with undecodable
    bytes kept as surrogates. An encoded-word that does not decode (bad base64, unknown charset) leaves
    the value as it came, as a header that merely looks like one is text too."""
    if any("\udc80" <= ch <= "\udcff" for ch in raw):
        return raw.encode("utf-8", "surrogateescape").decode("latin-1")
    if not _ENCODED_WORD.search(raw):
        return raw
    try:
        return str(email.header.make_header(email.header.decode_header(raw)))
    except (email.errors.HeaderParseError, binascii.Error, LookupError, UnicodeDecodeError, ValueError):
        return raw


def encode_value(text: str) -> str:
    """``text`` as a header value: unchanged when it is printable US-ASCII (or tab), else one encoded-word
    over its UTF-8, which also carries a control character that a decoded word may hold."""
    if _PRINTABLE_ASCII.fullmatch(text):
        return text
    return "=?UTF-8?B?" + base64.b64encode(text.encode("utf-8", "surrogatepass")).decode("ascii") + "?="
