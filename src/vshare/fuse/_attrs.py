"""Attributes the FUSE client answers without asking: after its own changes.

Each reply to the kernel carries attributes. Asking the gateway for them after every
change would double the requests of a ``tar x`` (create, futimens, fchown, fchmod), so
after a change whose effect is known the client computes them from what it knew before
and what it changed, as the kernel's own v9fs does with its cached inode (cache=loose).
Where the effect is not known for sure (a set-id bit, ownership the gateway may squash,
a file that may have existed before) it asks.
"""

from __future__ import annotations

import stat as stat_mod
import time

from vshare.client import StatResult
from vshare.fuse import device
from vshare.protocol import (
    SETATTR_ATIME,
    SETATTR_ATIME_SET,
    SETATTR_CTIME,
    SETATTR_GID,
    SETATTR_MODE,
    SETATTR_MTIME,
    SETATTR_MTIME_SET,
    SETATTR_SIZE,
    SETATTR_UID,
    Qid,
    Tsetattr,
)

_SETID = stat_mod.S_ISUID | stat_mod.S_ISGID


def entry(inode: int, st: StatResult, timeout: float) -> device.EntryAttributes:
    """``inode`` is the kernel's handle; the inode number shown is the gateway's (its
    qid path: on a POSIX share, the host's inode number), the same in every mount and
    after a remount. Numbers of this mount's making, given in lookup order, made git
    see every file of a repository as changed after each mount, and read them all."""
    e = device.EntryAttributes()
    e.st_ino = inode
    e.shown_ino = st.qid.path
    e.generation = 0
    e.entry_timeout = timeout
    e.attr_timeout = timeout
    e.st_mode = st.st_mode
    e.st_nlink = st.st_nlink
    e.st_uid = st.st_uid
    e.st_gid = st.st_gid
    e.st_rdev = st.st_rdev
    e.st_size = st.st_size
    e.st_blksize = st.st_blksize or 4096
    e.st_blocks = st.st_blocks
    e.st_atime_ns = st.st_atime_ns
    e.st_mtime_ns = st.st_mtime_ns
    e.st_ctime_ns = st.st_ctime_ns
    return e


def negative_entry(timeout: float) -> device.EntryAttributes:
    """ "No such name", for the kernel to remember ``timeout`` seconds (st_ino 0)."""
    e = device.EntryAttributes()
    e.st_ino = 0
    e.entry_timeout = timeout
    return e


def setattr_from_fields(attr: device.EntryAttributes, fields: device.SetattrFields) -> Tsetattr:
    """The Tsetattr (fid 0, to be replaced) of a FUSE setattr."""
    valid = 0
    if fields.update_mode:
        valid |= SETATTR_MODE
    if fields.update_uid:
        valid |= SETATTR_UID
    if fields.update_gid:
        valid |= SETATTR_GID
    if fields.update_size:
        valid |= SETATTR_SIZE
    if fields.update_atime:
        valid |= SETATTR_ATIME | SETATTR_ATIME_SET
    if fields.update_mtime:
        valid |= SETATTR_MTIME | SETATTR_MTIME_SET
    if fields.update_ctime:
        valid |= SETATTR_CTIME
    return Tsetattr(
        0,
        valid,
        stat_mod.S_IMODE(attr.st_mode),
        attr.st_uid,
        attr.st_gid,
        attr.st_size,
        *divmod(attr.st_atime_ns, 10**9),
        *divmod(attr.st_mtime_ns, 10**9),
    )


def merge(first: Tsetattr | None, then: Tsetattr) -> Tsetattr:
    """One Tsetattr doing what ``first`` and then ``then`` do."""
    if first is None:
        return then
    v = then.valid
    return Tsetattr(
        then.fid,
        first.valid | v,
        then.mode if v & SETATTR_MODE else first.mode,
        then.uid if v & SETATTR_UID else first.uid,
        then.gid if v & SETATTR_GID else first.gid,
        then.size if v & SETATTR_SIZE else first.size,
        then.atime_sec if v & SETATTR_ATIME else first.atime_sec,
        then.atime_nsec if v & SETATTR_ATIME else first.atime_nsec,
        then.mtime_sec if v & SETATTR_MTIME else first.mtime_sec,
        then.mtime_nsec if v & SETATTR_MTIME else first.mtime_nsec,
    )


def setid_to_drop(mode: int) -> int:
    """The set-id bits Linux drops from a regular file of ``mode`` on a write, a
    truncation or an ownership change by a caller without CAP_FSETID: set-user-ID, and
    set-group-ID when group execute is on (else it marks mandatory locking)."""
    if not stat_mod.S_ISREG(mode):
        return 0
    drop = mode & stat_mod.S_ISUID
    if mode & stat_mod.S_IXGRP:
        drop |= mode & stat_mod.S_ISGID
    return drop


def is_known_effect(msg: Tsetattr, owners_honoured: bool | None, st: StatResult) -> bool:
    """Whether the attributes after ``msg`` (on a file whose attributes are ``st``) can be
    computed here: not for set-id bits (the gateway may refuse them) nor for an ownership
    change before we know whether the gateway keeps ownership (passthrough) or squashes
    it; a chown to the owners the file has changes them in neither (tar as root does one
    per file)."""
    if msg.valid & SETATTR_MODE and msg.mode & _SETID:
        return False
    if not msg.valid & (SETATTR_UID | SETATTR_GID) or owners_honoured is not None:
        return True
    return (not msg.valid & SETATTR_UID or msg.uid == st.st_uid) and (
        not msg.valid & SETATTR_GID or msg.gid == st.st_gid
    )


