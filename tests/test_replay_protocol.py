"""Replay in the sans-I/O protocol, without a socket: controls, acknowledgements, pace, range.

The pace is computed from the clock value passed in, so its rules are checked here
exactly, with made-up times; how close real sends come to it is measured by
``bench/replay.py``.
"""

from __future__ import annotations

import math

import orjson
import pytest

from tickcast.protocol import (
    EARLY_S,
    MAX_PENDING_CONTROLS,
    RESYNC_S,
    End,
    State,
    StreamEnded,
    StreamProtocol,
)
from tickcast.tick import EncodedTick
from tickcast.wire import GAP_CAP_S, Live, Pause, Play, Seek, SetSpeed


def tick(t: int, ts: float | None = None) -> EncodedTick:
    ts = 1000.0 + t * 0.1 if ts is None else ts
    return EncodedTick.from_dict({"type": "tick", "t": t, "ts": ts, "s": {}})


def stream(**kwargs: object) -> StreamProtocol:
    """A greeted stream from t=10 over a history of 0..99."""
    kwargs.setdefault("from_t", 10)
    p = StreamProtocol(lag_limit=5, **kwargs)  # type: ignore[arg-type]
    p.start(
        epoch="e",
        oldest_t=0,
        latest_t=99,
        next_published_t=100,
        latest=None,
        heartbeat_s=30.0,
        server="s",
    )
    p.greeted()
    return p


def apply(p: StreamProtocol, control: object, seek_t: int | None = None) -> dict[str, object]:
    ack = p.apply(control, seek_t=seek_t, oldest_t=5, latest_t=99, next_published_t=100)  # type: ignore[arg-type]
    msg = orjson.loads(ack)
    assert isinstance(msg, dict)
    return msg


# -- parsing ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "control"),
    [
        (b'{"type":"pause"}', Pause()),
        (b'{"type":"play"}', Play()),
        (b'{"type":"speed","speed":2.5}', SetSpeed(speed=2.5)),
        (b'{"type":"speed","speed":"max"}', SetSpeed(speed="max")),
        (b'{"type":"seek","t":7}', Seek(t=7)),
        (b'{"type":"seek","ts":12.5}', Seek(ts=12.5)),
        (b'{"type":"live","extra":1}', Live()),  # unknown keys are ignored
    ],
)
def test_a_control_message_is_queued_not_answered(data: bytes, control: object) -> None:
    p = stream()
    assert p.reply(data) is None
    assert list(p.controls) == [control]


@pytest.mark.parametrize(
    ("data", "detail"),
    [
        (b'{"type":"seek"}', "seek: give exactly one of t and ts"),
        (b'{"type":"seek","t":1,"ts":1}', "seek: give exactly one of t and ts"),
        (b'{"type":"seek","t":-1}', "seek: Expected `int` >= 0"),
        (b'{"type":"seek","t":1.5}', "seek: Expected `int`"),
        (b'{"type":"speed","speed":0.01}', "speed: Expected `float` >= 0.1"),
        (b'{"type":"speed","speed":1e6}', "speed: Expected `float` <= 1000.0"),
        (b'{"type":"speed","speed":true}', "speed: "),
        (b'{"type":"speed"}', "speed: Object missing required field `speed`"),
        (b'{"type":"rewind"}', "unknown message type 'rewind'"),
    ],
)
def test_a_bad_control_message_is_an_error_and_queues_nothing(data: bytes, detail: str) -> None:
    p = stream()
    reply = p.reply(data)
    assert reply is not None
    error = orjson.loads(reply)
    assert error["code"] == "bad_message"
    assert error["detail"].startswith(detail), error["detail"]
    assert not p.controls


def test_too_many_waiting_controls_are_refused() -> None:
    p = stream()
    for _ in range(MAX_PENDING_CONTROLS):
        assert p.reply(b'{"type":"pause"}') is None
    reply = p.reply(b'{"type":"play"}')
    assert reply is not None and b"control messages waiting" in reply
    assert len(p.controls) == MAX_PENDING_CONTROLS


# -- applying ---------------------------------------------------------------------------


def test_a_stream_with_a_speed_starts_paced() -> None:
    assert stream(speed=2.0).state is State.PACED
    assert stream().state is State.CATCHING_UP


def test_pause_and_play_keep_the_position_and_the_mode() -> None:
    p = stream(speed=4.0)
    assert apply(p, Pause()) == {"type": "replay", "state": "paused", "t": 10, "speed": 4}
    assert p.state is State.PAUSED and p.replaying
    assert apply(p, Play()) == {"type": "replay", "state": "playing", "t": 10, "speed": 4}
    assert p.state is State.PACED
    plain = stream()
    apply(plain, Pause())
    assert apply(plain, Play())["speed"] is None
    assert plain.state is State.CATCHING_UP
    assert plain.allowance == 90  # resumed far back: not refused for it (as a from_t)


def test_a_control_takes_the_stream_from_the_last_tick_sent() -> None:
    p = stream(speed=1.0)
    p.caught([tick(t) for t in range(10, 20)])  # read: next_t 20
    p.sent_t = 14  # but sent only up to 14 when the control came
    assert apply(p, Pause())["t"] == 15
    assert p.next_t == 15


def test_play_while_playing_changes_nothing() -> None:
    p = stream(speed=1.0)
    assert apply(p, Play())["state"] == "playing"
    assert p.state is State.PACED


