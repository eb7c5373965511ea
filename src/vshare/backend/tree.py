"""Whole-tree operations over any :class:`Backend`, through its confined handles only:
how many bytes a directory holds, and removing a directory with everything in it.

Both walk with handles (lookup relative to the directory being read), never with path
strings, so they are as confined as the backend itself; symlinks are never followed.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from collections.abc import Callable, Iterator
from typing import Final

from vshare.backend.base import Attr, Backend, Node


def _children(backend: Backend, directory: Node) -> Iterator[tuple[str, int]]:
    """(name, S_IFMT type or 0 when unknown) of each entry but ``.`` and ``..``."""
    handle = backend.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        cookie = 0
        while True:
            entries, end = backend.readdir(handle, cookie, 512)
            for entry in entries:
                cookie = entry.cookie
                if entry.name not in (".", ".."):
                    yield entry.name, entry.file_type
            if end or not entries:
                return
    finally:
        handle.close()


def _attr_of(backend: Backend, parent: Node, name: str) -> tuple[Node, Attr] | None:
    try:
        child = backend.lookup(parent, name)
    except OSError:
        return None  # gone meanwhile
    try:
        return child, backend.getattr(child)
    except OSError:
        child.close()
        return None


def apparent_size(backend: Backend, directory: Node) -> int:
    """The sum of ``st_size`` of the regular files below ``directory`` (blocking).
    Entries that vanish during the walk are skipped."""
    total = 0
    stack = [backend.clone(directory)]
    try:
        while stack:
            node = stack.pop()
            try:
                for name, kind in list(_children(backend, node)):
                    if kind not in (stat.S_IFREG, stat.S_IFDIR, 0):
                        continue  # symlinks, fifos, sockets: no data of their own
                    found = _attr_of(backend, node, name)
                    if found is None:
                        continue
                    child, attr = found
                    if stat.S_ISDIR(attr.mode):
                        stack.append(child)
                        continue
                    child.close()
                    if stat.S_ISREG(attr.mode):
                        total += attr.size
            except OSError:
                pass  # an unreadable directory counts as empty
            finally:
                node.close()
    finally:
        for node in stack:
            node.close()
    return total


def remove_tree(
    backend: Backend,
    parent: Node,
    name: str,
    *,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Remove ``parent/name`` and, if it is a directory, everything in it (blocking).

    Iterative, and bounded in memory and handles whatever the tree's shape: at most one
    batch of directory entries (:data:`BATCH`) and three handles are held at a time, so a
    chain of 10,000 nested directories costs what a flat directory does. A directory that
    is not empty has its subdirectories *hoisted*: renamed into the top directory under a
    fresh name (``.vshare-rm-<hex>``), after its other entries are unlinked; the top is then
    worked through again until it is empty. Everything stays inside the tree being removed,
    and the tree is the only state: a removal stopped anywhere (a crash, a SIGKILL) is
    finished by calling this again. Entries that vanish meanwhile (another remover) are
    skipped. ``progress`` is called with the number of entries removed so far, after each
    batch.

    Raises:
        OSError: the first error that stops the removal (ENOENT if ``name`` is absent).
    """
    top = backend.lookup(parent, name)
    try:
        is_dir = stat.S_ISDIR(backend.getattr(top).mode)
        if is_dir:
            _empty(backend, top, progress)
    finally:
        top.close()
    backend.unlink(parent, name, rmdir=is_dir)


#: Directory entries read (and held) at a time by :func:`remove_tree`.
BATCH: Final = 512
_HOIST_PREFIX: Final = ".vshare-rm-"
#: rename() onto an existing name: a non-empty directory, a file, a directory onto a file.
_TAKEN: Final = frozenset({errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR})


def _batch(backend: Backend, directory: Node) -> list[tuple[str, int]]:
    """Up to :data:`BATCH` entries of ``directory`` (not ``.``/``..``), from its start."""
    handle = backend.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        entries = backend.readdir(handle, 0, BATCH).entries
    finally:
        handle.close()
    return [(e.name, e.file_type) for e in entries if e.name not in (".", "..")]


def _kind(backend: Backend, directory: Node, name: str, listed: int) -> int | None:
    """The S_IFMT type of ``directory/name`` (None: gone meanwhile)."""
    if listed:
        return listed
    found = _attr_of(backend, directory, name)
    if found is None:
        return None
    child, attr = found
    child.close()
    return stat.S_IFMT(attr.mode)


def _remove_quietly(backend: Backend, directory: Node, name: str, *, rmdir: bool) -> bool:
    """Remove one entry; False if it is a directory that is not empty. Gone is removed."""
    try:
        backend.unlink(directory, name, rmdir=rmdir)
    except FileNotFoundError:
        pass
    except OSError as exc:
        if rmdir and exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
            return False
        raise
    return True


def _empty(backend: Backend, top: Node, progress: Callable[[int], None] | None = None) -> None:
    removed = 0
    while batch := _batch(backend, top):
        changed = 0
        for name, listed in batch:
            kind = _kind(backend, top, name, listed)
            if kind is None:
                changed += 1
                continue
            if kind != stat.S_IFDIR:
                _remove_quietly(backend, top, name, rmdir=False)
            elif not _remove_quietly(backend, top, name, rmdir=True):
                changed += _hoist_children(backend, top, name)
                if not _remove_quietly(backend, top, name, rmdir=True):
                    continue  # refilled meanwhile: it comes round again
            removed += 1
            changed += 1
        if not changed:  # every entry a directory that stays non-empty with nothing in it
            raise OSError(errno.ENOTEMPTY, "directories stay non-empty though emptied")
        if progress is not None:
            progress(removed)


def _hoist_children(backend: Backend, top: Node, name: str) -> int:
    """Leave ``top/name`` empty: its non-directories and empty directories removed, its
    other directories renamed into ``top``. Returns how many entries it dealt with."""
    done = 0
    try:
        directory = backend.lookup(top, name)
    except FileNotFoundError:
        return 1
    try:
        while batch := _batch(backend, directory):
            for child, listed in batch:
                kind = _kind(backend, directory, child, listed)
                if kind is None:
                    continue
                if kind != stat.S_IFDIR:
                    _remove_quietly(backend, directory, child, rmdir=False)
                elif not _remove_quietly(backend, directory, child, rmdir=True):
                    _hoist(backend, directory, child, top)
                done += 1
    finally:
        directory.close()
    return done


def _hoist(backend: Backend, directory: Node, name: str, top: Node) -> None:
    for _ in range(100):
        try:
            backend.rename(directory, name, top, _HOIST_PREFIX + secrets.token_hex(8))
        except FileNotFoundError:
            return  # another remover took it
        except OSError as exc:
            if exc.errno in _TAKEN:
                continue  # the tree holds that name already: another one
            raise
        return
    raise OSError(errno.EEXIST, f"no free name in the tree to move {name!r} to")
