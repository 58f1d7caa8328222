"""One segment of the tick log: a ``.jsonl`` data file plus its ``.idx`` sidecar.

Plain synchronous Python (no trio). :class:`Segment` is the segment's metadata
and its read / repair logic; :class:`SegmentWriter` appends to the last one.
The policy around them (which segment is open, rollover, retention, locking)
lives in :mod:`tickcast.storage.store`. ``docs/storage.md`` is the format spec.

Why two files per segment rather than one: the data file stays plain JSON lines
that ``tail``, ``grep`` and ``jq`` read as they are, and the index gives O(1)
lookup by ``t`` plus a CRC-32 per record, so every read is verified with no extra
I/O. Why raw ``os`` calls rather than Python file objects: writes must be
unbuffered (data reaches the kernel before its index entry, see below) and reads
must be positioned (``pread``) so that readers in worker threads share nothing.

Errors: damage is reported as :class:`~tickcast.errors.CorruptRecordError`
naming the file, byte offset, ``t`` and reason; a corrupt record is never
returned. ``OSError`` (disk full, permissions) propagates to the store.
"""

# File invariants (what every function here relies on and re-establishes):
#
#   {base:020d}.jsonl  record i (t = base + i) is the tick's JSON bytes then b"\n".
#                      No header, no padding, append-only. Each record is a JSON
#                      object whose "t" member is base + i (recovery relies on it)
#                      and contains no raw b"\n".
#   {base:020d}.idx    header  struct "<8sQ" (b"TKCIDX01", base)          16 bytes
#                      entry i struct "<QII" (offset, length, crc32) at 16 + 16*i
#                      offset = where record i's line starts in the .jsonl,
#                      length = JSON length without the newline,
#                      crc32  = zlib.crc32(json bytes).
#   * entries are dense and contiguous: offset[0] == 0 and
#     offset[i+1] == offset[i] + length[i] + 1; the data byte at
#     offset[i] + length[i] is b"\n".
#   * data is written before its index entry (unbuffered os.write), so an entry
#     a reader can see always points at written bytes; only a crash breaks
#     this, and only in the last segment (recover_last() mends it).
#   * a sealed segment (every one but the last) holds exactly
#     next_base - base records; its .idx may be rebuilt from its data at any
#     time (rebuild_index()), the result is byte-identical to the original.

from __future__ import annotations

import logging
import os
import re
import struct
import zlib
from pathlib import Path

import orjson

from tickcast.errors import CorruptRecordError

__all__ = [
    "ENTRY",
    "ENTRY_SIZE",
    "HEADER",
    "HEADER_SIZE",
    "INDEX_MAGIC",
    "Segment",
    "SegmentWriter",
    "data_name",
    "encode_header",
    "index_name",
    "parse_name",
    "scan_records",
    "sync_dir",
    "write_atomic",
]

logger = logging.getLogger("tickcast.storage")

# The index's first 8 bytes: the format name and its version ("01"). A reader that
# finds anything else treats the index as stale and rebuilds it from the data.
INDEX_MAGIC = b"TKCIDX01"
HEADER = struct.Struct("<8sQ")  # magic, base_t
ENTRY = struct.Struct("<QII")  # offset, length, crc32
HEADER_SIZE = HEADER.size  # 16
ENTRY_SIZE = ENTRY.size  # 16

# Twenty digits hold any u64 base and make names sort in t order as plain strings,
# so `ls` lists the log in order. Any other file in the directory is ignored.
_NAME = re.compile(r"^(\d{20})\.(jsonl|idx)$")
_NEWLINE = 0x0A


def data_name(base_t: int) -> str:
    """File name of the data file of the segment starting at ``base_t``."""
    return f"{base_t:020d}.jsonl"


def index_name(base_t: int) -> str:
    """File name of the index sidecar of the segment starting at ``base_t``."""
    return f"{base_t:020d}.idx"


def parse_name(name: str) -> tuple[int, str] | None:
    """``("00000000000000000042.idx")`` -> ``(42, "idx")``; None for any other name."""
    match = _NAME.match(name)
    return None if match is None else (int(match[1]), match[2])


def encode_header(base_t: int) -> bytes:
    """The 16-byte ``.idx`` header for a segment starting at ``base_t``."""
    return HEADER.pack(INDEX_MAGIC, base_t)


