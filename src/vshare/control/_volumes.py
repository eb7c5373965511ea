"""The backend volumes a control plane creates shares in: names → backend URIs, opened on
first use and kept open.

A share's record holds its volume's backend URI (``ShareRecord.backend``, what gateways
open), not the volume's name, so a URI must belong to one name only: that is how a share is
traced back to its volume here.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator, Mapping
from typing import Final

from vshare.backend import Backend, open_backend
from vshare.control._errors import VolumeUnavailable

#: The one volume of a control plane started without ``--volume``.
DEFAULT_VOLUMES: Final = {"default": "posix:/var/lib/vshare/volume"}
_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


def parse_volume(text: str) -> tuple[str, str]:
    """``NAME=URI`` → (name, uri), as ``--volume`` takes it.

    Raises:
        ValueError: no ``=``, a bad name, or an empty URI.
    """
    name, sep, uri = text.partition("=")
    if not sep or not uri:
        raise ValueError(
            f"volume {text!r}: expected NAME=URI, e.g. default=posix:/srv/volume or"
            " default=gluster://gluster1/vol"
        )
    _check(name, uri)
    return name, uri


def _check(name: str, uri: str) -> None:
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"volume name {name!r}: 1 to 63 letters, digits, '.', '_' or '-', starting with"
            " a letter or digit"
        )
    scheme, sep, rest = uri.partition(":")
    if not sep or not scheme or not rest:
        raise ValueError(
            f"volume {name}: {uri!r} is not a backend URI (posix:/path, gluster://host/volume)"
        )
    if scheme == "gluster":  # malformed ones fail here, not when a share is first made
        from vshare.backend.gluster import parse_uri

        try:
            parse_uri(uri)
        except ValueError as exc:
            raise ValueError(f"volume {name}: {exc}") from None


class Volumes(Mapping[str, str]):
    """Volume names → backend URIs, the first one the default; backends are opened lazily
    (a control plane starts even when a volume is briefly unreachable) and kept until
    :meth:`close`. Thread-safe.

    Raises:
        ValueError: no volume, a malformed name or URI, or one URI under two names.
    """

    def __init__(self, volumes: Mapping[str, str] | None = None) -> None:
        given = dict(DEFAULT_VOLUMES if volumes is None else volumes)
        if not given:
            raise ValueError("a control plane needs at least one volume")
        by_uri: dict[str, str] = {}
        for name, uri in given.items():
            _check(name, uri)
            if uri in by_uri:
                raise ValueError(f"volumes {by_uri[uri]} and {name} are both {uri}")
            by_uri[uri] = name
        self._uris = given
        self._names = by_uri
        self._open: dict[str, Backend] = {}
        self._lock = threading.Lock()

    def __getitem__(self, name: str) -> str:
        return self._uris[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._uris)

    def __len__(self) -> int:
        return len(self._uris)

    @property
    def default(self) -> str:
        """The name of the volume shares go to when none is named."""
        return next(iter(self._uris))

    def name_of(self, uri: str) -> str | None:
        """The name of the volume with this backend URI, or None if it is not one of ours."""
        return self._names.get(uri)

    def backend(self, uri: str) -> Backend:
        """The open backend of the volume with this URI.

        Raises:
            VolumeUnavailable: not one of our volumes, or it cannot be opened.
        """
        name = self._names.get(uri)
        if name is None:
            raise VolumeUnavailable(
                f"volume {uri} is not served by this control plane (start it with"
                f" --volume NAME={uri})"
            )
        with self._lock:
            backend = self._open.get(uri)
            if backend is None:
                try:
                    backend = open_backend(uri)
                except (OSError, ValueError) as exc:
                    cause = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                    raise VolumeUnavailable(f"volume {name} ({uri}): {cause}") from None
                self._open[uri] = backend
        return backend

    def check_local(self) -> None:
        """Open every local (``posix:``) volume now, so that a control plane started with a
        directory that does not exist refuses to start instead of failing the first create.
        Remote volumes (``gluster://``) stay lazy: a server briefly down must not stop the
        control plane from starting.

        Raises:
            ValueError: a local volume that cannot be opened (missing, not a directory),
                in one line naming it.
        """
        for name, uri in self._uris.items():
            if uri.partition(":")[0] != "posix":
                continue
            try:
                self.backend(uri)
            except VolumeUnavailable:
                path = uri.partition(":")[2]
                reason = "does not exist" if not os.path.lexists(path) else "is not a directory"
                if os.path.isdir(path):
                    reason = "cannot be opened"
                raise ValueError(
                    f"volume {name}: {path} {reason} (--volume {name}={uri})"
                ) from None

    def close(self) -> None:
        """Close every open backend. Idempotent; a later :meth:`backend` opens again."""
        with self._lock:
            backends, self._open = list(self._open.values()), {}
        for backend in backends:
            backend.close()
