"""The GlusterFS backend: a volume reached through libgfapi's handle API, no FUSE mount.

``gluster://HOST[:PORT]/VOLUME`` (port 24007 by default: glusterd, where the volume file
comes from); ``gluster://HOST/VOLUME/DIR`` makes directory DIR of the volume the backend's
root, resolved at start like a share path (no symlinks, no ``..``). Shares are directories
below it, as with :mod:`vshare.backend.posix`, whose design this mirrors with
``glfs_object`` handles in place of ``O_PATH`` fds.

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
   - ``create``/``mkdir``/``symlink``/``mknod`` use ``glfs_h_creat``/``_mkdir``/``_symlink``/
     ``_mknod`` on the parent object, which return the new object itself (no second lookup).
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
   :class:`_Ref` that counts the calls using it; ``close()`` marks it closed (later calls:
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
  gfapi exports no ``glfs_umask``; ``glfs_h_creat``/``h_mkdir``/``h_mknod`` pass the mode to
  the bricks as given, checked on GlusterFS 10.3 with the process umask at 022 and 077), so
  the gateway's umask never reaches the volume and nothing needs undoing, unlike POSIX.
- **setattr** applies owner, then mode, then size (``glfs_h_truncate``), then times
  (``glfs_h_setattrs``); :data:`~vshare.backend.base.TIME_NOW` is this host's clock.
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
  two lookups and an opendir: ~3 round trips instead of 1). A guest can still see a rare
  ENOENT, or a create fail, in a directory that another client renames at that instant;
  GlusterFS itself may then leave a file without its gfid link on the brick (seen here:
  unreadable by gfid).
- **unlink**: gfapi has one call for files and empty directories (``glfs_h_unlink``); the
  type is checked by a lookup first (EISDIR/ENOTDIR as POSIX). Between that lookup and the
  unlink another client could swap the entry for an empty directory or a file of the same
  name: the wrong kind of entry may then go, but it is always that entry of that directory.
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

import contextlib
import errno
import functools
import logging
import os
import stat
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, ParamSpec, TypeVar
from urllib.parse import urlsplit

from vshare.backend import _gfapi, _gluster_options
from vshare.backend._cache import BLOCK, CacheStats, VolumeCache
from vshare.backend._handle import UseCounted
from vshare.backend.base import (
    CACHE_MODES,
    TIME_NOW,
    Attr,
    Backend,
    CacheMode,
    DirEntry,
    Node,
    OpenFile,
    StatFs,
    check_name,
)

__all__ = [
    "CACHE_VOLUME_OPTIONS",
    "GlusterBackend",
    "GlusterNode",
    "GlusterOpenFile",
    "cache_fallbacks",
    "keep_connections",
    "parse_uri",
    "shutdown",
]

log = logging.getLogger("vshare.backend.gluster")
_P = ParamSpec("_P")
_R = TypeVar("_R")

DEFAULT_PORT: Final = 24007
_IO_FLAGS_KEPT: Final = os.O_ACCMODE | os.O_APPEND | os.O_TRUNC | os.O_DSYNC | os.O_SYNC
_U64: Final = (1 << 64) - 1
_I64_MAX: Final = (1 << 63) - 1
_NAME_MAX: Final = 255
_XATTR_NAME_MAX: Final = 255
_XATTR_SIZE_MAX: Final = 64 * 1024
_NS: Final = 1_000_000_000
_FUSE_SUPER_MAGIC: Final = 0x65735546
_XATTR_ACL: Final = frozenset({"system.posix_acl_access", "system.posix_acl_default"})
_READDIR_BATCH_MAX: Final = 1 << 20
_CLOSE_WAIT: Final = 60.0
_OPENDIR_RETRY: Final = (0.0, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02)
_LOOKUP_RETRY: Final = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02)
#: How long a cache entry lives at most with upcalls (below GlusterFS's default 60 s
#: ``features.cache-invalidation-timeout``, after which the brick stops telling us) and
#: without them.
_CACHE_TTL: Final = 50.0
_CACHE_TTL_BLIND: Final = 1.0
#: What a volume needs for shares in cache mode ``meta`` or ``all`` to see other clients'
#: changes within about a second (``gluster volume set VOLUME KEY VALUE``): the bricks send
#: upcalls, and remember a client that touched an object for longer than our entries live.
#: How old the answer to "does this volume announce changes?" may be when a share is
#: attached (the check costs ~55 ms: a ``gluster volume info`` round trip).
_OPTIONS_RECHECK: Final = 60.0
CACHE_VOLUME_OPTIONS: Final = {
    "features.cache-invalidation": "on",
    "features.cache-invalidation-timeout": "600",
}
#: Options of gfapi's own client-side translators (``glfs_set_xlator_option``). gfapi's
#: caches are time-based and shared by every share of the volume, so they would make cache
#: mode ``none`` stale and refill ours with stale data; the caching is ours, per share,
#: invalidated by upcalls. Measured here (docs/cache-bench.md; the modes: docs/cache.md):
#:
#: - md-cache keeps attributes and lookups 1 s by default: a ``none`` share saw another
#:   client's change after 0.998 s (p50); with the timeout 0, after 0.3 ms. A lookup+stat that
#:   misses costs 412 µs instead of 180 µs; a hit in our cache costs 24 µs.
#: - quick-read keeps small files' content from the last lookup: after an upcall emptied our
#:   data cache, the re-read came from quick-read, stale, and stayed in ours for its whole
#:   life (p50 50 s); with quick-read's max-file-size 0, the re-read was fresh (p50 1.1 ms).
XLATOR_OPTIONS: Final[tuple[tuple[str, str, str], ...]] = (
    ("*-md-cache", "md-cache-timeout", "0"),
    ("*-quick-read", "max-file-size", "0"),
)


def _err(code: int) -> OSError:
    return OSError(code, os.strerror(code))


def _einval_on_value_error(method: Callable[_P, _R]) -> Callable[_P, _R]:
    """Turn ValueError/OverflowError (a lone surrogate, a number out of range) into EINVAL."""

    @functools.wraps(method)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(*args, **kwargs)
        except (ValueError, OverflowError, UnicodeError) as e:
            raise _err(errno.EINVAL) from e

    return wrapper


def _name(name: str) -> bytes:
    """One checked path component as bytes (EINVAL, or ENAMETOOLONG past 255 bytes)."""
    check_name(name)
    raw = name.encode("utf-8", "surrogateescape")
    if len(raw) > _NAME_MAX:
        raise _err(errno.ENAMETOOLONG)
    return raw


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


def _xattr_name(name: str) -> bytes:
    """An allowed xattr name (module note, point 6) as bytes."""
    if not name or "\0" in name:
        raise _err(errno.EINVAL)
    raw = name.encode("utf-8", "surrogateescape")
    if len(raw) > _XATTR_NAME_MAX:
        raise _err(errno.ERANGE)
    if not _xattr_allowed(name):
        raise _err(errno.EOPNOTSUPP)
    return raw


def _xattr_allowed(name: str) -> bool:
    if name in _XATTR_ACL:
        return True
    return name.startswith("user.") and not name.startswith("user.glusterfs")


def qid_of_gfid(gfid: bytes) -> int:
    """GlusterFS's ``gfid_to_ino``: the last 8 bytes of the gfid, big-endian."""
    return int.from_bytes(gfid[8:16], "big")


