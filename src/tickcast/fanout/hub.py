"""The hub: fans each published tick out to every subscriber without awaiting any.

Invariants (the slow-consumer policy, see docs/protocol.md):

* :meth:`Hub.publish` is synchronous. It hands the tick to each *live*
  subscriber with :meth:`Subscriber.deliver`, which never blocks: it either takes
  the tick (into its bounded buffer, or straight onto the socket) or returns
  False. A subscriber that returns False stops being live; its connection later
  catches up from history at its own ``next_t`` and rejoins.
* A subscriber that is not live and lags by more than ``lag_limit`` ticks beyond its
  ``allowance`` (``protocol.too_far_behind``, the one written form of the rule:
  ``published t - next_t + 1 > lag_limit + allowance``) is evicted: its
  connection closes with 4008 and the reason names the ``from_t`` to resume with. The
  allowance is 0 for a client that has been live; a client replaying from an old
  ``from_t`` gets the smallest lag it has had so far, so a resume is never refused for
  being far back, only for falling further behind. A *replaying* subscriber (a
  paced or paused replay, docs/protocol.md "Replay") is not a slow consumer: the rule
  skips it, as it skips live ones.
* Ticks older than a subscriber's ``next_t`` are skipped, so a client that asked
  for a future ``from_t`` starts exactly there.
* **Lanes** are the fast path. A live subscriber whose transport can take a tick the
  same way as others (the raw transport: one cached frame, one ``send``) may
  :meth:`Hub.join` that :class:`Lane`. The hub then hands each tick to the lane once
  (:meth:`Lane.publish`), which gives it to every member in one loop; members are not
  visited one by one, and their ``next_t`` is not written per tick: every member has
  been given exactly the ticks up to ``lane.t``. A member that cannot take a tick
  whole leaves (:meth:`Hub.leave`) with its exact position written back, and is a
  plain subscriber again (delivered to one by one, subject to the policy above)
  until it rejoins. A subscriber joins only when its ``next_t`` is ``lane.t + 1``, so
  joining and leaving never lose or repeat a tick. Lane members are live by
  definition, so the slow-consumer policy never needs to look at them.

Nothing here awaits, so one slow client cannot delay the source, the writer or
any other client, and the hub's memory is the subscriber set.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Protocol, TypeVar

from tickcast.protocol import too_far_behind
from tickcast.tick import EncodedTick

__all__ = ["Hub", "HubStatistics", "Lane", "Subscriber"]


@dataclass(frozen=True, slots=True)
class HubStatistics:
    """A snapshot of the hub's counters (for ``/metrics``)."""

    subscribers: int
    published: int  # ticks published
    fell_behind: int  # times a live subscriber fell back to catching up
    slow_closes: int  # subscribers closed with 4008 (by the hub or by their session)


class Subscriber(Protocol):
    """One connection's place in the fan-out, as the hub sees it (a stream session).

    A structural interface: a transport's session provides it by holding a
    ``protocol.StreamProtocol`` (whose ``next_t``, ``live``, ``allowance`` and
    ``lane`` these are), not by subclassing anything.

    Attributes:
        next_t: the next ``t`` this client has not yet been given (while in a lane,
            ``lane.t + 1``; written back when it leaves).
        live: True while the hub delivers ticks to it directly.
        replaying: True while it replays history at a pace, or is paused: the lag
            rule does not apply to it.
        allowance: extra lag tolerated while replaying (see the module invariants).
        lane: the lane it is a member of, if any (only the hub sets it).
    """

    next_t: int
    allowance: int
    lane: Lane | None

    @property
    def live(self) -> bool: ...

    @property
    def replaying(self) -> bool: ...

    def deliver(self, tick: EncodedTick) -> bool:
        """Take ``tick`` (``tick.t == next_t``) without blocking; False when full."""
        ...

    def fell_behind(self) -> None:
        """:meth:`deliver` returned False: stop being live (catch up from history)."""
        ...

    def evict(self) -> None:
        """Close the connection as a slow consumer (4008). Must not block."""
        ...

    def reset(self) -> None:
        """Close the connection because the history was reset (4009). Must not block."""
        ...


class Lane(Protocol):
    """Live subscribers that take each tick the same way, served in one loop.

    A transport provides it (its fast path); the hub keeps one per key and calls
    :meth:`publish` once per tick. The hub moves subscribers in (:meth:`Hub.join`) and
    out (:meth:`Hub.leave`, :meth:`Hub.discard`) through :meth:`add` and :meth:`remove`.

    Attributes:
        t: the last tick every member has been given (the hub advances it after each
            :meth:`publish`); a member's ``next_t`` is ``t + 1``.
    """

    t: int

    def __len__(self) -> int: ...

    def members(self) -> Iterable[Subscriber]:
        """Every member (in any order)."""
        ...

    def add(self, sub: Subscriber) -> None:
        """Take ``sub`` in (its ``next_t`` is ``t + 1``)."""
        ...

    def remove(self, sub: Subscriber, next_t: int) -> None:
        """Let ``sub`` go; write back its position: ``sub.next_t = next_t``."""
        ...

    def publish(self, tick: EncodedTick) -> None:
        """Give ``tick`` (``t + 1``) to every member, without blocking.

        A member that cannot take it whole must leave through :meth:`Hub.leave`
        (after the loop over members, not during it), with ``next_t=tick.t + 1`` if
        it took the tick (some bytes queued) or ``tick.t`` if not.
        """
        ...


