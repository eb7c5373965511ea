"""vshare.store (see docs/architecture.md)."""