def scan_records(buf: bytes, *, start_offset: int, first_t: int) -> tuple[list[bytes], int, str]:
    """Index the complete, valid records at the start of ``buf``.

    Used to rebuild an index and to recover the unindexed tail of the last
    segment. A line counts only if it ends in a newline and parses as a JSON
    object whose ``"t"`` is the expected sequence number.

    Args:
        buf: data file bytes, starting at a record boundary.
        start_offset: the file offset of ``buf[0]`` (entries hold file offsets).
        first_t: the ``t`` the first line must hold.

    Returns:
        ``(entries, good_len, problem)``: packed index entries of the valid
        records, how many bytes of ``buf`` they span, and why scanning stopped
        before the end of ``buf`` (``""`` when it did not).
    """
    entries: list[bytes] = []
    pos, t, end = 0, first_t, len(buf)
    while pos < end:
        nl = buf.find(b"\n", pos)
        if nl < 0:
            return entries, pos, "torn last line (no newline)"
        line = buf[pos:nl]
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            return entries, pos, f"line expected to hold t={t} is not valid JSON"
        got = obj.get("t") if isinstance(obj, dict) else None
        if type(got) is not int or got != t:
            return entries, pos, f"line holds t={got!r}, expected t={t}"
        entries.append(ENTRY.pack(start_offset + pos, nl - pos, zlib.crc32(line)))
        pos, t = nl + 1, t + 1
    return entries, pos, ""


