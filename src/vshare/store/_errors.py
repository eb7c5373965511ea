"""The store's exceptions: one family, one line each, meant for operators.

Each maps to one HTTP status in the API: :class:`NotFound` → 404, :class:`Conflict` → 409,
:class:`OverQuota` → 413, :class:`StoreUnavailable` → 503. :class:`Compacted` is for
followers of the change feed (reload a snapshot), never for HTTP clients. Invalid field
values are ``ValueError`` (from the records' validation, → 400), not a
:class:`StoreError`: they are the caller's input.
"""

from __future__ import annotations


class StoreError(Exception):
    """Base of every error a store raises on purpose."""


class NotFound(StoreError):
    """No record with that key."""


class Conflict(StoreError):
    """The write contradicts what is stored: a duplicate key or name, an identity claimed by
    another instance, or an ``expect_revision`` that is no longer current."""


class Compacted(StoreError):
    """The change feed no longer holds the changes asked for (they were compacted away, or
    the revision asked for is ahead of the store): reload a :meth:`Store.snapshot`."""


class StoreUnavailable(StoreError):
    """The store cannot serve: it cannot be opened, stays locked longer than the busy
    timeout, has a schema newer than this code, is corrupt, or is closed."""


class OverQuota(StoreError):
    """The write would take the share's tenant over one of its quota limits (shares, or
    gigabytes: the sum of its shares' sizes); the message names the limit."""