L = TypeVar("L", bound=Lane)


class Hub:
    """The set of subscribers, and the fan-out of each published tick."""

    def __init__(self, *, lag_limit: int) -> None:
        """An empty hub; ``lag_limit`` is the effective ``max_lag`` (``Config.lag_limit``)."""
        self.lag_limit = lag_limit
        self._subs: set[Subscriber] = set()  # every subscriber not in a lane
        self._lanes: dict[Hashable, Lane] = {}  # a handful: one per way of taking a tick
        self._last_t = -1  # t of the tick being or last published
        self._published = 0
        self._fell_behind = 0
        self._slow_closes = 0

    def __len__(self) -> int:
        """Subscribers in all, lane members included (O(number of lanes))."""
        return len(self._subs) + sum(len(lane) for lane in self._lanes.values())

    def add(self, sub: Subscriber) -> None:
        """Start offering ticks to ``sub`` (a new stream, before its first send).

        It joins as a plain subscriber; the lag rule applies from this moment, which
        is why a session is added before it sends its hello (``transports/stream.py``).
        """
        self._subs.add(sub)

    def discard(self, sub: Subscriber) -> None:
        """Stop offering ticks to ``sub``, wherever it is (idempotent, never blocks)."""
        if sub.lane is not None:
            self.leave(sub)
        self._subs.discard(sub)

    def subscribers(self) -> list[Subscriber]:
        """Every subscriber, lane members included, as a new list (safe to mutate the hub
        while iterating it, as :meth:`evict_all` and :meth:`reset_all` do)."""
        subs = list(self._subs)
        for lane in self._lanes.values():
            subs += lane.members()
        return subs

    # -- lanes ----------------------------------------------------------------------

    def lane(self, key: Hashable, make: Callable[[], L]) -> L:
        """The lane for ``key``, made with ``make()`` the first time (lanes are kept)."""
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = make()
            lane.t = self._last_t
        return lane  # type: ignore[return-value]  # one key, one maker

    def join(self, sub: Subscriber, lane: Lane) -> bool:
        """Move ``sub`` into ``lane`` if it is a live subscriber at the lane's edge.

        Returns False (nothing changes) unless ``sub`` is in the hub, live, in no lane,
        and has been given exactly the ticks up to ``lane.t`` (``next_t == lane.t + 1``).
        """
        if not sub.live or sub.lane is not None or sub.next_t != lane.t + 1:
            return False
        if sub not in self._subs:  # left the hub (a subscriber may still be asked mid-loop)
            return False
        self._subs.remove(sub)
        lane.add(sub)
        sub.lane = lane
        return True

    def leave(self, sub: Subscriber, *, next_t: int | None = None) -> None:
        """Take ``sub`` out of its lane; it is delivered to one by one from now on.

        Its ``next_t`` is written back: ``lane.t + 1``, or ``next_t`` when a lane lets
        a member go in the middle of a tick. No-op if it is in no lane.
        """
        lane = sub.lane
        if lane is None:
            return
        sub.lane = None
        lane.remove(sub, lane.t + 1 if next_t is None else next_t)
        self._subs.add(sub)

    def count_slow_close(self) -> None:
        """Count a 4008 decided outside :meth:`publish` (a session's own catch-up)."""
        self._slow_closes += 1

    def statistics(self) -> HubStatistics:
        """The hub's counters now, as a frozen record (read by ``/metrics``)."""
        return HubStatistics(
            subscribers=len(self),
            published=self._published,
            fell_behind=self._fell_behind,
            slow_closes=self._slow_closes,
        )

    def evict_all(self) -> None:
        """4008 to every subscriber: ticks they need are lost (a scale-out gap)."""
        for sub in self.subscribers():  # lane members too
            self._slow_closes += 1
            self.discard(sub)
            sub.evict()

    def reset_all(self) -> None:
        """4009 to every subscriber: the history behind them was reset (a new epoch)."""
        for sub in self.subscribers():  # lane members too
            self.discard(sub)
            sub.reset()

    def publish(self, tick: EncodedTick) -> None:
        """Fan ``tick`` out. Never blocks; see the module invariants.

        Lanes first, then the other subscribers one by one (members a lane lets go
        during this tick are among them, with ``next_t`` past it).
        """
        self._published += 1
        t = tick.t
        self._last_t = t
        for lane in self._lanes.values():
            if lane.t != t - 1:  # a gap or a rewind (not in normal operation): one by one
                for sub in list(lane.members()):
                    self.leave(sub)
            elif len(lane):
                lane.publish(tick)
            lane.t = t
        if not self._subs:
            return
        limit = self.lag_limit
        for sub in tuple(self._subs):
            if sub.live:
                if t < sub.next_t:
                    continue
                if sub.deliver(tick):
                    continue
                self._fell_behind += 1
                sub.fell_behind()
            elif not sub.replaying and too_far_behind(t, sub.next_t, limit, sub.allowance):
                self._slow_closes += 1
                self.discard(sub)
                sub.evict()
