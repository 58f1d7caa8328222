"""Settings: one frozen dataclass, every field a CLI flag and a ``TICKCAST_*`` variable.

Precedence: command-line flag, then environment variable, then the default.
Unknown ``TICKCAST_`` variables and bad values raise :class:`ConfigError`
naming the setting, so a typo stops start-up instead of being ignored
(hypercorn's config is the counter-example).

Owns: the names, defaults, ranges and help texts of every setting (the README's
settings table documents the same list), their parsing from text, and the start-up
log line that shows them. It does not own what a setting does: each consumer reads
the frozen :class:`Config` it is handed.

Invariants:

* a :class:`Config` that exists is valid: every check runs in ``__post_init__``,
  so no consumer re-checks a range, and a bad value never reaches a running server;
* a setting's flag is ``--`` plus its name with dashes, its variable ``TICKCAST_``
  plus its name in capitals; both are derived from the field, never listed by hand,
  so adding a field adds both (``tests/test_config.py`` checks every one);
* a token's value never appears in an error message or a log line.
"""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
import re
import urllib.parse
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
    "redacted",
]

# Every environment variable that starts with this is a setting or an error.
ENV_PREFIX = "TICKCAST_"
DEFAULT_AGENTS = 40  # simulated agents: a ~2.5 KB tick (docs/protocol.md: 1-5 KB)
MiB = 2**20

# What a power cut may take (docs/storage.md, "Durability"): nothing a client saw
# (always: fdatasync before a tick is published), about a second (interval), or what
# the OS had not flushed (never). A process crash takes nothing a client saw, whatever.
FsyncPolicy = Literal["always", "interval", "never"]
SourceKind = Literal["sim", "ingest"]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_TOKEN = re.compile(r"[\x21-\x7e]+")  # what an Authorization: Bearer header can carry


def _opt(help: str, **kw: Any) -> dict[str, Any]:
    # A field's metadata: the one-line help that `--help` shows (with the default
    # appended by add_arguments). Kept on the field so that a setting and its help
    # cannot drift apart.
    return {"help": help, **kw}


@dataclass(frozen=True, kw_only=True)
class Config:
    """Every setting of ``tickcast serve`` (the README's settings table).

    Keyword-only and frozen: built once at start-up (:func:`from_sources`, or
    directly in tests) and shared read-only by every component. Fields are grouped
    by the comment above them, in the order ``--help`` lists them. Units are in the
    names (``_s`` seconds, ``_bytes`` bytes); sizes accept ``64MiB`` as text.

    Raises:
        ConfigError: at construction, naming the first bad setting and why.
    """

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
    # Log. At the defaults (10 ticks/s of ~2.5 KB), the ring holds ~17 min of ticks in
    # ~25 MB, and a segment fills in ~45 min; retention is off: the disk is the limit.
    data_dir: Path = field(default=Path("segments"), metadata=_opt("segment directory"))
    ring_size: int = field(default=10_000, metadata=_opt("ticks kept in memory"))
    segment_bytes: int = field(
        default=64 * MiB, metadata=_opt("segment rollover size (e.g. 64MiB)")
    )
    retain_bytes: int = field(default=0, metadata=_opt("keep at most this many bytes (0: all)"))
    retain_s: float = field(default=0.0, metadata=_opt("keep segments this many seconds (0: all)"))
    fsync: FsyncPolicy = field(default="interval", metadata=_opt("always, interval (1 s) or never"))
    # Stream. A client declares a connection dead after two silent heartbeat periods
    # (docs/protocol.md), so heartbeat_s also sets how fast a dead link is noticed.
    heartbeat_s: float = field(default=30.0, metadata=_opt("seconds between heartbeats"))
    max_lag: int | None = field(
        default=None, metadata=_opt("ticks a client may lag before 4008 (default: ring size)")
    )
    compression: bool = field(default=True, metadata=_opt("negotiate permessage-deflate"))
    close_grace_s: float = field(
        default=10.0,
        metadata=_opt("seconds a closing client gets to take its last bytes before a reset"),
    )
    # Limits. Each connection costs one file descriptor (web/descriptors.py raises the
    # soft limit at start-up and warns if it is still below max_connections).
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
        # One table of (setting, ok, why): the message format is then the same for
        # every setting, and the order of the table is the order faults are reported.
        # The upper bounds are sanity limits (a typo of a few zeros), not capacities.
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
        """The effective ``max_lag``: the ring size unless set.

        The ring size by default: a client within the ring catches up from memory,
        beyond it from the files (docs/architecture.md). A deep resume is not
        refused for starting further back; see docs/protocol.md, "Slow clients".
        """
        return self.ring_size if self.max_lag is None else self.max_lag


