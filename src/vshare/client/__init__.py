"""9P2000.L clients.

- :class:`Client` / :func:`open_client`: one connection, tag-multiplexed raw requests.
- :class:`AsyncShare` / :func:`open_share`: an attached share with an os-like async API
  (anyio: asyncio or trio) that reconnects, fails over and retries (``_share.py``: path
  operations; ``_session.py``: the session and its reconnects; ``_file.py``: open files;
  ``_stat.py``: attributes and Tsetattr builders).
- :class:`Share`: the same API, blocking, for scripts (``_blocking.py``).
- ``vshare.client.fsspec``: an fsspec filesystem (``fsspec.filesystem("vshare", ...)``).
"""

from vshare.client._blocking import File, Share
from vshare.client._client import Client, ConnectionLost, open_client
from vshare.client._file import AsyncFile, mode_to_flags
from vshare.client._paths import components
from vshare.client._session import Session, read_dirents, xattr_write
from vshare.client._share import AsyncShare, open_share
from vshare.client._stat import DirEntry, StatResult, setattr_msg, utime_msg

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
    "read_dirents",
    "setattr_msg",
    "utime_msg",
    "xattr_write",
]
