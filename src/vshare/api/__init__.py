"""vshare.api (see docs/architecture.md)."""
