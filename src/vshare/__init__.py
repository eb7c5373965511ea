"""vshare: hypervisor-mediated shared file systems for virtual machines.

One gateway per hypervisor serves shares to the VMs on that host over virtio-vsock (and
hybrid vsock, Unix, TCP/TLS), speaking 9P2000.L. The package is layered; dependencies point
down only (``tests/test_layers.py`` enforces it):

======  ==============================================  ===============================
layer   packages                                        may import
======  ==============================================  ===============================
0       ``protocol`` (9P2000.L codec), ``policy``       the standard library
1       ``transport``, ``backend``, ``store``           layer 0, their drivers
2       ``gateway``, ``control``, ``client``            layers 0-1
3       ``api``, ``fuse``, ``cli``, ``node``            anything below
======  ==============================================  ===============================
"""

__version__ = "0.1.0"
