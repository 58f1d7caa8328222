"""Connection limits and the client address (plain Python, no I/O).

A WebSocket connection takes a slot before the upgrade and gives it back the moment
it ends (including a 4008 eviction), so a refused client can retry at once.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from dataclasses import dataclass

from tickcast.config import Config, Network

__all__ = ["Limits", "LimitsStatistics"]


@dataclass(frozen=True, slots=True)
class LimitsStatistics:
    open: int  # connections holding a slot
    refused: int  # connections refused by a limit (429)


class Limits:
    """Counts WebSocket connections in all and per client address."""

    def __init__(self, config: Config) -> None:
        self.max_total = config.max_connections
        self.max_per_ip = config.max_connections_per_ip
        self.trusted: tuple[Network, ...] = config.trusted_proxies
        self._total = 0
        self._per_ip: Counter[str] = Counter()
        self._refused = 0

    @property
    def total(self) -> int:
        """Connections holding a slot now."""
        return self._total

    @property
    def refused(self) -> int:
        """Connections refused by a limit so far."""
        return self._refused

    def statistics(self) -> LimitsStatistics:
        return LimitsStatistics(open=self._total, refused=self._refused)

    def client_ip(self, peer: str, forwarded_for: str | None) -> str:
        """The client address: the socket peer, or X-Forwarded-For from a trusted proxy.

        Walks X-Forwarded-For from the right, skipping trusted proxies, and returns the
        first address that is not one (the left-most if all are).
        """
        if not self.trusted or not forwarded_for or not self._is_trusted(peer):
            return peer
        hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
        for hop in reversed(hops):
            if not self._is_trusted(hop):
                return hop
        return hops[0] if hops else peer

    def _is_trusted(self, addr: str) -> bool:
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            return False
        return any(ip in net for net in self.trusted)

    def acquire(self, ip: str) -> str | None:
        """Take a slot for ``ip``; returns None, or the reason it is refused."""
        if self._total >= self.max_total:
            self._refused += 1
            return f"server is at max_connections ({self.max_total})"
        if self._per_ip[ip] >= self.max_per_ip:
            self._refused += 1
            return f"address {ip} is at max_connections_per_ip ({self.max_per_ip})"
        self._total += 1
        self._per_ip[ip] += 1
        return None

    def release(self, ip: str) -> None:
        """Give back the slot taken for ``ip``."""
        self._total -= 1
        self._per_ip[ip] -= 1
        if self._per_ip[ip] <= 0:
            del self._per_ip[ip]
