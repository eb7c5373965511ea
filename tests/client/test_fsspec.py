"""fsspec through the entry point, against a real gateway (run in a thread: the blocking
client must not block the loop that serves the in-process gateway)."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

fsspec = pytest.importorskip("fsspec")

pytestmark = pytest.mark.anyio


async def test_ls_cat_open_put_get_rm(start_gateway: object, tmp_path: Path) -> None:
    async with start_gateway() as gw:  # type: ignore[attr-defined]
        back = gw.share_dir("alpha")
        (back / "d").mkdir()
        (back / "d" / "a.csv").write_text("x,y\n1,2\n")
        big = bytes(range(256)) * 40_000  # > 1 fsspec block: ranged reads, chunked writes
        (tmp_path / "up.bin").write_bytes(big)

        def work() -> None:
            fs = fsspec.filesystem("vshare", uri=gw.uri, share="alpha")
            try:
                assert type(fs).__module__ == "vshare.client.fsspec"
                assert fs.ls("d", detail=False) == ["d/a.csv"]
                [info] = fs.ls("vshare://d")
                assert info["name"] == "d/a.csv" and info["size"] == 8 and info["type"] == "file"
                assert fs.cat("d/a.csv") == b"x,y\n1,2\n"
                assert fs.cat_file("d/a.csv", start=2, end=5) == b"y\n1"
                with fs.open("d/a.csv", "rb") as f:
                    f.seek(4)
                    assert f.read(3) == b"1,2"
                fs.put(str(tmp_path / "up.bin"), "d/up.bin")
                assert (back / "d" / "up.bin").read_bytes() == big
                fs.get("d/up.bin", str(tmp_path / "down.bin"))
                assert (tmp_path / "down.bin").read_bytes() == big
                with fs.open("d/up.bin", "rb", block_size=1000) as f:
                    f.seek(123_457)
                    assert f.read(10) == big[123_457:123_467]
                fs.makedirs("new")
                with fs.open("new/w.txt", "wb") as f:
                    f.write(b"written")
                assert (back / "new" / "w.txt").read_bytes() == b"written"
                assert fs.isdir("new") and fs.exists("d/up.bin")
                # The birth time, from statx on the gateway's ext4: the file is new.
                born = fs.created("new/w.txt").timestamp()
                assert abs(born - (back / "new" / "w.txt").stat().st_mtime) < 5
                assert fs.created("new/w.txt") <= fs.modified("new/w.txt")
                fs.mv("new/w.txt", "d/w.txt")
                fs.rm("d/up.bin")
                assert sorted(fs.ls("d", detail=False)) == ["d/a.csv", "d/w.txt"]
                with pytest.raises(FileNotFoundError):
                    fs.cat("d/up.bin")
            finally:
                fs.share.close()

        await anyio.to_thread.run_sync(work)
        assert not (back / "d" / "up.bin").exists()
