"""Apollo's errors as the built-in ``OSError``s a reader of files catches: the one translation table of the
file-like edges (the ``apollo://`` fsspec filesystem, WebDataset's ``gopen``), so both say the same."""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator

from apollo import errors

_ERRORS: tuple[tuple[type[errors.ApolloError], type[OSError], int], ...] = (
    (errors.NotFound, FileNotFoundError, errno.ENOENT),  # bucket, object, version or upload
    (errors.BucketExists, FileExistsError, errno.EEXIST),
    (errors.PreconditionFailed, FileExistsError, errno.EEXIST),  # mode="create"/"xb" on an existing key
    (errors.BucketNotEmpty, OSError, errno.ENOTEMPTY),
    (errors.AccessDenied, PermissionError, errno.EACCES),
    (errors.TokenError, PermissionError, errno.EACCES),
)


@contextlib.contextmanager
def translated(path: str) -> Iterator[None]:
    """Apollo's errors raised inside as their built-ins naming ``path``; any other error as it is."""
    try:
        yield
    except errors.ApolloError as exc:
        for apollo_error, builtin, code in _ERRORS:
            if isinstance(exc, apollo_error):
                raise builtin(code, f"{exc} ({type(exc).__name__})", path) from exc
        raise


def translated_error(path: str, exc: BaseException) -> BaseException:
    """``exc`` as ``translated`` would raise it, to be returned in a result's place."""
    try:
        with translated(path):
            raise exc
    except BaseException as translated_exc:  # noqa: BLE001 - handed back, not swallowed
        return translated_exc