_TIMES = SETATTR_ATIME | SETATTR_MTIME | SETATTR_CTIME | SETATTR_ATIME_SET | SETATTR_MTIME_SET


def only_times(msg: Tsetattr) -> bool:
    return not msg.valid & ~_TIMES


def changes_nothing(msg: Tsetattr, st: StatResult) -> bool:
    """Whether ``msg`` only sets times to what ``st`` already says (ctime aside, which no
    client sets). The kernel sends such a one for every inode whose times it keeps itself
    (writeback cache) when it evicts it: sent, it would cost a request per file of an
    ``rm -rf``."""
    v = msg.valid
    if not v or v & ~_TIMES:
        return False
    if v & SETATTR_ATIME and not (
        v & SETATTR_ATIME_SET and msg.atime_sec * 10**9 + msg.atime_nsec == st.st_atime_ns
    ):
        return False
    return not (
        v & SETATTR_MTIME
        and not (v & SETATTR_MTIME_SET and msg.mtime_sec * 10**9 + msg.mtime_nsec == st.st_mtime_ns)
    )


def after_setattr(st: StatResult, msg: Tsetattr, owners_honoured: bool) -> StatResult:
    """``st`` as ``msg`` leaves it (ctime, and unset times, at this host's now)."""
    now = time.time_ns()
    v = msg.valid
    mode, uid, gid, size, blocks = st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_blocks
    atime, mtime = st.st_atime_ns, st.st_mtime_ns
    if v & SETATTR_MODE:
        mode = stat_mod.S_IFMT(mode) | (msg.mode & 0o7777)
    elif v & (SETATTR_UID | SETATTR_GID):
        # The gateway's chown on the host drops them (root is no exception on Linux).
        mode &= ~setid_to_drop(mode)
    if owners_honoured and v & SETATTR_UID:
        uid = msg.uid
    if owners_honoured and v & SETATTR_GID:
        gid = msg.gid
    if v & SETATTR_SIZE:
        size = msg.size
        if size == 0:
            blocks = 0
    if v & SETATTR_ATIME:
        atime = msg.atime_sec * 10**9 + msg.atime_nsec if v & SETATTR_ATIME_SET else now
    if v & SETATTR_MTIME:
        mtime = msg.mtime_sec * 10**9 + msg.mtime_nsec if v & SETATTR_MTIME_SET else now
    return _changed(st, mode, st.st_nlink, uid, gid, size, blocks, atime, mtime, now)


def _changed(
    st: StatResult,
    mode: int,
    nlink: int,
    uid: int,
    gid: int,
    size: int,
    blocks: int,
    atime_ns: int,
    mtime_ns: int,
    ctime_ns: int,
) -> StatResult:
    """``st`` with these fields: positionally, for ``dataclasses.replace`` costs twice as
    much, and the client makes one for most requests of a ``tar x`` (each setattr)."""
    return StatResult(
        mode, st.st_ino, nlink, uid, gid, size, atime_ns, mtime_ns, ctime_ns, st.st_blksize,
        blocks, st.st_rdev, st.qid, st.st_dev, st.st_birthtime_ns,
    )  # fmt: skip


def guesses_mtime(msg: Tsetattr) -> bool:
    """Whether :func:`after_setattr` puts this host's clock in the mtime (set to now, or
    a truncation), where the gateway puts its own: a difference that is not a change."""
    return bool(msg.valid & SETATTR_MTIME and not msg.valid & SETATTR_MTIME_SET)


def dir_changed(st: StatResult, links: int) -> StatResult:
    """A directory after a name was added or removed in it (``links``: +1 or -1 for a
    subdirectory, whose ``..`` links to it)."""
    now = time.time_ns()
    nlink = max(st.st_nlink + links, 1)
    return _changed(
        st, st.st_mode, nlink, st.st_uid, st.st_gid, st.st_size, st.st_blocks, st.st_atime_ns,
        now, now,
    )  # fmt: skip


def after_write(st: StatResult, end: int) -> StatResult:
    """A file after a write of ours that ended at ``end``."""
    now = time.time_ns()
    size = max(st.st_size, end)
    return _changed(
        st, st.st_mode, st.st_nlink, st.st_uid, st.st_gid, size, st.st_blocks, st.st_atime_ns,
        now, now,
    )  # fmt: skip


def new_file(qid: Qid, mode: int, uid: int, gid: int, blksize: int) -> StatResult:
    """A regular file this client just made with O_EXCL: empty, one link, now."""
    now = time.time_ns()
    return StatResult(
        st_mode=stat_mod.S_IFREG | (mode & 0o7777),
        st_ino=qid.path,
        st_nlink=1,
        st_uid=uid,
        st_gid=gid,
        st_size=0,
        st_atime_ns=now,
        st_mtime_ns=now,
        st_ctime_ns=now,
        st_blksize=blksize,
        st_blocks=0,
        st_rdev=0,
        qid=qid,
    )


def predictable_owner(parent: StatResult | None, uid: int, gid: int, mode: int) -> bool:
    """Whether a new file's attributes can be told without asking: made by the owner of
    a directory that is not set-gid, with no set-id bits. Then squash (every file shows
    the share's owner, which is the directory's) and passthrough (the caller's uid and
    gid) both give the caller's uid and gid."""
    return (
        parent is not None
        and (parent.st_uid, parent.st_gid) == (uid, gid)
        and not parent.st_mode & stat_mod.S_ISGID
        and not mode & _SETID
    )
