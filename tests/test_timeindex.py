"""The time search (``storage/timeindex.py``) over a real segment store (synchronous)."""

from __future__ import annotations

import bisect
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tickcast.errors import CorruptRecordError
from tickcast.storage import SegmentStore
from tickcast.storage.segment import index_name
from tickcast.storage.timeindex import HEAD_BYTES, TimeIndex, lower_bound
from tickcast.tick import read_head

PER_SEGMENT = 10
WIDTH = 120  # bytes of JSON per record: every segment holds exactly PER_SEGMENT records


def record(t: int, ts: float, *, head_first: bool = True) -> bytes:
    """A tick of exactly WIDTH bytes; ``head_first=False`` puts ``ts`` last (no fast head)."""

    def encode(pad: str) -> bytes:
        if head_first:
            return orjson.dumps({"type": "tick", "t": t, "ts": ts, "s": {"p": pad}})
        return orjson.dumps({"type": "tick", "t": t, "s": {"p": pad}, "ts": ts})

    out = encode("x" * (WIDTH - len(encode(""))))
    assert len(out) == WIDTH
    return out


SEGMENT_BYTES = PER_SEGMENT * (WIDTH + 1)
Maker = Callable[[Sequence[float]], SegmentStore]


@pytest.fixture
def make_store(tmp_path: Path) -> Iterator[Maker]:
    """Stores holding one tick per given ``ts`` (t = 0, 1, ...), each in its own directory."""
    opened: list[SegmentStore] = []

    def make(stamps: Sequence[float]) -> SegmentStore:
        store = SegmentStore.open(tmp_path / str(len(opened)), segment_bytes=SEGMENT_BYTES)
        store.append([(t, record(t, ts)) for t, ts in enumerate(stamps)])
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


def crossing(stamps: Sequence[float], x: float, r: int, lo: int = 0) -> bool:
    """(1) and (2) of the module docstring."""
    return (r == len(stamps) or stamps[r] >= x) and (r == lo or stamps[r - 1] < x)


# -- lower_bound ----------------------------------------------------------------------


@given(st.lists(st.integers(0, 20), max_size=60).map(sorted), st.integers(-1, 21))
def test_lower_bound_on_sorted_is_bisect_left(stamps: list[int], x: int) -> None:
    calls: list[int] = []

    def ts_of(t: int) -> float:
        calls.append(t)
        return stamps[t]

    assert lower_bound(0, len(stamps), x, ts_of) == bisect.bisect_left(stamps, x)
    assert len(calls) <= max(1, len(stamps)).bit_length()  # log2 probes, never a scan
    assert all(0 <= t < len(stamps) for t in calls)


@given(st.lists(st.integers(0, 20), max_size=60), st.integers(-1, 21))
def test_lower_bound_on_any_order_lands_on_a_crossing(stamps: list[int], x: int) -> None:
    r = lower_bound(0, len(stamps), x, stamps.__getitem__)
    assert crossing(stamps, x, r)


# -- TimeIndex over segments ---------------------------------------------------------


