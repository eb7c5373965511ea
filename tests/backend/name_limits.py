"""Names the backends refuse before the storage sees them, the same on every backend.

The POSIX and GlusterFS backends once checked names differently (GlusterFS alone enforced
NAME_MAX and caught UnicodeError); ``vshare.backend._common`` now checks them once for both,
and this battery holds every backend to it for every operation that takes a name. A backend's
tests run it by subclassing :class:`NameLimitBattery` next to their ``backend_factory``.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable

from vshare.backend.base import Backend, Node
from vshare.testing.backend_conformance import Vol, _Suite, raises_errno

LONG = "n" * 256  # one byte past NAME_MAX
LONG_UTF8 = "é" * 128  # 128 characters, 256 bytes
LONE_SURROGATE = "bad-\ud800"  # no byte string encodes it (surrogateescape takes \udc80-\udcff)

NameOp = Callable[[Backend, Node, Node, str], object]

#: Every operation that takes a name, as (label, call with that name).
NAME_OPS: tuple[tuple[str, NameOp], ...] = (
    ("lookup", lambda b, root, f, name: b.lookup(root, name)),
    ("create", lambda b, root, f, name: b.create(root, name, os.O_RDWR, 0o644)),
    ("mkdir", lambda b, root, f, name: b.mkdir(root, name, 0o755)),
    ("symlink", lambda b, root, f, name: b.symlink(root, name, "target")),
    ("mknod", lambda b, root, f, name: b.mknod(root, name, stat.S_IFIFO | 0o644, 0)),
    ("link", lambda b, root, f, name: b.link(root, name, f)),
    ("rename-from", lambda b, root, f, name: b.rename(root, name, root, "x")),
    ("rename-to", lambda b, root, f, name: b.rename(root, "f", root, name)),
    ("unlink", lambda b, root, f, name: b.unlink(root, name, rmdir=False)),
    ("rmdir", lambda b, root, f, name: b.unlink(root, name, rmdir=True)),
)


class NameLimitBattery(_Suite):
    def test_names_past_name_max_are_enametoolong(self, vol: Vol) -> None:
        target = vol.mkfile(vol.root, "f")
        for _label, op in NAME_OPS:
            for name in (LONG, LONG_UTF8):
                with raises_errno(errno.ENAMETOOLONG):
                    op(vol.backend, vol.root, target, name)
        assert sorted(vol.names(vol.root)) == [".", "..", "f"]
        target.close()

    def test_a_name_of_name_max_bytes_is_fine(self, vol: Vol) -> None:
        name = "é" * 127 + "n"  # 255 bytes
        node = vol.mkfile(vol.root, name)
        assert vol.backend.lookup(vol.root, name).qid_path == node.qid_path
        vol.backend.unlink(vol.root, name, rmdir=False)
        node.close()

    def test_names_no_bytes_encode_are_einval(self, vol: Vol) -> None:
        target = vol.mkfile(vol.root, "f")
        for _label, op in NAME_OPS:
            with raises_errno(errno.EINVAL):
                op(vol.backend, vol.root, target, LONE_SURROGATE)
        with raises_errno(errno.EINVAL):
            vol.backend.open_root(LONE_SURROGATE)
        assert sorted(vol.names(vol.root)) == [".", "..", "f"]
        target.close()
