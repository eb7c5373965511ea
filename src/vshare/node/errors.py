"""What a node says when it cannot start or stops failing."""

from __future__ import annotations


class NodeError(Exception):
    """A node could not start or stopped failing; the message is one line for the operator."""
