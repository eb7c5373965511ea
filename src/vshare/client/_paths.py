"""Client paths → lists of names to walk.

The gateway never follows symlinks and treats every name as one component, so a path can
be normalized lexically on the client, with no server round trip: ``""`` and ``.`` are
dropped, ``..`` removes the name before it. A path that climbs above the share root
(``"../x"``, ``"a/../../x"``) is refused with EINVAL rather than clamped to the root as
the gateway would: a caller who writes ``..`` at the root is mistaken about where they
are, and silently reading another file than the one meant is worse than an error.
"""

from __future__ import annotations

import errno
import os


def components(path: str) -> list[str]:
    """Split ``path`` (relative to the share root; a leading ``/`` means the same) into
    the names to walk.

    Raises:
        OSError: EINVAL when the path climbs above the share root or contains NUL.
    """
    if "\0" in path:
        raise OSError(errno.EINVAL, "a path may not contain NUL", path)
    out: list[str] = []
    for name in path.split("/"):
        if name in ("", "."):
            continue
        if name == "..":
            if not out:
                raise OSError(errno.EINVAL, "the path climbs above the share root", path)
            out.pop()
        else:
            out.append(name)
    return out


def split_parent(path: str) -> tuple[list[str], str]:
    """The parent's components and the last name.

    Raises:
        OSError: EINVAL for the share root itself (it has no name in a parent) and for
            the paths :func:`components` refuses.
    """
    parts = components(path)
    if not parts:
        raise OSError(errno.EINVAL, "the share root has no parent", path)
    return parts[:-1], parts[-1]


def join(parts: list[str]) -> str:
    return "/" + "/".join(parts)


def fspath(path: str | os.PathLike[str]) -> str:
    return os.fspath(path)
