"""vshare.node (see docs/architecture.md)."""
