"""Tests for the in-memory ring buffer (synchronous, no I/O)."""

from __future__ import annotations

import orjson
import pytest

from tickcast.storage.ring import Ring
from tickcast.tick import EncodedTick

TS0 = 1_732_450_000.0


def tick(t: int, pad: int = 0) -> EncodedTick:
    return EncodedTick.from_dict(
        {"type": "tick", "t": t, "ts": TS0 + t / 10, "s": {"p": "x" * pad}}
    )


def filled(capacity: int, first_t: int, count: int) -> Ring:
    ring = Ring(capacity)
    for t in range(first_t, first_t + count):
        ring.append(tick(t))
    return ring


def ts_of(ticks: list[EncodedTick]) -> list[int]:
    return [x.t for x in ticks]


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity"):
        Ring(0)
    assert Ring(1).capacity == 1


def test_empty_ring() -> None:
    ring = Ring(4)
    assert len(ring) == 0
    assert ring.latest_t is None
    assert ring.oldest_t is None
    assert ring.latest() is None
    assert ring.get(0) is None
    assert ring.range(0, 10) == []
    assert ring.nbytes == 0


def test_append_consecutive() -> None:
    ring = Ring(8)
    ticks = [tick(t) for t in range(5)]
    for x in ticks:
        ring.append(x)
    assert len(ring) == 5
    assert (ring.oldest_t, ring.latest_t) == (0, 4)
    for x in ticks:
        assert ring.get(x.t) is x
    assert ring.get(5) is None


@pytest.mark.parametrize("bad_t", [6, 100, 4, 3, 0])
def test_append_wrong_t_raises(bad_t: int) -> None:
    ring = filled(8, 0, 5)
    with pytest.raises(ValueError, match=f"expects t=5, got t={bad_t}"):
        ring.append(tick(bad_t))
    # The failed append changed nothing.
    assert (ring.oldest_t, ring.latest_t, len(ring)) == (0, 4, 5)


def test_append_skipping_one_raises() -> None:
    ring = filled(8, 0, 3)
    with pytest.raises(ValueError):
        ring.append(tick(4))
    ring.append(tick(3))
    assert ring.latest_t == 3


def test_capacity_wrap_evicts_oldest() -> None:
    ring = Ring(4)
    ticks = [tick(t) for t in range(10)]
    for x in ticks:
        ring.append(x)
    assert len(ring) == 4
    assert (ring.oldest_t, ring.latest_t) == (6, 9)
    for t in range(6):
        assert ring.get(t) is None
    for t in range(6, 10):
        assert ring.get(t) is ticks[t]


def test_oldest_moves_one_per_append_once_full() -> None:
    ring = Ring(3)
    oldest = []
    for t in range(6):
        ring.append(tick(t))
        oldest.append(ring.oldest_t)
    assert oldest == [0, 0, 0, 1, 2, 3]


def test_capacity_one() -> None:
    ring = Ring(1)
    a, b = tick(0), tick(1)
    ring.append(a)
    ring.append(b)
    assert len(ring) == 1
    assert ring.get(0) is None
    assert ring.get(1) is b
    assert ring.latest() is b
    assert ts_of(ring.range(1, 5)) == [1]


def test_range_basic_and_limit() -> None:
    ring = filled(16, 0, 10)
    assert ts_of(ring.range(0, 100)) == list(range(10))
    assert ts_of(ring.range(3, 4)) == [3, 4, 5, 6]
    assert ts_of(ring.range(9, 5)) == [9]
    assert ts_of(ring.range(2, 1)) == [2]


def test_range_nonpositive_limit_is_empty() -> None:
    ring = filled(16, 0, 10)
    assert ring.range(3, 0) == []
    assert ring.range(3, -1) == []


def test_range_upto() -> None:
    ring = filled(16, 0, 10)
    assert ts_of(ring.range(2, 100, upto=5)) == [2, 3, 4, 5]
    assert ts_of(ring.range(2, 2, upto=5)) == [2, 3]
    assert ts_of(ring.range(2, 100, upto=50)) == list(range(2, 10))
    assert ring.range(6, 100, upto=5) == []


def test_range_returns_the_stored_objects() -> None:
    ring = Ring(8)
    ticks = [tick(t) for t in range(5)]
    for x in ticks:
        ring.append(x)
    got = ring.range(1, 3)
    assert all(a is b for a, b in zip(got, ticks[1:4], strict=True))


