"""The inode numbers a mount shows are the gateway's (qid paths: on a POSIX share, the
host's own inode numbers), so they are the same through every mount and after a remount,
and ``readdir``'s agree with ``stat``'s. git keeps them in its index: numbers given by
each mount in lookup order made every ``git status`` after a remount read the whole
working tree again (22.5 s for the Django tree, against 1.2 s)."""

from __future__ import annotations

import os
import subprocess

from tests.fuse.conftest import GatewayProc, MountFactory


def test_inode_numbers_are_the_hosts_in_every_mount(
    gateway_proc: GatewayProc, mount: MountFactory
) -> None:
    share = gateway_proc.share_dir("alpha")
    (share / "d").mkdir()
    for name in ("a", "b", "c"):
        (share / "d" / name).write_bytes(name.encode())
    os.link(share / "d" / "a", share / "d" / "a-too")
    host = {n: os.stat(share / "d" / n).st_ino for n in ("a", "b", "c", "a-too")}
    first = mount(gateway_proc.uri, "alpha", "auto").path
    # looked up in another order than the second mount's, below
    seen = {n: os.stat(first / "d" / n).st_ino for n in ("c", "b", "a-too", "a")}
    assert seen == host
    assert os.stat(first / "d").st_ino == os.stat(share / "d").st_ino
    listed = {e.name: e.inode() for e in os.scandir(first / "d")}  # readdir's d_ino
    assert listed == host
    second = mount(gateway_proc.uri, "alpha", "auto").path
    assert {n: os.stat(second / "d" / n).st_ino for n in ("a", "b", "c", "a-too")} == host


def test_a_repository_is_not_read_again_after_a_remount(
    gateway_proc: GatewayProc, mount: MountFactory
) -> None:
    """git's index made through one mount holds in the next: a status reads no file."""
    share = gateway_proc.share_dir("alpha")
    env = {
        **os.environ, "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "safe.directory",
        "GIT_CONFIG_VALUE_0": "*", "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
    }  # fmt: skip
    first = mount(gateway_proc.uri, "alpha", "auto")
    repo = first.path / "repo"
    repo.mkdir()
    past = os.stat(repo).st_mtime - 3600  # older than the index: none "racily clean"
    for i in range(20):
        (repo / f"f{i}").write_bytes(b"x" * i)
        os.utime(repo / f"f{i}", (past, past))
    for line in ("git init -q", "git add -A", "git commit -qm one"):
        subprocess.run(line, shell=True, cwd=repo, env=env, check=True, capture_output=True)
    index = (share / "repo" / ".git" / "index").read_bytes()
    second = mount(gateway_proc.uri, "alpha", "auto").path
    status = subprocess.run(["git", "status", "--porcelain"], cwd=second / "repo", env=env,
                            check=True, capture_output=True, text=True)  # fmt: skip
    assert status.stdout == ""
    # Had any file's stat data differed from the index's, git would have compared its
    # contents and written the index with the new data.
    assert (share / "repo" / ".git" / "index").read_bytes() == index
