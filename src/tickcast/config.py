"""Settings: one frozen dataclass, every field a CLI flag and a ``TICKCAST_*`` variable.

Precedence: command-line flag, then environment variable, then the default.
Unknown ``TICKCAST_`` variables and bad values raise :class:`ConfigError`
naming the setting, so a typo stops start-up instead of being ignored
(hypercorn's config is the counter-example).
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tickcast.errors import ConfigError

__all__ = [
    "DEFAULT_AGENTS",
    "ENV_PREFIX",
    "Config",
    "add_arguments",
    "describe",
    "from_sources",
    "parse_bytes",
]

ENV_PREFIX = "TICKCAST_"
DEFAULT_AGENTS = 40  # simulated agents: a ~2.5 KB tick (docs/protocol.md: 1-5 KB)
MiB = 2**20

FsyncPolicy = Literal["always", "interval", "never"]
SourceKind = Literal["sim", "ingest"]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_TOKEN = re.compile(r"[\x21-\x7e]+")  # what an Authorization: Bearer header can carry


def _opt(help: str, **kw: Any) -> dict[str, Any]:
    return {"help": help, **kw}


@dataclass(frozen=True, kw_only=True)
class Config:
    """Every setting of ``tickcast serve`` (the README's settings table)."""

    # Network
    host: str = field(default="127.0.0.1", metadata=_opt("address to listen on"))
    port: int = field(default=8000, metadata=_opt("TCP port; 0 picks a free one and logs it"))
    # Source
    source: SourceKind = field(default="sim", metadata=_opt("tick source: sim or ingest"))
    rate: float = field(default=10.0, metadata=_opt("simulator ticks per second"))
    agents: int = field(default=DEFAULT_AGENTS, metadata=_opt("simulated agents"))
    seed: int | None = field(default=None, metadata=_opt("simulator seed (None: random)"))
    ingest_token: str | None = field(
        default=None, metadata=_opt("bearer token for POST /ingest (required with ingest)")
    )
    # Access
    read_token: str | None = field(
        default=None,
        metadata=_opt("token required by /ws/stream, /incremental and / (none: reading is open)"),
    )
    # Log
    data_dir: Path = field(default=Path("segments"), metadata=_opt("segment directory"))
    ring_size: int = field(default=10_000, metadata=_opt("ticks kept in memory"))
    segment_bytes: int = field(
        default=64 * MiB, metadata=_opt("segment rollover size (e.g. 64MiB)")
    )
    retain_bytes: int = field(default=0, metadata=_opt("keep at most this many bytes (0: all)"))
    retain_s: float = field(default=0.0, metadata=_opt("keep segments this many seconds (0: all)"))
    fsync: FsyncPolicy = field(default="interval", metadata=_opt("always, interval (1 s) or never"))
    # Stream
    heartbeat_s: float = field(default=30.0, metadata=_opt("seconds between heartbeats"))
    max_lag: int | None = field(
        default=None, metadata=_opt("ticks a client may lag before 4008 (default: ring size)")
    )
    compression: bool = field(default=True, metadata=_opt("negotiate permessage-deflate"))
    close_grace_s: float = field(
        default=10.0,
        metadata=_opt("seconds a closing client gets to take its last bytes before a reset"),
    )
    # Limits
    max_connections: int = field(default=10_000, metadata=_opt("WebSocket connections in all"))
    max_connections_per_ip: int = field(default=100, metadata=_opt("WebSocket connections per IP"))
    trusted_proxies: tuple[Network, ...] = field(
        default=(), metadata=_opt("comma list of proxy IPs/CIDRs whose X-Forwarded-For is believed")
    )
    # Scale-out (docs/scale-out.md)
    redis_url: str | None = field(
        default=None, metadata=_opt("Redis for scale-out, redis://HOST:PORT/DB (None: off)")
    )
    redis_key: str = field(default="tickcast", metadata=_opt("key prefix of the Redis streams"))
    redis_maxlen: int = field(default=100_000, metadata=_opt("ticks kept in the Redis stream"))
    history_url: str | None = field(
        default=None, metadata=_opt("edge: the producer's base URL for history past the stream")
    )
    history_token: str | None = field(
        default=None, metadata=_opt("edge: read token sent to history_url (None: read_token)")
    )
    reuse_port: bool = field(
        default=False, metadata=_opt("edge: share the port with other edges (SO_REUSEPORT)")
    )

    def __post_init__(self) -> None:
        checks: list[tuple[str, bool, str]] = [
            ("port", 0 <= self.port <= 65535, "must be 0..65535"),
            ("rate", 0 < self.rate <= 100_000, "must be > 0 and <= 100000"),
            ("agents", 1 <= self.agents <= 1_000_000, "must be 1..1000000"),
            ("ring_size", 1 <= self.ring_size <= 10_000_000, "must be 1..10000000"),
            ("segment_bytes", self.segment_bytes >= 4096, "must be >= 4096"),
            ("retain_bytes", self.retain_bytes >= 0, "must be >= 0"),
            ("retain_s", self.retain_s >= 0, "must be >= 0"),
            ("heartbeat_s", 0 < self.heartbeat_s <= 86_400, "must be > 0 and <= 86400"),
            ("close_grace_s", 0 < self.close_grace_s <= 600, "must be > 0 and <= 600"),
            ("max_lag", self.max_lag is None or self.max_lag >= 1, "must be >= 1"),
            ("max_connections", self.max_connections >= 1, "must be >= 1"),
            ("max_connections_per_ip", self.max_connections_per_ip >= 1, "must be >= 1"),
            ("source", self.source in ("sim", "ingest"), "must be sim or ingest"),
            (
                "fsync",
                self.fsync in ("always", "interval", "never"),
                "must be always|interval|never",
            ),
            ("host", bool(self.host), "must not be empty"),
            (
                "redis_url",
                self.redis_url is None
                or self.redis_url.startswith(("redis://", "rediss://", "unix://")),
                "must be redis://HOST:PORT/DB, rediss://... or unix://PATH",
            ),
            ("redis_key", bool(self.redis_key) and " " not in self.redis_key, "must be a word"),
            ("redis_maxlen", self.redis_maxlen >= 1, "must be >= 1"),
            (
                "history_url",
                self.history_url is None or self.history_url.startswith(("http://", "https://")),
                "must be http://HOST:PORT or https://...",
            ),
        ]
        for name, ok, why in checks:
            if not ok:
                raise ConfigError(f"setting {name!r}: {why} (got {getattr(self, name)!r})")
        for name in ("read_token", "history_token"):
            token = getattr(self, name)
            if token is not None and not _TOKEN.fullmatch(token):
                why = "must be printable ASCII without spaces"
                raise ConfigError(f"setting {name!r}: {why}")  # the value is never echoed
        if self.source == "ingest" and not self.ingest_token:
            raise ConfigError("setting 'ingest_token': required with source=ingest")

    @property
    def lag_limit(self) -> int:
        """The effective ``max_lag``: the ring size unless set."""
        return self.ring_size if self.max_lag is None else self.max_lag


# -- parsing ---------------------------------------------------------------------------

_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def parse_bytes(text: str) -> int:
    """Parse ``65536``, ``64MiB``, ``64M`` or ``1g`` into a byte count (binary units)."""
    m = _SIZE.match(text)
    if not m:
        raise ValueError(f"not a size: {text!r}")
    unit = (m.group(2) or "").lower()[:1]
    return int(m.group(1)) * _UNITS[unit]


def _parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def _parse_networks(text: str) -> tuple[Network, ...]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    return tuple(ipaddress.ip_network(p, strict=False) for p in parts)


def _parse_optional_str(text: str) -> str | None:
    return None if text.strip().lower() in ("", "none") else text.strip()


def _parse_optional_int(text: str) -> int | None:
    return None if text.strip().lower() in ("", "none") else int(text)


def _parser_for(f: dataclasses.Field[Any]) -> Callable[[str], Any]:
    by_name: dict[str, Callable[[str], Any]] = {
        "segment_bytes": parse_bytes,
        "retain_bytes": parse_bytes,
        "trusted_proxies": _parse_networks,
        "data_dir": Path,
        "compression": _parse_bool,
        "reuse_port": _parse_bool,
        "redis_url": _parse_optional_str,
        "history_url": _parse_optional_str,
        "history_token": _parse_optional_str,
        "seed": _parse_optional_int,
        "max_lag": _parse_optional_int,
    }
    if f.name in by_name:
        return by_name[f.name]
    kind = str(f.type)
    if kind.startswith("int"):
        return int
    if kind.startswith("float"):
        return float
    return str


def _fields() -> tuple[dataclasses.Field[Any], ...]:
    return dataclasses.fields(Config)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per setting (defaults shown in ``--help``; values stay unparsed)."""
    defaults = Config()
    group = parser.add_argument_group("settings (each also TICKCAST_<NAME>)")
    for f in _fields():
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        if f.name.endswith("_bytes") and default and default % MiB == 0:
            default = f"{default // MiB}MiB"
        if isinstance(default, tuple):
            default = ",".join(map(str, default)) or "none"
        help_text = f"{f.metadata['help']} [default: {default}]"
        if f.type == "bool":
            group.add_argument(
                flag,
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=help_text,
            )
        else:
            group.add_argument(
                flag, dest=f.name, default=None, metavar=f.name.upper(), help=help_text
            )


def from_sources(
    args: argparse.Namespace | Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> Config:
    """Build the :class:`Config` from parsed flags and the environment.

    Raises:
        ConfigError: an unknown ``TICKCAST_`` variable, or a bad value; the message
            names the flag or variable.
    """
    env = os.environ if env is None else env
    given = dict(vars(args)) if isinstance(args, argparse.Namespace) else dict(args or {})
    names = {f.name for f in _fields()}
    known = {ENV_PREFIX + n.upper() for n in names}
    unknown = sorted(k for k in env if k.upper().startswith(ENV_PREFIX) and k not in known)
    if unknown:
        raise ConfigError(
            f"unknown setting {unknown[0]} (known: "
            + ", ".join(ENV_PREFIX + n.upper() for n in sorted(names))
            + ")"
        )
    values: dict[str, Any] = {}
    for f in _fields():
        raw: Any = given.get(f.name)
        origin = "--" + f.name.replace("_", "-")
        if raw is None:
            origin = ENV_PREFIX + f.name.upper()
            raw = env.get(origin)
        if raw is None:
            continue
        if isinstance(raw, str):
            try:
                raw = _parser_for(f)(raw)
            except ValueError as exc:
                raise ConfigError(f"setting {origin}: {exc}") from None
        values[f.name] = raw
    return Config(**values)


def describe(config: Config) -> Sequence[str]:
    """One ``name=value`` line per setting, secrets masked (for the start-up log)."""
    out = []
    for f in _fields():
        value = getattr(config, f.name)
        if f.name in ("ingest_token", "read_token", "history_token") and value:
            value = "***"
        out.append(f"{f.name}={value}")
    return out
