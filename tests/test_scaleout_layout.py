"""The scale-out stream layout and backoff, synchronously (no Redis)."""

from __future__ import annotations

import pytest

from tickcast.errors import TickcastError
from tickcast.scaleout.backoff import Backoff
from tickcast.scaleout.layout import (
    Announcement,
    Entry,
    Step,
    StreamFormatError,
    append_start,
    decide,
    decode_announcement,
    decode_entry,
    decode_epoch,
    encode_entry,
    encode_epoch,
    entry_id,
    epochs_key,
    initial_cursor,
    t_of_id,
    ticks_key,
)
from tickcast.tick import EncodedTick


def tick(t: int) -> EncodedTick:
    return EncodedTick.from_dict({"type": "tick", "t": t, "ts": 1.5, "s": {"p": t / 7}})


def test_key_names() -> None:
    assert ticks_key("tickcast", "ab12") == "tickcast:ticks:ab12"
    assert epochs_key("tickcast") == "tickcast:epochs"


@pytest.mark.parametrize("t", [0, 1, 41, 10**12])
def test_ids_map_t_exactly(t: int) -> None:
    assert entry_id(t) == f"{t + 1}-0"
    assert t_of_id(entry_id(t)) == t
    assert t_of_id(entry_id(t).encode()) == t


def test_cursor_before_the_first_tick() -> None:
    assert entry_id(-1) == "0-0"


@pytest.mark.parametrize("bad", ["0-0", "5-1", "5", "x-0", "-1-0", "", b"\xff-0"])
def test_ids_outside_the_layout_are_refused(bad: str | bytes) -> None:
    with pytest.raises(StreamFormatError):
        t_of_id(bad)


def test_entry_round_trip_keeps_exact_bytes() -> None:
    original = tick(7)
    fields = encode_entry("e1", original)
    assert fields == {b"epoch": b"e1", b"tick": original.raw}
    entry = decode_entry(entry_id(7).encode(), fields)
    assert entry == Entry("e1", entry.tick)
    assert (entry.epoch, entry.t, entry.tick.raw) == ("e1", 7, original.raw)


def test_entry_decodes_from_decoded_responses_too() -> None:
    original = tick(3)
    entry = decode_entry("4-0", {"epoch": "e1", "tick": original.raw.decode()})
    assert (entry.epoch, entry.t, entry.tick.raw) == ("e1", 3, original.raw)


@pytest.mark.parametrize(
    "fields",
    [
        {b"tick": tick(3).raw},  # no epoch
        {b"epoch": b"e1"},  # no tick
        {b"epoch": b"e1", b"tick": tick(4).raw},  # the tick's own t is not the ID's
        {b"epoch": b"e1", b"tick": b"not json"},
        {b"epoch": b"\xff", b"tick": tick(3).raw},
        {b"epoch": b"e1", b"tick": b'{"type":"other"}'},
    ],
)
def test_malformed_entries_are_refused(fields: dict[bytes, bytes]) -> None:
    with pytest.raises(StreamFormatError):
        decode_entry(b"4-0", fields)


def test_stream_format_error_is_a_tickcast_error() -> None:
    assert issubclass(StreamFormatError, TickcastError)


def test_epoch_entries() -> None:
    assert decode_epoch(encode_epoch("e9")) == "e9"
    with pytest.raises(StreamFormatError):
        decode_epoch({b"other": b"x"})


def test_epoch_entries_record_whether_reading_is_protected() -> None:
    assert decode_announcement(encode_epoch("e9")) == Announcement("e9", protected=False)
    assert decode_announcement(encode_epoch("e9", protected=True)) == Announcement("e9", True)
    assert next(iter(encode_epoch("e9", protected=True))) == b"epoch"  # read first
    # An older producer wrote no access field: open. An unknown value: protected.
    assert decode_announcement({b"epoch": b"e9"}) == Announcement("e9", protected=False)
    assert decode_announcement({"epoch": "e9", "access": "sso"}).protected


def entry(t: int, epoch: str = "e1") -> Entry:
    return Entry(epoch, tick(t))


@pytest.mark.parametrize(
    ("last_t", "t", "step"),
    [
        (None, 0, Step.DELIVER),  # nothing delivered: any tick starts
        (None, 500, Step.DELIVER),
        (4, 5, Step.DELIVER),
        (4, 7, Step.GAP),
        (4, 4, Step.STALE),
        (4, 2, Step.STALE),
    ],
)
def test_decide(last_t: int | None, t: int, step: Step) -> None:
    assert decide("e1", last_t, entry(t)) is step


def test_decide_another_epoch_wins_over_t() -> None:
    assert decide("e1", 4, entry(5, "e2")) is Step.EPOCH
    assert decide("e1", None, entry(0, "e2")) is Step.EPOCH


@pytest.mark.parametrize(
    ("top", "oldest", "latest", "maxlen", "first"),
    [
        (None, None, None, 100, None),  # nothing published yet
        (None, 0, 49, 100, 0),  # empty stream, short history: all of it
        (None, 0, 999, 100, 900),  # empty stream: only what MAXLEN keeps
        (None, 950, 999, 100, 950),  # ... and only what history has
        (41, 0, 49, 100, 42),  # after the stream's top
        (41, 0, 41, 100, 42),  # up to date: waits for 42
        (60, 0, 49, 100, 61),  # stream ahead of the producer: waits
        (10, 0, 999, 100, 900),  # far behind: the window, not every tick since
        (10, 30, 49, 100, 30),  # ticks 11..29 are in no history any more
    ],
)
def test_append_start(
    top: int | None, oldest: int | None, latest: int | None, maxlen: int, first: int | None
) -> None:
    assert append_start(top, oldest, latest, maxlen) == first


@pytest.mark.parametrize(
    ("top", "backlog", "cursor"),
    [(None, 100, -1), (49, 100, -1), (49, 50, -1), (49, 10, 39), (49, 0, 49)],
)
def test_initial_cursor(top: int | None, backlog: int, cursor: int) -> None:
    assert initial_cursor(top, backlog) == cursor


def test_backoff_doubles_up_to_its_cap_and_resets() -> None:
    top = Backoff(initial_s=0.1, max_s=1.0, random_fn=lambda: 1.0)
    assert [round(top.next_delay(), 3) for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    top.reset()
    assert top.next_delay() == pytest.approx(0.1)
    low = Backoff(initial_s=0.1, max_s=1.0, random_fn=lambda: 0.0)
    assert [round(low.next_delay(), 3) for _ in range(3)] == [0.05, 0.1, 0.2]


def test_backoff_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        Backoff(initial_s=0, max_s=1)
    with pytest.raises(ValueError):
        Backoff(initial_s=2, max_s=1)
