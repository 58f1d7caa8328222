"""Tests for the hub's fan-out and slow-consumer policy (synchronous, with a fake)."""

from __future__ import annotations

import pytest

from tickcast.fanout.hub import Hub, Lane, Subscriber
from tickcast.tick import EncodedTick

TS0 = 1_732_450_000.0


def tick(t: int) -> EncodedTick:
    return EncodedTick.from_dict({"type": "tick", "t": t, "ts": TS0 + t, "s": {"p": 1.0}})


class FakeSub:
    """A subscriber (the hub's ``Subscriber`` interface) with a buffer of ``capacity`` ticks."""

    def __init__(self, *, ip: str = "1.1.1.1", capacity: int = 100, next_t: int = 0) -> None:
        self.ip = ip
        self.capacity = capacity
        self.next_t = next_t
        self.allowance = 0
        self.lane: Lane | None = None
        self.live = True
        self.replaying = False
        self.buffer: list[EncodedTick] = []
        self.fell_behind_calls = 0
        self.evict_calls = 0

    def deliver(self, tick: EncodedTick) -> bool:
        if len(self.buffer) >= self.capacity:
            return False
        self.buffer.append(tick)
        self.next_t = tick.t + 1
        return True

    def fell_behind(self) -> None:
        self.live = False
        self.fell_behind_calls += 1

    def evict(self) -> None:
        self.evict_calls += 1

    def got(self) -> list[int]:
        return [x.t for x in self.buffer]


def publish(hub: Hub, first_t: int, count: int) -> list[EncodedTick]:
    ticks = [tick(t) for t in range(first_t, first_t + count)]
    for x in ticks:
        hub.publish(x)
    return ticks


def test_empty_hub() -> None:
    hub = Hub(lag_limit=10)
    assert len(hub) == 0
    assert hub.subscribers() == []
    hub.publish(tick(0))
    assert hub.statistics().published == 1


def test_publish_delivers_to_live_subs_in_order() -> None:
    hub = Hub(lag_limit=10)
    a, b = FakeSub(ip="1.1.1.1"), FakeSub(ip="2.2.2.2")
    hub.add(a)
    hub.add(b)
    ticks = publish(hub, 0, 5)
    assert a.got() == b.got() == [0, 1, 2, 3, 4]
    # The very objects published, not copies.
    assert all(x is y for x, y in zip(a.buffer, ticks, strict=True))
    assert a.next_t == b.next_t == 5
    stats = hub.statistics()
    assert (stats.published, stats.fell_behind, stats.slow_closes) == (5, 0, 0)


def test_full_sub_becomes_not_live_and_fell_behind_is_called_once() -> None:
    hub = Hub(lag_limit=100)
    slow = FakeSub(capacity=2)
    fast = FakeSub(ip="2.2.2.2")
    hub.add(slow)
    hub.add(fast)
    publish(hub, 0, 6)
    assert slow.live is False
    assert slow.fell_behind_calls == 1
    assert hub.statistics().fell_behind == 1
    assert slow.got() == [0, 1]
    assert slow.next_t == 2  # where its catch-up resumes
    # The slow subscriber never delays or starves the others.
    assert fast.live is True
    assert fast.got() == [0, 1, 2, 3, 4, 5]
    assert slow.evict_calls == 0
    assert slow in hub.subscribers()


def test_not_live_sub_is_not_delivered_to() -> None:
    hub = Hub(lag_limit=100)
    sub = FakeSub(capacity=10)
    sub.live = False
    sub.next_t = 0
    hub.add(sub)
    publish(hub, 0, 5)
    assert sub.buffer == []
    assert sub.fell_behind_calls == 0
    assert hub.statistics().fell_behind == 0


