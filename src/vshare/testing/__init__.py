"""vshare.testing (see docs/architecture.md)."""
