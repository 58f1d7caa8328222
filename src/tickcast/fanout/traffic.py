"""What the stream transports sent, counted where it is sent (plain Python).

Sessions report through the methods; ``/metrics`` reads :meth:`Traffic.statistics`.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Traffic", "TrafficStatistics"]


@dataclass(frozen=True, slots=True)
class TrafficStatistics:
    accepted: int  # WebSocket connections accepted (upgraded)
    messages: int  # WebSocket messages sent
    payload_bytes: int  # their payload bytes (before compression)


class Traffic:
    """Counters shared by every session of one service."""

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
        return TrafficStatistics(self._accepted, self._messages, self._bytes)
