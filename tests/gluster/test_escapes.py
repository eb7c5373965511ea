"""Attacks specific to GlusterFS and its handle API, beyond the shared escape battery.

- virtual xattrs that reveal or change things outside the object (security note, point 6);
- gfapi's path resolver inside ``glfs_h_lookupat`` (``/``, ``..``, ``""``, ``.gfid``);
- name operations "under" a symlink's gfid, which the brick would resolve by following it
  (point 4), with targets on the brick host outside the brick;
- a guest renaming directories while swapping symlinks into their old names, and listing
  and creating in them at the same time (the brick resolves directory gfids by name).
"""

from __future__ import annotations

import errno
import os
import stat
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.gluster.conftest import Session
from tests.gluster.volume import GfapiVolumeFixture
from vshare.backend.base import Node
from vshare.backend.gluster import GlusterBackend
from vshare.testing.backend_conformance import raises_errno

SECRET = b"SECRET-outside-the-share"


@dataclass
class Env:
    backend: GlusterBackend
    share: Node
    host: GfapiVolumeFixture
    outside_on_host: Path  # a directory of the brick's host, outside the brick

    def snapshot(self) -> dict[str, tuple[object, ...]]:
        """Everything outside the share (the share itself is not walked)."""
        outside = GfapiVolumeFixture(self.host.fs, self.host.root, snapshot_skips="share")
        return outside.host_snapshot()


@pytest.fixture
def env(gluster_session: Session, tmp_path: Path) -> Iterator[Env]:
    rel = gluster_session.fresh_root("esc")
    host = gluster_session.host(rel)
    host.host_write("outside-secret", SECRET)
    host.host_write("outside-dir/secret-only-name", SECRET)
    host.host_mkdir("share/d")
    on_host = tmp_path / "host-dir"
    on_host.mkdir()
    (on_host / "host-file").write_bytes(SECRET)
    backend = GlusterBackend(f"{gluster_session.uri}/{rel}")
    share = backend.open_root("share")
    try:
        yield Env(backend, share, host, on_host)
    finally:
        backend.close()


def test_virtual_xattrs_are_refused(env: Env) -> None:
    b = env.backend
    d = b.lookup(env.share, "d")
    for name in (
        "glusterfs.ancestry.path",  # the path from the volume root
        "trusted.glusterfs.pathinfo",  # the brick's host path
        "glusterfs.pathinfo",
        "trusted.gfid",
        "glusterfs.gfid.string",
        "glusterfs.get_real_filename:outside-secret",
        "user.glusterfs.get_real_filename:outside-secret",
        "trusted.glusterfs.dht",
        "replica.split-brain-status",
        "security.selinux",
    ):
        with raises_errno(errno.EOPNOTSUPP):
            b.getxattr(d, name)
        with raises_errno(errno.EOPNOTSUPP):
            b.setxattr(d, name, b"x", 0)
        with raises_errno(errno.EOPNOTSUPP):
            b.removexattr(d, name)
    # creating a file by gfid anywhere in the volume (geo-replication's entry point)
    before = env.snapshot()
    payload = b"00000000-0000-0000-0000-000000000001\0" + b"planted\0"
    for name in ("glusterfs.gfid.newfile", "glusterfs.gfid.heal"):
        with raises_errno(errno.EOPNOTSUPP):
            b.setxattr(d, name, payload, 0)
    b.setxattr(d, "user.vshare.ok", b"fine", 0)
    assert b.listxattr(d) == ["user.vshare.ok"]
    assert env.snapshot() == before


def test_no_xattr_call_on_a_symlink(env: Env) -> None:
    """ACL names on a symlink object: gfapi's ACL calls would resolve the link's target from
    the volume root; the backend makes no xattr call on a symlink at all."""
    b = env.backend
    env.host.host_symlink("share/to-dir", env.host.host_absolute("outside-dir"))
    link = b.lookup(env.share, "to-dir")
    before = env.snapshot()
    acl = b"\x02\x00\x00\x00\x01\x00\x07\x00\xff\xff\xff\xff"
    for name in ("system.posix_acl_access", "system.posix_acl_default", "user.x"):
        with raises_errno(errno.EPERM):
            b.setxattr(link, name, acl, 0)
        with raises_errno(errno.ENODATA):
            b.getxattr(link, name)
        with raises_errno(errno.EPERM):
            b.removexattr(link, name)
    assert b.listxattr(link) == []
    assert env.snapshot() == before


def test_gfapi_resolver_syntax_never_reaches_it(env: Env) -> None:
    """``/x`` would resolve from the volume root, ``..`` to the parent, ``""`` to the
    directory itself, ``a/b`` through ``a`` following symlinks: refused before gfapi."""
    b = env.backend
    for name in ("/outside-secret", "..", "../outside-secret", "", ".", "d/..", "d/../..", "/"):
        for call in (
            lambda name=name: b.lookup(env.share, name),
            lambda name=name: b.create(env.share, name, os.O_RDWR, 0o644),
            lambda name=name: b.mkdir(env.share, name, 0o755),
            lambda name=name: b.unlink(env.share, name, rmdir=True),
            lambda name=name: b.rename(env.share, "d", env.share, name),
        ):
            with raises_errno(errno.EINVAL):
                call()
    for path in ("/", "/share", "share/..", "../share", "share/d/../.."):
        with raises_errno(errno.EINVAL):
            b.open_root(path)


