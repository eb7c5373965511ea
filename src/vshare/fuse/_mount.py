"""Mounting and unmounting: :func:`mount_main` and :func:`unmount`.

The file system runs in the foreground process (``foreground=True``: what the tests and
``python -m vshare.fuse`` use); without it, :func:`mount_main` starts that same command
as a detached child and returns once the mount is up (or with the child's error), so
``vshare mount`` behaves like ``mount``: it returns, and the mount stays.
"""

from __future__ import annotations

import errno
import logging
import os
import pwd
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from vshare.client._session import DEFAULT_MSIZE
from vshare.node.mounts import find_mount

log = logging.getLogger("vshare.fuse")

#: How long a background mount may take before mount_main gives up on it.
MOUNT_WAIT = 60.0


def is_mounted(mountpoint: str) -> bool:
    return find_mount(os.path.realpath(mountpoint)) is not None


@dataclass(frozen=True)
class _Mount:
    """One mount as :func:`mount_main` was asked for it: served here (:func:`_serve`) or
    by a detached child that :func:`_background` starts with the same settings."""

    gateways: Sequence[str]
    share: str
    mountpoint: str
    cache: str
    readonly: bool
    reconnect_timeout: float
    msize: int


async def _serve(m: _Mount) -> None:
    import anyio

    from vshare.client import open_share
    from vshare.fuse._feed import Feed
    from vshare.fuse._ops import VshareOperations
    from vshare.fuse.device import DeviceSession, mount_device
    from vshare.protocol import IOHDRSZ
    from vshare.transport import TaskSet

    # Attach as the mounting user, as the kernel client does: servers that map users
    # (diod) need one; the gateway takes identity only from the transport, never from here.
    uid = os.getuid()
    try:
        uname = pwd.getpwuid(uid).pw_name
    except KeyError:
        uname = str(uid)
    async with open_share(
        list(m.gateways),
        m.share,
        msize=m.msize,
        reconnect_timeout=m.reconnect_timeout,
        uname=uname,
        n_uname=uid,
    ) as shared:
        ops = VshareOperations(shared, cache=m.cache, readonly=m.readonly)
        # default_permissions: the kernel checks modes, as on a local disk. nosuid: set-id
        # bits and file capabilities of a share never apply here (and the getxattr of
        # security.capability is answered locally, see _ops).
        options = {
            "default_permissions",
            "fsname=vshare",
            f"subtype=vshare.{m.share}",
            "allow_other",
            "nosuid",
            "nodev",
            "ro" if m.readonly else "rw",
        }
        target = os.path.realpath(m.mountpoint)  # now: once mounted, a stat would hang
        # Writes as large as one Twrite carries.
        max_write = (m.msize - IOHDRSZ) // 4096 * 4096
        device = DeviceSession(ops, mount_device(m.mountpoint, options), max_write=max_write)
        ops.background = background = TaskSet()
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(_widen_readahead, target)
                if m.cache == "coherent":  # the gateway's changes, pushed (fuse/_feed.py)
                    ops.feed = Feed(ops, target, device)
                    tasks.start_soon(ops.feed.run)
                try:
                    await device.serve()
                finally:
                    await background.aclose()
                tasks.cancel_scope.cancel()  # the feed's long poll ends with the mount
        finally:
            # No unmount after an external umount: the kernel already let go.
            # ``target``, resolved before the mount: resolving the mountpoint now would
            # stat it, and this process is the one that answers that stat.
            device.close(mountpoint=target if find_mount(target) is not None else None)


#: Read-ahead of the mount, in KiB: the kernel's default for FUSE is 128 KiB, so a
#: sequential read reaches the gateway as 128 KiB Treads, one round trip each; 1 MiB
#: matches the largest message.
READAHEAD_KIB = 1024


