"""SegmentStore behaviour: lookups, rollover, recovery, corruption, retention (synchronous)."""

from __future__ import annotations

import logging
import os
import random
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tickcast.errors import CorruptRecordError, StoreError
from tickcast.storage import SegmentStore
from tickcast.storage.segment import ENTRY_SIZE, HEADER_SIZE, data_name, encode_header, index_name

WIDTH = 100  # every tick line below is WIDTH bytes of JSON + b"\n"
PER_SEGMENT = 10
SEGMENT_BYTES = PER_SEGMENT * (WIDTH + 1)


def tick(t: int, width: int = WIDTH) -> bytes:
    """A tick whose JSON is exactly ``width`` bytes long."""
    head = orjson.dumps({"type": "tick", "t": t, "ts": 1.5, "s": {"p": ""}})
    out = orjson.dumps({"type": "tick", "t": t, "ts": 1.5, "s": {"p": "x" * (width - len(head))}})
    assert len(out) == width
    return out


def ts(records: list[bytes]) -> list[int]:
    return [int(orjson.loads(r)["t"]) for r in records]


Opener = Callable[..., SegmentStore]


@pytest.fixture
def open_store(tmp_path: Path) -> Iterator[Opener]:
    """Open stores on ``tmp_path`` (small segments by default); closes them all at teardown."""
    opened: list[SegmentStore] = []

    def opener(**kwargs: Any) -> SegmentStore:
        kwargs.setdefault("segment_bytes", SEGMENT_BYTES)
        store = SegmentStore.open(tmp_path, **kwargs)
        opened.append(store)
        return store

    yield opener
    for store in opened:
        store.close()


def fill(store: SegmentStore, n: int) -> None:
    for t in range(store.next_t, store.next_t + n):
        store.append([(t, tick(t))])


def crash(store: SegmentStore, directory: Path) -> None:
    """Leave the files as a kill -9 would (no CLEAN marker)."""
    store.close()
    (directory / "CLEAN").unlink()


def disk_bytes(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.iterdir() if p.suffix in (".jsonl", ".idx"))


# -- basics ---------------------------------------------------------------------


def test_empty_store(open_store: Opener, tmp_path: Path) -> None:
    store = open_store()
    assert store.epoch and len(store.epoch) == 16
    assert (store.oldest_t, store.latest_t, store.next_t) == (None, None, 0)
    assert store.read(0, 10) == [] and store.tail(5) == []
    assert store.segment_count == 1 and store.corruption == []
    assert store.total_bytes == disk_bytes(tmp_path) == HEADER_SIZE


def test_append_read_and_sizes(open_store: Opener, tmp_path: Path) -> None:
    store = open_store()
    store.append([(t, tick(t)) for t in range(25)])  # one call spanning 3 segments
    assert (store.oldest_t, store.latest_t, store.next_t) == (0, 24, 25)
    assert store.read(0, 100) == [tick(t) for t in range(25)]
    assert store.tail(3) == [tick(t) for t in (22, 23, 24)]
    assert store.tail(1000) == store.read(0, 1000)
    assert store.segment_count == 3
    assert store.total_bytes == disk_bytes(tmp_path)


@pytest.mark.parametrize(
    ("records", "match"),
    [
        ([(1, tick(1))], "expects t=0, got t=1"),
        ([(0, tick(0)), (2, tick(2))], "expects t=1, got t=2"),
        ([(0, b'{"t":0,\n"x":1}')], "newline"),
        ([(0, b"")], "empty"),
    ],
)
def test_append_rejects_bad_records(
    open_store: Opener, tmp_path: Path, records: list[tuple[int, bytes]], match: str
) -> None:
    store = open_store()
    with pytest.raises(StoreError, match=match):
        store.append(records)
    assert store.next_t == 0 and (tmp_path / data_name(0)).read_bytes() == b""
    store.append([(0, tick(0))])
    with pytest.raises(StoreError, match="expects t=1, got t=0"):
        store.append([(0, tick(0))])


def test_append_after_close_raises(open_store: Opener) -> None:
    store = open_store()
    store.close()
    store.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        store.append([(0, tick(0))])


