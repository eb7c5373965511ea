"""vshare.policy (see docs/architecture.md)."""
