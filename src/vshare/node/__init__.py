"""The composition root: what runs a vshare process, put together from the layers below.

- :mod:`vshare.node.gateway`: the gateway process (backend, :class:`~vshare.gateway.Gateway`,
  the store and its follower, metrics, signals): :func:`serve_gateway`;
- :mod:`vshare.node.allinone`: the all-in-one node of ``vshare up`` (store, gateway, REST
  API child, demo share and its FUSE mount): :class:`AllInOne`;
- :mod:`vshare.node.mounts`: what is mounted where (``/proc/self/mountinfo``).

The CLI parses options, calls these, and prints; nothing here prints to stdout. Import the
submodules themselves: this package imports nothing, so that the FUSE client, which needs
only :mod:`vshare.node.mounts`, does not load the gateway.
"""