def parse_uri(uri: str) -> tuple[str, int, str, str]:
    """``gluster://HOST[:PORT]/VOLUME[/DIR...]`` → (host, port, volume, dir).

    ``dir`` ("" for the volume's root) is the directory of the GlusterFS volume that serves
    as this backend's volume root: shares are paths below it.

    Raises:
        ValueError: not that shape (an empty, ``.`` or ``..`` component included).
    """
    shape = f"backend {uri!r}: expected gluster://HOST[:PORT]/VOLUME[/DIR]"
    parts = urlsplit(uri)
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError:
        raise ValueError(f"backend {uri!r}: bad port") from None
    if parts.scheme != "gluster" or not parts.hostname or not parts.path.startswith("/"):
        raise ValueError(shape)
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(shape)
    volume, _, subdir = parts.path[1:].rstrip("/").partition("/")
    names = subdir.split("/") if subdir else []
    if not volume or any(n in ("", ".", "..") for n in names):
        raise ValueError(shape)
    return parts.hostname, port, volume, subdir


# ---------------------------------------------------------------------------------------------
# One glfs per volume per process


@dataclass(eq=False)
class _Volume:
    key: tuple[str, int, str]
    fs: int
    cache: VolumeCache
    users: int = 0
    alive: bool = True
    upcall_cbk: object = None  # the ctypes callback gfapi holds: kept alive while registered
    #: Why shares of this volume cannot keep a cache (None: they can), as last checked.
    problem: str | None = "not checked yet"
    checked: float = -_OPTIONS_RECHECK
    #: Attaches in cache mode meta/all served as ``none`` because of :attr:`problem`.
    fallbacks: int = 0


_volumes: dict[tuple[str, int, str], _Volume] = {}
_volumes_lock = threading.Lock()
_keep = False


def keep_connections(keep: bool = True) -> None:
    """Keep idle volume connections open for reuse instead of finalising them when their
    last backend closes (``glfs_fini`` takes ~10 s). For test sessions; call
    :func:`shutdown` at the end."""
    global _keep
    _keep = keep


def shutdown() -> None:
    """``glfs_fini`` every connection that no open backend uses. Idempotent."""
    with _volumes_lock:
        idle = [v for v in _volumes.values() if v.users == 0]
        for vol in idle:
            del _volumes[vol.key]
            vol.alive = False
    for vol in idle:
        _fini(vol)


def _fini(vol: _Volume) -> None:
    if vol.upcall_cbk is not None:
        with contextlib.suppress(OSError):
            _gfapi.upcall_unregister(vol.fs, _gfapi.EVENT_INODE_INVALIDATE)
    vol.cache.clear()  # closes the objects the name cache holds, before the glfs goes
    try:
        _gfapi.fini(vol.fs)
    except OSError as exc:  # e.g. objects leaked by a caller; the glfs is gone regardless
        log.warning("glfs_fini of gluster://%s:%d/%s: %s", *vol.key, exc)


def _acquire(
    host: str, port: int, volume: str, log_file: str | None, log_level: int, cache_bytes: int
) -> _Volume:
    key = (host, port, volume)
    with _volumes_lock:
        vol = _volumes.get(key)
        if vol is None:
            fs = _gfapi.fs_new(volume)
            try:
                _gfapi.set_volfile_server(fs, host, port)
                _gfapi.set_logging(fs, log_file, log_level)
                for xlator, option, value in XLATOR_OPTIONS:
                    _gfapi.set_xlator_option(fs, xlator, option, value)
                _gfapi.init(fs)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    _gfapi.fini(fs)  # gfapi wants it after a failed init too
                raise OSError(
                    exc.errno, f"gluster://{host}:{port}/{volume}: {exc.strerror}"
                ) from None
            vol = _volumes[key] = _Volume(key, fs, VolumeCache(cache_bytes, _CACHE_TTL))
            _listen(vol)
            _check_options(vol)
        vol.users += 1
        return vol


def _listen(vol: _Volume) -> None:
    """Register for gfapi's upcalls: each names objects another client changed, whose cache
    entries go (the brick sends them when the volume has ``features.cache-invalidation
    on``, to clients that touched the object within ``features.cache-invalidation-timeout``,
    60 s by default: :data:`_CACHE_TTL` stays below it). Without upcalls, entries live
    :data:`_CACHE_TTL_BLIND` only."""
    cache = vol.cache

    def on_upcall(up: int | None, _data: int | None) -> None:
        # On a gfapi thread. Nothing may escape: ctypes would only print it.
        if not up:
            return
        try:
            _, gfids = _gfapi.upcall_inode_handles(up)
            for gfid in gfids:
                cache.invalidate(qid_of_gfid(gfid), "upcall")
        except Exception:
            log.exception("upcall of gluster://%s:%d/%s", *vol.key)
        finally:
            with contextlib.suppress(OSError):
                _gfapi.free(up)

    cbk = _gfapi.UPCALL_CBK(on_upcall)
    try:
        _gfapi.upcall_register(vol.fs, _gfapi.EVENT_INODE_INVALIDATE, cbk)
    except OSError as exc:
        log.warning(
            "gluster://%s:%d/%s: no upcalls (%s): cached entries live %.0f s",
            *vol.key, exc.strerror, _CACHE_TTL_BLIND,
        )  # fmt: skip
        cache.ttl = _CACHE_TTL_BLIND
        return
    vol.upcall_cbk = cbk


