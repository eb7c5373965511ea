"""vshare.control (see docs/architecture.md)."""