def test_speed_paces_a_catch_up_and_shows_max() -> None:
    p = stream()
    assert apply(p, SetSpeed(speed="max"))["speed"] == "max"
    assert p.state is State.PACED and math.isinf(p.speed or 0)
    assert apply(p, SetSpeed(speed=0.25))["speed"] == 0.25


def test_seek_is_clamped_to_the_retained_range_and_says_so() -> None:
    p = stream(speed=1.0)
    assert apply(p, Seek(t=3), seek_t=3) == {
        "type": "replay",
        "state": "playing",
        "t": 5,
        "speed": 1,
        "clamped": True,
    }
    assert apply(p, Seek(t=500), seek_t=500)["t"] == 100  # latest_t + 1
    ack = apply(p, Seek(t=42), seek_t=42)
    assert ack["t"] == 42 and "clamped" not in ack
    assert (p.next_t, p.sent_t) == (42, 41)
    assert "clamped" not in apply(p, Seek(ts=1.0), seek_t=5)  # a time is never "outside"


def test_seek_while_paused_stays_paused() -> None:
    p = stream(speed=1.0)
    apply(p, Pause())
    assert apply(p, Seek(t=50), seek_t=50)["state"] == "paused"
    assert p.next_t == 50


def test_live_goes_to_the_latest_tick_and_shows_no_speed() -> None:
    p = stream(speed=3.0)
    apply(p, Pause())
    assert apply(p, Live()) == {"type": "replay", "state": "live", "t": 99, "speed": None}
    assert p.state is State.CATCHING_UP
    assert p.catch_up_from(99) == 99
    p.caught([tick(99)])
    assert p.catch_up_from(99) is None and p.live
    assert apply(p, SetSpeed(speed=2))["state"] == "live"  # kept for the next seek
    assert apply(p, Seek(t=20), seek_t=20)["speed"] == 2


# -- the range ----------------------------------------------------------------------------


def test_to_t_ends_the_range_and_never_goes_live() -> None:
    p = stream(to_t=12)
    assert p.catch_up_from(99) == 10
    p.caught([tick(10), tick(11), tick(12)])
    assert p.range_done
    p = stream(from_t=98, to_t=150)
    p.caught([tick(98), tick(99)])
    assert p.catch_up_from(99) is None and not p.live  # waits for tick 100
    assert p.state is State.CATCHING_UP


def test_to_ts_cuts_at_the_first_tick_past_it() -> None:
    p = stream(to_ts=1001.15)
    sent = p.caught([tick(10), tick(11), tick(12), tick(13)])  # ts 1001.0, 1001.1, 1001.2
    assert [t.t for t in sent] == [10, 11]
    assert p.range_done and p.next_t == 12


def test_the_end_message_names_the_last_tick_sent() -> None:
    p = stream(to_t=11)
    p.sent_t = 11
    assert orjson.loads(p.end_message()) == {"type": "end", "t": 11}
    with pytest.raises(StreamEnded) as ended:
        raise p.ended_range()
    assert ended.value.end is End.RANGE_END and p.close_reason() == (1000, "end of range")


# -- the pace -----------------------------------------------------------------------------


def test_ticks_are_due_by_their_ts_gaps_over_speed() -> None:
    p = stream(speed=10.0)
    ticks = [tick(10), tick(11), tick(12)]  # 0.1 s apart: 10 ms apart at 10x
    assert p.due_now(ticks, 100.0) == (1, 100.0)  # the first goes at once
    n, due = p.due_now(ticks[1:], 100.0)
    assert n == 0 and due == pytest.approx(100.01)
    assert p.due_now(ticks[1:], 100.01) == (1, 100.01)
    assert p.due_now(ticks[2:], 100.02 - EARLY_S / 2) == (1, 100.02 - EARLY_S / 2)


def test_a_long_gap_counts_as_the_cap() -> None:
    p = stream(speed=2.0)
    ticks = [tick(10, 0.0), tick(11, 3600.0)]
    p.due_now(ticks, 0.0)
    assert p.due_now(ticks[1:], 0.0)[1] == pytest.approx(GAP_CAP_S / 2)


def test_ticks_due_together_share_a_message_up_to_batch() -> None:
    p = stream(speed=math.inf, batch=3)
    ticks = [tick(t) for t in range(10, 20)]
    assert p.due_now(ticks, 0.0)[0] == 3


def test_a_late_tick_restarts_the_pace_instead_of_bunching_the_next() -> None:
    p = stream(speed=1.0)
    ticks = [tick(10), tick(11), tick(12)]
    p.due_now(ticks, 0.0)
    late = 0.1 + RESYNC_S * 4  # tick 11 was due at 0.1; the client read slower
    assert p.due_now(ticks[1:], late) == (1, late)
    assert p.due_now(ticks[2:], late)[1] == pytest.approx(late + 0.1)  # the gap is kept


def test_an_acknowledgement_restarts_the_pace() -> None:
    p = stream(speed=1.0)
    p.due_now([tick(10)], 0.0)
    apply(p, SetSpeed(speed=1.0))
    assert p.due_now([tick(11)], 0.0) == (1, 0.0)  # at once, not 0.1 s after tick 10


def test_a_paced_replay_reads_one_message_per_step() -> None:
    assert stream(speed=math.inf, batch=100).read_size() == 100
    assert stream(speed=math.inf).read_size() == 64  # batch=1: not a read per tick
    assert stream(batch=100).read_size() == 256  # a catch-up reads more per step