class Segment:
    """Metadata of one segment and the verified reads from it.

    Thread-safety: :meth:`read` may run in any number of threads at once (each
    call opens its own file descriptors). :meth:`check_index` /
    :meth:`rebuild_index` must not run concurrently for the same segment (the
    store serialises them). ``count`` only grows while the segment is the last one.

    Attributes:
        base_t: ``t`` of the first record (encoded in both file names).
        count: records the segment holds (for a sealed segment: next base - base).
        indexed: records readable through the index; below ``count`` only when a
            rebuilt index found the data damaged or short.
        data_bytes, idx_bytes: file sizes as last known (for ``total_bytes``).
        checked: the index was verified (header and size) or rebuilt.
    """

    __slots__ = (
        "base_t",
        "checked",
        "count",
        "data_bytes",
        "data_path",
        "idx_bytes",
        "idx_path",
        "indexed",
    )

    def __init__(self, directory: Path, base_t: int, *, count: int = 0) -> None:
        self.base_t = base_t
        self.data_path = directory / data_name(base_t)
        self.idx_path = directory / index_name(base_t)
        self.count = count
        self.indexed = count
        self.data_bytes = 0
        self.idx_bytes = 0
        self.checked = False

    def __repr__(self) -> str:
        return f"Segment(base_t={self.base_t}, count={self.count})"

    # -- reading ---------------------------------------------------------------

    def read(self, t: int, n: int) -> list[bytes]:
        """Return the ``n`` records from ``t`` (all inside this segment), verified.

        One pread of the index entries (plus the previous entry, which anchors
        the first offset) and one contiguous pread of the data range.

        Checked for every record: the entries are contiguous (each starts where
        the previous one ended plus its newline), the data reaches as far as they
        say, a newline follows each record, and its CRC-32 matches. All or
        nothing: the first failure raises and no record of the call is returned.
        Blocking file I/O: the store runs it in a worker thread.

        Raises:
            CorruptRecordError: a record or index entry failed a check; nothing
                is returned.
            FileNotFoundError: a file vanished (retention or a user deleted it).
        """
        i = t - self.base_t
        if i + n > self.indexed:
            raise CorruptRecordError(
                self.data_path,
                self.data_bytes,
                self.base_t + self.indexed,
                f"record missing: the data holds only {self.indexed} of {self.count} records",
            )
        # The entry before the first one asked for, when there is one: where it ends
        # is where the first record must start, which catches a damaged first entry.
        first = max(i - 1, 0)
        idx_fd = os.open(self.idx_path, os.O_RDONLY)
        try:
            raw = os.pread(idx_fd, (i + n - first) * ENTRY_SIZE, HEADER_SIZE + first * ENTRY_SIZE)
        finally:
            os.close(idx_fd)
        got = len(raw) // ENTRY_SIZE
        if got < i + n - first:
            pos = HEADER_SIZE + (first + got) * ENTRY_SIZE
            raise CorruptRecordError(
                self.idx_path, pos, self.base_t + first + got, "index truncated"
            )
        entries = list(ENTRY.iter_unpack(raw))
        expect = 0
        if i > 0:
            offset, length, _ = entries.pop(0)
            expect = offset + length + 1
        start = expect
        for k, (offset, length, _) in enumerate(entries):
            if offset != expect:
                pos = HEADER_SIZE + (i + k) * ENTRY_SIZE
                why = f"index entry says offset {offset}, previous record ends at {expect}"
                raise CorruptRecordError(self.idx_path, pos, t + k, why)
            expect = offset + length + 1
        data_fd = os.open(self.data_path, os.O_RDONLY)
        try:
            size = os.fstat(data_fd).st_size
            if expect > size:
                k = next(k for k, e in enumerate(entries) if e[0] + e[1] + 1 > size)
                why = f"index points past the end of the data ({size} bytes)"
                raise CorruptRecordError(self.data_path, entries[k][0], t + k, why)
            blob = os.pread(data_fd, expect - start, start)
        finally:
            os.close(data_fd)
        if len(blob) != expect - start:  # the file shrank under us: treat as damage
            raise CorruptRecordError(self.data_path, start + len(blob), None, "data truncated")
        # Slices of one blob (one read for the whole range); each verified on its own
        # so the error names the exact record.
        out: list[bytes] = []
        for k, (offset, length, crc) in enumerate(entries):
            rel = offset - start
            record = blob[rel : rel + length]
            if blob[rel + length] != _NEWLINE:
                raise CorruptRecordError(self.data_path, offset, t + k, "no newline after record")
            actual = zlib.crc32(record)
            if actual != crc:
                why = f"crc32 mismatch (index {crc:08x}, data {actual:08x})"
                raise CorruptRecordError(self.data_path, offset, t + k, why)
            out.append(record)
        return out

    # -- repair ----------------------------------------------------------------

    def check_index(self) -> str:
        """Verify a sealed segment's index header and size; rebuild it if stale.

        Reads 16 bytes and one ``fstat``; rebuilding scans the segment's data
        once. Returns a corruption report, or ``""`` when the segment is sound.

        Raises:
            FileNotFoundError: the data file is gone (and the index with it).
        """
        try:
            fd = os.open(self.idx_path, os.O_RDONLY)
        except FileNotFoundError:
            return self.rebuild_index("index file missing")
        try:
            size = os.fstat(fd).st_size
            header = os.pread(fd, HEADER_SIZE, 0)
        finally:
            os.close(fd)
        if header != encode_header(self.base_t):
            return self.rebuild_index("index header missing or for another segment")
        if size != HEADER_SIZE + self.count * ENTRY_SIZE:
            return self.rebuild_index(f"index is {size} bytes, expected {self.count} entries")
        self.indexed, self.idx_bytes, self.checked = self.count, size, True
        return ""

    def rebuild_index(self, why: str) -> str:
        """Rewrite the index from the data file (atomically: temp file + rename).

        Returns a corruption report when the data holds fewer valid records
        than the segment should (the shortfall stays unreadable), else ``""``.

        Reads the whole data file into memory (about ``segment_bytes``, or one
        record larger than that). Entries past ``count`` are ignored: a
        sealed segment's range is fixed by the next segment's base, whatever the
        data holds.
        """
        logger.warning("rebuilding index %s: %s", self.idx_path, why)
        data = self.data_path.read_bytes()
        entries, good, problem = scan_records(data, start_offset=0, first_t=self.base_t)
        entries = entries[: self.count]
        write_atomic(self.idx_path, encode_header(self.base_t) + b"".join(entries))
        self.indexed, self.checked = len(entries), True
        self.data_bytes, self.idx_bytes = len(data), HEADER_SIZE + len(entries) * ENTRY_SIZE
        if len(entries) == self.count:
            return ""
        return (
            f"{self.data_path}: only {len(entries)} of {self.count} records are valid;"
            f" t={self.base_t + len(entries)} at byte {good}: {problem or 'data ends early'}"
        )

    def recover_last(self, *, trusted: bool) -> list[str]:
        """Make the last segment consistent after a crash; return what was done.

        Cost is bounded by this one segment: a binary search over the index,
        one checksum per trailing record that fails, one read of the data
        after the last indexed record. Cuts a torn or invalid data tail, drops
        index entries past the data end, indexes complete records the index
        lacks, and rebuilds a missing or stale index. With ``trusted`` (a
        CLEAN marker was found) only sizes are compared, and the full
        recovery runs only if they disagree. Creates missing files.
        """
        # Every repair below appends a line to `done`; the store logs them at WARNING
        # and a non-empty list is what makes the two fsyncs at the end necessary.
        done: list[str] = []
        data_fd = os.open(self.data_path, os.O_RDWR | os.O_CREAT, 0o644)
        idx_fd = os.open(self.idx_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            dsize = os.fstat(data_fd).st_size
            isize = os.fstat(idx_fd).st_size
            if os.pread(idx_fd, HEADER_SIZE, 0) != encode_header(self.base_t):
                if isize:
                    done.append(f"{self.idx_path}: header missing or stale, rebuilt from data")
                os.ftruncate(idx_fd, 0)
                os.pwrite(idx_fd, encode_header(self.base_t), 0)
                isize = HEADER_SIZE
            k, extra = divmod(isize - HEADER_SIZE, ENTRY_SIZE)
            if extra:
                done.append(f"{self.idx_path}: cut a partial index entry ({extra} bytes)")
            if trusted and not extra and _end_of(idx_fd, k) == dsize:
                m = k
            else:
                m = self._recover_tail(data_fd, idx_fd, k, dsize, done)
            self.count = self.indexed = m
            self.data_bytes = _end_of(idx_fd, m)
            self.idx_bytes = HEADER_SIZE + m * ENTRY_SIZE
            if done:
                os.fsync(data_fd)
                os.fsync(idx_fd)
        finally:
            os.close(data_fd)
            os.close(idx_fd)
        self.checked = True
        return done

    def _recover_tail(self, data_fd: int, idx_fd: int, k: int, dsize: int, done: list[str]) -> int:
        """The untrusted part of :meth:`recover_last`; returns the record count.

        ``k`` is the number of whole index entries and ``dsize`` the data file's
        size. Steps 3 to 5 of docs/storage.md, "Start-up recovery", in order: drop
        entries past the data, walk back over trailing records that fail their
        check, then index the complete lines that follow the last good entry.
        """
        # Largest m <= k whose entries all end inside the data (ends increase with m).
        lo, hi = 0, k
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if _end_of(idx_fd, mid) <= dsize:
                lo = mid
            else:
                hi = mid - 1
        m = lo
        if m < k:
            done.append(f"{self.idx_path}: dropped {k - m} entries pointing past the data end")
        # Walk back over trailing indexed records that fail their checksum.
        failed = False
        while m > 0:
            off, length, crc = ENTRY.unpack(
                os.pread(idx_fd, ENTRY_SIZE, HEADER_SIZE + (m - 1) * ENTRY_SIZE)
            )
            line = os.pread(data_fd, length + 1, off)
            if line[-1:] == b"\n" and zlib.crc32(line[:-1]) == crc:
                break
            done.append(f"{self.data_path}: record t={self.base_t + m - 1} fails its crc32, cut")
            failed = True
            m -= 1
        indexed_end = _end_of(idx_fd, m)
        os.ftruncate(idx_fd, HEADER_SIZE + m * ENTRY_SIZE)
        # A record that failed its check is cut with everything after it: the scan
        # below must not index it again just because it still parses with its t.
        tail = b"" if failed else os.pread(data_fd, max(dsize - indexed_end, 0), indexed_end)
        if failed and dsize > indexed_end:
            done.append(
                f"{self.data_path}: cut {dsize - indexed_end} bytes at offset {indexed_end}"
                " (from the first record that fails its check)"
            )
            os.ftruncate(data_fd, indexed_end)
        entries, good, problem = scan_records(
            tail, start_offset=indexed_end, first_t=self.base_t + m
        )
        if good < len(tail):
            done.append(
                f"{self.data_path}: cut {len(tail) - good} bytes at offset"
                f" {indexed_end + good} ({problem})"
            )
            os.ftruncate(data_fd, indexed_end + good)
        if entries:
            os.pwrite(idx_fd, b"".join(entries), HEADER_SIZE + m * ENTRY_SIZE)
            done.append(f"{self.idx_path}: indexed {len(entries)} records missing from the index")
        return m + len(entries)


class SegmentWriter:
    """Appends records to the last segment (unbuffered ``os.write``, data first).

    Thread-safety: one writer thread at a time; readers never touch its file
    descriptors (they open their own).

    Attributes:
        segment: the segment written to (its ``count`` is the store's business).
        data_end, idx_end: the file sizes after the last successful write; a failed
            write truncates back to them.
        dirty: something was written since the last :meth:`sync`.
    """

    __slots__ = ("data_end", "data_fd", "dirty", "idx_end", "idx_fd", "segment")

    def __init__(self, segment: Segment) -> None:
        """Open (or create) both files for appending; write the index header if new.

        The segment must be consistent first (``recover_last``, or brand new):
        appending starts at the current end of each file, whatever is there.

        Raises:
            OSError: a file cannot be opened or the header cannot be written; no
                descriptor is left open.
        """
        self.segment = segment
        # O_APPEND: every write lands at the end even if something else moved the
        # offset, so a record can never overwrite an earlier one.
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
        self.data_fd = os.open(segment.data_path, flags, 0o644)
        try:
            self.idx_fd = os.open(segment.idx_path, flags, 0o644)
        except BaseException:
            os.close(self.data_fd)
            raise
        self.data_end = os.fstat(self.data_fd).st_size
        self.idx_end = os.fstat(self.idx_fd).st_size
        if self.idx_end == 0:
            _write_all(self.idx_fd, encode_header(segment.base_t))
            self.idx_end = HEADER_SIZE
        self.dirty = False

    def write(self, data: bytes, index: bytes) -> None:
        """Append ``data`` then its ``index`` entries; on failure undo both and re-raise.

        ``data`` is one or more whole records (JSON and newline each) and ``index``
        their packed entries. Data first, so an index entry never points at bytes
        that are not yet written. Durable only after :meth:`sync` (or the OS's own
        flush): the fsync policy decides when that is called.

        Raises:
            OSError: from the write (disk full, I/O error), after the undo was tried.
        """
        try:
            _write_all(self.data_fd, data)
            _write_all(self.idx_fd, index)
        except OSError:
            try:  # best effort: leave no half-written record behind
                os.ftruncate(self.data_fd, self.data_end)
                os.ftruncate(self.idx_fd, self.idx_end)
            except OSError:
                logger.exception("could not undo a failed append to %s", self.segment.data_path)
            raise
        self.data_end += len(data)
        self.idx_end += len(index)
        self.dirty = True

    def sync(self) -> None:
        """fdatasync both files if anything was written since the last sync.

        Blocking and possibly slow (milliseconds to seconds on a busy disk): called
        from a worker thread, never on the event loop. Data before index, as for
        writes. ``fdatasync`` is enough because only the contents and sizes matter,
        not the timestamps; where it does not exist, ``fsync``.
        """
        if self.dirty:
            _datasync(self.data_fd)
            _datasync(self.idx_fd)
            self.dirty = False

    def close(self) -> None:
        """Close both file descriptors (no sync: call :meth:`sync` first)."""
        os.close(self.data_fd)
        os.close(self.idx_fd)


def _end_of(idx_fd: int, m: int) -> int:
    """Where the first ``m`` records end in the data file, according to the index."""
    if m == 0:
        return 0
    offset, length, _ = ENTRY.unpack(
        os.pread(idx_fd, ENTRY_SIZE, HEADER_SIZE + (m - 1) * ENTRY_SIZE)
    )
    return int(offset + length + 1)


def _write_all(fd: int, buf: bytes) -> None:
    # os.write may write less than asked (a signal, a nearly full disk); loop until the
    # whole buffer is written or an OSError says why not.
    view = memoryview(buf)
    while view:
        view = view[os.write(fd, view) :]


_datasync = getattr(os, "fdatasync", os.fsync)


def write_atomic(path: Path, content: bytes) -> None:
    """Replace ``path`` with ``content`` durably: temp file, fsync, rename, directory fsync.

    A reader sees either the old file or the new one, never a half-written one, and
    after a crash the new file is there or the old one is. The temp name is fixed
    (``<name>.tmp``), so two calls for the same path must not run at once (the
    store serialises rebuilds); a leftover ``.tmp`` from a crash is overwritten.
    """
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        _write_all(fd, content)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    sync_dir(path.parent)


def sync_dir(directory: Path) -> None:
    """fsync a directory, making file creations, renames and deletions in it durable.

    On Linux a new file's name is only durable once its directory is synced; without
    this a power cut right after a rollover could lose the new segment's name.
    """
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