async def _widen_readahead(target: str) -> None:
    """Raise the read-ahead of the mount at ``target`` (a resolved path) through its
    backing_dev_info in sysfs (root only; best effort). The kernel lowers it to its own
    offer when it takes the reply to FUSE_INIT, so this waits until that has happened and
    the value stays. Nothing here may touch the mount itself: a stat of it would wait for
    this process."""
    import anyio

    mount = find_mount(target)
    if mount is None:
        return
    knob = f"/sys/class/bdi/{mount.device}/read_ahead_kb"
    wanted = f"{READAHEAD_KIB}"
    for _ in range(50):
        await anyio.sleep(0.1)
        try:
            with open(knob, "r+") as f:
                if f.read().strip() == wanted:
                    return
                f.seek(0)
                f.write(wanted + "\n")
        except OSError as exc:
            log.debug("read-ahead of %s left at the default: %s", target, exc)
            return


def mount_main(
    gateways: list[str],
    share: str,
    mountpoint: str,
    *,
    cache: str = "auto",
    readonly: bool = False,
    reconnect_timeout: float = 30.0,
    foreground: bool = False,
    msize: int = DEFAULT_MSIZE,
) -> int:
    """Mount ``share`` of the first reachable gateway of ``gateways`` at ``mountpoint``.

    Returns an exit status: 0 (foreground: after a clean unmount; background: once the
    mount is up), 1 with one ``vshare: ...`` line on stderr (no gateway reachable, share
    refused, mountpoint unusable), 2 for a usage mistake.
    """
    if cache not in ("none", "auto", "always", "coherent"):
        print(
            f"vshare: --cache must be none, auto, always or coherent, not {cache!r}",
            file=sys.stderr,
        )
        return 2
    if not gateways:
        print("vshare: at least one gateway URI is needed", file=sys.stderr)
        return 2
    if not os.path.isdir(mountpoint):
        print(f"vshare: {mountpoint}: not a directory", file=sys.stderr)
        return 1
    m = _Mount(gateways, share, mountpoint, cache, readonly, reconnect_timeout, msize)
    if not foreground:
        return _background(m)
    from vshare.fuse.device import MountError
    from vshare.transport import run_async

    try:
        # On asyncio (uvloop when installed): the device session reads /dev/fuse from
        # the loop's reader callback, as the connection to the gateway reads its socket.
        run_async(_serve, m)
    except KeyboardInterrupt:
        return 0
    except MountError as exc:
        print(f"vshare: cannot mount at {mountpoint}: {exc.strerror}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"vshare: {exc.strerror or exc}", file=sys.stderr)
        return 1
    return 0


def _background(m: _Mount) -> int:
    argv = [
        sys.executable,
        "-m",
        "vshare.fuse",
        *m.gateways[:1],
        m.share,
        m.mountpoint,
        "--cache",
        m.cache,
        "--reconnect-timeout",
        str(m.reconnect_timeout),
        "--msize",
        str(m.msize),
        "--foreground",
    ]
    for uri in m.gateways[1:]:
        argv += ["--gateway", uri]
    if m.readonly:
        argv.append("--readonly")
    child = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + MOUNT_WAIT
    while time.monotonic() < deadline:
        if is_mounted(m.mountpoint):
            assert child.stderr is not None
            child.stderr.close()  # the mount runs on, detached
            return 0
        if child.poll() is not None:
            assert child.stderr is not None
            sys.stderr.write(child.stderr.read().decode(errors="replace"))
            return child.returncode or 1
        time.sleep(0.05)
    child.kill()
    print(
        f"vshare: the mount at {m.mountpoint} did not come up in {MOUNT_WAIT:g} s", file=sys.stderr
    )
    return 1


def unmount(mountpoint: str) -> None:
    """Unmount a vshare FUSE mount; the serving process then exits.

    Raises:
        OSError: EBUSY when files are still open or a process works inside it (nothing
            is changed: close them, or ``umount -l`` to detach lazily); EINVAL when
            nothing is mounted there.
    """
    if not is_mounted(mountpoint):
        raise OSError(errno.EINVAL, "not mounted", mountpoint)
    done = subprocess.run(
        ["fusermount3", "-u", mountpoint], capture_output=True, text=True, check=False
    )
    if done.returncode == 0:
        return
    msg = done.stderr.strip() or "fusermount3 -u failed"
    if "busy" in msg.lower():
        raise OSError(
            errno.EBUSY, "the mount is busy (files open or a process inside it)", mountpoint
        )
    raise OSError(errno.EIO, msg, mountpoint)