# Equal runs, one across a segment boundary (t = 8..12), gaps between values.
STAMPS = [100.0 + t // 3 for t in range(8)] + [110.0] * 5 + [111.0 + 0.5 * t for t in range(42)]


def first_at_or_after(stamps: Sequence[float], x: float) -> int:
    return next((t for t, ts in enumerate(stamps) if ts >= x), len(stamps))


def test_finds_the_exact_first_tick_for_every_time(make_store: Maker) -> None:
    store = make_store(STAMPS)
    assert store.segment_count == 6  # 55 records, 10 a segment, plus the open one
    index = TimeIndex(store)
    probes = sorted({*STAMPS, *(s - 0.25 for s in STAMPS), *(s + 0.25 for s in STAMPS)})
    for x in [0.0, *probes, 1e12]:
        assert index.find(x) == first_at_or_after(STAMPS, x), x


def test_equal_runs_start_at_the_first_of_the_run(make_store: Maker) -> None:
    index = TimeIndex(make_store(STAMPS))
    assert index.find(110.0) == 8  # the run 8..12 crosses the boundary at t=10
    assert index.find(100.0) == 0
    assert index.find(101.0) == 3


def test_before_the_oldest_and_past_the_end(make_store: Maker) -> None:
    store = make_store(STAMPS)
    index = TimeIndex(store)
    assert index.find(-5.0) == 0
    assert index.find(STAMPS[-1] + 1) == store.next_t == len(STAMPS)


def test_before_bounds_the_range(make_store: Maker) -> None:
    store = make_store(STAMPS)
    index = TimeIndex(store)
    # The caller vouches for ts(before) >= x: the answer is at most before.
    assert index.find(STAMPS[-1], before=30) == 30
    assert index.find(STAMPS[25], before=30) == 25
    assert index.find(0.0, before=0) == 0


def test_non_monotonic_ts_lands_on_a_crossing_and_is_exact_elsewhere(make_store: Maker) -> None:
    # The clock steps back by 3 s at t=20: the values 117..120 occur twice.
    stamps = [100.0 + t for t in range(20)] + [117.0 + t for t in range(30)]
    index = TimeIndex(make_store(stamps))
    for x in [s + d for s in stamps for d in (-0.5, 0.0, 0.5)]:
        r = index.find(x)
        assert crossing(stamps, x, r), (x, r)
        if not 117.0 < x <= 119.0:  # outside the stepped-back interval: the first one
            assert r == first_at_or_after(stamps, x), (x, r)
    # A single tick lower than its predecessor.
    stamps = [100.0 + t for t in range(35)]
    stamps[17] = 50.0
    index = TimeIndex(make_store(stamps))
    for x in [s + d for s in stamps for d in (-0.5, 0.0, 0.5)]:
        assert crossing(stamps, x, index.find(x)), x


def test_a_head_that_does_not_parse_falls_back_to_a_verified_read(tmp_path: Path) -> None:
    stamps = [float(t) for t in range(40)]
    with SegmentStore.open(tmp_path, segment_bytes=SEGMENT_BYTES) as store:
        store.append([(t, record(t, ts, head_first=t % 2 == 0)) for t, ts in enumerate(stamps)])
        index = TimeIndex(store)
        for x in [*stamps, 39.5, -1.0]:
            assert index.find(x) == first_at_or_after(stamps, x)


def test_a_probe_reads_only_the_head_bytes() -> None:
    raw = record(123, 1732450000.123456)
    assert read_head(raw[:HEAD_BYTES]) == (123, 1732450000.123456)
    longest = b'{"type":"tick","t":%d,"ts":%r,' % (2**64 - 1, -1.7976931348623157e308)
    assert len(longest) <= HEAD_BYTES
    assert read_head(raw[:30]) is None  # a number cut short never parses


def test_a_corrupt_probed_record_is_reported(tmp_path: Path) -> None:
    stamps = [float(t) for t in range(40)]
    with SegmentStore.open(tmp_path, segment_bytes=SEGMENT_BYTES) as store:
        store.append([(t, record(t, ts)) for t, ts in enumerate(stamps)])
        # Damage the head of t=15 (the first probe inside segment 10..19): its t no longer
        # matches, so the probe reads the whole record, whose CRC fails.
        path = tmp_path / "00000000000000000010.jsonl"
        data = bytearray(path.read_bytes())
        offset = 5 * (WIDTH + 1) + len(b'{"type":"tick","t":')
        data[offset : offset + 2] = b"99"
        path.write_bytes(bytes(data))
        with pytest.raises(CorruptRecordError):
            TimeIndex(store).find(15.0)
        assert store.corruption


def test_a_missing_index_is_rebuilt_and_the_search_stays_exact(tmp_path: Path) -> None:
    stamps = [float(t // 2) for t in range(60)]
    with SegmentStore.open(tmp_path, segment_bytes=SEGMENT_BYTES) as store:
        store.append([(t, record(t, ts)) for t, ts in enumerate(stamps)])
    os.unlink(tmp_path / index_name(20))  # an older segment's index: rebuilt on first read
    with SegmentStore.open(tmp_path, segment_bytes=SEGMENT_BYTES) as store:
        index = TimeIndex(store)
        for x in [*stamps, 100.0]:
            assert index.find(x) == first_at_or_after(stamps, x)


def test_retention_moves_the_start_to_the_new_oldest(tmp_path: Path) -> None:
    stamps = [float(t) for t in range(60)]
    seg = SEGMENT_BYTES
    with SegmentStore.open(tmp_path, segment_bytes=seg, retain_bytes=3 * seg) as store:
        store.append([(t, record(t, ts)) for t, ts in enumerate(stamps)])
        oldest = store.oldest_t
        assert oldest is not None and oldest > 0
        index = TimeIndex(store)
        assert index.find(0.0) == oldest
        assert index.find(stamps[oldest] + 3) == oldest + 3
        assert index.find(1e9) == 60


def test_empty_store(tmp_path: Path) -> None:
    with SegmentStore.open(tmp_path) as store:
        assert TimeIndex(store).find(5.0) == 0
