"""An fsspec file system over the blocking client, so pandas/pyarrow/dask read shares
without a mount: ``fsspec.filesystem("vshare", uri="unix:///run/vshare.sock",
share="data")`` (registered through the ``fsspec.specs`` entry point), or
``fsspec.open("vshare://dir/file.csv", uri=..., share=...)``.

Paths are relative to the share root (``vshare://`` stripped). One connection per
(uri, share) instance (fsspec caches instances); it reconnects as :class:`~.Share` does.
"""

from __future__ import annotations

import stat as stat_mod
from typing import Any

from fsspec.spec import AbstractBufferedFile, AbstractFileSystem  # type: ignore[import-untyped]

from vshare.client._blocking import File, Share
from vshare.client._stat import StatResult


def _info(path: str, st: StatResult) -> dict[str, Any]:
    kind = (
        "directory"
        if stat_mod.S_ISDIR(st.st_mode)
        else "link"
        if stat_mod.S_ISLNK(st.st_mode)
        else "file"
    )
    return {
        "name": path,
        "size": st.st_size,
        "type": kind,
        "mode": st.st_mode,
        "mtime": st.st_mtime,
        "ino": st.st_ino,
        "nlink": st.st_nlink,
    }


class VshareFileSystem(AbstractFileSystem):  # type: ignore[misc]  # fsspec is untyped
    """fsspec's ``AbstractFileSystem`` over one attached share."""

    protocol = "vshare"
    root_marker = ""

    def __init__(
        self, uri: str | list[str], share: str, reconnect_timeout: float = 30.0, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.share = Share(uri, share, reconnect_timeout=reconnect_timeout)

    @classmethod
    def _strip_protocol(cls, path: str | list[str]) -> Any:
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        if path.startswith("vshare://"):
            path = path[len("vshare://") :]
        return path.strip("/")

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        path = self._strip_protocol(path)
        st = self.share.stat(path)
        if not stat_mod.S_ISDIR(st.st_mode):
            return [_info(path, st)] if detail else [path]
        out: list[Any] = []
        for e in self.share.scandir(path, attrs=detail):
            name = f"{path}/{e.name}" if path else e.name
            if detail and e.stat is not None:
                out.append(_info(name, e.stat))
            elif not detail:
                out.append(name)
        return out

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        path = self._strip_protocol(path)
        return _info(path, self.share.stat(path))

    def cat_file(
        self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any
    ) -> bytes:
        path = self._strip_protocol(path)
        if start is None and end is None:
            return self.share.read_bytes(path)
        with self.share.open(path, "rb") as f:
            size = f.stat().st_size
            lo = 0 if start is None else (start if start >= 0 else max(size + start, 0))
            hi = size if end is None else (end if end >= 0 else max(size + end, 0))
            return f.pread(max(hi - lo, 0), lo)

    def pipe_file(self, path: str, value: bytes, **kwargs: Any) -> None:
        self.share.write_bytes(self._strip_protocol(path), value)

    def mkdir(self, path: str, create_parents: bool = True, **kwargs: Any) -> None:
        path = self._strip_protocol(path)
        if create_parents:
            self.share.makedirs(path, exist_ok=True)
        else:
            self.share.mkdir(path)

    def makedirs(self, path: str, exist_ok: bool = False) -> None:
        self.share.makedirs(self._strip_protocol(path), exist_ok=exist_ok)

    def rmdir(self, path: str) -> None:
        self.share.rmdir(self._strip_protocol(path))

    def rm_file(self, path: str) -> None:
        self.share.unlink(self._strip_protocol(path))

    def _rm(self, path: str) -> None:
        path = self._strip_protocol(path)
        if self.share.isdir(path):
            self.share.rmdir(path)
        else:
            self.share.unlink(path)

    def mv(self, path1: str, path2: str, recursive: bool = False, **kwargs: Any) -> None:
        self.share.rename(self._strip_protocol(path1), self._strip_protocol(path2))

    def created(self, path: str) -> Any:
        import datetime

        st = self.share.stat(self._strip_protocol(path))
        if st.st_birthtime_ns is None:
            raise NotImplementedError(f"{path}: the server does not report a birth time")
        return datetime.datetime.fromtimestamp(st.st_birthtime_ns / 1e9, tz=datetime.UTC)

    def modified(self, path: str) -> Any:
        import datetime

        st = self.share.stat(self._strip_protocol(path))
        return datetime.datetime.fromtimestamp(st.st_mtime, tz=datetime.UTC)

    def _open(
        self,
        path: str,
        mode: str = "rb",
        block_size: int | None = None,
        autocommit: bool = True,
        cache_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> VshareFile:
        return VshareFile(
            self,
            self._strip_protocol(path),
            mode,
            block_size or "default",
            autocommit=autocommit,
            cache_options=cache_options,
            **kwargs,
        )


class VshareFile(AbstractBufferedFile):  # type: ignore[misc]  # fsspec is untyped
    """Reads by range (Tread at offsets); writes stream to the open file in fsspec's
    blocks (Twrite at offsets), so nothing larger than a block is held in memory."""

    fs: VshareFileSystem

    def _remote(self) -> File:
        f: File | None = getattr(self, "_vfile", None)
        if f is None:
            f = self.fs.share.open(self.path, "rb" if self.mode == "rb" else "wb")
            self._vfile = f
        return f

    def _fetch_range(self, start: int, end: int) -> bytes:
        return self._remote().pread(end - start, start)

    def _initiate_upload(self) -> None:
        self._remote()
        self._written = 0

    def _upload_chunk(self, final: bool = False) -> bool:
        data = self.buffer.getvalue()
        if data:
            self._written += self._remote().pwrite(data, self._written)
        if final:
            self._remote().close()
        return True

    def close(self) -> None:
        super().close()
        f: File | None = getattr(self, "_vfile", None)
        if f is not None and not f.closed:
            f.close()
