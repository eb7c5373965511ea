"""Taking a file's pages out of the page cache, for tests of what is read from where."""

from __future__ import annotations

import os
from pathlib import Path


def evict(path: Path) -> None:
    """Out of the page cache (written back first: dirty pages stay)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
