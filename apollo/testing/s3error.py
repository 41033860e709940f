"""Asserting S3 error responses in tests: one helper instead of ``pytest.raises(ClientError)`` plus
lookups of ``response["Error"]["Code"]`` and ``["ResponseMetadata"]["HTTPStatusCode"]`` in every test.

    with s3_error("NoSuchKey", 404) as error:
        s3.get_object(Bucket=bucket, Key="missing")
    assert error.fields["Key"] == "missing"

    assert_s3_error(lambda: s3.head_object(Bucket=bucket, Key="gone"), "404", 404)

A HEAD response has no body, so botocore reports its bare status as the code ("404", "412", "304").
botocore is a test dependency: it is imported when a helper runs, never by importing this module.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass
class S3ErrorCaught:
    """The S3 error a block raised; filled in when the ``with`` block ends."""

    code: str = ""
    status: int = 0
    message: str = ""
    fields: dict[str, Any] = field(default_factory=dict)  # the Error element: Code, Message, Key, ...
    headers: dict[str, str] = field(default_factory=dict)  # response headers, lowercase names
    response: dict[str, Any] = field(default_factory=dict)  # botocore's whole parsed response
    exception: BaseException | None = None

    @classmethod
    def of(cls, exc: BaseException) -> S3ErrorCaught:
        caught = cls()
        caught.fill(exc)
        return caught

    def fill(self, exc: BaseException) -> None:
        response = getattr(exc, "response", None) or {}
        self.exception = exc
        self.response = response
        self.fields = dict(response.get("Error", {}))
        self.code = str(self.fields.get("Code", ""))
        self.message = str(self.fields.get("Message", ""))
        metadata = response.get("ResponseMetadata", {})
        self.status = int(metadata.get("HTTPStatusCode", 0))
        self.headers = {name.lower(): value for name, value in metadata.get("HTTPHeaders", {}).items()}

    def check(self, code: str | Collection[str] | None, status: int | None, message: str | None,
              note: str = "") -> None:  # fmt: skip
        """Raise AssertionError unless this is the expected error (None: any); ``note`` leads the message."""
        wanted = [code] if isinstance(code, str) else code
        problems = []
        if wanted is not None and self.code not in wanted:
            problems.append(f"code {self.code!r}, expected {' or '.join(map(repr, wanted))}")
        if status is not None and self.status != status:
            problems.append(f"status {self.status}, expected {status}")
        if message is not None and message not in self.message:
            problems.append(f"message {self.message!r} does not contain {message!r}")
        if problems:
            raise AssertionError(f"{note}{': ' if note else ''}wrong S3 error: {'; '.join(problems)} "
                                 f"(Error: {self.fields})")  # fmt: skip


def _client_error() -> type[BaseException]:
    from botocore.exceptions import ClientError

    return ClientError


def _expected(code: str | Collection[str] | None, status: int | None) -> str:
    names = [code] if isinstance(code, str) else list(code or [])
    return " or ".join(names) + (f" ({status})" if status is not None else "") if names else f"status {status}"


@contextmanager
def s3_error(code: str | Collection[str] | None = None, status: int | None = None, message: str | None = None,
             *, note: str = "") -> Iterator[S3ErrorCaught]:  # fmt: skip
    """Expect the block to fail with an S3 error (botocore's ``ClientError``) of ``code`` (one code or
    several allowed ones), HTTP ``status`` and a Message containing ``message``; None checks nothing.
    ``note`` (what the test was after: "the delete of k stays done") leads a failure's message.

    Yields an ``S3ErrorCaught`` whose fields (code, status, message, fields, headers, response) are set
    once the block has raised. A block that does not raise, or raises anything but a ``ClientError``,
    fails the test; so does the wrong error.
    """
    if code is None and status is None:
        raise TypeError("s3_error needs a code or a status to expect")
    caught = S3ErrorCaught()
    try:
        yield caught
    except _client_error() as exc:
        caught.fill(exc)
    else:
        raise AssertionError(f"{note}{': ' if note else ''}expected the S3 error {_expected(code, status)}, "
                             "but the request succeeded")  # fmt: skip
    caught.check(code, status, message, note)


def assert_s3_error(call: Callable[[], object], code: str | Collection[str] | None = None, status: int | None = None,
                    message: str | None = None, *, note: str = "") -> S3ErrorCaught:  # fmt: skip
    """``call()`` must fail with that S3 error; returns what was caught (see ``s3_error``)."""
    with s3_error(code, status, message, note=note) as caught:
        call()
    return caught


def error_of(exc: BaseException) -> tuple[str, int]:
    """(code, HTTP status) of a ``ClientError`` caught by hand (a race collecting outcomes, say)."""
    caught = S3ErrorCaught.of(exc)
    return caught.code, caught.status
