"""vshare.transport (see docs/architecture.md)."""