def test_bad_options_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fsync"):
        SegmentStore.open(tmp_path, fsync="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="retain_bytes"):
        SegmentStore.open(tmp_path, retain_bytes=-1)
    with pytest.raises(ValueError, match="segment_bytes"):
        SegmentStore.open(tmp_path, segment_bytes=0)


def test_second_open_of_a_directory_is_refused(open_store: Opener, tmp_path: Path) -> None:
    store = open_store()
    with pytest.raises(StoreError, match="in use"):
        SegmentStore.open(tmp_path)
    store.close()
    open_store()


# -- index lookups -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("from_t", "limit", "expected"),
    [
        (10, 1, [10]),  # first record of the oldest segment
        (20, 1, [20]),  # first record of a segment
        (19, 1, [19]),  # last record of a segment
        (29, 2, [29, 30]),  # across one boundary
        (15, 25, list(range(15, 40))),  # spanning 3 segments
        (0, 50, list(range(10, 45))),  # before oldest (segment 0 deleted): starts at oldest
        (-7, 3, [10, 11, 12]),
        (44, 10, [44]),  # limit past latest
        (45, 10, []),  # just after latest
        (1000, 10, []),
        (30, 0, []),
        (40, 1, [40]),  # in the open segment
    ],
)
def test_read_at_segment_boundaries(
    open_store: Opener, tmp_path: Path, from_t: int, limit: int, expected: list[int]
) -> None:
    store = open_store()
    fill(store, 45)
    os.unlink(tmp_path / index_name(0))  # retention deletes index then data
    os.unlink(tmp_path / data_name(0))
    store.close()
    store = open_store()
    assert (store.oldest_t, store.latest_t) == (10, 44)
    got = store.read(from_t, limit)
    assert got == [tick(t) for t in expected]


def test_read_rejects_negative_limit(open_store: Opener) -> None:
    with pytest.raises(ValueError, match="limit"):
        open_store().read(0, -1)


# -- rollover ---------------------------------------------------------------------


def test_rollover_at_segment_bytes(open_store: Opener, tmp_path: Path) -> None:
    store = open_store(segment_bytes=3 * (WIDTH + 1))  # exactly 3 lines fit
    fill(store, 7)
    store.append([(7, tick(7, width=1000))])  # larger than segment_bytes: alone
    fill(store, 2)
    names = sorted(p.name for p in tmp_path.glob("*.jsonl"))
    assert names == [data_name(b) for b in (0, 3, 6, 7, 8)]
    sizes = [(tmp_path / n).stat().st_size for n in names]
    assert sizes == [303, 303, 101, 1001, 202]
    assert store.segment_count == 5
    assert ts(store.read(0, 100)) == list(range(10))


def test_rollover_one_byte_short(open_store: Opener, tmp_path: Path) -> None:
    store = open_store(segment_bytes=3 * (WIDTH + 1) - 1)  # only 2 lines fit
    fill(store, 5)
    assert sorted(p.name for p in tmp_path.glob("*.jsonl")) == [data_name(b) for b in (0, 2, 4)]


def test_t_continues_after_close_and_open(open_store: Opener) -> None:
    store = open_store()
    fill(store, 25)
    store.close()
    store = open_store()
    assert (store.oldest_t, store.latest_t, store.next_t) == (0, 24, 25)
    with pytest.raises(StoreError):
        store.append([(0, tick(0))])
    fill(store, 10)
    assert store.read(0, 100) == [tick(t) for t in range(35)]


# -- the CLEAN marker and the epoch --------------------------------------------------


def test_clean_marker_written_on_close_removed_on_open(open_store: Opener, tmp_path: Path) -> None:
    store = open_store()
    fill(store, 3)
    assert not (tmp_path / "CLEAN").exists()
    store.close()
    assert orjson.loads((tmp_path / "CLEAN").read_bytes()) == {"next_t": 3, "epoch": store.epoch}
    open_store()
    assert not (tmp_path / "CLEAN").exists()


def test_clean_marker_does_not_hide_damage(open_store: Opener, tmp_path: Path) -> None:
    """With CLEAN the sizes are trusted only if they agree; else full recovery runs."""
    store = open_store()
    fill(store, 15)
    store.close()
    data = tmp_path / data_name(10)
    os.truncate(data, data.stat().st_size - 3)
    store = open_store()
    assert store.latest_t == 13
    fill(store, 1)
    assert store.read(10, 10) == [tick(t) for t in range(10, 15)]


