"""vshare as an OpenStack Manila share driver (``pip install 'vshare[manila]'``).

In manila.conf, a backend section with
``share_driver = vshare.manila.driver.VshareShareDriver`` and the ``vshare_*`` options of
``_opts.py`` (docs/manila.md). The driver is a client of vshare's REST API and nothing
else: ``_api.py`` (HTTP, waits), ``_access.py`` (Manila rules → vshare rules, pure),
``driver.py`` (Manila's calls). Importing this package does not import Manila; importing
``vshare.manila.driver`` does.
"""

from vshare.manila._opts import vshare_opts

__all__ = ["vshare_opts"]
