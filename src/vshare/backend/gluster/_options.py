"""Whether a GlusterFS volume tells its clients about each other's changes.

Cache modes ``meta`` and ``all`` (docs/cache.md) keep what a share read until an upcall
says another client changed it. The bricks send those upcalls only when the volume has
``features.cache-invalidation on``, and only to clients that touched the object within
``features.cache-invalidation-timeout`` seconds. Without that, registering for upcalls
still succeeds and no upcall ever comes: measured, a ``meta`` share kept resolving removed
files and an ``all`` share served old contents for the cache's whole life (~50 s), with
nothing logged. So the gateway asks the volume itself.

gfapi has no call that returns the volume's options (the client volume file it holds does
not carry the brick-side ``upcall`` translator's options, and ``glfs_get_volfile`` crashed
here), so this asks glusterd through the ``gluster`` CLI: ``gluster --remote-host=HOST
volume info VOLUME --xml`` is one of the read-only requests glusterd answers over TCP to
any host (``volume get`` is refused that way), ~55 ms. Where the CLI is missing or
glusterd does not answer, the answer is "unknown", which the caller treats as "not
coherent": a cache that cannot be shown to be told of changes is not used.
"""

from __future__ import annotations

import shutil
import subprocess
import xml.etree.ElementTree as ET
from typing import Final

__all__ = ["INVALIDATION", "INVALIDATION_TIMEOUT", "coherence_problem", "volume_options"]

INVALIDATION: Final = "features.cache-invalidation"
INVALIDATION_TIMEOUT: Final = "features.cache-invalidation-timeout"
#: GlusterFS's defaults for the two options (``gluster volume set help``).
_DEFAULTS: Final = {INVALIDATION: "off", INVALIDATION_TIMEOUT: "60"}
#: How GlusterFS spells "on" in a boolean option (gf_string2boolean).
_TRUE: Final = frozenset({"on", "yes", "true", "enable", "1"})
_CLI_TIMEOUT: Final = 10.0


def volume_options(host: str, volume: str, *, timeout: float = _CLI_TIMEOUT) -> dict[str, str]:
    """The options set on ``volume`` (``Options Reconfigured``: those not at their default),
    from the glusterd at ``host`` (port 24007: the CLI has no other).

    Raises:
        OSError: the CLI is missing, glusterd did not answer, or it refused (the message
            says which, in one line).
    """
    cli = shutil.which("gluster")
    if cli is None:
        raise OSError("the gluster CLI is not installed (Debian glusterfs-cli)")
    cmd = [cli, "--mode=script", f"--remote-host={host}", "volume", "info", volume, "--xml"]
    try:
        done = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise OSError(f"gluster volume info: no answer from {host} in {timeout:.0f} s") from None
    out = done.stdout.decode(errors="replace")
    try:
        root = ET.fromstring(out)
    except ET.ParseError:
        detail = (done.stderr.decode(errors="replace") or out).strip().splitlines()
        raise OSError(f"gluster volume info: {detail[0] if detail else done.returncode}") from None
    if root.findtext("opRet") != "0":
        raise OSError(f"gluster volume info: {root.findtext('opErrstr') or 'failed'}")
    options: dict[str, str] = {}
    for opt in root.iter("option"):
        name = opt.findtext("name")
        if name:
            options[name] = opt.findtext("value") or ""
    return options


def coherence_problem(options: dict[str, str], volume: str, ttl: float) -> str | None:
    """Why a cache whose entries live ``ttl`` seconds would miss other clients' changes on a
    volume with ``options``, in one line naming the option and its fix; None if it would not.
    """
    enabled = options.get(INVALIDATION, _DEFAULTS[INVALIDATION]).strip().lower()
    if enabled not in _TRUE:
        return (
            f"{INVALIDATION} is off: other clients' changes are never announced "
            f"(gluster volume set {volume} {INVALIDATION} on)"
        )
    raw = options.get(INVALIDATION_TIMEOUT, _DEFAULTS[INVALIDATION_TIMEOUT])
    try:
        seconds = int(raw)
    except ValueError:
        return f"{INVALIDATION_TIMEOUT} is {raw!r}, not a number of seconds"
    if seconds < ttl:
        # The brick forgets a client that touched an object this long ago: entries older
        # than that would never hear of a change.
        return (
            f"{INVALIDATION_TIMEOUT} is {seconds} s, below the cache's {ttl:.0f} s "
            f"(gluster volume set {volume} {INVALIDATION_TIMEOUT} 600)"
        )
    return None
