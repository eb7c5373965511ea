"""The GlusterFS backend: a volume reached through libgfapi's handle API, no FUSE mount.

``gluster://HOST[:PORT]/VOLUME`` (port 24007 by default: glusterd, where the volume file
comes from); ``gluster://HOST/VOLUME/DIR`` makes directory DIR of the volume the backend's
root, resolved at start like a share path (no symlinks, no ``..``). Shares are directories
below it, as with :mod:`vshare.backend.posix`, whose design this mirrors with
``glfs_object`` handles in place of ``O_PATH`` fds.

The package: ``_volumes`` (one ``glfs`` per volume, its upcall listener and cache, the URI),
``_options`` (does the volume announce changes?), ``_handles`` (nodes, open files, the
use-counted pointers), ``_fields`` (gfapi's structs ↔ the backend's types, the xattr rule),
``_core`` (the backend's state: handles given out, name resolution through the cache, opens,
data-cache reads) and ``_backend`` (:class:`GlusterBackend`, the operations). This note is
the one place the design is stated.

Security argument — why no request can leave its share
======================================================

This is the one place where it is stated; the code below enforces it.

1. **A handle is an object (a gfid), never a path.** Every :class:`GlusterNode` holds one
   ``glfs_object *``; gfapi names it by its gfid and never resolves a path for it again.
   Nothing here turns a node into a path, and nothing compares path strings.
2. **Nodes come only from nodes.** The ways to get one:

   - :meth:`GlusterBackend.open_root` walks the share path *one component at a time* from
     the volume root object, each step a ``lookup`` that must find a directory.
   - :meth:`~GlusterBackend.lookup` resolves *one checked name* in a directory node:
     ``glfs_h_lookupat(fs, parent, name, &stat, follow=0)``. With ``follow=0`` a symlink is
     returned as itself; with one component that is neither ``.``/``..`` nor empty and holds
     no ``/``, gfapi can only look up an entry of ``parent`` (its resolver treats a leading
     ``/`` as the volume root, ``..`` as the parent and ``""`` as ``parent`` itself: all
     refused before gfapi sees them). The answer can come from gfapi's caches (md-cache,
     1 s by default): the object that had that name a moment ago. Its type is the one of its
     gfid (a gfid never changes type), so a stale answer is never "a directory" that is
     really a symlink; see "Not covered" for objects another client moves out meanwhile.
   - ``create``/``mkdir``/``symlink``/``mknod`` use ``glfs_h_creat_open``/``_mkdir``/
     ``_symlink``/``_mknod`` on the parent object, which return the new object itself (no
     second lookup; ``create`` its open fd too, from the one create fop).
   - :meth:`~GlusterBackend.clone` copies the object (``glfs_object_copy``).

   The gfid → object call (``glfs_h_create_from_handle``) is not bound at all: no gfid from
   anywhere can become a node.
3. **Names are checked again here** (``base.check_name``, plus ENAMETOOLONG past 255 bytes).
   Every operation taking a name acts on one entry of a directory the caller holds.
4. **The parent of every name operation must be a directory node** (ENOTDIR otherwise),
   checked here by the type that came with the object's gfid. This matters more than on
   POSIX: the brick resolves an entry under a parent gfid through its ``.glusterfs`` handle
   path, and for a symlink's gfid that handle is the symlink itself, so a brick asked to
   create ``name`` "under" a symlink could follow it on the server. We never ask.
5. **Symlinks are data.** ``follow=0`` returns them as themselves; :meth:`~GlusterBackend.open`
   refuses them (ELOOP); ``readlink`` returns the target string only; setattr on a symlink
   uses the object (gfapi applies it to the link, not its target).
6. **Extended attributes are limited to ``user.*`` (not ``user.glusterfs*``) and the POSIX
   ACL names**, in both directions: GlusterFS answers *virtual* xattrs that reveal or change
   things outside the object (``glusterfs.ancestry.path`` gives the path from the volume
   root, ``trusted.glusterfs.pathinfo`` the brick path on the server,
   ``glusterfs.gfid.newfile`` creates files by gfid, ``glusterfs.get_real_filename:``
   looks names up). Anything else is EOPNOTSUPP, and ``listxattr`` shows only allowed names.
   No xattr call is made on a symlink object at all (Linux allows none of these names on a
   symlink; gfapi's ACL calls on a symlink object resolve its target from the volume root):
   get → ENODATA, set/remove → EPERM, list → nothing. The ACL calls are not bound.
7. **A pointer is never used after its close**, nor after ``glfs_fini``: each sits in a
   ``_handles.Ref`` that counts the calls using it; ``close()`` marks it closed (later calls:
   EBADF) and the real ``glfs_h_close``/``glfs_close`` waits for the last call. A backend's
   ``close()`` closes every handle it gave out before its ``glfs`` may be finalised.
8. **Nodes must come from this backend** (TypeError otherwise), so a gateway bug cannot
   link or rename between volumes (or between two backends of one volume).

Not covered, by design (another client of the volume does these, not a guest): a directory
another client moves out of the share is still reachable through nodes that refer to it,
and for up to gfapi's cache timeout through the name it had; a hard link another client made
to a file outside is that file.

Other rules
===========

- **One ``glfs`` per volume per process**, shared by every :class:`GlusterBackend` on it
  (``glfs_init`` ~15 ms; ``glfs_fini`` ~10 s on glusterfs 10). The last backend's
  ``close()`` finalises it, unless :func:`keep_connections` is on (test sessions, where a
  backend is opened and closed per test): then idle connections stay for reuse and
  :func:`shutdown` finalises them.
- **qid paths** are the object's gfid folded to 64 bits the way GlusterFS makes ``st_ino``
  (its last 8 bytes, big-endian; the root, gfid ``...01``, is 1): stable across gateways
  and restarts, the same in ``getattr`` and in directory entries.
- **Opening**: as POSIX: ``O_ACCMODE``, ``O_APPEND``, ``O_TRUNC``, ``O_DSYNC``, ``O_SYNC`` are
  kept, the rest dropped; directories through ``glfs_h_opendir``. gfapi's write-behind and
  open-behind translators do not check the access mode at each call (a write on a read-only
  open is accepted and fails only at close), so the open file's access mode is checked here:
  EBADF as the kernel answers.
- **Modes** of ``create``/``mkdir``/``mknod`` arrive verbatim: gfapi applies no umask (this
  gfapi exports no ``glfs_umask``; ``glfs_h_creat_open``/``h_mkdir``/``h_mknod`` pass the mode to
  the bricks as given, checked on GlusterFS 10.3 with the process umask at 022 and 077), so
  the gateway's umask never reaches the volume and nothing needs undoing, unlike POSIX.
- **setattr** applies owner, then mode, then size (``glfs_h_truncate``), then times: owner,
  mode and times in one ``glfs_h_setattrs`` (the brick applies them in that order), the
  times in a second one after a truncation; :data:`~vshare.backend.base.TIME_NOW` is this
  host's clock.
- **nlink of an unlinked open file**: GlusterFS reports 1 (the brick keeps the file under
  ``.glusterfs/unlink`` until its last close); for files this backend unlinked while it had
  them open, ``getattr`` reports 0 as POSIX does (while they stay open). ``getattr`` of such a
  file, which gfapi no longer finds by gfid, falls back to ``glfs_fstat`` on an open file.
- **Directories renamed by another client**: the brick reaches a directory by its gfid
  through a handle that names its parent and its name, and a rename of that directory leaves
  the handle dangling for a moment (microseconds, while the rename is done on the brick):
  ``glfs_h_opendir`` and lookups in it then fail with ENOENT although it exists. ``opendir``
  is retried for up to ~40 ms; a lookup that finds nothing is asked once more, and then
  again while the directory itself cannot be opened (so a name that really is missing costs
  two lookups and an opendir: ~3 round trips instead of 1; none in cache modes meta and
  all when a cached whole listing of the directory lacks it). A guest can still see a rare
  ENOENT, or a create fail, in a directory that another client renames at that instant;
  GlusterFS itself may then leave a file without its gfid link on the brick (seen here:
  unreadable by gfid).
- **unlink**: gfapi has one call for files and empty directories (``glfs_h_unlink``); the
  type is checked first (EISDIR/ENOTDIR as POSIX), by a lookup or, in cache modes meta and
  all, from the cache when it holds the name (kept right by upcalls, within milliseconds).
  Between that check and the unlink another client could swap the entry for an empty
  directory or a file of the same name: the wrong kind of entry may then go, but it is
  always that entry of that directory.
- **readdir** cookies are gfapi's ``d_off`` (``glfs_seekdir``), as unsigned 64-bit numbers;
  one listing at a time per open directory. ``fsync`` of a directory does nothing (the brick
  has made directory changes by the time gfapi returns).
- **statfs** is the volume's (``glfs_h_statfs``); ``fs_type`` is FUSE's magic number, what
  the native GlusterFS client shows.
- **close()** of an open file swallows the errors ``glfs_close`` reports (a deferred write
  error from write-behind surfaces there; fsync first to see it).

Errnos chosen here are those of :mod:`vshare.backend.posix`'s table, plus EOPNOTSUPP for an
xattr name outside the allowed namespaces; everything else is gfapi's errno, passed through.
"""

from __future__ import annotations

from vshare.backend.gluster import _options, _volumes
from vshare.backend.gluster._backend import GlusterBackend
from vshare.backend.gluster._fields import qid_of_gfid
from vshare.backend.gluster._handles import GlusterNode, GlusterOpenFile
from vshare.backend.gluster._volumes import (
    CACHE_VOLUME_OPTIONS,
    DEFAULT_PORT,
    XLATOR_OPTIONS,
    cache_fallbacks,
    keep_connections,
    parse_uri,
    shutdown,
)

#: Under their names from before the package (tests use them).
_gluster_options = _options
_check_options = _volumes.check_options

__all__ = [
    "CACHE_VOLUME_OPTIONS",
    "DEFAULT_PORT",
    "XLATOR_OPTIONS",
    "GlusterBackend",
    "GlusterNode",
    "GlusterOpenFile",
    "cache_fallbacks",
    "keep_connections",
    "parse_uri",
    "qid_of_gfid",
    "shutdown",
]