def _check_options(vol: _Volume) -> str | None:
    """Ask glusterd whether ``vol`` announces other clients' changes (see
    :mod:`._gluster_options`), when the last answer is older than :data:`_OPTIONS_RECHECK`;
    log when the answer changes. Returns why shares cannot cache (None: they can)."""
    now = time.monotonic()
    if now - vol.checked < _OPTIONS_RECHECK:
        return vol.problem
    host, _, volume = vol.key
    try:
        options = _gluster_options.volume_options(host, volume)
    except OSError as exc:
        problem: str | None = f"cannot read the volume's options ({exc})"
    else:
        problem = _gluster_options.coherence_problem(options, volume, _CACHE_TTL)
    vol.checked = now
    if problem != vol.problem:
        if problem is None:
            log.info("gluster://%s:%d/%s: announces changes: share cache modes apply", *vol.key)
        else:
            log.warning("gluster://%s:%d/%s: share cache modes meta and all are served as none:"
                        " %s", *vol.key, problem)  # fmt: skip
    vol.problem = problem
    return problem


def cache_fallbacks() -> dict[str, tuple[str | None, int]]:
    """Per connected volume (``gluster://HOST:PORT/VOLUME``): why its shares cannot cache
    (None: they can) and how many attaches were served as ``none`` for that."""
    with _volumes_lock:
        vols = list(_volumes.values())
    return {"gluster://{}:{}/{}".format(*v.key): (v.problem, v.fallbacks) for v in vols}


def _release(vol: _Volume) -> None:
    with _volumes_lock:
        vol.users -= 1
        if vol.users > 0 or _keep or not vol.alive:
            return
        del _volumes[vol.key]
        vol.alive = False
    _fini(vol)


# ---------------------------------------------------------------------------------------------
# Handles


class _Ref(UseCounted):
    """A gfapi pointer that is not released while a call uses it (see :class:`UseCounted`);
    a release error is dropped (the pointer is gone either way: the module note on close),
    and :meth:`wait_freed` tells when the release happened."""

    __slots__ = ("_freed",)

    def __init__(self, ptr: int, release: Callable[[int], None]) -> None:
        super().__init__(ptr, release)
        self._freed = threading.Event()

    def _free(self) -> None:
        try:
            self._release(self._handle)
        except OSError:
            pass  # the pointer is gone either way (see the module note on close)
        finally:
            self._freed.set()

    def wait_freed(self, timeout: float) -> bool:
        """Whether the pointer was released within ``timeout`` seconds (after close())."""
        return self._freed.wait(timeout)


class GlusterNode(Node):
    """A ``glfs_object`` on one object of the volume."""

    __slots__ = ("_cache", "_file_type", "_owner", "_qid_path", "_ref")

    def __init__(
        self, owner: GlusterBackend, obj: int, st: _gfapi.Stat, cache: CacheMode = "none"
    ) -> None:
        self._owner = owner
        self._cache = cache
        self._ref = owner._track(obj, _gfapi.h_close)
        self._file_type = stat.S_IFMT(st.st_mode)
        try:
            self._qid_path = qid_of_gfid(_gfapi.h_extract_handle(obj))
        except BaseException:
            self._ref.close()
            raise

    @property
    def qid_path(self) -> int:
        return self._qid_path

    @property
    def file_type(self) -> int:
        return self._file_type

    @property
    def closed(self) -> bool:
        return self._ref.closed

    def close(self) -> None:
        self._ref.close()

    def __repr__(self) -> str:
        return f"<GlusterNode qid={self._qid_path:#x} type={self._file_type:#o}>"


class GlusterOpenFile(OpenFile):
    """A ``glfs_fd`` on a regular file or a directory.

    A *deferred* open (``fd`` None, ``deferred`` = (a node of the file, the open flags)) makes
    the ``glfs_fd`` at its first use: a read-only open of a share in cache mode ``all``, whose
    reads the data cache may answer entirely, costs no OPEN and FLUSH at the brick then."""

    __slots__ = (
        "__weakref__", "_accmode", "_cache_data", "_closed", "_deferred", "_dir_lock",
        "_dirent", "_dirstat", "_fd", "_is_dir", "_open_lock", "_owner", "_qid",
    )  # fmt: skip

    def __init__(
        self,
        owner: GlusterBackend,
        fd: int | None,
        qid: int,
        *,
        is_dir: bool,
        accmode: int,
        cache_data: bool = False,
        deferred: tuple[GlusterNode, int] | None = None,
    ) -> None:
        self._owner = owner
        self._cache_data = cache_data  # reads may be answered from the volume's data cache
        self._closed = False
        self._deferred = deferred
        self._open_lock = threading.Lock()
        self._fd: _Ref | None = None
        if fd is not None:
            self._fd = owner._track(fd, _gfapi.closedir if is_dir else _gfapi.close)
        self._qid = qid
        self._is_dir = is_dir
        self._accmode = accmode
        # readdir moves the fd's position: one listing at a time per open directory.
        self._dir_lock = threading.Lock()
        self._dirent = _gfapi.Dirent() if is_dir else None
        self._dirstat = _gfapi.Stat() if is_dir else None

    @property
    def _ref(self) -> _Ref:
        """The ``glfs_fd``, opened now if the open was deferred (its errors are the open's:
        another client may have removed the file meanwhile)."""
        ref = self._fd
        if ref is not None:
            return ref
        with self._open_lock:
            if self._fd is None:
                if self._closed or self._deferred is None:
                    raise _err(errno.EBADF)
                node, flags = self._deferred
                with node._ref as obj:
                    fd = _gfapi.h_open(self._owner._fs, obj, flags)
                self._fd = self._owner._track(fd, _gfapi.close)
                self._deferred = None
                node.close()
            return self._fd

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        with self._open_lock:
            self._closed = True
            ref, deferred = self._fd, self._deferred
            self._deferred = None
        if ref is not None:
            ref.close()
        if deferred is not None:
            deferred[0].close()

    def __repr__(self) -> str:
        return f"<GlusterOpenFile dir={self._is_dir} mode={self._accmode}>"


