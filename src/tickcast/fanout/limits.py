"""Connection limits and the client address (plain Python, no I/O).

A WebSocket connection takes a slot before the upgrade and gives it back the moment
it ends (including a 4008 eviction), so a refused client can retry at once.

Owns: the two counts that ``max_connections`` and ``max_connections_per_ip`` bound
(README, settings), the count of refusals for ``/metrics``, and the rule that decides
which address a connection is counted against (``trusted_proxies``).

Invariants:

* ``total == sum(per_ip.values())`` and no address is kept with a count of 0, so the
  per-address table is as large as the set of addresses connected *now*, not every
  address ever seen;
* every successful :meth:`Limits.acquire` is matched by exactly one
  :meth:`Limits.release` with the same address. This class does not guard against
  a double release: the caller does (``transports/stream.py`` releases only when the
  stream protocol's ``finish`` reports the first end);
* a refusal takes nothing, so it needs no release.

Not thread-safe and not async: every call is made from the one trio thread, and none
awaits, so a check and the take that follows it cannot interleave with another
connection's.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from dataclasses import dataclass

from tickcast.config import Config, Network

__all__ = ["Limits", "LimitsStatistics"]


@dataclass(frozen=True, slots=True)
class LimitsStatistics:
    """A snapshot of the counters, read by ``/metrics`` (``metrics.py``)."""

    open: int  # connections holding a slot
    refused: int  # connections refused by a limit (429)


class Limits:
    """Counts WebSocket connections in all and per client address.

    Exists so that one client (or one address behind a NAT) cannot take every slot
    of the server, and so that a full server answers 429 at the upgrade instead of
    accepting connections it cannot serve. Only WebSocket streams are counted: HTTP
    requests are short and are not limited here.
    """

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
        """The counters now, as a frozen record (the house's ``statistics()``)."""
        return LimitsStatistics(open=self._total, refused=self._refused)

    def client_ip(self, peer: str, forwarded_for: str | None) -> str:
        """The client address: the socket peer, or X-Forwarded-For from a trusted proxy.

        Walks X-Forwarded-For from the right, skipping trusted proxies, and returns the
        first address that is not one (the left-most if all are).

        Why from the right: each proxy appends the address it received the request
        from, so the right-most entries are the ones our own proxies wrote and the
        left ones are whatever the client sent. The first untrusted entry from the
        right is therefore the last address a trusted proxy vouched for; anything to
        its left could be forged to dodge the per-address limit.

        The header is ignored entirely unless the socket peer itself is a trusted
        proxy: a client that connects directly cannot choose the address it is
        counted against. An entry that is not an IP address is never trusted (it is
        returned as the address, as the proxy wrote it).

        Args:
            peer: the socket peer's address, as the transport reports it.
            forwarded_for: the ``X-Forwarded-For`` header's value, or None when absent
                (several headers are expected joined with ``,``).
        """
        if not self.trusted or not forwarded_for or not self._is_trusted(peer):
            return peer
        hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
        for hop in reversed(hops):
            if not self._is_trusted(hop):
                return hop
        return hops[0] if hops else peer

    def _is_trusted(self, addr: str) -> bool:
        # Linear in the number of configured networks: a handful in practice, and this
        # runs once per upgrade, not per message.
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            return False
        return any(ip in net for net in self.trusted)

    def acquire(self, ip: str) -> str | None:
        """Take a slot for ``ip``; returns None, or the reason it is refused.

        The total limit is checked first, so a full server says so whatever the
        address. Each refusal counts in ``refused``. The reason names the setting
        that refused, for the 429 body (``detail``) that the client sees.

        Returns:
            None when a slot was taken (the caller must :meth:`release` it once),
            or the human-readable refusal (nothing taken).
        """
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
        """Give back the slot taken for ``ip``.

        Call exactly once per successful :meth:`acquire`, with the same ``ip``; the
        counts are not checked, so a second release would undercount. Never blocks,
        so it is safe in a ``finally`` and during cancellation.
        """
        self._total -= 1
        self._per_ip[ip] -= 1
        if self._per_ip[ip] <= 0:
            del self._per_ip[ip]
