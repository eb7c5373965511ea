"""A volume without ``features.cache-invalidation on`` never announces other clients'
changes: the gateway must not keep a cache of it (shares in cache mode meta/all are served
as ``none``, with a warning naming the option and a metric), so that it is never stale.

Against the session's real volume, with the option turned off for the test (``gluster
volume set``) and back on after it; "another client" is GlusterFS's own FUSE client.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gluster.conftest import Session
from vshare.backend import gluster
from vshare.backend.base import CacheMode
from vshare.backend.gluster import GlusterBackend, GlusterNode
from vshare.node.gateway import GlusterCacheCollector
from vshare.testing import glusterd as gd

OPTION = "features.cache-invalidation"


@pytest.fixture(scope="module")
def other(gluster_session: Session, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The volume mounted by GlusterFS's native client: another client."""
    with gd.fuse_mount(gluster_session.volume, tmp_path_factory.mktemp("native") / "m") as m:
        yield m


@pytest.fixture
def backend(gluster_session: Session, monkeypatch: pytest.MonkeyPatch) -> Iterator[GlusterBackend]:
    # Every attach asks glusterd again (it would reuse a minute-old answer otherwise), so
    # that the option's changes in these tests are seen at once.
    monkeypatch.setattr(gluster._volumes, "_OPTIONS_RECHECK", 0.0)
    b = GlusterBackend(gluster_session.uri)
    try:
        yield b
    finally:
        b.close()


def _set_option(session: Session, value: str) -> None:
    session.volume.daemon.cli("volume", "set", session.volume.name, OPTION, value)


@pytest.fixture
def invalidation_off(gluster_session: Session, backend: GlusterBackend) -> Iterator[None]:
    _set_option(gluster_session, "off")
    try:
        yield
    finally:
        _set_option(gluster_session, "on")
        # The session's other tests share this volume connection: let it cache again.
        assert gluster._check_options(backend._vol) is None


def _uri(b: GlusterBackend) -> str:
    """The volume's key in :func:`gluster.cache_fallbacks`."""
    return "gluster://{}:{}/{}".format(*b._vol.key)


def _mode(node: object) -> CacheMode:
    assert isinstance(node, GlusterNode)
    return node._cache


def _gone_after(b: GlusterBackend, root: GlusterNode, name: str, bound: float) -> float:
    """Seconds until a lookup of ``name`` says ENOENT (fails past ``bound``)."""
    start = time.monotonic()
    while True:
        try:
            b.lookup(root, name).close()
        except FileNotFoundError:
            return time.monotonic() - start
        if time.monotonic() - start > bound:
            pytest.fail(f"{name} still resolves {bound} s after another client removed it")
        time.sleep(0.01)


@pytest.mark.usefixtures("invalidation_off")
@pytest.mark.parametrize("mode", ["meta", "all"])
def test_cache_modes_fall_back_to_none_loudly(
    gluster_session: Session, backend: GlusterBackend, other: Path, mode: CacheMode,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    rel = gluster_session.fresh_root("noinval")
    (other / rel / "f").write_bytes(b"old")
    before = gluster.cache_fallbacks()[_uri(backend)][1]
    with caplog.at_level(logging.WARNING, logger="vshare.backend.gluster"):
        root = backend.open_root(rel, cache=mode)
    try:
        assert _mode(root) == "none"
        warned = [r.getMessage() for r in caplog.records if OPTION in r.getMessage()]
        assert warned, caplog.text
        assert f"gluster volume set {gluster_session.volume.name} {OPTION} on" in warned[-1]
        problem, count = gluster.cache_fallbacks()[_uri(backend)]
        assert problem is not None and OPTION in problem
        assert count == before + 1
        metrics = {m.name: m for m in GlusterCacheCollector().collect()}
        usable = {
            s.labels["volume"]: s.value for s in metrics["vshare_gluster_cache_usable"].samples
        }
        assert usable[_uri(backend)] == 0.0

        # What the fallback buys: another client's changes are seen at once, where a cache
        # that no upcall empties kept them for ~50 s.
        f = backend.lookup(root, "f")
        assert isinstance(f, GlusterNode)
        assert backend.getattr(f).size == 3
        f.close()
        (other / rel / "f").write_bytes(b"newer")
        f = backend.lookup(root, "f")
        assert backend.getattr(f).size == 5
        f.close()
        (other / rel / "f").unlink()
        assert _gone_after(backend, root, "f", bound=1.0) < 1.0
    finally:
        root.close()


def test_cache_modes_apply_when_the_volume_announces_changes(
    gluster_session: Session, backend: GlusterBackend, caplog: pytest.LogCaptureFixture
) -> None:
    """The other side of the check (the session's volume has the option on): the mode
    stays, and nothing is logged."""
    rel = gluster_session.fresh_root("inval")
    with caplog.at_level(logging.WARNING, logger="vshare.backend.gluster"):
        root = backend.open_root(rel, cache="meta")
    try:
        assert _mode(root) == "meta"
        assert OPTION not in caplog.text
        assert gluster.cache_fallbacks()[_uri(backend)][0] is None
    finally:
        root.close()


def test_unreadable_options_count_as_no_cache() -> None:
    """A volume whose options cannot be read (here: no such volume at a host where no
    glusterd runs) is not trusted to announce changes."""
    problem = None
    try:
        gluster._gluster_options.volume_options("127.0.9.9", "nosuch", timeout=20)
    except OSError as exc:
        problem = str(exc)
    assert problem is not None and "gluster" in problem
    assert gluster._gluster_options.coherence_problem({}, "v", 50.0) is not None
    assert gluster._gluster_options.coherence_problem({OPTION: "on"}, "v", 50.0) is None
    short = {OPTION: "on", "features.cache-invalidation-timeout": "10"}
    assert "timeout" in (gluster._gluster_options.coherence_problem(short, "v", 50.0) or "")
