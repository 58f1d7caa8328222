"""The sans-I/O stream protocol, without a socket: every state transition, as h11 tests.

The table below is written independently of ``protocol.TRANSITIONS``: the test
checks that the two agree, then walks every (state, event) pair, driving a real
``StreamProtocol`` into the state through its public methods.
"""

from __future__ import annotations

from collections.abc import Callable

import orjson
import pytest

from tickcast.protocol import (
    TRANSITIONS,
    End,
    Event,
    State,
    StateError,
    StreamEnded,
    StreamProtocol,
    heartbeat_message,
    too_far_behind,
)
from tickcast.tick import EncodedTick
from tickcast.wire import MAX_CLIENT_MESSAGE, CloseCode, Pause, SetSpeed

G, C, P, PA, L, IN, CLG, CLD = (
    State.GREETING,
    State.CATCHING_UP,
    State.PACED,
    State.PAUSED,
    State.LIVE,
    State.IN_LANE,
    State.CLOSING,
    State.CLOSED,
)

EXPECTED: dict[tuple[State, Event], State] = {
    (G, Event.GREETED): C,
    (C, Event.CAUGHT_UP): L,
    (P, Event.CAUGHT_UP): L,
    (L, Event.FELL_BEHIND): C,
    (L, Event.JOINED_LANE): IN,
    (IN, Event.LEFT_LANE): L,
    # control messages, from every state a settled stream can be in (not in a lane)
    (C, Event.PACE): P,
    (P, Event.PACE): P,
    (PA, Event.PACE): P,
    (L, Event.PACE): P,
    (C, Event.UNPACE): C,
    (P, Event.UNPACE): C,
    (PA, Event.UNPACE): C,
    (L, Event.UNPACE): C,
    (C, Event.PAUSE): PA,
    (P, Event.PAUSE): PA,
    (PA, Event.PAUSE): PA,
    (L, Event.PAUSE): PA,
    (G, Event.ENDED): CLG,
    (C, Event.ENDED): CLG,
    (P, Event.ENDED): CLG,
    (PA, Event.ENDED): CLG,
    (L, Event.ENDED): CLG,
    (IN, Event.ENDED): CLG,
    (CLG, Event.ENDED): CLG,
    (CLG, Event.CLOSED): CLD,
    (CLD, Event.ENDED): CLD,
}

LANE = object()


def tick(t: int) -> EncodedTick:
    return EncodedTick.from_dict({"type": "tick", "t": t, "ts": 1_700_000_000.0 + t, "s": {}})


def started(from_t: int | None = 5, *, latest_t: int | None = 9) -> StreamProtocol:
    p = StreamProtocol(from_t=from_t, lag_limit=100)
    p.start(
        epoch="e",
        oldest_t=0,
        latest_t=latest_t,
        next_published_t=(latest_t or -1) + 1,
        latest=None if latest_t is None else tick(latest_t),
        heartbeat_s=30.0,
        server="tickcast/test",
    )
    return p


def reach(state: State) -> StreamProtocol:
    """A protocol brought to ``state`` through its public methods."""
    p = started()
    if state is G:
        return p
    p.greeted()
    if state is C:
        return p
    if state in (P, PA):
        control = SetSpeed(speed=10) if state is P else Pause()
        p.apply(control, seek_t=None, oldest_t=0, latest_t=9, next_published_t=10)
        return p
    assert p.catch_up_from(4) is None  # past the latest tick: live
    if state is L:
        return p
    if state is IN:
        p.lane = LANE
        return p
    p.finish(End.SHUTDOWN)
    if state is CLG:
        return p
    p.closed()
    return p


STEPS: dict[Event, Callable[[StreamProtocol], object]] = {
    Event.GREETED: lambda p: p.greeted(),
    Event.CAUGHT_UP: lambda p: p.catch_up_from(None),  # (P: a stream with no range)
    Event.FELL_BEHIND: lambda p: p._move(Event.FELL_BEHIND),
    Event.JOINED_LANE: lambda p: setattr(p, "lane", LANE),
    Event.LEFT_LANE: lambda p: p._move(Event.LEFT_LANE),
    Event.PACE: lambda p: p._move(Event.PACE),
    Event.UNPACE: lambda p: p._move(Event.UNPACE),
    Event.PAUSE: lambda p: p.apply(
        Pause(), seek_t=None, oldest_t=0, latest_t=9, next_published_t=10
    ),
    Event.ENDED: lambda p: p.finish(End.EPOCH_CHANGED),
    Event.CLOSED: lambda p: p.closed(),
}


def test_the_table_is_the_documented_one() -> None:
    assert TRANSITIONS == EXPECTED


@pytest.mark.parametrize("state", list(State))
@pytest.mark.parametrize("event", list(Event))
def test_every_state_and_event(state: State, event: Event) -> None:
    p = reach(state)
    assert p.state is state
    if (state, event) in EXPECTED:
        STEPS[event](p)
        assert p.state is EXPECTED[state, event]
    else:
        with pytest.raises(StateError):
            p._move(event)
        assert p.state is state


