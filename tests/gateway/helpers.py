"""Small request helpers over vshare.client.Client for the gateway tests."""

from __future__ import annotations

from vshare import protocol as p
from vshare.client import Client


async def walk(c: Client, fid: int, *names: str) -> int:
    new = c.new_fid()
    reply = await c.rpc(p.Twalk(fid, new, names))
    assert isinstance(reply, p.Rwalk)
    assert len(reply.qids) == len(names), f"partial walk: {reply.qids}"
    return new


async def create(c: Client, dir_fid: int, name: str, data: bytes = b"", mode: int = 0o644) -> int:
    fid = await walk(c, dir_fid)
    await c.rpc(p.Tlcreate(fid, name, p.DOTL_RDWR, mode, 0))
    if data:
        reply = await c.rpc(p.Twrite(fid, 0, data))
        assert isinstance(reply, p.Rwrite) and reply.count == len(data)
    return fid


async def open_(c: Client, fid: int, *names: str, flags: int = p.DOTL_RDONLY) -> int:
    new = await walk(c, fid, *names)
    await c.rpc(p.Tlopen(new, flags))
    return new


async def read_all(c: Client, fid: int, chunk: int = 65536) -> bytes:
    out = bytearray()
    while True:
        reply = await c.rpc(p.Tread(fid, len(out), chunk))
        assert isinstance(reply, p.Rread)
        if not reply.data:
            return bytes(out)
        out += reply.data


async def read_file(c: Client, root: int, *names: str) -> bytes:
    fid = await open_(c, root, *names)
    try:
        return await read_all(c, fid)
    finally:
        await c.clunk(fid)


async def listdir(c: Client, root: int, *names: str, count: int = 8192) -> list[p.Dirent]:
    fid = await open_(c, root, *names, flags=p.DOTL_RDONLY | p.DOTL_DIRECTORY)
    out: list[p.Dirent] = []
    offset = 0
    try:
        while True:
            reply = await c.rpc(p.Treaddir(fid, offset, count))
            assert isinstance(reply, p.Rreaddir)
            entries = p.unpack_dirents(reply.data)
            if not entries:
                return out
            out.extend(entries)
            offset = entries[-1].offset
    finally:
        await c.clunk(fid)


async def getattr_(c: Client, fid: int) -> p.Rgetattr:
    return await c.call(p.Tgetattr(fid, p.GETATTR_ALL), p.Rgetattr)
