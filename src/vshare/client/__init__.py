"""vshare.client (see docs/architecture.md)."""