def test_range_beyond_latest_is_empty() -> None:
    ring = filled(16, 0, 10)
    assert ring.range(10, 5) == []
    assert ring.range(1_000, 5) == []


def test_range_below_oldest_raises_key_error() -> None:
    ring = filled(4, 0, 10)
    assert ring.oldest_t == 6
    with pytest.raises(KeyError):
        ring.range(5, 2)
    with pytest.raises(KeyError):
        ring.range(0, 100)
    assert ts_of(ring.range(6, 100)) == [6, 7, 8, 9]


def test_range_after_wrap_is_consecutive() -> None:
    ring = filled(5, 0, 13)
    assert ts_of(ring.range(8, 100)) == [8, 9, 10, 11, 12]
    assert ts_of(ring.range(9, 3)) == [9, 10, 11]


def test_latest() -> None:
    ring = Ring(3)
    for t in range(7):
        x = tick(t)
        ring.append(x)
        assert ring.latest() is x
        assert ring.latest_t == t


def test_len_grows_then_stays_at_capacity() -> None:
    ring = Ring(3)
    lengths = []
    for t in range(5):
        ring.append(tick(t))
        lengths.append(len(ring))
    assert lengths == [1, 2, 3, 3, 3]


def test_nbytes_counts_held_ticks() -> None:
    ring = Ring(8)
    ticks = [tick(t, pad=t * 10) for t in range(4)]
    for x in ticks:
        ring.append(x)
    assert ring.nbytes == sum(len(x.raw) for x in ticks)


def test_nbytes_after_wrap() -> None:
    ring = Ring(3)
    ticks = [tick(t, pad=(t * 37) % 50) for t in range(11)]
    for x in ticks:
        ring.append(x)
        held = ticks[max(0, x.t - 2) : x.t + 1]
        assert ring.nbytes == sum(len(h.raw) for h in held)
    assert ring.nbytes == sum(len(h.raw) for h in ticks[8:])


def test_starts_at_a_non_zero_t() -> None:
    # A ring refilled after a restart begins at the first t still in the segments.
    ring = Ring(10)
    first = 1_000
    ticks = [tick(t) for t in range(first, first + 4)]
    for x in ticks:
        ring.append(x)
    assert (ring.oldest_t, ring.latest_t, len(ring)) == (1_000, 1_003, 4)
    assert ring.get(999) is None
    assert ring.get(0) is None
    assert ring.get(1_000) is ticks[0]
    assert ts_of(ring.range(1_000, 100)) == [1_000, 1_001, 1_002, 1_003]
    with pytest.raises(KeyError):
        ring.range(999, 10)
    assert ring.nbytes == sum(len(x.raw) for x in ticks)


def test_non_zero_start_then_wrap() -> None:
    ring = filled(4, 1_001, 6)
    assert (ring.oldest_t, ring.latest_t, len(ring)) == (1_003, 1_006, 4)
    assert ring.get(1_002) is None
    assert ts_of(ring.range(1_003, 10)) == [1_003, 1_004, 1_005, 1_006]
    with pytest.raises(ValueError, match="expects t=1007"):
        ring.append(tick(1_008))


def test_ring_holds_the_encoded_bytes() -> None:
    ring = filled(4, 0, 2)
    got = ring.get(1)
    assert got is not None
    assert orjson.loads(got.raw)["t"] == 1


def test_caches_of_aged_ticks_are_dropped() -> None:
    from tickcast.storage.ring import CACHE_TICKS
    from tickcast.transports.frames import tick_frame

    ring = Ring(CACHE_TICKS * 2)
    ticks = []
    for t in range(CACHE_TICKS + 2):
        tick = EncodedTick.from_dict(
            {"type": "tick", "t": t, "ts": 1.0, "s": {}, "agents": [], "actions": [], "matches": []}
        )
        frame = tick_frame(tick, None, 0)
        assert tick_frame(tick, None, 0) is frame  # cached while young
        ring.append(tick)
        ticks.append(tick)
    assert ticks[0]._frames is None and ticks[1]._frames is None  # aged out
    assert ticks[2]._frames is not None  # still within CACHE_TICKS of the newest
    # An aged tick still serves its bytes (rebuilt on demand).
    assert tick_frame(ticks[0], ("s",), 0).endswith(ticks[0].view(("s",)))