def test_epoch_stable_across_reopen_and_new_after_wipe(open_store: Opener, tmp_path: Path) -> None:
    store = open_store()
    epoch = store.epoch
    store.close()
    store = open_store()  # no tick yet: the empty first segment still keeps the epoch
    assert store.epoch == epoch
    fill(store, 12)
    store.close()
    store = open_store()
    assert store.epoch == epoch
    store.close()
    for path in tmp_path.glob("0*"):  # history deleted, EPOCH file left behind
        path.unlink()
    store = open_store()
    assert store.epoch != epoch and store.next_t == 0
    second = store.epoch
    store.close()
    shutil.rmtree(tmp_path)
    store = open_store()
    assert store.epoch not in (epoch, second)


# -- crash recovery (the last segment) ------------------------------------------------


@pytest.mark.parametrize("in_last_segment", [1, 3])
def test_torn_tail_at_every_byte_offset(
    open_store: Opener, tmp_path: Path, in_last_segment: int
) -> None:
    store = open_store()
    total = PER_SEGMENT + in_last_segment
    fill(store, total)
    last = total - 1
    crash(store, tmp_path)
    data, idx = tmp_path / data_name(PER_SEGMENT), tmp_path / index_name(PER_SEGMENT)
    data_copy, idx_copy = data.read_bytes(), idx.read_bytes()
    full_end = len(data_copy)
    for cut in range(full_end - WIDTH - 1, full_end + 1):
        data.write_bytes(data_copy[:cut])
        idx.write_bytes(idx_copy)
        store = open_store()
        expect_latest = last if cut == full_end else last - 1
        assert store.latest_t == expect_latest, cut
        assert data.stat().st_size == (full_end if cut == full_end else full_end - WIDTH - 1)
        assert idx.stat().st_size == HEADER_SIZE + (expect_latest + 1 - PER_SEGMENT) * ENTRY_SIZE
        fill(store, 2)
        assert store.read(0, 100) == [tick(t) for t in range(expect_latest + 3)]
        assert store.corruption == []
        crash(store, tmp_path)


@pytest.mark.parametrize("clean", [True, False])
def test_partial_index_entry_is_cut(open_store: Opener, tmp_path: Path, clean: bool) -> None:
    store = open_store()
    fill(store, 13)
    crash(store, tmp_path) if not clean else store.close()
    idx = tmp_path / index_name(10)
    good = idx.read_bytes()
    idx.write_bytes(good + b"\x01" * 7)
    store = open_store()
    assert store.latest_t == 12
    assert idx.read_bytes() == good
    fill(store, 1)
    assert ts(store.read(9, 10)) == list(range(9, 14))


def test_records_missing_from_the_index_are_indexed(open_store: Opener, tmp_path: Path) -> None:
    """A crash between the data write and the index write."""
    store = open_store()
    fill(store, 14)
    crash(store, tmp_path)
    idx = tmp_path / index_name(10)
    good = idx.read_bytes()
    idx.write_bytes(good[: -2 * ENTRY_SIZE])
    store = open_store()
    assert store.latest_t == 13
    assert idx.read_bytes() == good


