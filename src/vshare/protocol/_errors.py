"""Exceptions of the codec, one per side of blame (as h11 does).

- :class:`RemoteProtocolError`: the peer sent bytes that are not valid 9P2000.L. The only
  exception the decoder raises; the right answer is to close that one session.
- :class:`LocalProtocolError`: we asked the codec for something impossible (a string over
  65535 bytes, a frame over the negotiated msize, 17 walk names). A bug on our side.

Both carry an ``errno`` so a caller that must answer something can.
"""

from __future__ import annotations

import errno as _errno


class ProtocolError(Exception):
    """Base class of the codec's exceptions."""

    def __init__(self, message: str, errno: int = _errno.EPROTO) -> None:
        super().__init__(message)
        self.errno = errno


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol: close the session."""


class LocalProtocolError(ProtocolError):
    """We misused the codec: a bug in the caller."""