def _ns(ts: _gfapi.Timespec) -> int:
    return int(ts.tv_sec) * _NS + int(ts.tv_nsec)


def _attr(st: _gfapi.Stat, qid: int) -> Attr:
    return Attr(
        qid_path=qid,
        mode=st.st_mode,
        uid=st.st_uid,
        gid=st.st_gid,
        nlink=st.st_nlink,
        rdev=st.st_rdev,
        size=st.st_size,
        blksize=st.st_blksize,
        blocks=st.st_blocks,
        atime_ns=_ns(st.st_atim),
        mtime_ns=_ns(st.st_mtim),
        ctime_ns=_ns(st.st_ctim),
    )


def _id(ident: int | None) -> int:
    if ident is None:
        return 0
    if not 0 <= ident < 0xFFFFFFFF:
        raise _err(errno.EINVAL)
    return ident


def _timespec(ns: int) -> _gfapi.Timespec:
    if ns == TIME_NOW:
        ns = time.time_ns()
    sec, nsec = divmod(ns, _NS)
    if not -(1 << 63) <= sec <= _I64_MAX:
        raise _err(errno.EINVAL)
    return _gfapi.Timespec(sec, nsec)


class GlusterBackend(Backend):
    """A GlusterFS volume (or one directory of it) through libgfapi.

    Args:
        uri: ``gluster://HOST[:PORT]/VOLUME[/DIR]`` (:func:`parse_uri`).
        log_file: gfapi's log (None: its default under ``/var/log/glusterfs``).
        log_level: gfapi's log level (0 none ... 9 trace; 7 is its INFO).

    Raises:
        ValueError: a malformed URI.
        OSError: libgfapi is missing, or the volume cannot be reached (``glfs_init``).
    """

    cheap_metadata = False  # every metadata call may wait on the network

    def __init__(
        self,
        uri: str,
        *,
        log_file: str | None = None,
        log_level: int = 4,
        cache_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        host, port, volume, subdir = parse_uri(uri)
        self._uri = f"gluster://{host}:{port}/{volume}" + (f"/{subdir}" if subdir else "")
        self._vol = _acquire(host, port, volume, log_file, log_level, cache_bytes)
        self._fs = self._vol.fs
        self._cache = self._vol.cache
        self._handles: weakref.WeakSet[_Ref] = weakref.WeakSet()
        self._files: weakref.WeakSet[GlusterOpenFile] = weakref.WeakSet()
        # Regular files this backend unlinked while open: GlusterFS still counts one link
        # (the brick keeps them under .glusterfs/unlink), POSIX says 0.
        self._orphans: set[int] = set()
        self._handles_lock = threading.Lock()
        self._closed = False
        try:
            top = GlusterNode(self, *_gfapi.h_lookupat_root(self._fs))
            self._root = top
            self._root = self._walk(subdir)  # trusted configuration, resolved like a share
            if self._root is not top:
                top.close()
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"GlusterBackend({self._uri!r})"

    @property
    def uri(self) -> str:
        return self._uri

    # -- helpers -------------------------------------------------------------------------------

    def _track(self, ptr: int, release: Callable[[int], None]) -> _Ref:
        ref = _Ref(ptr, release)
        with self._handles_lock:
            if self._closed:
                ref.close()
                raise _err(errno.EBADF)
            self._handles.add(ref)
        return ref

    def _node(self, node: Node) -> GlusterNode:
        if not isinstance(node, GlusterNode) or node._owner is not self:
            raise TypeError(f"{node!r} is not a handle of {self!r}")
        return node

    def _dir_node(self, node: Node) -> GlusterNode:
        """A node that must be a directory: the parent of a name operation (note point 4)."""
        n = self._node(node)
        if n.file_type != stat.S_IFDIR:
            raise _err(errno.ENOTDIR)
        return n

    def _file(self, file: OpenFile) -> GlusterOpenFile:
        if not isinstance(file, GlusterOpenFile) or file._owner is not self:
            raise TypeError(f"{file!r} is not an open file of {self!r}")
        return file

    def _adopt(self, made: tuple[int, _gfapi.Stat], cache: CacheMode = "none") -> GlusterNode:
        """A node owning the object ``made`` returned (released here if that fails)."""
        return GlusterNode(self, made[0], made[1], cache)

    def _changed(self, qid: int, *, name: bytes | None = None) -> None:
        """This process changed object ``qid`` (or, with ``name``, that entry of directory
        ``qid``): drop what the cache knows of it. Made whatever the node's cache mode: a
        share's mode can change while it is attached, and GlusterFS sends no upcall to the
        client that made a change."""
        self._cache.invalidate(qid, "local", names=False)
        if name is not None:
            self._cache.forget_name(qid, name)

    def _cached_child_qid(self, parent: GlusterNode, raw: bytes) -> int | None:
        """The qid the cache has for ``parent/raw`` (no gfapi call), if any."""
        cached = self._cache.name(parent.qid_path, raw)
        return None if cached is None else int(cached[2])

    def _lookup(self, parent: GlusterNode, raw: bytes) -> GlusterNode:
        """The one place that resolves a name: one component of a directory, not followed.

        With a cache mode, from the volume's cache when it knows the name: a copy of the
        object a lookup of this same name in this same directory found (module note, point
        2), which stays there until that directory or that object changes. A lookup that
        reaches gfapi fills the cache with the name and the child's attributes."""
        mode = parent._cache
        if mode == "none":
            return self._adopt(self._lookup_object(parent, raw))
        cached = self._cache.name(parent.qid_path, raw)
        if cached is not None:
            ref, ftype, _ = cached
            try:
                with ref as obj:
                    copy = _gfapi.object_copy(obj)
            except OSError:
                pass  # evicted meanwhile: ask gfapi
            else:
                st = _gfapi.Stat()
                st.st_mode = ftype
                return GlusterNode(self, copy, st, mode)
        token = self._cache.token()
        obj, st = self._lookup_object(parent, raw)
        node = self._adopt((obj, st), mode)
        qid = node.qid_path
        self._cache.put_attr(token, _attr(st, qid))
        with contextlib.suppress(OSError), node._ref as held:
            keep = _Ref(_gfapi.object_copy(held), _gfapi.h_close)
            self._cache.put_name(
                token, parent.qid_path, raw, qid, (keep, node.file_type, qid), keep.close
            )
        return node

    def _lookup_object(self, parent: GlusterNode, raw: bytes) -> tuple[int, _gfapi.Stat]:
        """``glfs_h_lookupat`` of one name, not followed: (object, stat).

        ENOENT is asked again (module note: directories renamed by another client): once at
        once, then while the parent itself cannot be opened, for at most ~40 ms."""
        try:
            with parent._ref as pobj:
                return _gfapi.h_lookupat(self._fs, pobj, raw, follow=False)
        except OSError as e:
            if e.errno not in (errno.ENOENT, errno.ESTALE):
                raise
            first = e
        for delay in _LOOKUP_RETRY:
            try:
                with parent._ref as pobj:
                    return _gfapi.h_lookupat(self._fs, pobj, raw, follow=False)
            except OSError as e:
                if e.errno not in (errno.ENOENT, errno.ESTALE):
                    raise
            if self._reachable(parent):
                break
            time.sleep(delay)
        raise first

    def _reachable(self, n: GlusterNode) -> bool:
        """Whether the brick can open directory ``n`` by its gfid right now."""
        try:
            with n._ref as obj:
                fd = _gfapi.h_opendir(self._fs, obj)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ESTALE):
                return False
            raise
        with contextlib.suppress(OSError):
            _gfapi.closedir(fd)
        return True

    # -- nodes ---------------------------------------------------------------------------------

    @_einval_on_value_error
    def open_root(self, path: str, *, cache: CacheMode = "none") -> Node:
        if cache not in CACHE_MODES:
            raise ValueError(f"cache mode {cache!r}: expected one of {', '.join(CACHE_MODES)}")
        if cache != "none":
            # A cache is only as good as the upcalls that empty it: on a volume that does
            # not send them, the share runs uncached (coherent, slower) rather than stale.
            problem = _check_options(self._vol)
            if problem is not None:
                self._vol.fallbacks += 1
                log.warning("%s: share %r: cache mode %s served as none: %s",
                            self._uri, path, cache, problem)  # fmt: skip
                cache = "none"
        return self._walk(path, cache)

    def _walk(self, path: str, cache: CacheMode = "none") -> GlusterNode:
        names = [_name(part) for part in path.split("/")] if path else []
        node = self._clone(self._root, cache)
        try:
            for raw in names:
                child = self._lookup(node, raw)
                node.close()
                node = child
                if node.file_type != stat.S_IFDIR:
                    raise _err(errno.ENOTDIR)
        except BaseException:
            node.close()
            raise
        return node

    def _clone(self, n: GlusterNode, cache: CacheMode | None = None) -> GlusterNode:
        """A copy of ``n``, in its cache mode unless ``cache`` says another."""
        with n._ref as obj:
            copy = _gfapi.object_copy(obj)
        st = _gfapi.Stat()
        st.st_mode = n.file_type
        return GlusterNode(self, copy, st, n._cache if cache is None else cache)

    def clone(self, node: Node) -> Node:
        return self._clone(self._node(node))

    @_einval_on_value_error
    def lookup(self, parent: Node, name: str) -> Node:
        return self._lookup(self._dir_node(parent), _name(name))

    def getattr(self, node: Node) -> Attr:
        n = self._node(node)
        cached = n._cache != "none"
        attr = self._cache.attr(n.qid_path) if cached else None
        if attr is None:
            token = self._cache.token()
            attr, fresh = self._fetch_attr(n)
            if cached and fresh:
                self._cache.put_attr(token, attr)
        if n.qid_path in self._orphans:
            if self._open_file_of(n.qid_path) is None:
                with self._handles_lock:
                    self._orphans.discard(n.qid_path)
            return attr._replace(nlink=0)
        return attr

    def _fetch_attr(self, n: GlusterNode) -> tuple[Attr, bool]:
        """(the attributes from gfapi, whether they are the object's: not those of an open
        file of it after it was unlinked, which the cache must not keep)."""
        try:
            with n._ref as obj:
                st = _gfapi.h_stat(self._fs, obj)
        except OSError as e:
            # Unlinked while open: the object is gone by gfid, an open file still sees it.
            if e.errno not in (errno.ENOENT, errno.ESTALE):
                raise
            file = self._open_file_of(n.qid_path)
            if file is None:
                # Gone (another client removed it before its upcall reached us): what the
                # cache says of it, the name that led here included, is stale now.
                self._cache.invalidate(n.qid_path, "stale")
                raise
            with file._ref as fd:
                return _attr(_gfapi.fstat(fd), n.qid_path), False
        return _attr(st, n.qid_path), True

    def _open_deferred(self, qid: int) -> None:
        """Make the ``glfs_fd`` of every deferred open of ``qid`` now (before the file can
        go: a gfid no longer opens once its last name is gone)."""
        with self._handles_lock:
            files = [f for f in self._files if f._qid == qid and f._fd is None]
        for file in files:
            with contextlib.suppress(OSError):
                _ = file._ref

    def _open_file_of(self, qid: int) -> GlusterOpenFile | None:
        """An open file of this backend on the object ``qid``, if there is one."""
        with self._handles_lock:
            files = list(self._files)
        for file in files:
            if file._qid == qid and not file.closed:
                return file
        return None

    @_einval_on_value_error
    def setattr(
        self,
        node: Node,
        *,
        mode: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
        size: int | None = None,
        atime_ns: int | None = None,
        mtime_ns: int | None = None,
    ) -> None:
        n = self._node(node)
        ftype = n.file_type
        if mode is not None:
            if not 0 <= mode <= 0o7777:
                raise _err(errno.EINVAL)
            if ftype == stat.S_IFLNK:
                raise _err(errno.EOPNOTSUPP)  # Linux has no symlink modes
        if size is not None:
            if not 0 <= size <= _I64_MAX:
                raise _err(errno.EINVAL)
            if ftype == stat.S_IFDIR:
                raise _err(errno.EISDIR)
            if ftype != stat.S_IFREG:
                raise _err(errno.EINVAL)
        owner = _gfapi.Stat()
        owner_valid = 0
        if uid is not None:
            owner.st_uid = _id(uid)
            owner_valid |= _gfapi.SET_ATTR_UID
        if gid is not None:
            owner.st_gid = _id(gid)
            owner_valid |= _gfapi.SET_ATTR_GID
        times = _gfapi.Stat()
        times_valid = 0
        if atime_ns is not None:
            times.st_atim = _timespec(atime_ns)
            times_valid |= _gfapi.SET_ATTR_ATIME
        if mtime_ns is not None:
            times.st_mtim = _timespec(mtime_ns)
            times_valid |= _gfapi.SET_ATTR_MTIME
        with n._ref as obj:
            if owner_valid:
                _gfapi.h_setattrs(self._fs, obj, owner, owner_valid)
                self._changed(n.qid_path)
            if mode is not None:
                perms = _gfapi.Stat()
                perms.st_mode = ftype | mode
                _gfapi.h_setattrs(self._fs, obj, perms, _gfapi.SET_ATTR_MODE)
                self._changed(n.qid_path)
            try:
                if size is not None:
                    _gfapi.h_truncate(self._fs, obj, size)
                if times_valid:
                    _gfapi.h_setattrs(self._fs, obj, times, times_valid)
            finally:
                self._changed(n.qid_path)

    # -- I/O -----------------------------------------------------------------------------------

    @_einval_on_value_error
    def open(self, node: Node, flags: int) -> OpenFile:
        n = self._node(node)
        ftype = n.file_type
        if ftype == stat.S_IFLNK:
            raise _err(errno.ELOOP)
        if ftype not in (stat.S_IFREG, stat.S_IFDIR):
            raise _err(errno.EPERM)
        accmode = flags & os.O_ACCMODE
        if accmode == os.O_ACCMODE:
            raise _err(errno.EINVAL)
        is_dir = ftype == stat.S_IFDIR
        if flags & os.O_DIRECTORY and not is_dir:
            raise _err(errno.ENOTDIR)
        if is_dir:
            if accmode != os.O_RDONLY or flags & os.O_TRUNC:
                raise _err(errno.EISDIR)
            fd = self._opendir(n)
        elif n._cache == "all" and accmode == os.O_RDONLY and not flags & os.O_TRUNC:
            return self._wrap_deferred(n, flags & _IO_FLAGS_KEPT)
        else:
            with n._ref as obj:
                fd = _gfapi.h_open(self._fs, obj, flags & _IO_FLAGS_KEPT)
            if flags & os.O_TRUNC:
                self._changed(n.qid_path)
        return self._wrap_fd(fd, n, is_dir=is_dir, accmode=accmode)

    def _opendir(self, n: GlusterNode) -> int:
        """``glfs_h_opendir``, retried on ENOENT for a moment: the brick reaches a directory by
        gfid through a handle naming its parent and name, which another client's rename of
        that directory leaves dangling for a few microseconds (the directory is there)."""
        for delay in _OPENDIR_RETRY:
            try:
                with n._ref as obj:
                    return _gfapi.h_opendir(self._fs, obj)
            except OSError as e:
                if e.errno not in (errno.ENOENT, errno.ESTALE):
                    raise
                time.sleep(delay)
        with n._ref as obj:
            return _gfapi.h_opendir(self._fs, obj)

    def _wrap_deferred(self, n: GlusterNode, flags: int) -> GlusterOpenFile:
        node = self._clone(n)
        file = GlusterOpenFile(
            self, None, n.qid_path, is_dir=False, accmode=os.O_RDONLY, cache_data=True,
            deferred=(node, flags),
        )  # fmt: skip
        with self._handles_lock:
            self._files.add(file)
        return file

    def _wrap_fd(
        self, fd: int, node: GlusterNode, *, is_dir: bool, accmode: int
    ) -> GlusterOpenFile:
        file = GlusterOpenFile(
            self, fd, node.qid_path, is_dir=is_dir, accmode=accmode,
            cache_data=node._cache == "all" and not is_dir,
        )  # fmt: skip
        with self._handles_lock:
            self._files.add(file)
        return file

    @_einval_on_value_error
    def create(self, parent: Node, name: str, flags: int, mode: int) -> tuple[Node, OpenFile]:
        p = self._dir_node(parent)
        raw = _name(name)
        accmode = flags & os.O_ACCMODE
        if accmode == os.O_ACCMODE:
            raise _err(errno.EINVAL)
        oflags = flags & _IO_FLAGS_KEPT & ~os.O_TRUNC
        try:
            with p._ref as pobj:
                made = _gfapi.h_creat(
                    self._fs, pobj, raw, oflags | os.O_CREAT | os.O_EXCL, mode & 0o7777
                )
        finally:
            self._changed(p.qid_path, name=raw)
        node = self._adopt(made, p._cache)
        try:
            with node._ref as obj:
                fd = _gfapi.h_open(self._fs, obj, oflags)
            return node, self._wrap_fd(fd, node, is_dir=False, accmode=accmode)
        except BaseException:
            node.close()
            raise

    def _io_check(self, file: OpenFile, offset: int, refused: int) -> GlusterOpenFile:
        f = self._file(file)
        if f._is_dir:
            raise _err(errno.EISDIR)
        if f._accmode == refused:
            raise _err(errno.EBADF)
        if not 0 <= offset <= _I64_MAX:
            raise _err(errno.EINVAL)
        return f

    @_einval_on_value_error
    def read(self, file: OpenFile, offset: int, buf: memoryview) -> int:
        f = self._io_check(file, offset, os.O_WRONLY)
        if not f._cache_data:
            with f._ref as fd:
                return _gfapi.pread(fd, buf, offset)
        done, complete = self._from_cache(f._qid, offset, buf)
        if complete:
            return done
        return done + self._read_through(f, offset + done, buf[done:])

    def read_nowait(self, file: OpenFile, offset: int, buf: memoryview) -> int | None:
        """From the data cache only (shares in cache mode ``all``); None on any miss."""
        try:
            f = self._io_check(file, offset, os.O_WRONLY)
        except OSError:
            return None  # read() will say why
        if not f._cache_data:
            return None
        done, complete = self._from_cache(f._qid, offset, buf)
        return done if complete else None

    def _from_cache(self, qid: int, offset: int, buf: memoryview) -> tuple[int, bool]:
        """Copy what the cache holds of ``qid`` from ``offset`` on into ``buf``: (bytes
        copied, whether that answers the read: ``buf`` full or the end of file reached)."""
        want = buf.nbytes
        done = 0
        while done < want:
            pos = offset + done
            index, skip = divmod(pos, BLOCK)
            block = self._cache.block(qid, index)
            if block is None:
                return done, False
            n = max(0, min(len(block) - skip, want - done))
            buf[done : done + n] = block[skip : skip + n]
            done += n
            if len(block) < BLOCK and skip + n >= len(block):
                return done, True  # a short block ends the file
        return done, True

    def _read_through(self, f: GlusterOpenFile, offset: int, buf: memoryview) -> int:
        """Read the whole blocks under ``buf`` with one ``glfs_pread``, cache them, copy."""
        start = offset - offset % BLOCK
        end = -(-(offset + buf.nbytes) // BLOCK) * BLOCK
        span = bytearray(end - start)
        token = self._cache.token()
        with f._ref as fd:
            got = _gfapi.pread(fd, memoryview(span), start)
        view = memoryview(span)
        for at in range(start, start + got + 1, BLOCK):
            chunk = bytes(view[at - start : min(at - start + BLOCK, got)])
            if at >= start + got and got == len(span):
                break  # every block full: the end of file is not known
            self._cache.put_block(token, f._qid, at // BLOCK, chunk)
        n = max(0, min(got - (offset - start), buf.nbytes))
        buf[:n] = view[offset - start : offset - start + n]
        return n

    @_einval_on_value_error
    def write(self, file: OpenFile, offset: int, data: memoryview) -> int:
        f = self._io_check(file, offset, os.O_RDONLY)
        if offset + data.nbytes > _I64_MAX:
            raise _err(errno.EFBIG)
        try:
            with f._ref as fd:
                return _gfapi.pwrite(fd, data, offset)
        finally:
            self._changed(f._qid)

    @_einval_on_value_error
    def readdir(self, file: OpenFile, cookie: int, max_entries: int) -> Sequence[DirEntry]:
        f = self._file(file)
        if not f._is_dir:
            raise _err(errno.ENOTDIR)
        if max_entries < 1 or not 0 <= cookie <= _U64:
            raise _err(errno.EINVAL)
        position = cookie - (1 << 64) if cookie > _I64_MAX else cookie
        out: list[DirEntry] = []
        dirent, st = f._dirent, f._dirstat
        assert dirent is not None and st is not None
        limit = min(max_entries, _READDIR_BATCH_MAX)
        with f._ref as fd, f._dir_lock:
            _gfapi.seekdir(fd, position)
            while len(out) < limit and _gfapi.readdirplus(fd, dirent, st):
                qid = st.st_ino or dirent.d_ino
                ftype = (dirent.d_type << 12) or stat.S_IFMT(st.st_mode)
                out.append(DirEntry(_decode(dirent.d_name), qid, ftype, dirent.d_off & _U64))
        return out

    @_einval_on_value_error
    def fsync(self, file: OpenFile, *, datasync: bool) -> None:
        f = self._file(file)
        if f._is_dir:
            with f._ref:
                return  # see the module note
        with f._ref as fd:
            if datasync:
                _gfapi.fdatasync(fd)
            else:
                _gfapi.fsync(fd)

    # -- names ---------------------------------------------------------------------------------

    @_einval_on_value_error
    def mkdir(self, parent: Node, name: str, mode: int) -> Node:
        p = self._dir_node(parent)
        raw = _name(name)
        try:
            with p._ref as pobj:
                return self._adopt(_gfapi.h_mkdir(self._fs, pobj, raw, mode & 0o7777), p._cache)
        finally:
            self._changed(p.qid_path, name=raw)

    @_einval_on_value_error
    def symlink(self, parent: Node, name: str, target: str) -> Node:
        p = self._dir_node(parent)
        raw = _name(name)
        raw_target = target.encode("utf-8", "surrogateescape")
        if not raw_target:
            raise _err(errno.ENOENT)  # as symlink(2)
        try:
            with p._ref as pobj:
                return self._adopt(_gfapi.h_symlink(self._fs, pobj, raw, raw_target), p._cache)
        finally:
            self._changed(p.qid_path, name=raw)

    @_einval_on_value_error
    def mknod(self, parent: Node, name: str, mode: int, rdev: int) -> Node:
        p = self._dir_node(parent)
        raw = _name(name)
        kind = stat.S_IFMT(mode)
        if kind in (stat.S_IFCHR, stat.S_IFBLK):
            raise _err(errno.EPERM)  # never device nodes, whoever asks
        if kind not in (stat.S_IFIFO, stat.S_IFSOCK):
            raise _err(errno.EINVAL)
        try:
            with p._ref as pobj:
                made = _gfapi.h_mknod(self._fs, pobj, raw, kind | (mode & 0o7777), 0)
        finally:
            self._changed(p.qid_path, name=raw)
        return self._adopt(made, p._cache)

    def readlink(self, node: Node) -> str:
        n = self._node(node)
        if n.file_type != stat.S_IFLNK:
            raise _err(errno.EINVAL)
        with n._ref as obj:
            return _decode(_gfapi.h_readlink(self._fs, obj))

    @_einval_on_value_error
    def link(self, parent: Node, name: str, target: Node) -> None:
        p = self._dir_node(parent)
        t = self._node(target)
        raw = _name(name)
        if t.file_type == stat.S_IFDIR:
            raise _err(errno.EPERM)
        try:
            with p._ref as pobj, t._ref as tobj:
                _gfapi.h_link(self._fs, tobj, pobj, raw)
        finally:
            self._changed(p.qid_path, name=raw)
            self._changed(t.qid_path)

    @_einval_on_value_error
    def rename(self, old_parent: Node, old_name: str, new_parent: Node, new_name: str) -> None:
        op = self._dir_node(old_parent)
        np_ = self._dir_node(new_parent)
        old_raw = _name(old_name)
        new_raw = _name(new_name)
        # The moved object's ctime and a replaced one's nlink change too: drop them if the
        # cache knows who they are (it cannot have their attributes from this name else).
        moved = [self._cached_child_qid(op, old_raw), self._cached_child_qid(np_, new_raw)]
        try:
            with op._ref as oobj, np_._ref as nobj:
                _gfapi.h_rename(self._fs, oobj, old_raw, nobj, new_raw)
        except OSError as e:
            if e.errno != errno.EEXIST:
                raise
            # GlusterFS answers EEXIST where rename(2) says EISDIR (a non-directory over a
            # directory) or ENOTDIR (a directory over a non-directory).
            old_kind, new_kind = self._kind(op, old_raw), self._kind(np_, new_raw)
            if new_kind == stat.S_IFDIR and old_kind not in (None, stat.S_IFDIR):
                raise _err(errno.EISDIR) from None
            if old_kind == stat.S_IFDIR and new_kind not in (None, stat.S_IFDIR):
                raise _err(errno.ENOTDIR) from None
            raise
        finally:
            self._changed(op.qid_path, name=old_raw)
            self._changed(np_.qid_path, name=new_raw)
            for qid in moved:
                if qid is not None:
                    self._changed(qid)

    def _kind(self, parent: GlusterNode, raw: bytes) -> int | None:
        """The S_IFMT of ``parent/raw``, None if it cannot be looked up."""
        try:
            child = self._lookup(parent, raw)
        except OSError:
            return None
        child.close()
        return child.file_type

    @_einval_on_value_error
    def unlink(self, parent: Node, name: str, *, rmdir: bool) -> None:
        p = self._dir_node(parent)
        raw = _name(name)
        # The type decides the errno (module note: unlink).
        with p._ref as pobj:
            obj, st = _gfapi.h_lookupat(self._fs, pobj, raw, follow=False)
        try:
            gfid = _gfapi.h_extract_handle(obj)
        finally:
            _gfapi.h_close(obj)
        kind = stat.S_IFMT(st.st_mode)
        if rmdir and kind != stat.S_IFDIR:
            raise _err(errno.ENOTDIR)
        if not rmdir and kind == stat.S_IFDIR:
            raise _err(errno.EISDIR)
        qid = qid_of_gfid(gfid)
        self._open_deferred(qid)  # an open file stays readable after its unlink, as POSIX
        try:
            with p._ref as pobj:
                _gfapi.h_unlink(self._fs, pobj, raw)
        finally:
            self._changed(p.qid_path, name=raw)
            self._cache.invalidate(qid, "local")
        if kind == stat.S_IFREG and st.st_nlink == 1 and self._open_file_of(qid) is not None:
            with self._handles_lock:
                self._orphans.add(qid)

    def statfs(self, node: Node) -> StatFs:
        n = self._node(node)
        with n._ref as obj:
            st = _gfapi.h_statfs(self._fs, obj)
        return StatFs(
            fs_type=_FUSE_SUPER_MAGIC,
            bsize=st.f_frsize or st.f_bsize,  # the unit of the block counts
            blocks=st.f_blocks,
            bfree=st.f_bfree,
            bavail=st.f_bavail,
            files=st.f_files,
            ffree=st.f_ffree,
            fsid=st.f_fsid & _U64,
            namelen=st.f_namemax,
        )

    # -- xattrs (only user.* and POSIX ACLs: module note, point 6) -------------------------------

    @_einval_on_value_error
    def getxattr(self, node: Node, name: str) -> bytes:
        n = self._node(node)
        raw = _xattr_name(name)
        if n.file_type == stat.S_IFLNK:
            raise _err(errno.ENODATA)  # point 6: no xattr call on a symlink object
        with n._ref as obj:
            return _gfapi.h_getxattr(self._fs, obj, raw)

    def listxattr(self, node: Node) -> list[str]:
        n = self._node(node)
        if n.file_type == stat.S_IFLNK:
            return []
        with n._ref as obj:
            names = _gfapi.h_listxattr(self._fs, obj)
        return [s for s in map(_decode, names) if _xattr_allowed(s)]

    @_einval_on_value_error
    def setxattr(self, node: Node, name: str, value: bytes, flags: int) -> None:
        n = self._node(node)
        raw = _xattr_name(name)
        if flags not in (0, os.XATTR_CREATE, os.XATTR_REPLACE):
            raise _err(errno.EINVAL)
        if len(value) > _XATTR_SIZE_MAX:
            raise _err(errno.E2BIG)
        if n.file_type == stat.S_IFLNK:
            raise _err(errno.EPERM)  # as Linux answers for user.* on a symlink
        try:
            with n._ref as obj:
                _gfapi.h_setxattr(self._fs, obj, raw, bytes(value), flags)
        finally:
            self._changed(n.qid_path)

    @_einval_on_value_error
    def removexattr(self, node: Node, name: str) -> None:
        n = self._node(node)
        raw = _xattr_name(name)
        if n.file_type == stat.S_IFLNK:
            raise _err(errno.EPERM)
        try:
            with n._ref as obj:
                _gfapi.h_removexattr(self._fs, obj, raw)
        finally:
            self._changed(n.qid_path)

    # -- volume --------------------------------------------------------------------------------

    def cache_stats(self) -> CacheStats:
        """The volume's cache counters (shared by every backend of the volume here)."""
        return self._cache.stats()

    def backend_calls(self) -> dict[str, int]:
        """Calls this process made that reached GlusterFS, by fop (``_gfapi.calls``)."""
        return _gfapi.calls()

    def close(self) -> None:
        """Close every node and open file this backend gave out (later use: EBADF), then
        release the volume's ``glfs`` (finalised when no other backend uses it, unless
        :func:`keep_connections` is on). Idempotent."""
        with self._handles_lock:
            if self._closed:
                return
            self._closed = True
            handles = list(self._handles)
        for ref in handles:
            ref.close()
        # Calls still using a handle release it when they end; finalising the glfs under
        # them would free memory they use, so wait for them (a stuck call leaks the glfs).
        if all(ref.wait_freed(_CLOSE_WAIT) for ref in handles):
            _release(self._vol)
