"""Gateway configuration: frozen, validated, with documented defaults.

The same settings come from flags and from a TOML file (``--config``); flags win.
Until the control plane serves shares from a store, shares and their access rules come
from the ``[[share]]`` tables of the file.

Example ``gateway.toml``::

    listen = ["unix:///run/vshare/gateway.sock", "tcp://127.0.0.1:564"]
    backend = "posix:/srv/volume"
    metrics = "127.0.0.1:9564"
    ownership = "squash"            # or "passthrough" (trusted guests; gateway runs as root)

    [[share]]
    name = "demo"
    path = "shares/demo"            # a subdirectory of the backend volume
    uid = 1000                      # what guests see as owner in squash mode
    gid = 1000
    access = [
      { type = "ip", to = "127.0.0.1/8", level = "rw" },
      { type = "user", to = "0", level = "ro" },
    ]
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from vshare.policy import AccessRule, Level
from vshare.transport import parse_uri

KiB: Final = 1024
MiB: Final = 1024 * KiB
#: The largest msize the gateway will ever agree to: 1 MiB of payload + the I/O header.
MSIZE_CEILING: Final = MiB + 24
DEFAULT_MSIZE: Final = 512 * KiB
MIN_MSIZE: Final = 4 * KiB


class ConfigError(ValueError):
    """A configuration mistake; the message is one line meant for the operator."""


@dataclass(frozen=True, slots=True)
class Share:
    """A share as the gateway serves it."""

    name: str
    path: str  # relative to the backend volume
    id: str = ""
    access: tuple[AccessRule, ...] = ()
    uid: int = 0
    gid: int = 0
    readonly: bool = False

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or ";" in self.name:
            raise ConfigError(f"share name {self.name!r}: must be non-empty, no '/' or ';'")
        parts = [p for p in self.path.split("/") if p]
        if not parts or any(p in (".", "..") for p in parts) or "\0" in self.path:
            raise ConfigError(
                f"share {self.name!r}: path {self.path!r} must be a subdirectory of the volume"
                " (relative, no '.' or '..')"
            )


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    listen: tuple[str, ...] = ()
    backend: str = ""
    metrics: str | None = None  # "HOST:PORT" for the Prometheus endpoint
    msize: int = DEFAULT_MSIZE  # the largest msize agreed to in Tversion
    ownership: str = "squash"
    xattr_namespaces: tuple[str, ...] = ("user.",)
    max_sessions: int = 1024
    max_fids: int = 65536  # per session
    max_inflight: int = 256  # requests in flight per session
    idle_timeout: float = 0.0  # seconds; 0 = never (the kernel client cannot reconnect)
    share_threads: int = 16  # backend calls in flight per share
    shutdown_grace: float = 10.0  # seconds to finish in-flight requests on SIGTERM
    shares: tuple[Share, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        for uri in self.listen:
            try:
                parse_uri(uri)
            except ValueError as exc:
                raise ConfigError(f"listen: {exc}") from None
        if self.ownership not in ("squash", "passthrough"):
            raise ConfigError(
                f"ownership must be 'squash' or 'passthrough', not {self.ownership!r}"
            )
        if not MIN_MSIZE <= self.msize <= MSIZE_CEILING:
            raise ConfigError(f"msize must be between {MIN_MSIZE} and {MSIZE_CEILING}")
        names = [s.name for s in self.shares]
        if len(set(names)) != len(names):
            raise ConfigError("two shares have the same name")
        for value, what in ((self.max_sessions, "max_sessions"), (self.max_fids, "max_fids"),
                            (self.max_inflight, "max_inflight"),
                            (self.share_threads, "share_threads")):  # fmt: skip
            if value < 1:
                raise ConfigError(f"{what} must be at least 1")

    def with_overrides(self, **overrides: Any) -> GatewayConfig:
        """A copy with the given settings replaced (None means: keep)."""
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})


def _rule(raw: Mapping[str, Any], share: str) -> AccessRule:
    try:
        return AccessRule(str(raw["type"]), str(raw["to"]), Level(raw.get("level", "rw")))
    except KeyError as exc:
        raise ConfigError(f"share {share!r}: an access rule needs {exc.args[0]!r}") from None
    except ValueError as exc:
        raise ConfigError(f"share {share!r}: {exc}") from None


def _share(raw: Mapping[str, Any]) -> Share:
    name = str(raw.get("name", ""))
    access = raw.get("access", [])
    if not isinstance(access, Sequence):
        raise ConfigError(f"share {name!r}: access must be a list of tables")
    return Share(
        name=name,
        path=str(raw.get("path", "")),
        id=str(raw.get("id", "")),
        access=tuple(_rule(r, name) for r in access),
        uid=int(raw.get("uid", 0)),
        gid=int(raw.get("gid", 0)),
        readonly=bool(raw.get("readonly", False)),
    )


_KEYS: Final = {
    "listen", "backend", "metrics", "msize", "ownership", "xattr_namespaces", "max_sessions",
    "max_fids", "max_inflight", "idle_timeout", "share_threads", "shutdown_grace", "share",
}  # fmt: skip


def load_config(path: str | Path | None) -> GatewayConfig:
    """Read a TOML file (or the defaults when ``path`` is None).

    Raises:
        ConfigError: unreadable file, bad TOML, unknown or invalid settings.
    """
    if path is None:
        return GatewayConfig()
    try:
        raw = tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    unknown = set(raw) - _KEYS
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s): {', '.join(sorted(unknown))}")
    settings = {k: v for k, v in raw.items() if k != "share"}
    for key in ("listen", "xattr_namespaces"):
        if key in settings:
            settings[key] = tuple(settings[key])
    try:
        return GatewayConfig(**settings, shares=tuple(_share(s) for s in raw.get("share", [])))
    except TypeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
