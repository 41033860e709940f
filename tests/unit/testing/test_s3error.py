"""The S3 error assertion the tests share (``apollo.testing.s3error``) must pass only on the error it names."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from apollo.testing.s3error import S3ErrorCaught, assert_s3_error, error_of, s3_error


def client_error(code: str = "NoSuchKey", status: int = 404, message: str = "The specified key does not exist.",
                 **fields: str) -> ClientError:  # fmt: skip
    response = {
        "Error": {"Code": code, "Message": message, **fields},
        "ResponseMetadata": {"HTTPStatusCode": status, "HTTPHeaders": {"Content-Range": "bytes */10"}},
    }
    return ClientError(response, "GetObject")


def raise_(exc: BaseException):
    def call():
        raise exc

    return call


def test_the_expected_error_passes_and_is_handed_over():
    with s3_error("NoSuchKey", 404, "key does not exist") as caught:
        raise client_error(Key="k")
    assert (caught.code, caught.status, caught.fields["Key"]) == ("NoSuchKey", 404, "k")
    assert caught.headers == {"content-range": "bytes */10"}
    assert isinstance(caught.exception, ClientError)
    with s3_error(status=404):
        raise client_error()
    with s3_error(("NoSuchKey", "NoSuchVersion")):
        raise client_error("NoSuchVersion")


@pytest.mark.parametrize(("expected", "problem"), [
    ({"code": "NoSuchBucket"}, "code 'NoSuchKey', expected 'NoSuchBucket'"),
    ({"code": "NoSuchKey", "status": 400}, "status 404, expected 400"),
    ({"code": "NoSuchKey", "message": "bucket"}, "does not contain 'bucket'"),
    ({"code": ("A", "B")}, "expected 'A' or 'B'"),
])  # fmt: skip
def test_another_error_fails_saying_what_differs(expected, problem):
    with pytest.raises(AssertionError, match="wrong S3 error") as failed, s3_error(**expected):
        raise client_error()
    assert problem in str(failed.value)


def test_no_error_fails_and_a_note_leads_the_message():
    expected = "^the delete of k: expected the S3 error 404 .404., but the request"
    with pytest.raises(AssertionError, match=expected), s3_error("404", 404, note="the delete of k"):
        pass


def test_other_exceptions_are_not_swallowed():
    with pytest.raises(ConnectionError), s3_error("NoSuchKey"):
        raise ConnectionError("reset")


def test_an_expectation_of_nothing_is_a_mistake_in_the_test():
    with pytest.raises(TypeError), s3_error():
        pass


def test_the_call_form_and_the_pair_form():
    caught = assert_s3_error(raise_(client_error("InvalidRange", 416)), "InvalidRange", 416)
    assert isinstance(caught, S3ErrorCaught) and caught.status == 416
    with pytest.raises(AssertionError):
        assert_s3_error(lambda: None, "InvalidRange")
    assert error_of(client_error("PreconditionFailed", 412)) == ("PreconditionFailed", 412)
    assert error_of(ValueError("not an S3 error")) == ("", 0)
