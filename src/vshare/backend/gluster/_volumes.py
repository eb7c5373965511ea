"""One ``glfs`` per volume per process: the registry of connected volumes, each with its
cache and upcall listener, and whether the volume announces changes (package note: Other
rules). A :class:`~vshare.backend.gluster.GlusterBackend` takes a volume with
:func:`acquire` and gives it back with :func:`release`."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import urlsplit

from vshare.backend import _gfapi, _gfapi_abi
from vshare.backend._cache import VolumeCache
from vshare.backend.gluster import _options
from vshare.backend.gluster._fields import qid_of_gfid

__all__ = [
    "CACHE_VOLUME_OPTIONS",
    "DEFAULT_PORT",
    "XLATOR_OPTIONS",
    "Ancestry",
    "Volume",
    "acquire",
    "cache_fallbacks",
    "check_options",
    "keep_connections",
    "parse_uri",
    "release",
    "shutdown",
    "watch",
]

log = logging.getLogger("vshare.backend.gluster")

DEFAULT_PORT: Final = 24007
#: How long a cache entry lives at most with upcalls (below GlusterFS's default 60 s
#: ``features.cache-invalidation-timeout``, after which the brick stops telling us) and
#: without them.
_CACHE_TTL: Final = 50.0
_CACHE_TTL_BLIND: Final = 1.0
#: How old the answer to "does this volume announce changes?" may be when a share is
#: attached (the check costs ~55 ms: a ``gluster volume info`` round trip).
_OPTIONS_RECHECK: Final = 60.0
#: What a volume needs for shares in cache mode ``meta`` or ``all`` to see other clients'
#: changes within about a second (``gluster volume set VOLUME KEY VALUE``): the bricks send
#: upcalls, and remember a client that touched an object for longer than our entries live.
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


class Ancestry:
    """Where each object of the volume was found: child qid → the directories (qid paths)
    a lookup, listing or create of this process found it in, newest last. Kept only while
    a share of the volume is watched (:func:`watch`), for the change feed's one question:
    is an object an upcall names below a share's root? GlusterFS names objects by gfid
    only, and asking it for an object's path costs a round trip or more per upcall; but a
    client can only know an object it found through this gateway, so the objects worth
    telling about are the ones found here, and their chain of directories is here too.

    Security: an object is below a root only if a chain of directories it was found in
    leads there; a rename moves the object (:meth:`note` with ``moved``, from this
    gateway's renames and from rename upcalls), so a file moved to another share stops
    being told to the old one. Unknown (never found here, or forgotten): not below.
    Bounded: :data:`MAX` objects (the oldest forgotten first), :data:`LINKS` directories
    each (hard links), :data:`DEPTH` levels searched."""

    MAX: Final = 1 << 17
    LINKS: Final = 4
    DEPTH: Final = 256

    def __init__(self) -> None:
        self._up: dict[int, tuple[int, ...]] = {}
        self._lock = threading.Lock()
        #: Whether anyone watches (read without the lock: the hot path's only cost).
        self.active = False

    def note(self, parent: int, child: int, *, moved: bool = False) -> None:
        """``child`` was found in directory ``parent`` (with ``moved``: only there now)."""
        if not self.active or parent == child:
            return
        with self._lock:
            old = self._up.pop(child, ())
            if moved or not old:
                self._up[child] = (parent,)
            else:
                self._up[child] = (*(p for p in old if p != parent), parent)[-self.LINKS :]
            if len(self._up) > self.MAX:
                del self._up[next(iter(self._up))]

    def below(self, qid: int, root: int) -> bool:
        """Whether ``qid`` is ``root`` or was found below it."""
        todo, seen = [qid], set[int]()
        with self._lock:
            while todo and len(seen) < self.DEPTH:
                q = todo.pop()
                if q == root:
                    return True
                if q not in seen:
                    seen.add(q)
                    todo.extend(self._up.get(q, ()))
        return False

    def clear(self) -> None:
        with self._lock:
            self._up.clear()


ChangeCallback = Callable[[list[int]], None]


@dataclass(eq=False)
class Volume:
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
    #: The change feed's watchers (:func:`watch`): token → (root qid, callback).
    watchers: dict[object, tuple[int, ChangeCallback]] = field(default_factory=dict)
    ancestry: Ancestry = field(default_factory=Ancestry)


_volumes: dict[tuple[str, int, str], Volume] = {}
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


def _fini(vol: Volume) -> None:
    if vol.upcall_cbk is not None:
        with contextlib.suppress(OSError):
            _gfapi.upcall_unregister(vol.fs, _gfapi_abi.EVENT_INODE_INVALIDATE)
    vol.cache.clear()  # closes the objects the name cache holds, before the glfs goes
    try:
        _gfapi.fini(vol.fs)
    except OSError as exc:  # e.g. objects leaked by a caller; the glfs is gone regardless
        log.warning("glfs_fini of gluster://%s:%d/%s: %s", *vol.key, exc)


def acquire(
    host: str, port: int, volume: str, log_file: str | None, log_level: int, cache_bytes: int
) -> Volume:
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
            vol = _volumes[key] = Volume(key, fs, VolumeCache(cache_bytes, _CACHE_TTL))
            _listen(vol)
            check_options(vol)
        vol.users += 1
        return vol


def _listen(vol: Volume) -> None:
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
            qids = [qid_of_gfid(gfid) for gfid in gfids]
            for qid in qids:
                cache.invalidate(qid, "upcall")
            if vol.watchers and qids:
                _announce(vol, qids)
        except Exception:
            log.exception("upcall of gluster://%s:%d/%s", *vol.key)
        finally:
            with contextlib.suppress(OSError):
                _gfapi.free(up)

    cbk = _gfapi_abi.UPCALL_CBK(on_upcall)
    try:
        _gfapi.upcall_register(vol.fs, _gfapi_abi.EVENT_INODE_INVALIDATE, cbk)
    except OSError as exc:
        why = f"{_uri(vol)}: no upcalls ({exc.strerror})"
        log.warning("%s: cached entries live %.0f s", why, _CACHE_TTL_BLIND)
        cache.ttl = _CACHE_TTL_BLIND
        return
    vol.upcall_cbk = cbk


def _announce(vol: Volume, qids: list[int]) -> None:
    """Tell the watchers whose root holds them of the objects one upcall names: the object,
    then its parent and, for a rename, its old parent (``upcall_inode_handles``)."""
    ancestry = vol.ancestry
    if len(qids) > 1:  # the brick says where the object is (two parents: it was renamed)
        ancestry.note(qids[1], qids[0], moved=len(qids) > 2)
    with _volumes_lock:
        watchers = list(vol.watchers.values())
    for root, callback in watchers:
        told = [q for q in qids if ancestry.below(q, root)]
        if told:
            callback(told)


def watch(vol: Volume, root: int, callback: ChangeCallback) -> Callable[[], None] | None:
    """Have ``callback`` told of the objects below ``root`` that other clients change
    (:meth:`Backend.watch_changes`); None when the volume sends no upcalls, or its options
    say the bricks will not (:func:`check_options`)."""
    if vol.upcall_cbk is None or check_options(vol) is not None:
        return None
    token = object()
    with _volumes_lock:
        vol.watchers[token] = (root, callback)
        vol.ancestry.active = True

    def stop() -> None:
        with _volumes_lock:
            vol.watchers.pop(token, None)
            if not vol.watchers:
                vol.ancestry.active = False
                vol.ancestry.clear()

    return stop


def check_options(vol: Volume) -> str | None:
    """Ask glusterd whether ``vol`` announces other clients' changes (see
    :mod:`._options`), when the last answer is older than :data:`_OPTIONS_RECHECK`;
    log when the answer changes. Returns why shares cannot cache (None: they can)."""
    now = time.monotonic()
    if now - vol.checked < _OPTIONS_RECHECK:
        return vol.problem
    host, _, volume = vol.key
    try:
        options = _options.volume_options(host, volume)
    except OSError as exc:
        problem: str | None = f"cannot read the volume's options ({exc})"
    else:
        problem = _options.coherence_problem(options, volume, _CACHE_TTL)
    vol.checked = now
    if problem != vol.problem:
        if problem is None:
            log.info("%s: announces changes: share cache modes apply", _uri(vol))
        else:
            why = f"{_uri(vol)}: share cache modes meta and all are served as none"
            log.warning("%s: %s", why, problem)
    vol.problem = problem
    return problem


def cache_fallbacks() -> dict[str, tuple[str | None, int]]:
    """Per connected volume (``gluster://HOST:PORT/VOLUME``): why its shares cannot cache
    (None: they can) and how many attaches were served as ``none`` for that."""
    with _volumes_lock:
        vols = list(_volumes.values())
    return {_uri(v): (v.problem, v.fallbacks) for v in vols}


def release(vol: Volume) -> None:
    with _volumes_lock:
        vol.users -= 1
        if vol.users > 0 or _keep or not vol.alive:
            return
        del _volumes[vol.key]
        vol.alive = False
    _fini(vol)


def _uri(vol: Volume) -> str:
    return "gluster://{}:{}/{}".format(*vol.key)
