"""The segment file format and the Segment / SegmentWriter primitives (synchronous)."""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import orjson
import pytest

from tickcast.errors import CorruptRecordError
from tickcast.storage import SegmentStore
from tickcast.storage.segment import (
    ENTRY_SIZE,
    HEADER_SIZE,
    Segment,
    SegmentWriter,
    data_name,
    encode_header,
    index_name,
    parse_name,
    scan_records,
)


def tick(t: int, pad: int = 20) -> bytes:
    return orjson.dumps({"type": "tick", "t": t, "ts": 1732450000.0 + t, "s": {"p": "x" * pad}})


def lines(first_t: int, n: int) -> bytes:
    return b"".join(tick(t) + b"\n" for t in range(first_t, first_t + n))


def test_names() -> None:
    assert data_name(42) == "00000000000000000042.jsonl"
    assert index_name(42) == "00000000000000000042.idx"
    assert parse_name("00000000000000000042.jsonl") == (42, "jsonl")
    assert parse_name("00000000000000000042.idx") == (42, "idx")
    for other in ("42.jsonl", "0000000000000000042.idx", "00000000000000000042.idx.tmp", "EPOCH"):
        assert parse_name(other) is None


def test_header_and_entry_layout() -> None:
    assert HEADER_SIZE == ENTRY_SIZE == 16
    assert encode_header(42) == b"TKCIDX01" + (42).to_bytes(8, "little")


def test_files_are_exactly_the_documented_format(tmp_path: Path) -> None:
    """A reader written from docs/storage.md alone must understand these bytes."""
    records = [tick(t, pad=t) for t in range(5)]
    with SegmentStore.open(tmp_path) as store:
        store.append(list(enumerate(records)))
    assert (tmp_path / data_name(0)).read_bytes() == b"".join(r + b"\n" for r in records)
    expected = struct.pack("<8sQ", b"TKCIDX01", 0)
    offset = 0
    for r in records:
        expected += struct.pack("<QII", offset, len(r), zlib.crc32(r))
        offset += len(r) + 1
    assert (tmp_path / index_name(0)).read_bytes() == expected
    assert (tmp_path / "EPOCH").read_text().strip() == store.epoch
    assert orjson.loads((tmp_path / "CLEAN").read_bytes())["next_t"] == 5


def test_scan_records_indexes_valid_lines() -> None:
    buf = lines(7, 3)
    entries, good, problem = scan_records(buf, start_offset=100, first_t=7)
    assert (good, problem) == (len(buf), "")
    first = tick(7)
    assert entries[0] == struct.pack("<QII", 100, len(first), zlib.crc32(first))
    assert entries[1][:8] == struct.pack("<Q", 100 + len(first) + 1)
    assert scan_records(b"", start_offset=0, first_t=0) == ([], 0, "")


@pytest.mark.parametrize(
    ("tail", "why"),
    [
        (tick(10)[:-3], "torn"),
        (b"garbage\n", "not valid JSON"),
        (tick(11) + b"\n", "expected t=10"),
        (b"[1,2]\n", "expected t=10"),
        (b'{"type":"tick","t":10.0}\n', "expected t=10"),
        (b"\0" * 50, "torn"),
    ],
)
def test_scan_records_stops_at_the_first_bad_line(tail: bytes, why: str) -> None:
    good_part = lines(7, 3)
    entries, good, problem = scan_records(good_part + tail, start_offset=0, first_t=7)
    assert len(entries) == 3
    assert good == len(good_part)
    assert why in problem


def make_segment(directory: Path, base: int, n: int) -> Segment:
    (directory / data_name(base)).write_bytes(lines(base, n))
    seg = Segment(directory, base, count=n)
    assert seg.rebuild_index("test setup") == ""
    return seg


def test_rebuild_index_matches_what_the_writer_wrote(tmp_path: Path) -> None:
    with SegmentStore.open(tmp_path) as store:
        store.append([(t, tick(t)) for t in range(20)])
    written = (tmp_path / index_name(0)).read_bytes()
    (tmp_path / index_name(0)).unlink()
    seg = Segment(tmp_path, 0, count=20)
    assert seg.rebuild_index("test") == ""
    assert (tmp_path / index_name(0)).read_bytes() == written
    assert seg.read(0, 20) == [tick(t) for t in range(20)]


def test_rebuild_index_reports_short_data(tmp_path: Path) -> None:
    (tmp_path / data_name(0)).write_bytes(lines(0, 4) + b"oops\n" + lines(5, 2))
    seg = Segment(tmp_path, 0, count=7)
    report = seg.rebuild_index("test")
    assert "only 4 of 7" in report and "t=4" in report
    assert seg.read(0, 4) == [tick(t) for t in range(4)]
    with pytest.raises(CorruptRecordError, match="record missing") as info:
        seg.read(3, 2)
    assert info.value.t == 4


def test_read_detects_a_damaged_index_offset(tmp_path: Path) -> None:
    seg = make_segment(tmp_path, 0, 5)
    idx = tmp_path / index_name(0)
    raw = bytearray(idx.read_bytes())
    pos = HEADER_SIZE + 3 * ENTRY_SIZE  # entry of t=3: bump its offset
    raw[pos] ^= 0x04
    idx.write_bytes(bytes(raw))
    assert seg.read(0, 3) == [tick(t) for t in range(3)]
    with pytest.raises(CorruptRecordError) as info:
        seg.read(2, 2)
    assert (info.value.path, info.value.offset, info.value.t) == (idx, pos, 3)
    # Reading from t=4 anchors on entry 3 and sees the same break.
    with pytest.raises(CorruptRecordError):
        seg.read(4, 1)


def test_read_detects_an_index_pointing_past_the_data(tmp_path: Path) -> None:
    seg = make_segment(tmp_path, 0, 3)
    data = tmp_path / data_name(0)
    os.truncate(data, data.stat().st_size - 5)
    with pytest.raises(CorruptRecordError, match="past the end") as info:
        seg.read(0, 3)
    assert info.value.t == 2 and info.value.path == data


def test_read_detects_a_missing_newline(tmp_path: Path) -> None:
    seg = make_segment(tmp_path, 0, 3)
    data = tmp_path / data_name(0)
    raw = bytearray(data.read_bytes())
    raw[len(tick(0))] = ord(" ")
    data.write_bytes(bytes(raw))
    with pytest.raises(CorruptRecordError, match="newline") as info:
        seg.read(0, 2)
    assert (info.value.offset, info.value.t) == (0, 0)


def test_writer_undoes_a_failed_append(tmp_path: Path) -> None:
    seg = Segment(tmp_path, 0)
    writer = SegmentWriter(seg)
    writer.write(tick(0) + b"\n", b"i" * ENTRY_SIZE)
    size = writer.data_end
    real_idx_fd = writer.idx_fd
    writer.idx_fd = os.open(tmp_path / data_name(0), os.O_RDONLY)  # writes fail: EBADF
    try:
        with pytest.raises(OSError):
            writer.write(tick(1) + b"\n", b"j" * ENTRY_SIZE)
    finally:
        os.close(writer.idx_fd)
        writer.idx_fd = real_idx_fd
    assert (tmp_path / data_name(0)).stat().st_size == size == writer.data_end
    writer.close()


def test_recover_last_creates_missing_files(tmp_path: Path) -> None:
    seg = Segment(tmp_path, 5)
    assert seg.recover_last(trusted=False) == []
    assert (tmp_path / data_name(5)).read_bytes() == b""
    assert (tmp_path / index_name(5)).read_bytes() == encode_header(5)
    assert seg.count == 0
