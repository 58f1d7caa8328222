"""What the stream transports sent, counted where it is sent (plain Python).

Sessions report through the methods; ``/metrics`` reads :meth:`Traffic.statistics`.

Kept apart from the hub because the transports count what they actually put on
the wire (a heartbeat, a pong, a batch), which the hub never sees. Plain integer
additions on the trio thread: no lock, and cheap enough for the per-tick path,
where a lane counts a whole tick's fan-out with one :meth:`Traffic.sent_many` call.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Traffic", "TrafficStatistics"]


@dataclass(frozen=True, slots=True)
class TrafficStatistics:
    """A snapshot of the counters, totals since the service started."""

    accepted: int  # WebSocket connections accepted (upgraded)
    messages: int  # WebSocket messages sent
    payload_bytes: int  # their payload bytes (before compression)


class Traffic:
    """Counters shared by every session of one service.

    Only grow (Prometheus counters); payload bytes are the JSON before framing and
    compression, so the figure does not depend on what each client negotiated.
    """

    __slots__ = ("_accepted", "_bytes", "_messages")

    def __init__(self) -> None:
        self._accepted = 0
        self._messages = 0
        self._bytes = 0

    def accepted(self) -> None:
        """Count one accepted connection."""
        self._accepted += 1

    def sent(self, nbytes: int) -> None:
        """Count one message of ``nbytes`` payload bytes."""
        self._messages += 1
        self._bytes += nbytes

    def sent_many(self, messages: int, nbytes: int) -> None:
        """Count ``messages`` messages of ``nbytes`` payload bytes in all (one tick, N clients)."""
        self._messages += messages
        self._bytes += nbytes

    def statistics(self) -> TrafficStatistics:
        """The counters now, as a frozen record (read by ``/metrics``)."""
        return TrafficStatistics(self._accepted, self._messages, self._bytes)