def test_sub_can_rejoin_after_catching_up() -> None:
    hub = Hub(lag_limit=100)
    sub = FakeSub(capacity=1)
    hub.add(sub)
    publish(hub, 0, 3)  # takes 0, refuses 1
    assert (sub.live, sub.next_t) == (False, 1)
    # The connection drains its buffer and catches up from history (1, 2) ...
    sub.buffer.clear()
    sub.next_t = 3
    sub.live = True
    publish(hub, 3, 1)
    assert sub.got() == [3]
    assert sub.fell_behind_calls == 1
    publish(hub, 4, 1)  # full again
    assert sub.fell_behind_calls == 2
    assert hub.statistics().fell_behind == 2


def test_lagging_past_the_limit_is_evicted() -> None:
    lag_limit = 3
    hub = Hub(lag_limit=lag_limit)
    sub = FakeSub(capacity=0)  # refuses everything: next_t stays 0
    other = FakeSub(ip="2.2.2.2")
    hub.add(sub)
    hub.add(other)
    # t=0: deliver refused, sub stops being live (not evicted on the same tick).
    publish(hub, 0, 1)
    assert sub.live is False
    # t=1, t=2: lag (t - next_t + 1) is 2, then 3 == lag_limit: kept.
    publish(hub, 1, 2)
    assert sub.evict_calls == 0
    assert sub in hub.subscribers()
    assert hub.statistics().slow_closes == 0
    # t=3: lag 4 > lag_limit: evicted.
    publish(hub, 3, 1)
    assert sub.evict_calls == 1
    assert sub not in hub.subscribers()
    assert len(hub) == 1
    assert hub.statistics().slow_closes == 1
    assert hub.subscribers() == [other]
    # Gone for good: later ticks do not evict it again.
    publish(hub, 4, 3)
    assert sub.evict_calls == 1
    assert hub.statistics().slow_closes == 1
    assert other.got() == list(range(7))


@pytest.mark.parametrize(
    ("lag_limit", "next_t", "t", "evicted"),
    [
        (5, 10, 14, False),  # lag 5 == limit
        (5, 10, 15, True),  # lag 6 > limit
        (1, 10, 10, False),  # lag 1 == limit
        (1, 10, 11, True),  # lag 2 > limit
        (5, 10, 3, False),  # behind next_t: no lag at all
    ],
)
def test_lag_boundary(lag_limit: int, next_t: int, t: int, evicted: bool) -> None:
    hub = Hub(lag_limit=lag_limit)
    sub = FakeSub(next_t=next_t)
    sub.live = False
    hub.add(sub)
    hub.publish(tick(t))
    assert (sub.evict_calls == 1) is evicted
    assert (sub in hub.subscribers()) is not evicted
    assert hub.statistics().slow_closes == int(evicted)


def test_live_sub_is_never_evicted_for_lag() -> None:
    # Eviction applies to subscribers that are not live; a live one is delivered to.
    hub = Hub(lag_limit=1)
    sub = FakeSub(next_t=0)
    hub.add(sub)
    hub.publish(tick(50))
    assert sub.evict_calls == 0
    assert sub.got() == [50]


def test_ticks_before_next_t_are_skipped_for_live_subs() -> None:
    hub = Hub(lag_limit=100)
    future = FakeSub(next_t=5)  # asked for from_t=5 beyond the latest tick
    now = FakeSub(ip="2.2.2.2", next_t=0)
    hub.add(future)
    hub.add(now)
    publish(hub, 0, 8)
    assert future.got() == [5, 6, 7]
    assert now.got() == list(range(8))
    assert future.fell_behind_calls == 0
    assert hub.statistics().fell_behind == 0


def test_skipped_ticks_do_not_count_as_refusals() -> None:
    # A full subscriber is not asked (and cannot refuse) a tick it already has.
    hub = Hub(lag_limit=100)
    sub = FakeSub(next_t=3, capacity=0)
    hub.add(sub)
    publish(hub, 0, 3)
    assert sub.live is True
    assert sub.fell_behind_calls == 0
    hub.publish(tick(3))
    assert sub.live is False
    assert sub.fell_behind_calls == 1


