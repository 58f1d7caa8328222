"""What a :class:`~tickcast.client.Client` was told: where the server is and how to ask.

Plain Python, no I/O. The URL may be the server's base (``http://host:8000``,
``https://…``, with a path prefix behind a proxy) or a ``ws://``/``wss://`` URL,
with or without the trailing ``/ws/stream``.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from ..wire import MAX_BATCH

__all__ = ["MAX_BATCH", "Endpoint", "OnGap", "Settings"]

OnGap = Literal["raise", "continue"]

_TLS = {"http": False, "ws": False, "https": True, "wss": True}


@dataclass(frozen=True)
class Endpoint:
    """A tickcast server: host, port, TLS, and the path it is served under."""

    host: str
    port: int
    tls: bool
    prefix: str = ""  # "" or "/something", never a trailing slash

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        """Parse a base or stream URL.

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
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.tls else 80
        return host if self.port == default else f"{host}:{self.port}"

    def http_url(self, path: str) -> str:
        """The ``http(s)://`` URL of ``path`` (e.g. ``/incremental``) on this server."""
        return f"{'https' if self.tls else 'http'}://{self.host_header}{self.prefix}{path}"

    def target(self, path: str, query: dict[str, str]) -> str:
        """The request target (path and query) of ``path`` on this server."""
        encoded = urllib.parse.urlencode(query, safe=",")
        return f"{self.prefix}{path}" + (f"?{encoded}" if encoded else "")


@dataclass(frozen=True)
class Settings:
    """Everything the async core needs; built and checked by ``Client.__init__``."""

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
        """``["s", "matches"]`` or ``"s,matches"`` as a tuple; None means every field."""
        if fields is None:
            return None
        names = fields.split(",") if isinstance(fields, str) else list(fields)
        if not names or not all(isinstance(n, str) and n for n in names):
            raise ValueError(f"fields: expected names such as ['s', 'matches'], got {fields!r}")
        return tuple(names)

    def check(self) -> None:
        """Raises ValueError naming the first bad option."""
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
