"""vshare.fuse (see docs/architecture.md)."""
