"""The hub: fans each published tick out to every subscriber without awaiting any.

Invariants (the slow-consumer policy, see docs/protocol.md):

* :meth:`Hub.publish` is synchronous. It hands the tick to each *live*
  subscriber with :meth:`Subscriber.deliver`, which never blocks: it either takes
  the tick (into its bounded buffer, or straight onto the socket) or returns
  False. A subscriber that returns False stops being live; its connection later
  catches up from history at its own ``next_t`` and rejoins.
* A subscriber that is not live and lags by more than ``lag_limit`` ticks beyond its
  ``allowance`` (``published t - next_t + 1 > lag_limit + allowance``) is evicted: its
  connection closes with 4008 and the reason names the ``from_t`` to resume with. The
  allowance is 0 for a client that has been live; a client replaying from an old
  ``from_t`` gets the smallest lag it has had so far, so a resume is never refused for
  being far back, only for falling further behind.
* Ticks older than a subscriber's ``next_t`` are skipped, so a client that asked
  for a future ``from_t`` starts exactly there.

Nothing here awaits, so one slow client cannot delay the source, the writer or
any other client, and the hub's memory is the subscriber set.
"""

from __future__ import annotations

from dataclasses import dataclass

from tickcast.tick import EncodedTick

__all__ = ["Hub", "HubStatistics", "Subscriber"]


@dataclass(frozen=True, slots=True)
class HubStatistics:
    """A snapshot of the hub's counters (for ``/metrics``)."""

    subscribers: int
    published: int  # ticks published
    fell_behind: int  # times a live subscriber fell back to catching up
    slow_closes: int  # subscribers closed with 4008 (by the hub or by their session)


class Subscriber:
    """One connection's place in the fan-out. Transports subclass it.

    Attributes:
        next_t: the next ``t`` this client has not yet been given.
        live: True while the hub delivers ticks to it directly.
        allowance: extra lag tolerated while replaying (see the module invariants).
    """

    next_t: int = 0
    live: bool = False
    allowance: int = 0

    def deliver(self, tick: EncodedTick) -> bool:
        """Take ``tick`` (``tick.t == next_t``) without blocking; False when full."""
        raise NotImplementedError

    def fell_behind(self) -> None:
        """Called once when :meth:`deliver` returned False (the subscriber is no longer live)."""

    def evict(self) -> None:
        """Close the connection as a slow consumer (4008). Must not block."""
        raise NotImplementedError

    def reset(self) -> None:
        """Close the connection because the history was reset (4009). Must not block."""
        raise NotImplementedError


class Hub:
    """The set of subscribers, and the fan-out of each published tick."""

    def __init__(self, *, lag_limit: int) -> None:
        self.lag_limit = lag_limit
        self._subs: set[Subscriber] = set()
        self._published = 0
        self._fell_behind = 0
        self._slow_closes = 0

    def __len__(self) -> int:
        return len(self._subs)

    def add(self, sub: Subscriber) -> None:
        self._subs.add(sub)

    def discard(self, sub: Subscriber) -> None:
        self._subs.discard(sub)

    def subscribers(self) -> list[Subscriber]:
        return list(self._subs)

    def count_slow_close(self) -> None:
        """Count a 4008 decided outside :meth:`publish` (a session's own catch-up)."""
        self._slow_closes += 1

    def statistics(self) -> HubStatistics:
        return HubStatistics(
            subscribers=len(self._subs),
            published=self._published,
            fell_behind=self._fell_behind,
            slow_closes=self._slow_closes,
        )

    def evict_all(self) -> None:
        """4008 to every subscriber: ticks they need are lost (a scale-out gap)."""
        for sub in tuple(self._subs):
            self._slow_closes += 1
            self.discard(sub)
            sub.evict()

    def reset_all(self) -> None:
        """4009 to every subscriber: the history behind them was reset (a new epoch)."""
        for sub in tuple(self._subs):
            self.discard(sub)
            sub.reset()

    def publish(self, tick: EncodedTick) -> None:
        """Fan ``tick`` out. Never blocks; see the module invariants."""
        self._published += 1
        t = tick.t
        limit = self.lag_limit
        for sub in tuple(self._subs):
            if sub.live:
                if t < sub.next_t:
                    continue
                if sub.deliver(tick):
                    continue
                sub.live = False
                self._fell_behind += 1
                sub.fell_behind()
            elif t - sub.next_t + 1 > limit + sub.allowance:
                self._slow_closes += 1
                self.discard(sub)
                sub.evict()
