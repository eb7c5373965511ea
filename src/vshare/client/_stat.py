"""What the client reports about files and the Tsetattr messages it builds: :class:`StatResult`
(Rgetattr in ``os.stat_result``'s names), :class:`DirEntry` (one entry of ``scandir``), and
:func:`setattr_msg` / :func:`utime_msg`."""

from __future__ import annotations

from dataclasses import dataclass

from vshare.protocol import (
    GETATTR_BTIME,
    SETATTR_ATIME,
    SETATTR_ATIME_SET,
    SETATTR_MTIME,
    SETATTR_MTIME_SET,
    Qid,
    Rgetattr,
    Tsetattr,
)


@dataclass(frozen=True, slots=True)
class StatResult:
    """What Tgetattr says about a file, in ``os.stat_result``'s names."""

    st_mode: int
    st_ino: int
    st_nlink: int
    st_uid: int
    st_gid: int
    st_size: int
    st_atime_ns: int
    st_mtime_ns: int
    st_ctime_ns: int
    st_blksize: int
    st_blocks: int
    st_rdev: int
    qid: Qid
    st_dev: int = 0
    #: The birth time, when the server reports one (GETATTR_BTIME); None otherwise.
    st_birthtime_ns: int | None = None

    @property
    def st_atime(self) -> float:
        return self.st_atime_ns / 1e9

    @property
    def st_mtime(self) -> float:
        return self.st_mtime_ns / 1e9

    @property
    def st_ctime(self) -> float:
        return self.st_ctime_ns / 1e9

    @classmethod
    def from_rgetattr(cls, r: Rgetattr) -> StatResult:
        return cls(
            st_mode=r.mode,
            st_ino=r.qid.path,
            st_nlink=r.nlink,
            st_uid=r.uid,
            st_gid=r.gid,
            st_size=r.size,
            st_atime_ns=r.atime_sec * 10**9 + r.atime_nsec,
            st_mtime_ns=r.mtime_sec * 10**9 + r.mtime_nsec,
            st_ctime_ns=r.ctime_sec * 10**9 + r.ctime_nsec,
            st_blksize=r.blksize,
            st_blocks=r.blocks,
            st_rdev=r.rdev,
            qid=r.qid,
            st_birthtime_ns=(
                r.btime_sec * 10**9 + r.btime_nsec if r.valid & GETATTR_BTIME else None
            ),
        )


@dataclass(frozen=True, slots=True)
class DirEntry:
    """One entry of :meth:`AsyncShare.scandir`; ``stat`` is None when not asked for or
    when the entry vanished between the listing and its getattr."""

    name: str
    path: str
    d_type: int
    qid: Qid
    stat: StatResult | None = None

    def is_dir(self) -> bool:
        return self.d_type == 4  # DT_DIR

    def is_file(self) -> bool:
        return self.d_type == 8  # DT_REG

    def is_symlink(self) -> bool:
        return self.d_type == 10  # DT_LNK


def setattr_sec_nsec(
    valid: int,
    *,
    mode: int = 0,
    uid: int = 0,
    gid: int = 0,
    size: int = 0,
    atime: tuple[int, int] = (0, 0),
    mtime: tuple[int, int] = (0, 0),
) -> Tsetattr:
    return Tsetattr(0, valid, mode, uid, gid, size, atime[0], atime[1], mtime[0], mtime[1])


def utime_msg(times: tuple[float, float] | None, ns: tuple[int, int] | None) -> Tsetattr:
    """The Tsetattr (fid 0, to be replaced) of ``os.utime(path, times, ns=ns)``."""
    if times is not None and ns is not None:
        raise ValueError("give times or ns, not both")
    if times is not None:
        ns = (int(times[0] * 1e9), int(times[1] * 1e9))
    if ns is None:
        return setattr_sec_nsec(SETATTR_ATIME | SETATTR_MTIME)
    return setattr_sec_nsec(
        SETATTR_ATIME | SETATTR_MTIME | SETATTR_ATIME_SET | SETATTR_MTIME_SET,
        atime=divmod(ns[0], 10**9),
        mtime=divmod(ns[1], 10**9),
    )


def setattr_msg(
    valid: int,
    *,
    mode: int = 0,
    uid: int = 0,
    gid: int = 0,
    size: int = 0,
    atime_ns: int = 0,
    mtime_ns: int = 0,
) -> Tsetattr:
    """A Tsetattr (fid 0, to be replaced) from SETATTR_* bits and values."""
    return setattr_sec_nsec(
        valid,
        mode=mode,
        uid=uid,
        gid=gid,
        size=size,
        atime=divmod(atime_ns, 10**9),
        mtime=divmod(mtime_ns, 10**9),
    )