def test_index_entries_past_the_data_end_are_dropped(
    open_store: Opener, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = open_store()
    fill(store, 15)
    crash(store, tmp_path)
    data = tmp_path / data_name(10)
    os.truncate(data, 2 * (WIDTH + 1))
    with caplog.at_level(logging.WARNING, logger="tickcast.storage"):
        store = open_store()
    assert [r.getMessage() for r in caplog.records] == [
        f"recovery: {tmp_path / index_name(10)}: dropped 3 entries pointing past the data end"
    ]
    assert store.latest_t == 11
    assert (tmp_path / index_name(10)).stat().st_size == HEADER_SIZE + 2 * ENTRY_SIZE
    fill(store, 1)
    assert ts(store.tail(3)) == [10, 11, 12]


@pytest.mark.parametrize(
    "junk",
    [b"garbage\n", tick(99) + b"\n", b"\0" * 300, tick(13)[:50]],
    ids=["not-json", "wrong-t", "zero-filled", "torn"],
)
def test_invalid_data_after_the_last_record_is_cut(
    open_store: Opener, tmp_path: Path, caplog: pytest.LogCaptureFixture, junk: bytes
) -> None:
    store = open_store()
    fill(store, 13)
    crash(store, tmp_path)
    data = tmp_path / data_name(10)
    good = data.read_bytes()
    data.write_bytes(good + junk)
    with caplog.at_level(logging.WARNING, logger="tickcast.storage"):
        store = open_store()
    assert store.latest_t == 12 and data.read_bytes() == good
    cut = f"{data}: cut {len(junk)} bytes at offset {len(good)}"
    assert any(cut in r.getMessage() for r in caplog.records)


def test_indexed_tail_that_fails_its_checksum_is_cut(open_store: Opener, tmp_path: Path) -> None:
    """Power loss: the index reached the disk, the last data block did not (zeros)."""
    store = open_store()
    fill(store, 14)
    crash(store, tmp_path)
    data = tmp_path / data_name(10)
    good = data.read_bytes()
    data.write_bytes(good[: 2 * (WIDTH + 1)] + b"\0" * (2 * (WIDTH + 1)))
    store = open_store()
    assert store.latest_t == 11 and data.read_bytes() == good[: 2 * (WIDTH + 1)]
    fill(store, 1)
    assert ts(store.read(10, 10)) == [10, 11, 12]


def test_indexed_tail_record_that_still_parses_is_cut_not_reindexed(
    open_store: Opener, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A trailing record that fails its CRC but is still JSON with the right ``t``
    (a changed byte inside a string) is cut with everything after it: it must never
    be indexed again by the scan that picks up unindexed lines."""
    store = open_store()
    fill(store, 14)  # segment 10 holds t = 10..13
    crash(store, tmp_path)
    bad = 13
    data = tmp_path / data_name(10)
    good = data.read_bytes()
    at = (bad - 10) * (WIDTH + 1) + WIDTH - 5  # inside the "x..." string of tick `bad`
    assert good[at : at + 1] == b"x"
    data.write_bytes(good[:at] + b"y" + good[at + 1 :])
    with caplog.at_level(logging.WARNING, logger="tickcast.storage"):
        store = open_store()
    assert store.latest_t == bad - 1
    assert data.read_bytes() == good[: (bad - 10) * (WIDTH + 1)]
    assert ts(store.read(10, 10)) == list(range(10, bad))
    assert any(f"record t={bad} fails its crc32" in r.getMessage() for r in caplog.records)
    fill(store, 1)
    assert store.tail(1) == [tick(bad)]  # t continues after the last good record


def test_empty_last_segment_keeps_next_t(open_store: Opener, tmp_path: Path) -> None:
    store = open_store()
    fill(store, 11)
    crash(store, tmp_path)
    (tmp_path / data_name(10)).write_bytes(tick(10)[:40])
    store = open_store()
    assert (store.latest_t, store.next_t, store.oldest_t) == (9, 10, 0)
    assert (tmp_path / data_name(10)).read_bytes() == b""
    assert store.tail(1) == [tick(9)]
    fill(store, 1)
    assert store.tail(2) == [tick(9), tick(10)]


# -- index rebuilds -------------------------------------------------------------------


def test_missing_index_of_an_old_segment_is_rebuilt_lazily(
    open_store: Opener, tmp_path: Path
) -> None:
    store = open_store()
    fill(store, 25)
    store.close()
    idx = tmp_path / index_name(0)
    good = idx.read_bytes()
    idx.unlink()
    store = open_store()
    assert not idx.exists()  # open() never touches older segments
    assert store.read(12, 5) == [tick(t) for t in range(12, 17)]
    assert not idx.exists()
    assert store.read(3, 2) == [tick(3), tick(4)]
    assert idx.read_bytes() == good and store.corruption == []


@pytest.mark.parametrize("damage", ["missing", "stale-header"])
def test_bad_index_of_the_last_segment_is_rebuilt_eagerly(
    open_store: Opener, tmp_path: Path, damage: str
) -> None:
    store = open_store()
    fill(store, 14)
    crash(store, tmp_path)
    idx = tmp_path / index_name(10)
    good = idx.read_bytes()
    if damage == "missing":
        idx.unlink()
    else:
        idx.write_bytes(encode_header(999) + good[HEADER_SIZE:])
    store = open_store()
    assert idx.read_bytes() == good
    assert store.latest_t == 13


@pytest.mark.parametrize("damage", ["stale-header", "short"])
def test_stale_index_of_an_old_segment_is_rebuilt(
    open_store: Opener, tmp_path: Path, damage: str
) -> None:
    store = open_store()
    fill(store, 25)
    store.close()
    idx = tmp_path / index_name(10)
    good = idx.read_bytes()
    idx.write_bytes(encode_header(11) + good[HEADER_SIZE:] if damage != "short" else good[:-16])
    store = open_store()
    assert store.read(15, 2) == [tick(15), tick(16)]
    assert idx.read_bytes() == good and store.corruption == []


def test_open_never_reads_older_segments(open_store: Opener, tmp_path: Path) -> None:
    store = open_store()
    fill(store, 25)
    store.close()
    for name in (data_name(0), index_name(0)):
        path = tmp_path / name
        path.write_bytes(b"\xff" * path.stat().st_size)
    store = open_store()
    assert (store.oldest_t, store.latest_t, store.corruption) == (0, 24, [])
    assert store.read(10, 20) == [tick(t) for t in range(10, 25)]
    with pytest.raises(CorruptRecordError):
        store.read(0, 1)
    assert store.corruption


# -- corruption -----------------------------------------------------------------------


@pytest.mark.parametrize("bad_t", [13, 22])  # a sealed segment, the open one
def test_flipped_byte_is_detected_and_reported(
    open_store: Opener, tmp_path: Path, caplog: pytest.LogCaptureFixture, bad_t: int
) -> None:
    store = open_store()
    fill(store, 25)
    base = bad_t // PER_SEGMENT * PER_SEGMENT
    data = tmp_path / data_name(base)
    offset = (bad_t - base) * (WIDTH + 1)
    raw = bytearray(data.read_bytes())
    raw[offset + WIDTH // 2] ^= 0x01
    data.write_bytes(bytes(raw))
    with caplog.at_level(logging.ERROR, logger="tickcast.storage"):
        for _ in range(2):
            with pytest.raises(CorruptRecordError) as info:
                store.read(bad_t - 3, 10)
    err = info.value
    assert (err.path, err.offset, err.t) == (data, offset, bad_t)
    assert "crc32" in err.reason and str(data) in str(err) and f"byte {offset}" in str(err)
    assert store.corruption == [str(err)]  # listed once, however often it is read
    assert any(
        str(data) in r.getMessage() and str(offset) in r.getMessage() for r in caplog.records
    )
    assert store.read(bad_t - 3, 3) == [tick(t) for t in range(bad_t - 3, bad_t)]
    assert store.read(bad_t + 1, 2) == [tick(bad_t + 1), tick(bad_t + 2)]
    with pytest.raises(CorruptRecordError):
        store.tail(25)


def test_missing_data_file_of_an_old_segment_is_reported(
    open_store: Opener, tmp_path: Path
) -> None:
    store = open_store()
    fill(store, 25)
    (tmp_path / data_name(10)).unlink()
    with pytest.raises(CorruptRecordError, match="data file missing"):
        store.read(12, 1)
    assert store.read(20, 1) == [tick(20)]


def test_io_errors_on_read_are_store_errors(open_store: Opener, tmp_path: Path) -> None:
    store = open_store()
    fill(store, 25)
    (tmp_path / data_name(0)).unlink()
    (tmp_path / data_name(0)).mkdir()  # reading it fails with EISDIR, even as root
    with pytest.raises(StoreError, match="read at t=3 failed") as info:
        store.read(3, 1)
    assert isinstance(info.value.__cause__, OSError)
    assert store.read(10, 1) == [tick(10)]


# -- retention --------------------------------------------------------------------------


def test_retention_by_bytes(open_store: Opener, tmp_path: Path) -> None:
    per_segment = SEGMENT_BYTES + HEADER_SIZE + PER_SEGMENT * ENTRY_SIZE
    store = open_store(retain_bytes=3 * per_segment)
    fill(store, 55)  # retention runs after each rollover
    assert store.oldest_t == 30 and store.segment_count == 3
    assert store.total_bytes == disk_bytes(tmp_path) <= 3 * per_segment
    assert store.read(0, 3) == [tick(30), tick(31), tick(32)]
    assert not (tmp_path / data_name(20)).exists() and not (tmp_path / index_name(20)).exists()
    store.close()
    store = open_store(retain_bytes=1)  # applied at open too, never the open segment
    assert store.oldest_t == 50 and store.segment_count == 1
    assert sorted(p.name for p in tmp_path.glob("0*")) == [index_name(50), data_name(50)]


def age(tmp_path: Path, base: int, seconds: float) -> None:
    then = time.time() - seconds
    for name in (data_name(base), index_name(base)):
        os.utime(tmp_path / name, (then, then))


def test_retention_by_age(open_store: Opener, tmp_path: Path) -> None:
    store = open_store(retain_s=3600)
    fill(store, 45)
    for base in (0, 10, 20):
        age(tmp_path, base, 7200)
    age(tmp_path, 30, 3000)  # younger than retain_s: kept, and so is everything after
    store.enforce_retention()
    assert store.oldest_t == 30 and store.segment_count == 2
    age(tmp_path, 30, 7200)
    age(tmp_path, 40, 7200)  # the open segment: never deleted
    store.enforce_retention()
    assert store.oldest_t == 40 and store.segment_count == 1
    assert store.read(0, 100) == [tick(t) for t in range(40, 45)]


def test_retention_keeps_the_segment_holding_latest_t(open_store: Opener, tmp_path: Path) -> None:
    store = open_store()
    fill(store, 20)
    crash(store, tmp_path)
    os.truncate(tmp_path / data_name(10), 0)  # the last segment is left empty (t=10..19 lost)
    for base in (0, 10):
        age(tmp_path, base, 7200)
    store = open_store(retain_s=60)
    assert (store.oldest_t, store.latest_t, store.segment_count) == (0, 9, 2)
    assert store.tail(1) == [tick(9)]


# -- concurrency --------------------------------------------------------------------------


def test_concurrent_reads_while_appending(open_store: Opener) -> None:
    """Readers racing the writer (rollovers, retention deletes) see whole, consecutive runs."""
    per_segment = SEGMENT_BYTES + HEADER_SIZE + PER_SEGMENT * ENTRY_SIZE
    store = open_store(retain_bytes=5 * per_segment, fsync="never")
    total = 3000
    done = threading.Event()
    errors: list[str] = []

    def check(batch: list[bytes]) -> list[int]:
        got = ts(batch)
        if got and got != list(range(got[0], got[0] + len(got))):
            errors.append(f"not consecutive: {got}")
        if batch != [tick(t) for t in got]:
            errors.append(f"wrong bytes in {got}")
        return got

    def writer() -> None:
        rng = random.Random(1)
        try:
            while store.next_t < total:
                first = store.next_t
                n = min(rng.randint(1, 5), total - first)
                store.append([(t, tick(t)) for t in range(first, first + n)])
        except Exception as exc:
            errors.append(f"writer: {exc!r}")
        finally:
            done.set()

    def reader(seed: int) -> None:
        rng = random.Random(seed)
        reads = 0
        try:
            while not done.is_set() or reads < 50:
                reads += 1
                next_t = store.next_t
                from_t = rng.randint(0, next_t + 2)
                got = check(store.read(from_t, 25))
                if from_t < next_t:
                    # Starts at from_t, or at a segment base if retention took from_t.
                    if not got or got[0] < from_t or (got[0] > from_t and got[0] % 10):
                        errors.append(f"read({from_t}) gave {got}")
                    elif len(got) < min(25, next_t - got[0]):
                        errors.append(f"read({from_t}) short with next_t={next_t}: {got}")
                tail = check(store.tail(4))
                if len(tail) < min(4, next_t) or (next_t and tail[-1] < next_t - 1):
                    errors.append(f"tail(4) gave {tail} with next_t={next_t}")
        except Exception as exc:
            errors.append(f"reader: {exc!r}")

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(4)]
    threads.append(threading.Thread(target=writer))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert store.latest_t == total - 1 and store.corruption == []
    assert store.oldest_t is not None and store.oldest_t > 0  # retention did run
