"""Storage backends: a handle-based interface in the shape of 9P2000.L.

:func:`open_backend` turns a backend URI into a :class:`~vshare.backend.base.Backend`:
``posix:/srv/volume`` (any directory: a local disk, a kernel-mounted CephFS/NFS/GlusterFS) or
``gluster://HOST[:PORT]/VOLUME`` (a GlusterFS volume through libgfapi, no mount).
"""

from __future__ import annotations

from typing import Final

from vshare.backend.base import Backend

#: The default bound of a gateway's cache of one volume (attributes, names, data).
DEFAULT_CACHE_BYTES: Final = 64 * 1024 * 1024


def open_backend(uri: str, *, cache_bytes: int = DEFAULT_CACHE_BYTES) -> Backend:
    """Open the volume a backend URI names.

    ``cache_bytes`` bounds what the backend keeps in memory for shares opened with a
    cache mode other than ``none`` (see :data:`~vshare.backend.base.CacheMode`); backends
    without their own cache ignore it.

    Raises:
        ValueError: an unknown scheme or a malformed URI (a one-line message).
        OSError: the volume cannot be opened.
    """
    scheme, sep, rest = uri.partition(":")
    if not sep or not rest:
        raise ValueError(
            f"backend {uri!r}: expected posix:/path/to/volume or gluster://HOST/VOLUME"
        )
    if scheme == "posix":
        from vshare.backend.posix import PosixBackend

        return PosixBackend(rest[2:] if rest.startswith("//") else rest)
    if scheme == "gluster":
        from vshare.backend.gluster import GlusterBackend

        return GlusterBackend(uri, cache_bytes=cache_bytes)
    raise ValueError(f"backend {uri!r}: unknown scheme {scheme!r} (known: posix, gluster)")


__all__ = ["DEFAULT_CACHE_BYTES", "Backend", "open_backend"]