# -- parsing ---------------------------------------------------------------------------

# A number and an optional unit, case-insensitive: 64, 64k, 64KiB, 64kb, 64 M. Every
# unit is binary (k = 1024), whatever its spelling: "MB" means MiB here.
_SIZE = re.compile(r"^\s*(\d+)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def parse_bytes(text: str) -> int:
    """Parse ``65536``, ``64MiB``, ``64M`` or ``1g`` into a byte count (binary units).

    Raises:
        ValueError: not a whole number with an optional unit (``1.5g`` and negative
            sizes are refused); :func:`from_sources` turns it into a ``ConfigError``
            naming the setting.
    """
    m = _SIZE.match(text)
    if not m:
        raise ValueError(f"not a size: {text!r}")
    unit = (m.group(2) or "").lower()[:1]
    return int(m.group(1)) * _UNITS[unit]


def _parse_bool(text: str) -> bool:
    # Strict: a word outside both lists is an error, not False, so that
    # TICKCAST_COMPRESSION=flase fails at start-up instead of turning compression on.
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {text!r}")


def _parse_networks(text: str) -> tuple[Network, ...]:
    # Addresses and CIDRs, comma-separated; a bare address is a /32 (or /128).
    # strict=False accepts 10.0.0.1/8 as 10.0.0.0/8, as operators tend to write it.
    parts = [p.strip() for p in text.split(",") if p.strip()]
    return tuple(ipaddress.ip_network(p, strict=False) for p in parts)


def _parse_optional_str(text: str) -> str | None:
    # "" and "none" mean unset, so that an environment can switch off a setting that a
    # base environment (a container image) turned on.
    return None if text.strip().lower() in ("", "none") else text.strip()


def _parse_optional_int(text: str) -> int | None:
    return None if text.strip().lower() in ("", "none") else int(text)


def _parser_for(f: dataclasses.Field[Any]) -> Callable[[str], Any]:
    """The function that turns a setting's text (flag or variable) into its value.

    Settings whose type says too little are listed by name; the rest follow their
    annotation, which is a string here (``from __future__ import annotations``).
    A new ``bool`` or optional setting must be added to ``by_name``: by its
    annotation alone it would be parsed as a plain ``str`` (and ``"false"`` is true).
    """
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
    # In declaration order: --help, describe() and the checks all follow it.
    return dataclasses.fields(Config)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per setting (defaults shown in ``--help``; values stay unparsed).

    Every flag defaults to None, not to the setting's default: None is how
    :func:`from_sources` tells "not given" from "given", so that an unset flag lets
    the environment through. For the same reason values stay text, parsed in one
    place with the same error messages as the environment's. Booleans get a
    ``--no-`` twin (``--no-compression``).
    """
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

    Args:
        args: parsed flags (an ``argparse.Namespace`` from :func:`add_arguments`) or
            a mapping of setting names to values; None values count as not given.
            Text values are parsed, other values are taken as they are.
        env: the environment (default: ``os.environ``). Names are matched exactly:
            ``tickcast_port`` is an unknown setting, not ``port``.
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
    """One ``name=value`` line per setting, secrets masked (for the start-up log).

    Every setting, not only the changed ones: a log then shows what a server ran
    with even after its defaults change. A set token shows as ``***``; an unset one
    as ``None``, so the log still tells whether access is protected.
    """
    out = []
    for f in _fields():
        value = getattr(config, f.name)
        if f.name in ("ingest_token", "read_token", "history_token") and value:
            value = "***"
        elif f.name in ("redis_url", "history_url") and value:
            value = redacted(value)  # a password in the URL: redis://:secret@host/0
        out.append(f"{f.name}={value}")
    return out


def redacted(url: str) -> str:
    """``url`` fit for a log line: a password in it replaced by ``***``.

    The start-up settings line (:func:`describe`) and the appender's and the
    follower's log lines name ``redis_url`` (and ``history_url``) through this, so
    the operator sees which server is meant without the secret reaching the logs.
    """
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))
