"""9P2000.L clients: an async, tag-multiplexed client (:class:`Client`)."""

from vshare.client._client import Client, open_client

__all__ = ["Client", "open_client"]
