"""Storage backends: a handle-based interface in the shape of 9P2000.L.

:func:`open_backend` turns a backend URI into a :class:`~vshare.backend.base.Backend`:
``posix:/srv/volume`` (any directory: a local disk, a kernel-mounted CephFS/NFS/GlusterFS) or
``gluster://HOST[:PORT]/VOLUME`` (a GlusterFS volume through libgfapi, no mount).
"""

from __future__ import annotations

from vshare.backend.base import Backend


def open_backend(uri: str) -> Backend:
    """Open the volume a backend URI names.

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

        return GlusterBackend(uri)
    raise ValueError(f"backend {uri!r}: unknown scheme {scheme!r} (known: posix, gluster)")


__all__ = ["Backend", "open_backend"]