def test_live_and_open_follow_the_state() -> None:
    for state in State:
        p = reach(state)
        assert p.live == (state in (L, IN))
        assert p.is_open == (state in (G, C, P, PA, L, IN))
        assert p.replaying == (state in (P, PA))


def test_leaving_a_lane_and_falling_behind_through_the_hub_facing_methods() -> None:
    p = reach(IN)
    p.lane = None
    assert p.state is L
    p.fell_behind()
    assert p.state is C
    p.fell_behind()  # not live: nothing to do
    assert p.state is C


def test_the_first_end_wins_and_carries_its_code() -> None:
    p = reach(L)
    p.sent_t = 41
    assert p.finish(End.SLOW_CONSUMER) is True
    assert p.finish(End.CLIENT_CLOSED) is False
    assert p.end is End.SLOW_CONSUMER
    assert p.close_reason() == (CloseCode.SLOW_CONSUMER, "slow consumer; resume with from_t=42")


def test_every_end_has_a_code_or_none() -> None:
    codes = {end: end.code for end in End}
    assert codes[End.SHUTDOWN] is CloseCode.GOING_AWAY
    assert codes[End.EPOCH_CHANGED] is CloseCode.EPOCH_CHANGED
    assert codes[End.CORRUPT_HISTORY] is codes[End.INTERNAL_ERROR] is CloseCode.INTERNAL_ERROR
    assert codes[End.CLIENT_CLOSED] is codes[End.CONNECTION_LOST] is None


def test_catch_up_applies_the_lag_rule() -> None:
    p = StreamProtocol(from_t=0, lag_limit=10)
    p.start(
        epoch="e",
        oldest_t=0,
        latest_t=99,
        next_published_t=100,
        latest=None,
        heartbeat_s=30.0,
        server="s",
    )
    assert p.allowance == 100  # a replay from far back is not refused for it
    p.greeted()
    assert p.catch_up_from(99) == 0
    p.caught([tick(t) for t in range(0, 50)])
    assert p.catch_up_from(99) == 50  # lag 50: the allowance shrinks to it
    assert p.allowance == 50
    with pytest.raises(StreamEnded) as ended:
        p.catch_up_from(99 + 11)  # 61 behind > 10 + 50
    assert ended.value.end is End.SLOW_CONSUMER
    assert p.state is CLG


def test_a_hole_in_history_ends_the_catch_up() -> None:
    p = reach(C)
    with pytest.raises(StreamEnded):
        p.caught([tick(7)])  # next_t is 5
    assert p.end is End.SLOW_CONSUMER


def test_too_far_behind() -> None:
    assert not too_far_behind(t=19, next_t=10, lag_limit=10, allowance=0)  # lag 10
    assert too_far_behind(t=20, next_t=10, lag_limit=10, allowance=0)  # lag 11
    assert not too_far_behind(t=20, next_t=10, lag_limit=10, allowance=1)


def test_hello_and_start() -> None:
    p = StreamProtocol(from_t=3, lag_limit=10)
    hello, first = p.start(
        epoch="e",
        oldest_t=5,
        latest_t=9,
        next_published_t=10,
        latest=tick(9),
        heartbeat_s=30.0,
        server="tickcast/x",
    )
    assert orjson.loads(hello) == {
        "type": "hello",
        "epoch": "e",
        "oldest_t": 5,
        "latest_t": 9,
        "heartbeat_s": 30,
        "server": "tickcast/x",
        "truncated": True,
    }
    assert first is None and (p.next_t, p.sent_t) == (5, 4)
    live = StreamProtocol(from_t=None, lag_limit=10)
    hello, first = live.start(
        epoch="e",
        oldest_t=5,
        latest_t=9,
        next_published_t=10,
        latest=tick(9),
        heartbeat_s=0.5,
        server="s",
    )
    assert "truncated" not in orjson.loads(hello)
    assert first is not None and first.t == 9 and (live.next_t, live.sent_t) == (10, 8)


def test_messages_and_size() -> None:
    p = StreamProtocol(from_t=0, batch=2, lag_limit=10)
    groups = list(p.messages([tick(t) for t in range(5)]))
    assert [len(g) for g in groups] == [2, 2, 1]
    assert orjson.loads(p.payload(groups[0]))["type"] == "batch"
    assert orjson.loads(p.payload(groups[2]))["t"] == 4
    p.check_size(MAX_CLIENT_MESSAGE)
    with pytest.raises(StreamEnded):
        p.check_size(MAX_CLIENT_MESSAGE + 1)
    assert p.close_reason() == (
        CloseCode.TOO_BIG,
        f"message of {MAX_CLIENT_MESSAGE + 1} bytes exceeds {MAX_CLIENT_MESSAGE} bytes",
    )


def test_heartbeat_message() -> None:
    msg = orjson.loads(heartbeat_message(7))
    assert list(msg) == ["type", "latest_t", "ts"] and msg["latest_t"] == 7
