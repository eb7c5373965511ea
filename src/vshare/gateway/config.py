"""Gateway configuration: frozen, validated, with documented defaults.

The same settings come from flags and from a TOML file (``--config``); flags win.
Until the control plane serves shares and instances from a store, shares and their access
rules come from the ``[[share]]`` tables of the file, and the instances (who a connection
is) from its ``[[instance]]`` tables and, with ``libvirt``, from this host's domains.

Example ``gateway.toml``::

    listen = ["vsock://any:564", "unix:///run/vshare/gateway.sock", "tls://0.0.0.0:5640"]
    backend = "posix:/srv/volume"
    metrics = "127.0.0.1:9564"
    ownership = "squash"            # or "passthrough" (trusted guests; gateway runs as root)
    tls_cert = "/etc/vshare/gateway.pem"       # needed by tls:// listeners
    tls_key = "/etc/vshare/gateway.key"
    tls_client_ca = "/etc/vshare/clients-ca.pem"   # set: client certificates required
    hvsock_port = 564               # the guest port of hybrid-vsock (Firecracker) instances
    libvirt = "qemu:///system"      # also take instances (CID, Nova project) from libvirt
    libvirt_poll = 2.0              # seconds between libvirt refreshes
    cache_memory_mib = 64           # memory for the shares' caches (GlusterFS; see cache)

    [[instance]]                    # a QEMU/KVM guest, known by its vsock CID
    uuid = "5f0c6c1e-9f55-4a63-9d62-0c1b6f8d2a10"
    tenant = "acme"                 # the project that owns it
    name = "web-1"
    cid = 3                         # one value or a list, for each identity type

    [[instance]]                    # a Firecracker guest: the gateway listens on
    uuid = "fc-vm-1234"             # /run/vshare/vm-1234.vsock_564 while it is registered
    tenant = "globex"
    socket = "/run/vshare/vm-1234.vsock"

    [[instance]]                    # a machine with a TLS client certificate
    uuid = "batch-7"
    tenant = "acme"
    cert = "3b5d...e2f1"            # SHA-256 fingerprint of its certificate (64 hex digits)
    ip = ["192.0.2.7"]              # or/and its address, over tcp:// or tls://

    [[share]]
    name = "demo"
    path = "shares/demo"            # a subdirectory of the backend volume
    uid = 1000                      # what guests see as owner in squash mode
    gid = 1000
    cache = "meta"                  # none: every request asks the storage (strict across
                                    # hosts); meta: attributes and names cached (≤ ~1 s
                                    # stale); all: file data too. POSIX volumes ignore it.
    access = [
      { type = "ip", to = "127.0.0.1/8", level = "rw" },
      { type = "user", to = "0", level = "ro" },
      { type = "instance", to = "5f0c6c1e-9f55-4a63-9d62-0c1b6f8d2a10", level = "rw" },
      { type = "cert", to = "batch-7.acme.example", level = "ro" },  # a certificate's CN
    ]
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final

from vshare.backend import DEFAULT_CACHE_BYTES
from vshare.gateway.share import ConfigError, GiB, KiB, MiB, Share
from vshare.policy import AccessRule, Instance, Level, check_unique
from vshare.terms import DEFAULT_CACHE_MODE
from vshare.transport import DEFAULT_PORT, TlsSettings, parse_uri

__all__ = [
    "DEFAULT_MSIZE",
    "MIN_MSIZE",
    "MSIZE_CEILING",
    "ConfigError",
    "GatewayConfig",
    "GiB",
    "KiB",
    "MiB",
    "Share",
    "load_config",
]

#: The largest msize the gateway will ever agree to: 1 MiB of payload + the I/O header.
MSIZE_CEILING: Final = MiB + 24
#: Offered by default: a 1 MiB FUSE write or read crosses as one message.
DEFAULT_MSIZE: Final = MSIZE_CEILING
MIN_MSIZE: Final = 4 * KiB


#: Budgets that must be 1 or more, and those where 0 means: derived (see ``Limits.derive``).
_AT_LEAST_ONE: Final = (
    "max_sessions",
    "max_fids",
    "max_inflight",
    "share_threads",
    "max_partial_bytes_per_identity",
    "max_reply_bytes",
    "max_reply_bytes_per_identity",
    "max_locks",
    "max_locks_per_identity",
)
_ZERO_DERIVED: Final = ("max_sessions_per_identity", "max_fids_per_identity")


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    listen: tuple[str, ...] = ()
    backend: str = ""
    metrics: str | None = None  # "HOST:PORT" for the Prometheus endpoint
    msize: int = DEFAULT_MSIZE  # the largest msize agreed to in Tversion
    ownership: str = "squash"
    xattr_namespaces: tuple[str, ...] = ("user.",)
    # --- budgets (see context.py; the fid and session totals follow the fd limit) ---
    max_sessions: int = 1024  # in total (at most an eighth of the fd limit)
    max_sessions_per_identity: int = 0  # 0: an eighth of the sessions (at least 16)
    max_fids: int = 65536  # per session (at most the per-identity budget)
    max_fids_per_identity: int = 0  # 0: derived from the fd limit (see Limits.derive)
    max_inflight: int = 256  # requests in flight per session
    max_partial_bytes_per_identity: int = 16 * MiB  # bytes of frames received in part
    max_reply_bytes: int = 8 * MiB  # per session: replies being made or waiting to be sent
    max_reply_bytes_per_identity: int = 32 * MiB
    max_locks: int = 32768  # byte-range locks per session
    max_locks_per_identity: int = 65536
    #: Seconds a connection gets to complete Tversion and its first Tattach.
    handshake_timeout: float = 10.0
    idle_timeout: float = 0.0  # seconds; 0 = never (the kernel client cannot reconnect)
    share_threads: int = 16  # backend calls in flight per share
    shutdown_grace: float = 10.0  # seconds to finish in-flight requests on SIGTERM
    #: Metadata requests on the event loop, without a worker-thread hand-off: "auto" when the
    #: backend says its metadata is cheap (a local disk filesystem), "always", or "never".
    inline_metadata: str = "auto"
    #: The control-plane store (``sqlite:///...``): shares, rules and instances come from it.
    store: str | None = None
    shares: tuple[Share, ...] = field(default_factory=tuple)
    # --- transports and identity ---
    tls_cert: str | None = None  # PEM certificate (chain) of tls:// listeners
    tls_key: str | None = None  # its private key (unless tls_cert holds it)
    tls_client_ca: str | None = None  # set: clients must present a certificate it signed
    tls_handshake_timeout: float = 10.0  # seconds a client gets to finish the TLS handshake
    hvsock_port: int = DEFAULT_PORT  # guest port of hybrid-vsock instances: <socket>_<port>
    instances: tuple[Instance, ...] = field(default_factory=tuple)
    libvirt: str | None = None  # a libvirt URI to take instances from (qemu:///system)
    libvirt_poll: float = 2.0  # seconds between libvirt refreshes
    #: The bound of the backend's cache of the volume, for shares whose cache mode is not
    #: ``none`` (backends without their own cache, such as POSIX, ignore it).
    cache_memory_mib: int = DEFAULT_CACHE_BYTES // MiB

    def __post_init__(self) -> None:
        for uri in self.listen:
            try:
                parse_uri(uri)
            except ValueError as exc:
                raise ConfigError(f"listen: {exc}") from None
        for what in ("tls_cert", "tls_key", "tls_client_ca", "libvirt"):
            value = getattr(self, what)
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigError(f"{what} must be a non-empty string")
        schemes = {parse_uri(uri).scheme for uri in self.listen}
        if "tls" in schemes and not self.tls_cert:
            raise ConfigError(
                "a tls:// listener needs a certificate: tls_cert (--tls-cert), and tls_key"
                " unless the certificate file holds the key"
            )
        if self.tls_client_ca and not self.tls_cert:
            raise ConfigError("tls_client_ca is set but there is no tls_cert")
        if self.tls_handshake_timeout <= 0:
            raise ConfigError("tls_handshake_timeout must be more than 0 seconds")
        if not 0 <= self.hvsock_port <= 0xFFFFFFFF:
            raise ConfigError("hvsock_port must be a vsock port number (0 to 4294967295)")
        if self.libvirt_poll <= 0:
            raise ConfigError("libvirt_poll must be more than 0 seconds")
        if type(self.cache_memory_mib) is not int or self.cache_memory_mib < 1:
            raise ConfigError(
                f"cache_memory_mib must be a whole number ≥ 1 (MiB), not {self.cache_memory_mib!r}"
            )
        try:
            check_unique(self.instances)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if self.store and self.shares:
            raise ConfigError(
                "shares come from the store when store is set: remove the [[share]] tables"
            )
        if self.inline_metadata not in ("auto", "always", "never"):
            raise ConfigError(
                f"inline_metadata must be 'auto', 'always' or 'never', not {self.inline_metadata!r}"
            )
        if self.ownership not in ("squash", "passthrough"):
            raise ConfigError(
                f"ownership must be 'squash' or 'passthrough', not {self.ownership!r}"
            )
        if not MIN_MSIZE <= self.msize <= MSIZE_CEILING:
            raise ConfigError(f"msize must be between {MIN_MSIZE} and {MSIZE_CEILING}")
        names = [s.name for s in self.shares]
        if len(set(names)) != len(names):
            raise ConfigError("two shares have the same name")
        for what in _AT_LEAST_ONE:
            value = getattr(self, what)
            if type(value) is not int or value < 1:
                raise ConfigError(f"{what} must be a whole number ≥ 1")
        for what in _ZERO_DERIVED:
            value = getattr(self, what)
            if type(value) is not int or value < 0:
                raise ConfigError(f"{what} must be a whole number ≥ 0 (0: derived)")
        if not self.handshake_timeout > 0:
            raise ConfigError("handshake_timeout must be more than 0 seconds")
        if self.idle_timeout < 0:
            raise ConfigError("idle_timeout must be 0 (never) or more seconds")

    @property
    def cache_bytes(self) -> int:
        """``cache_memory_mib`` in bytes: what ``open_backend`` takes."""
        return self.cache_memory_mib * MiB

    def tls_settings(self) -> TlsSettings | None:
        """The server TLS settings (None when no certificate is configured)."""
        if not self.tls_cert:
            return None
        return TlsSettings(
            cert=self.tls_cert,
            key=self.tls_key,
            ca=self.tls_client_ca,
            handshake_timeout=self.tls_handshake_timeout,
        )

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


_SHARE_KEYS: Final = frozenset(Share.__dataclass_fields__)


def _share(raw: Mapping[str, Any]) -> Share:
    name = str(raw.get("name", ""))
    unknown = set(raw) - _SHARE_KEYS
    if unknown:
        raise ConfigError(f"share {name!r}: unknown setting(s): {', '.join(sorted(unknown))}")
    size = raw.get("size_gib")
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
        size_gib=size,
        tenant=str(raw.get("tenant", "")),
        cache=raw.get("cache", DEFAULT_CACHE_MODE),
    )


#: The settings of a gateway.toml: the config's fields, with [[share]] and [[instance]]
#: tables for ``shares`` and ``instances``.
_KEYS: Final = (set(GatewayConfig.__dataclass_fields__) - {"shares", "instances"}) | {
    "share",
    "instance",
}
_INSTANCE_KEYS: Final = ("uuid", "tenant", "name", "cid", "socket", "ip", "cert")


def _values(raw: Mapping[str, Any], key: str, kind: type, label: str) -> frozenset[Any]:
    """One value or a list of values of ``kind`` (``cid = 3`` or ``cid = [3, 4]``)."""
    value = raw.get(key, [])
    values = value if isinstance(value, list) else [value]
    for v in values:
        # bool is an int in Python, and ``cid = true`` is a mistake, not CID 1.
        if not isinstance(v, kind) or isinstance(v, bool):
            raise ConfigError(
                f"instance {label}: {key} must be {'a number' if kind is int else 'a string'}"
                f" or a list of them, not {v!r}"
            )
    return frozenset(values)


def _instance(raw: object, number: int) -> Instance:
    """One ``[[instance]]`` table (``number`` counts from 1, for messages)."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"instance #{number}: must be a table ([[instance]])")
    uuid = raw.get("uuid")
    label = repr(uuid) if isinstance(uuid, str) and uuid else f"#{number}"
    unknown = set(raw) - set(_INSTANCE_KEYS)
    if unknown:
        raise ConfigError(
            f"instance {label}: unknown key(s) {', '.join(sorted(unknown))}"
            f" (known: {', '.join(_INSTANCE_KEYS)})"
        )
    for key in ("uuid", "tenant"):
        if not isinstance(raw.get(key), str) or not raw[key].strip():
            raise ConfigError(f'instance {label}: needs {key} = "..." (a non-empty string)')
    if not isinstance(raw.get("name", ""), str):
        raise ConfigError(f"instance {label}: name must be a string")
    try:
        return Instance(
            uuid=raw["uuid"].strip(),
            tenant=raw["tenant"].strip(),
            name=raw.get("name", ""),
            cids=_values(raw, "cid", int, label),
            sockets=_values(raw, "socket", str, label),
            ips=_values(raw, "ip", str, label),
            certs=_values(raw, "cert", str, label),
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def load_config(path: str | Path | None, **overrides: Any) -> GatewayConfig:
    """Read a TOML file (or the defaults when ``path`` is None), with ``overrides`` (from
    flags; None means: keep the file's) applied before validation, so that settings which
    go together (a tls:// listener and its certificate) may come from either.

    Raises:
        ConfigError: unreadable file, bad TOML, unknown or invalid settings.
    """
    overrides = {k: v for k, v in overrides.items() if v is not None}
    if path is None:
        try:
            return GatewayConfig(**overrides)
        except TypeError as exc:
            raise ConfigError(str(exc)) from None
    try:
        raw = tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    unknown = set(raw) - _KEYS
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s): {', '.join(sorted(unknown))}")
    settings = {k: v for k, v in raw.items() if k not in ("share", "instance")}
    for key in ("listen", "xattr_namespaces"):
        if key in settings:
            settings[key] = tuple(settings[key])
    settings.update(overrides)
    tables = raw.get("instance", [])
    if not isinstance(tables, list):
        raise ConfigError(f"{path}: instance must be a list of tables ([[instance]])")
    try:
        return GatewayConfig(
            **settings,
            shares=tuple(_share(s) for s in raw.get("share", [])),
            instances=tuple(_instance(t, n) for n, t in enumerate(tables, 1)),
        )
    except TypeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