def test_add_and_discard() -> None:
    hub = Hub(lag_limit=10)
    a1, a2, b = FakeSub(ip="1.1.1.1"), FakeSub(ip="1.1.1.1"), FakeSub(ip="2.2.2.2")
    for s in (a1, a2, b):
        hub.add(s)
    assert len(hub) == 3
    hub.discard(a1)
    hub.discard(b)
    assert len(hub) == 1
    assert hub.subscribers() == [a2]


def test_discard_is_idempotent() -> None:
    hub = Hub(lag_limit=10)
    a = FakeSub(ip="1.1.1.1")
    hub.add(a)
    hub.discard(a)
    hub.discard(a)
    hub.discard(FakeSub(ip="1.1.1.1"))  # never added
    assert len(hub) == 0


def test_discarded_sub_gets_nothing() -> None:
    hub = Hub(lag_limit=10)
    a, b = FakeSub(), FakeSub(ip="2.2.2.2")
    hub.add(a)
    hub.add(b)
    publish(hub, 0, 2)
    hub.discard(a)
    publish(hub, 2, 2)
    assert a.got() == [0, 1]
    assert b.got() == [0, 1, 2, 3]


def test_subscriber_may_leave_during_publish() -> None:
    # deliver() of one subscriber can end another connection (the set is copied).
    hub = Hub(lag_limit=10)
    victim = FakeSub(ip="2.2.2.2")

    class Remover(FakeSub):
        def deliver(self, tick: EncodedTick) -> bool:
            hub.discard(victim)
            return super().deliver(tick)

    remover = Remover()
    hub.add(remover)
    hub.add(victim)
    hub.publish(tick(0))
    assert remover.got() == [0]
    assert victim not in hub.subscribers()
    assert hub.subscribers() == [remover]


# -- lanes (the fast path) -----------------------------------------------------------------


