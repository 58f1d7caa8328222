"""What a :class:`~tickcast.client.Client` was told: where the server is and how to ask.

Plain Python, no I/O. The URL may be the server's base (``http://host:8000``,
``https://…``, with a path prefix behind a proxy) or a ``ws://``/``wss://`` URL,
with or without the trailing ``/ws/stream``.

Owns the checks of what a caller passed to ``Client(...)``: each bad option raises
``ValueError`` naming it, at construction, before any connection is tried (the
client's counterpart of the server failing at start-up naming the setting).
Both classes are frozen: the reconnecting core reads them from several places and
never has to wonder whether one changed mid-stream.

Import rule: the client imports nothing of the server but ``tickcast.wire`` (an
import-linter contract in ``pyproject.toml``), so the batch cap here is the
server's own constant, not a copy.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from ..wire import MAX_BATCH

__all__ = ["MAX_BATCH", "Endpoint", "OnGap", "Settings"]

# What the client does when a resume would skip ticks (docs/client.md, "Gaps"): raise,
# or log a warning and carry on from the oldest tick the server still has.
OnGap = Literal["raise", "continue"]

_TLS = {"http": False, "ws": False, "https": True, "wss": True}


@dataclass(frozen=True)
class Endpoint:
    """A tickcast server: host, port, TLS, and the path it is served under.

    One value serves both the stream (``ws(s)://``) and the history pages
    (``http(s)://``), which share host, port, TLS and prefix: a reconnect that
    falls back to ``/incremental`` reaches the same server the stream did.
    """

    host: str
    port: int
    tls: bool
    prefix: str = ""  # "" or "/something", never a trailing slash

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        """Parse a base or stream URL.

        ``ws``/``http`` and ``wss``/``https`` are interchangeable: only whether TLS
        is used and the default port (80 or 443) follow from the scheme.

        Raises:
            ValueError: an unknown scheme, no host, or a query or fragment (options go
                to ``Client(...)``, not into the URL).
        """
        parts = urllib.parse.urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in _TLS:
            raise ValueError(f"url: expected http, https, ws or wss, got {url!r}")
        if not parts.hostname:
            raise ValueError(f"url: no host in {url!r}")
        if parts.query or parts.fragment:
            raise ValueError(f"url: no query or fragment, please (got {url!r})")
        tls = _TLS[scheme]
        prefix = parts.path.rstrip("/")
        prefix = prefix.removesuffix("/ws/stream")
        return cls(parts.hostname, parts.port or (443 if tls else 80), tls, prefix)

    @property
    def host_header(self) -> str:
        """The ``Host`` header value: IPv6 in brackets, the port only when not default.

        Leaving out a default port matches what browsers send, so servers behind a
        proxy that routes by ``Host`` see the same value from this client.
        """
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.tls else 80
        return host if self.port == default else f"{host}:{self.port}"

    def http_url(self, path: str) -> str:
        """The ``http(s)://`` URL of ``path`` (e.g. ``/incremental``) on this server."""
        return f"{'https' if self.tls else 'http'}://{self.host_header}{self.prefix}{path}"

    def target(self, path: str, query: dict[str, str]) -> str:
        """The request target (path and query) of ``path`` on this server.

        Commas stay literal (``fields=s,matches``) rather than ``%2C``: the URL stays
        readable in server and proxy logs.
        """
        encoded = urllib.parse.urlencode(query, safe=",")
        return f"{self.prefix}{path}" + (f"?{encoded}" if encoded else "")


@dataclass(frozen=True)
class Settings:
    """Everything the async core needs; built and checked by ``Client.__init__``.

    Defaults are the ones documented for ``Client`` (docs/client.md). ``batch`` is
    asked of the server, which may send fewer per message; it is a throughput knob,
    not a guarantee of message size.
    """

    endpoint: Endpoint
    fields: tuple[str, ...] | None = None
    batch: int = 100
    token: str | None = None
    on_gap: OnGap = "raise"
    # Reconnection
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 10.0
    # Transport
    compression: bool = True

    @staticmethod
    def fields_tuple(fields: Iterable[str] | str | None) -> tuple[str, ...] | None:
        """``["s", "matches"]`` or ``"s,matches"`` as a tuple; None means every field.

        Only the shape is checked here (non-empty names); whether a name is a tick
        key is the server's to say (a 400 naming it), so the client does not carry
        a second copy of the list.

        Raises:
            ValueError: an empty list, an empty name, or a name that is not a string.
        """
        if fields is None:
            return None
        names = fields.split(",") if isinstance(fields, str) else list(fields)
        if not names or not all(isinstance(n, str) and n for n in names):
            raise ValueError(f"fields: expected names such as ['s', 'matches'], got {fields!r}")
        return tuple(names)

    def check(self) -> None:
        """Check the options that ``__init__`` cannot type: ranges and choices.

        Raises:
            ValueError: naming the first bad option.
        """
        if not 1 <= self.batch <= MAX_BATCH:
            raise ValueError(f"batch: must be in 1..{MAX_BATCH}, got {self.batch}")
        if self.on_gap not in ("raise", "continue"):
            raise ValueError(f"on_gap: must be 'raise' or 'continue', got {self.on_gap!r}")
        if not 0 < self.backoff_initial_s <= self.backoff_max_s:
            raise ValueError(
                "backoff: need 0 < backoff_initial_s <= backoff_max_s, got "
                f"{self.backoff_initial_s} and {self.backoff_max_s}"
            )

    @property
    def headers(self) -> dict[str, str]:
        """Headers for every request: the read token when one was given."""
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def query(self, start: Mapping[str, str]) -> dict[str, str]:
        """The stream's (or a page's) query parameters, the start (``from_t`` or
        ``from_ts``, from ``Cursor.query_start``) first."""
        query = dict(start)
        if self.fields is not None:
            query["fields"] = ",".join(self.fields)
        return query