def test_gfid_virtual_directory(env: Env, gluster_session: Session) -> None:
    """``.gfid/<gfid>`` names an object by gfid where the gfid-access translator is loaded
    (aux-gfid mounts): never in a share, never at the volume root through gfapi."""
    b = env.backend
    with raises_errno(errno.ENOENT):
        b.lookup(env.share, ".gfid")
    top = GlusterBackend(gluster_session.uri)
    try:
        root = top.open_root("")
        with raises_errno(errno.ENOENT):
            top.lookup(root, ".gfid")
        with raises_errno(errno.ENOENT):
            top.open_root(".gfid/00000000-0000-0000-0000-000000000001")
    finally:
        top.close()
    # a guest may make a directory of that name: it is an ordinary one
    g = b.mkdir(env.share, ".gfid", 0o755)
    with raises_errno(errno.ENOENT):
        b.lookup(g, "00000000-0000-0000-0000-000000000001")


def test_nothing_is_made_under_a_symlink_gfid(env: Env) -> None:
    """The brick reaches a symlink's gfid through a hard link to the symlink itself: asked to
    make an entry "under" it, it could follow the link on the server, out of the brick.
    Every name operation with a symlink as the parent is refused before gfapi (ENOTDIR)."""
    b = env.backend
    targets = {
        "host-abs": str(env.outside_on_host),  # a directory of the brick's host
        "vol-abs": env.host.host_absolute("outside-dir"),
        "rel": "../outside-dir",
        "brick-up": "../../../../../../../../../" + str(env.outside_on_host).lstrip("/"),
    }
    before_host = sorted(os.listdir(env.outside_on_host))
    before = env.snapshot()
    for name, target in targets.items():
        env.host.host_symlink(f"share/{name}", target)
        link = b.lookup(env.share, name)
        assert link.is_symlink
        for call in (
            lambda link=link: b.create(link, "planted", os.O_RDWR, 0o644),
            lambda link=link: b.mkdir(link, "planted", 0o755),
            lambda link=link: b.symlink(link, "planted", "x"),
            lambda link=link: b.mknod(link, "planted", stat.S_IFIFO | 0o644, 0),
            lambda link=link: b.link(link, "planted", b.lookup(env.share, "d")),
            lambda link=link: b.lookup(link, "host-file"),
            lambda link=link: b.lookup(link, "secret-only-name"),
            lambda link=link: b.unlink(link, "host-file", rmdir=False),
            lambda link=link: b.unlink(link, "secret-only-name", rmdir=False),
            lambda link=link: b.rename(link, "host-file", env.share, "stolen"),
            lambda link=link: b.rename(env.share, "d", link, "moved"),
        ):
            with raises_errno(errno.ENOTDIR):
                call()
        with raises_errno(errno.ELOOP):
            b.open(link, os.O_RDONLY)
    assert sorted(os.listdir(env.outside_on_host)) == before_host
    assert (env.outside_on_host / "host-file").read_bytes() == SECRET
    after = env.snapshot()
    assert after == before


def test_rename_and_symlink_race(env: Env) -> None:
    """A guest renames a directory back and forth while other threads swap a symlink to
    outside into its old name and list and create in the directory's node: nothing outside
    is listed, created or changed (the gateway's own requests; the brick resolves directory
    gfids through handles naming parent and name)."""
    b = env.backend
    d = b.lookup(env.share, "d")
    b.create(d, "inside", os.O_RDWR, 0o644)[1].close()
    b.symlink(env.share, "lnk", "../outside-dir").close()
    before = env.snapshot()
    stop = threading.Event()
    errors: list[str] = []
    counts = {"listed": 0, "created": 0}

    def guard(fn: object) -> object:
        def run() -> None:
            try:
                fn()  # type: ignore[operator]
            except BaseException:
                errors.append(traceback.format_exc())

        return run

    def renamer() -> None:
        while not stop.is_set():
            for old, new in (("d", "e"), ("e", "d")):
                try:
                    b.rename(env.share, old, env.share, new)
                except OSError as e:
                    if e.errno not in (errno.ENOENT, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
                        raise

    def swapper() -> None:
        while not stop.is_set():
            for name in ("d", "e"):
                try:
                    b.rename(env.share, "lnk", env.share, name)
                    b.rename(env.share, name, env.share, "lnk")
                except OSError as e:
                    if e.errno not in (errno.ENOENT, errno.EEXIST, errno.ENOTDIR, errno.EISDIR):
                        raise

    def user() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            try:
                f = b.open(d, os.O_RDONLY)
                try:
                    names = {e.name for e in b.readdir(f, 0, 1000).entries}
                finally:
                    f.close()
                assert "secret-only-name" not in names, names
                assert "inside" in names
                counts["listed"] += 1
                node, file = b.create(d, f"made-{threading.get_ident()}-{i}", os.O_RDWR, 0o644)
                file.close()
                node.close()
                counts["created"] += 1
                b.setattr(d, mode=0o755)
            except OSError as e:
                if e.errno not in (errno.ENOENT, errno.ESTALE):
                    raise

    threads = [threading.Thread(target=guard(fn), daemon=True) for fn in (renamer, swapper)]
    threads += [threading.Thread(target=guard(user), daemon=True) for _ in range(2)]
    for t in threads:
        t.start()
    time.sleep(3)
    stop.set()
    for t in threads:
        t.join(30)
    assert not errors, errors[0]
    assert counts["listed"] > 0 and counts["created"] > 0, counts
    assert sorted(os.listdir(env.outside_on_host)) == ["host-file"]
    assert env.snapshot() == before