class FakeLane:
    """Members take every tick unless listed in ``refuse`` (then they leave without it)
    or ``short`` (then they leave having taken it, the rest queued)."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.subs: list[FakeSub] = []
        self.got: dict[FakeSub, list[int]] = {}
        self.refuse: set[FakeSub] = set()
        self.short: set[FakeSub] = set()
        self.publishes = 0
        self.t = -1

    def __len__(self) -> int:
        return len(self.subs)

    def members(self) -> list[FakeSub]:
        return list(self.subs)

    def add(self, sub: Subscriber) -> None:
        assert isinstance(sub, FakeSub)
        self.subs.append(sub)

    def remove(self, sub: Subscriber, next_t: int) -> None:
        assert isinstance(sub, FakeSub)
        self.subs.remove(sub)
        sub.next_t = next_t

    def publish(self, tick: EncodedTick) -> None:
        self.publishes += 1
        leaving = []
        for sub in self.subs:
            if sub in self.refuse:
                leaving.append((sub, tick.t))
                continue
            self.got.setdefault(sub, []).append(tick.t)
            if sub in self.short:
                leaving.append((sub, tick.t + 1))
        for sub, next_t in leaving:
            self.hub.leave(sub, next_t=next_t)


def all_got(sub: FakeSub, lane: FakeLane) -> list[int]:
    return sorted(sub.got() + lane.got.get(sub, []))


def test_join_only_at_the_lane_edge() -> None:
    hub = Hub(lag_limit=10)
    publish(hub, 0, 3)  # t 0..2 published: a new lane's edge is 2
    lane = hub.lane("k", lambda: FakeLane(hub))
    assert lane.t == 2
    assert hub.lane("k", lambda: FakeLane(hub)) is lane
    behind, future, edge = FakeSub(next_t=2), FakeSub(next_t=5), FakeSub(next_t=3)
    stranger = FakeSub(next_t=3)  # never added to the hub
    resting = FakeSub(next_t=3)
    resting.live = False
    for sub in (behind, future, edge, resting):
        hub.add(sub)
    assert not hub.join(behind, lane)
    assert not hub.join(future, lane)
    assert not hub.join(stranger, lane)
    assert not hub.join(resting, lane)
    assert hub.join(edge, lane)
    assert edge.lane is lane
    assert not hub.join(edge, lane)  # already in
    assert len(hub) == 4  # the four added; edge, now in the lane, counted once
    assert set(hub.subscribers()) == {behind, future, edge, resting}
    assert hub.statistics().subscribers == 4


def test_lane_members_get_every_tick_once_and_positions_are_written_back() -> None:
    hub = Hub(lag_limit=10)
    lane = hub.lane("k", lambda: FakeLane(hub))
    a, b = FakeSub(), FakeSub(ip="2.2.2.2")
    hub.add(a)
    hub.add(b)
    assert hub.join(a, lane)
    publish(hub, 0, 4)
    assert lane.got[a] == [0, 1, 2, 3]
    assert a.buffer == []  # never visited one by one
    assert a.next_t == 0  # not written per tick ...
    assert lane.t == 3
    hub.leave(a)  # ... but when it leaves
    assert (a.lane, a.next_t) == (None, 4)
    publish(hub, 4, 2)
    assert all_got(a, lane) == list(range(6))
    assert b.got() == list(range(6))
    hub.leave(a)  # not in a lane: no-op
    assert a.next_t == 6


def test_a_member_leaving_mid_tick_is_neither_skipped_nor_served_twice() -> None:
    hub = Hub(lag_limit=10)
    lane = hub.lane("k", lambda: FakeLane(hub))
    took, refused = FakeSub(), FakeSub(ip="2.2.2.2")
    for sub in (took, refused):
        hub.add(sub)
        assert hub.join(sub, lane)
    publish(hub, 0, 2)
    lane.short.add(took)  # takes t=2, then leaves with the rest queued
    lane.refuse.add(refused)  # does not take t=2: the one-by-one path gives it
    publish(hub, 2, 1)
    assert took.lane is None and took.next_t == 3
    assert refused.lane is None and refused.next_t == 3
    assert took.buffer == []
    assert refused.got() == [2]
    publish(hub, 3, 2)
    assert all_got(took, lane) == all_got(refused, lane) == list(range(5))
    assert hub.statistics().fell_behind == 0


def test_discard_takes_a_member_out_of_its_lane() -> None:
    hub = Hub(lag_limit=10)
    lane = hub.lane("k", lambda: FakeLane(hub))
    sub = FakeSub()
    hub.add(sub)
    assert hub.join(sub, lane)
    publish(hub, 0, 3)
    hub.discard(sub)
    assert (sub.lane, sub.next_t) == (None, 3)
    assert len(lane) == 0 and len(hub) == 0
    publish(hub, 3, 2)
    assert lane.got[sub] == [0, 1, 2]
    assert sub.buffer == []
    assert lane.publishes == 3  # an empty lane is not asked


def test_a_gap_or_rewind_sends_members_back_one_by_one() -> None:
    hub = Hub(lag_limit=100)
    lane = hub.lane("k", lambda: FakeLane(hub))
    sub = FakeSub()
    hub.add(sub)
    assert hub.join(sub, lane)
    publish(hub, 0, 3)
    hub.publish(tick(1))  # a rewind: the lane does not deliver it, next_t skips it
    assert (sub.lane, sub.next_t) == (None, 3)
    assert lane.got[sub] == [0, 1, 2]
    assert sub.buffer == []
    assert lane.t == 1
    publish(hub, 3, 1)  # one by one, as any subscriber
    assert sub.got() == [3]


def test_lane_members_are_never_evicted() -> None:
    hub = Hub(lag_limit=1)
    lane = hub.lane("k", lambda: FakeLane(hub))
    sub = FakeSub()
    hub.add(sub)
    assert hub.join(sub, lane)
    publish(hub, 0, 20)
    assert sub.evict_calls == 0
    assert lane.got[sub] == list(range(20))
    assert hub.statistics().slow_closes == 0
