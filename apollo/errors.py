"""The one exception tree of the core (metadata, storage, client).

No transport types here: the S3 gateway translates these through its single
table in ``apollo.gateway.s3errors``; services translate them to HTTP statuses.
"""

from __future__ import annotations


class ApolloError(Exception):
    """Base of every error the core raises on purpose."""


class NotFound(ApolloError):
    """Something named by the caller does not exist."""


class BucketNotFound(NotFound):
    pass


class ObjectNotFound(NotFound):
    pass


class VersionNotFound(NotFound):
    pass


class UploadNotFound(NotFound):
    pass


class SnapshotNotFound(NotFound):
    pass


class TransactionNotFound(NotFound):
    """No open or recently finished transaction of that id in that bucket (expired ones are dropped)."""


class Conflict(ApolloError):
    """The request is valid but clashes with the current state."""


class BucketExists(Conflict):
    pass


class BucketNotEmpty(Conflict):
    pass


class RenameRefused(Conflict):
    """A rename that would not be one metadata change (a versioned bucket keeps the source's version; a
    snapshot pins it): the caller copies and deletes instead."""


class PreconditionFailed(Conflict):
    """A conditional write (If-Match / If-None-Match) lost inside the commit transaction."""


class TransactionClosed(Conflict):
    """The transaction was committed, aborted or expired: nothing more can be staged into it, and an
    aborted or expired one cannot be committed."""


class ConditionalRequestConflict(Conflict):
    """A concurrent conditional write to the same key is in progress."""


class InvalidRequest(ApolloError):
    """The caller's input is malformed or out of bounds."""


class InvalidPart(InvalidRequest):
    pass


class InvalidPartOrder(InvalidRequest):
    pass


class EntityTooSmall(InvalidRequest):
    pass


class EntityTooLarge(InvalidRequest):
    pass


class BadDigest(InvalidRequest):
    """The body does not match a digest or checksum the client declared."""


class IncompleteBody(InvalidRequest):
    """The client sent fewer bytes than it announced."""


class MetadataUnavailable(ApolloError):
    """The metadata database cannot be reached, or a commit's outcome is unknown: retry the request."""


class AccessDenied(ApolloError):
    """A call to the metadata service without a valid signature, or beyond its key's rights."""


class TokenError(ApolloError):
    """A storage request whose capability token is missing, forged, expired or does not cover it."""


class RemoteError(ApolloError):
    """Another Apollo process failed in a way this one has no class for (a bug there: see its log)."""


class StorageError(ApolloError):
    """The storage layer could not serve the request."""


class InsufficientFragments(StorageError):
    """Fewer than k healthy cells of a stripe could be read: data is unavailable."""


class ChecksumMismatch(StorageError):
    """A cell's CRC32C did not match its bytes (bit rot or a torn write)."""


class InsufficientStorage(StorageError):
    """Not enough healthy drives with free space to place a new segment."""


class DriveError(StorageError):
    """A drive is missing, unformatted, or belongs to another deployment."""
