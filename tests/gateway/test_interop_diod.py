"""Interop with 9P clients nobody here wrote: diod's diodls and diodcat (Debian diod),
talking to our gateway over TCP, in subprocesses."""

from __future__ import annotations

import errno
import shutil
import subprocess

import anyio
import pytest

from vshare import protocol as p

from .conftest import GatewayFactory

pytestmark = [pytest.mark.anyio, pytest.mark.diod]

needs_diod = pytest.mark.skipif(
    shutil.which("diodls") is None, reason="diod's tools are missing: `make test` installs diod"
)


async def run(*argv: str) -> subprocess.CompletedProcess[str]:
    result = await anyio.run_process(list(argv), check=False)
    return subprocess.CompletedProcess(
        argv, result.returncode, result.stdout.decode(), result.stderr.decode()
    )


@needs_diod
async def test_diodls_and_diodcat_through_the_gateway(start_gateway: GatewayFactory) -> None:
    from vshare.gateway.config import Share
    from vshare.policy import AccessRule

    shares = (
        Share("alpha", "shares/alpha", access=(AccessRule("ip", "127.0.0.1"),)),
        Share("gamma", "shares/gamma", access=(AccessRule("ip", "10.9.9.9"),)),
    )
    async with start_gateway(tcp=True, shares=shares) as gw:
        share = gw.share_dir("alpha")
        (share / "hello.txt").write_text("hello world\n")
        (share / "sub").mkdir()
        (share / "sub" / "a.txt").write_bytes(bytes(range(256)) * 1000)
        (share / "link").symlink_to("hello.txt")
        server = f"127.0.0.1:{gw.tcp_port}"
        ls = await run("diodls", "-s", server, "-a", "alpha", "-l", "/")
        assert ls.returncode == 0, ls.stderr
        lines = {line.split()[-1]: line for line in ls.stdout.splitlines() if line.strip()}
        assert {".", "..", "hello.txt", "sub", "link"} <= set(lines), ls.stdout
        assert lines["sub"].startswith("d") and lines["hello.txt"].startswith("-")
        assert " 12 " in lines["hello.txt"]  # its size
        cat = await run("diodcat", "-s", server, "-a", "alpha", "hello.txt")
        assert cat.returncode == 0, cat.stderr
        assert cat.stdout == "hello world\n"
        big = await anyio.run_process(["diodcat", "-s", server, "-a", "alpha", "sub/a.txt"])
        assert big.stdout == bytes(range(256)) * 1000
        # a share this address has no rule for is refused
        denied = await run("diodcat", "-s", server, "-a", "gamma", "theirs.txt")
        assert denied.returncode != 0
        assert "gamma's data" not in denied.stdout


async def test_tauth_says_no_authentication_needed(start_gateway: GatewayFactory) -> None:
    """What diod's clients need (found with diodls): Tauth → ENOENT, then attach works."""
    async with start_gateway() as gw, gw.client() as c:
        with pytest.raises(OSError) as info:
            await c.rpc(p.Tauth(0, "", "alpha", 0))
        assert info.value.errno == errno.ENOENT
        await c.attach("alpha")
