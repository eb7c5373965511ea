"""Whole-tree operations over any :class:`Backend`, through its confined handles only:
how many bytes a directory holds, and removing a directory with everything in it.

Both walk with handles (lookup relative to the directory being read), never with path
strings, so they are as confined as the backend itself; symlinks are never followed.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator

from vshare.backend.base import Attr, Backend, Node


def _children(backend: Backend, directory: Node) -> Iterator[tuple[str, int]]:
    """(name, S_IFMT type or 0 when unknown) of each entry but ``.`` and ``..``."""
    handle = backend.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        cookie = 0
        while entries := backend.readdir(handle, cookie, 512):
            for entry in entries:
                cookie = entry.cookie
                if entry.name not in (".", ".."):
                    yield entry.name, entry.file_type
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


def remove_tree(backend: Backend, parent: Node, name: str) -> None:
    """Remove ``parent/name`` and, if it is a directory, everything in it (blocking).

    Raises:
        OSError: the first error that stops the removal (ENOENT if ``name`` is absent).
    """
    top = backend.lookup(parent, name)
    try:
        is_dir = stat.S_ISDIR(backend.getattr(top).mode)
        if is_dir:
            _empty(backend, top)
    finally:
        top.close()
    backend.unlink(parent, name, rmdir=is_dir)


def _empty(backend: Backend, directory: Node) -> None:
    for name, listed in list(_children(backend, directory)):
        kind = listed
        if kind == 0:
            found = _attr_of(backend, directory, name)
            if found is None:
                continue
            child, attr = found
            child.close()
            kind = stat.S_IFMT(attr.mode)
        if kind == stat.S_IFDIR:
            sub = backend.lookup(directory, name)
            try:
                _empty(backend, sub)
            finally:
                sub.close()
        backend.unlink(directory, name, rmdir=kind == stat.S_IFDIR)
