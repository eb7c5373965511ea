"""9P2000.L clients.

- :class:`Client` / :func:`open_client`: one connection, tag-multiplexed raw requests.
- :class:`AsyncShare` / :func:`open_share`: an attached share with an os-like async API
  (anyio: asyncio or trio) that reconnects, fails over and retries (``_share.py``).
- :class:`Share`: the same API, blocking, for scripts (``_blocking.py``).
- ``vshare.client.fsspec``: an fsspec filesystem (``fsspec.filesystem("vshare", ...)``).
"""

from vshare.client._blocking import File, Share
from vshare.client._client import Client, ConnectionLost, open_client
from vshare.client._paths import components
from vshare.client._share import (
    AsyncFile,
    AsyncShare,
    DirEntry,
    Session,
    StatResult,
    mode_to_flags,
    open_share,
    setattr_msg,
    utime_msg,
    xattr_write,
)

__all__ = [
    "AsyncFile",
    "AsyncShare",
    "Client",
    "ConnectionLost",
    "DirEntry",
    "File",
    "Session",
    "Share",
    "StatResult",
    "components",
    "mode_to_flags",
    "open_client",
    "open_share",
    "setattr_msg",
    "utime_msg",
    "xattr_write",
]
