"""The segment store: the append-only tick log in ``data_dir`` (plain Python, no trio).

Invariants:

* Segments hold consecutive ranges of ``t``: segment k+1 starts at segment k's
  last ``t`` + 1. Only the last segment is open for writing; it may be empty,
  and its file name still records ``next_t``.
* ``open()`` lists the directory and repairs only the last segment, so start-up
  cost does not grow with history. Older segments are checked lazily, by the
  first read that touches them.
* A record becomes visible to readers (``next_t``) only after its data and its
  index entry are both written.
* One process per directory: ``LOCK`` is ``flock``ed for the store's life, so a
  second tickcast pointed at the same ``data_dir`` fails at start-up instead of
  interleaving writes. The lock is the kernel's, so a crashed process leaves none.

Why threads and a ``threading.Lock`` here rather than trio: every method may block
on the disk, so the trio layer (``storage/local.py``) calls them in worker threads,
and the store has to be safe for that on its own. What each method blocks on, and
which thread may call it, is in :class:`SegmentStore`'s docstring.
"""

from __future__ import annotations

import bisect
import contextlib
import fcntl
import itertools
import logging
import math
import os
import secrets
import threading
import time
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple, get_args

import orjson

from tickcast.config import FsyncPolicy
from tickcast.errors import CorruptRecordError, StoreError
from tickcast.storage.segment import (
    ENTRY,
    Segment,
    SegmentWriter,
    index_name,
    parse_name,
    sync_dir,
    write_atomic,
)

__all__ = ["CLEAN_NAME", "EPOCH_NAME", "LOCK_NAME", "FsyncPolicy", "SegmentStore"]

logger = logging.getLogger("tickcast.storage")

EPOCH_NAME = "EPOCH"  # random id of this history, one line of hex
CLEAN_NAME = "CLEAN"  # written by close(), deleted by open(): the last shutdown was clean
LOCK_NAME = "LOCK"  # flock()ed by the open store: one writer process per directory

# A read restarts when retention deletes a segment under it. Each restart begins at the
# new oldest_t, so more than one or two in a row means retention is deleting faster
# than a page is read: give up with an error rather than loop.
_READ_ATTEMPTS = 16


# The options of SegmentStore.open, checked there and then read-only; a NamedTuple so
# that the check can walk them by name.
class _Options(NamedTuple):
    # Rollover and retention
    segment_bytes: int
    retain_bytes: int
    retain_s: float
    # Durability
    fsync: FsyncPolicy
    fsync_interval_s: float


class SegmentStore:
    """The tick log: append, verified reads by ``t``, rollover, retention, recovery.

    Thread-safety: exactly one thread at a time may call :meth:`append`,
    :meth:`sync`, :meth:`enforce_retention` and :meth:`close` (the writer).
    Any number of other threads may call :meth:`read`, :meth:`tail` and the
    properties, concurrently with the writer and with each other. A lock
    guards the segment list and counters; it is held for a few attribute
    updates, never during disk I/O, and readers open their own file
    descriptors. Every method may block on disk I/O: from async code run it
    in a worker thread. Create a store with :meth:`open`.
    """

    def __init__(
        self, directory: Path, epoch: str, segments: list[Segment], lock_fd: int, opts: _Options
    ) -> None:
        """Internal: use :meth:`open`."""
        self._dir = directory
        self._epoch = epoch
        self._lock_fd = lock_fd
        self._opts = opts
        self._lock = threading.Lock()  # guards the four fields below; held briefly
        self._segments = segments  # replaced, never mutated: readers keep a snapshot
        self._bases = [s.base_t for s in segments]
        self._next_t = segments[-1].base_t + segments[-1].count
        self._corruption: list[str] = []
        self._repair_lock = threading.Lock()  # serialises lazy index checks
        self._writer: SegmentWriter | None = SegmentWriter(segments[-1])
        self._last_sync = time.monotonic()
        self._broken = ""  # why appends are refused after a failed rollover

    @classmethod
    def open(
        cls,
        data_dir: Path,
        *,
        # Rollover and retention
        segment_bytes: int = 64 * 2**20,
        retain_bytes: int = 0,
        retain_s: float = 0.0,
        # Durability
        fsync: FsyncPolicy = "interval",
        fsync_interval_s: float = 1.0,
    ) -> SegmentStore:
        """Open (creating if needed) the store in ``data_dir`` and recover it.

        Lists the directory, reads ``EPOCH`` and ``CLEAN``, repairs the last
        segment only (torn tail, partial or missing index; see
        ``docs/storage.md``) and applies retention. Never reads older
        segments: the cost does not grow with history (at worst one segment
        is scanned, when its index is missing).

        Args:
            data_dir: the directory of segments (created if missing).
            segment_bytes: roll to a new segment when the data file would exceed this.
            retain_bytes: if > 0, delete oldest segments while data + index bytes exceed it.
            retain_s: if > 0, delete segments last written more than this many seconds ago.
            fsync: ``"always"`` (before each append returns), ``"interval"`` (the writer
                calls :meth:`sync` when :meth:`sync_due` says ``fsync_interval_s``
                has passed) or ``"never"`` (``close()`` still syncs).
            fsync_interval_s: the period for ``fsync="interval"``.

        Raises:
            ValueError: a bad option value (the message names it).
            StoreError: another process holds the directory, or an I/O error.
        """
        opts = _Options(segment_bytes, retain_bytes, retain_s, fsync, fsync_interval_s)
        if fsync not in get_args(FsyncPolicy):
            raise ValueError(f"fsync must be one of {get_args(FsyncPolicy)}, got {fsync!r}")
        for name, value in opts._asdict().items():
            if name != "fsync" and not value >= (1 if name == "segment_bytes" else 0):
                raise ValueError(f"{name} must be >= 0 (segment_bytes >= 1), got {value!r}")
        try:
            data_dir.mkdir(parents=True, exist_ok=True)
            lock_fd = os.open(data_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreError(f"cannot open data directory {data_dir}: {exc}") from exc
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            epoch, segments = _load(data_dir)
            store = cls(data_dir, epoch, segments, lock_fd, opts)
            store.enforce_retention()
        except BaseException as exc:
            os.close(lock_fd)  # releases the flock
            if isinstance(exc, BlockingIOError):
                raise StoreError(f"{data_dir} is in use by another tickcast store") from None
            if isinstance(exc, OSError):
                raise StoreError(f"cannot open the store in {data_dir}: {exc}") from exc
            raise
        return store

    # -- properties (any thread) -----------------------------------------------

    @property
    def epoch(self) -> str:
        """Random id of this history; a wiped directory gets a new one."""
        return self._epoch

    @property
    def oldest_t(self) -> int | None:
        """The oldest ``t`` stored, or None when no record is stored.

        Moves forward when retention deletes a segment; a reader that was sent an
        older ``t`` than this just sees its read start later.
        """
        with self._lock:
            base = self._bases[0]
            return base if self._next_t > base else None

    @property
    def latest_t(self) -> int | None:
        """The last ``t`` appended, or None when nothing ever was."""
        with self._lock:
            return self._next_t - 1 if self._next_t > 0 else None

    @property
    def next_t(self) -> int:
        """The ``t`` the next append must start with (0 on an empty directory)."""
        with self._lock:
            return self._next_t

    @property
    def total_bytes(self) -> int:
        """Bytes of data and index files on disk.

        As last known: older segments' sizes come from a ``stat`` at open (or from a
        rebuild), the open one's from the writer. What ``retain_bytes`` is held to.
        """
        return sum(s.data_bytes + s.idx_bytes for s in self.segments)

    @property
    def segments(self) -> Sequence[Segment]:
        """The segments, oldest first: a snapshot (the list is replaced, never mutated)."""
        with self._lock:
            return self._segments

    @property
    def segment_count(self) -> int:
        """Number of segments, including the open (possibly empty) one."""
        return len(self.segments)

    @property
    def corruption(self) -> list[str]:
        """Readable reports of every corrupt record or file seen so far (for ``/health``)."""
        with self._lock:
            return list(self._corruption)

    # -- writing (one writer thread) -------------------------------------------

    def append(self, records: Sequence[tuple[int, bytes]]) -> None:
        """Append ``(t, json_bytes)`` records; the first ``t`` must be :attr:`next_t`.

        Writes the records' lines with one ``os.write`` per segment touched,
        then their index entries; readers see the records after both. Rolls
        to a new segment when the data file would exceed ``segment_bytes`` (a
        larger record goes in alone), and then applies retention. Blocks for
        an ``fdatasync`` when the fsync policy asks for one.

        Raises:
            StoreError: a wrong or non-consecutive ``t``, an empty record or
                one containing a newline (then nothing is written), a closed
                store, or an I/O error (the failed write is undone).
        """
        if self._writer is None:
            raise StoreError(self._broken or "the store is closed")
        first = self._next_t
        for k, (t, raw) in enumerate(records):
            if t != first + k:
                raise StoreError(f"append expects t={first + k}, got t={t}")
            if not raw or b"\n" in raw:
                raise StoreError(f"record t={t} is empty or contains a newline")
        i, n, rolled = 0, len(records), False
        try:
            while i < n:
                writer = self._writer
                assert writer is not None  # set again by _roll()
                size, j = writer.data_end, i
                parts: list[bytes] = []
                entries: list[bytes] = []
                while j < n:
                    raw = records[j][1]
                    if size and size + len(raw) + 1 > self._opts.segment_bytes:
                        break
                    entries.append(ENTRY.pack(size, len(raw), zlib.crc32(raw)))
                    parts += (raw, b"\n")
                    size, j = size + len(raw) + 1, j + 1
                if j > i:
                    writer.write(b"".join(parts), b"".join(entries))
                    seg = writer.segment
                    with self._lock:
                        seg.count = seg.indexed = seg.count + j - i
                        seg.data_bytes, seg.idx_bytes = writer.data_end, writer.idx_end
                        self._next_t += j - i
                    i = j
                if i < n:
                    self._roll()
                    rolled = True
            if self._opts.fsync == "always":
                self.sync()
        except OSError as exc:
            if self._writer is None:  # the rollover failed half-way: nowhere to write
                self._broken = f"the store failed at t={self._next_t}: {exc}"
            raise StoreError(f"append failed at t={self._next_t}: {exc}") from exc
        if rolled:
            self.enforce_retention()

    def fits(self, records: Sequence[tuple[int, bytes]]) -> bool:
        """Whether ``records`` fit the open segment: an :meth:`append` of them is two
        ``os.write`` calls and no rollover, file creation or retention.

        The trio layer asks this to decide whether an append is cheap enough to make
        on the event loop (page-cache writes only) or must go to a worker thread.
        An empty open segment takes anything (a record larger than ``segment_bytes``
        goes in alone).
        """
        writer = self._writer
        if writer is None:
            return False
        nbytes = sum(len(raw) + 1 for _, raw in records)  # each record and its newline
        return writer.data_end == 0 or writer.data_end + nbytes <= self._opts.segment_bytes

    def sync(self) -> None:
        """fdatasync the open segment's files now if anything is unsynced.

        Sealed segments were synced when sealed (unless ``fsync="never"``), so the
        open one is all there is to sync. Blocks on the disk: a worker thread's job.
        """
        if self._writer is not None:
            self._writer.sync()
            self._last_sync = time.monotonic()

    def sync_due(self) -> bool:
        """With ``fsync="interval"``: ``fsync_interval_s`` has passed since the last sync.

        :meth:`append` never syncs for ``"interval"``: the writer asks this (no I/O)
        after it has published the ticks, then calls :meth:`sync` in a worker thread.
        """
        return (
            self._opts.fsync == "interval"
            and time.monotonic() - self._last_sync >= self._opts.fsync_interval_s
        )

    def _roll(self) -> None:
        """Seal the open segment and start a new one at ``next_t``.

        Order matters for a power cut at any point: unless ``fsync="never"``, the old
        segment is synced before the new one exists, and the directory after the new
        files are created, so recovery never finds a new segment whose predecessor
        is short.
        ``self._writer`` is None in between, which :meth:`append` reads as "the
        rollover failed half-way" if an ``OSError`` escapes.
        """
        old = self._writer
        assert old is not None
        self._writer = None
        if self._opts.fsync != "never":
            old.sync()
        old.close()
        seg = Segment(self._dir, self._next_t)
        seg.checked = True
        self._writer = SegmentWriter(seg)
        seg.idx_bytes = self._writer.idx_end
        if self._opts.fsync != "never":
            sync_dir(self._dir)
        with self._lock:
            self._segments = [*self._segments, seg]
            self._bases = [*self._bases, seg.base_t]

    def enforce_retention(self) -> None:
        """Delete the oldest whole segments that retention no longer keeps.

        A segment goes while the store's bytes exceed ``retain_bytes`` (if
        > 0), or if its data file was last modified more than ``retain_s``
        seconds ago (if > 0). Never deletes the open segment, nor the one
        holding ``latest_t`` (the last tick survives for a restart). A read of
        a deleted segment restarts from the new ``oldest_t``.
        """
        retain_bytes, retain_s = self._opts.retain_bytes, self._opts.retain_s
        if retain_bytes <= 0 and retain_s <= 0:
            return
        now, total = time.time(), self.total_bytes
        while True:
            segs = self._segments  # only this (writer) thread replaces the list
            if len(segs) < 2 or (len(segs) == 2 and segs[1].count == 0):
                return
            victim = segs[0]
            drop = 0 < retain_bytes < total
            if not drop and retain_s > 0:
                # The data file's mtime is when the segment was last written to, i.e.
                # when its newest tick was appended; a vanished file is simply old.
                try:
                    mtime = os.stat(victim.data_path).st_mtime
                except FileNotFoundError:
                    mtime = -math.inf
                drop = now - mtime > retain_s
            if not drop:
                return
            with self._lock:
                self._segments, self._bases = self._segments[1:], self._bases[1:]
            total -= victim.data_bytes + victim.idx_bytes
            logger.info("retention: deleting segment %s", victim.data_path.name)
            for path in (victim.idx_path, victim.data_path):  # idx first: no orphan index
                try:
                    path.unlink(missing_ok=True)
                except OSError:
                    logger.exception("retention could not delete %s", path)

    def close(self) -> None:
        """fsync and close the open segment, write the CLEAN marker, unlock. Idempotent.

        Reads and properties keep working afterwards.

        Raises:
            StoreError: the sync failed (no CLEAN marker: the next open recovers).
        """
        if self._lock_fd < 0:
            return
        writer, self._writer = self._writer, None
        try:
            if writer is not None:
                try:
                    writer.sync()
                finally:
                    writer.close()
                marker = orjson.dumps({"next_t": self._next_t, "epoch": self._epoch})
                write_atomic(self._dir / CLEAN_NAME, marker + b"\n")
        except OSError as exc:
            raise StoreError(f"close failed, no CLEAN marker written: {exc}") from exc
        finally:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def __enter__(self) -> SegmentStore:
        """``with SegmentStore.open(...) as store:`` closes it (and unlocks) on exit."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Close the store; see :meth:`close` (a failed sync raises ``StoreError``)."""
        self.close()

    # -- reading (any thread) --------------------------------------------------

    def read(self, from_t: int, limit: int) -> list[bytes]:
        """Up to ``limit`` consecutive records from ``max(from_t, oldest_t)``, verified.

        A binary search over the segments, then per segment touched one pread
        of the index and one contiguous pread of the data; every record's
        length, newline and crc32 are checked. The first read of an older
        segment also checks its index (and rebuilds it if missing or stale).

        Returns:
            The records' JSON bytes (no trailing newline); ``[]`` if ``from_t``
            is past ``latest_t``.

        Raises:
            CorruptRecordError: a record in the range failed a check. It is
                logged and listed in :attr:`corruption`; the records before
                ``exc.t`` can still be read with a smaller ``limit``.
            StoreError: an I/O error (e.g. out of file descriptors).
            ValueError: a negative ``limit``.
        """
        if limit < 0:
            raise ValueError(f"limit must be >= 0, got {limit}")
        for _ in range(_READ_ATTEMPTS):
            # One consistent snapshot of the segment list and the end; everything after
            # this is I/O without the lock, so a concurrent append cannot tear a page.
            with self._lock:
                segs, bases, next_t = self._segments, self._bases, self._next_t
            t = max(from_t, bases[0])
            end = min(t + limit, next_t)
            out: list[bytes] = []
            k = bisect.bisect_right(bases, t) - 1
            try:
                while t < end:
                    seg = segs[k]
                    stop = min(end, seg.base_t + seg.count)
                    if not seg.checked:
                        self._check(seg)
                    out += seg.read(t, stop - t)
                    t, k = stop, k + 1
                return out
            except FileNotFoundError:
                self._vanished(seg, t)  # then retry: from the new oldest_t if retention ran
            except CorruptRecordError as exc:
                self._report(str(exc))
                raise
            except OSError as exc:
                raise StoreError(f"read at t={t} failed: {exc}") from exc
        raise StoreError(f"read from t={from_t} kept losing segments to retention")

    def tail(self, n: int) -> list[bytes]:
        """The last ``n`` records (fewer if fewer exist), verified like :meth:`read`.

        What the history loads into its ring at start-up (``ring_size`` records).
        """
        return self.read(self.next_t - n, n) if n > 0 else []

    def _check(self, seg: Segment) -> None:
        """First read of an older segment: verify (or rebuild) its index, once."""
        with self._repair_lock:
            report = "" if seg.checked else seg.check_index()
        if report:
            self._report(report)

    def _vanished(self, seg: Segment, t: int) -> None:
        """A file of ``seg`` was missing: retention (retry) or damage (report or rebuild)."""
        if seg not in self.segments:
            return  # retention took it
        if not seg.data_path.exists():
            raise CorruptRecordError(seg.data_path, 0, t, "data file missing")
        seg.checked = False  # the index vanished: rebuild it on the retry

    def _report(self, text: str) -> None:
        """Log a corruption report once and keep it for ``/health`` (duplicates dropped).

        The list only grows: a damaged record stays damaged until an operator acts,
        so ``/health`` keeps saying so rather than forgetting after one read.
        """
        with self._lock:
            if text in self._corruption:
                return
            self._corruption.append(text)
        logger.error("%s", text)


def _load(directory: Path) -> tuple[str, list[Segment]]:
    """List ``directory``, settle the epoch and CLEAN marker, recover the last segment.

    The segments' ranges come from the file names alone (each ends where the next
    begins), so only the last segment is opened. ``CLEAN`` is deleted before any
    repair: if this start-up crashes too, the next one must not trust the files.
    A CLEAN marker from another epoch (a directory restored from elsewhere) is not
    trusted either.

    Returns:
        The epoch and every segment, oldest first; the last one recovered and
        open for appending.

    Raises:
        OSError: the directory cannot be listed or a file cannot be written
            (``SegmentStore.open`` turns it into a ``StoreError``).
    """
    clean: dict[str, object] = {}
    with contextlib.suppress(FileNotFoundError):
        content = (directory / CLEAN_NAME).read_bytes()
        (directory / CLEAN_NAME).unlink()  # from here on a crash must not find it
        with contextlib.suppress(ValueError):
            loaded = orjson.loads(content)
            clean = loaded if isinstance(loaded, dict) else {"next_t": None}
    data_bases: set[int] = set()
    idx_bases: set[int] = set()
    for name in os.listdir(directory):
        if name.endswith(".tmp"):  # an interrupted atomic write
            (directory / name).unlink(missing_ok=True)
        elif (parsed := parse_name(name)) is not None:
            (data_bases if parsed[1] == "jsonl" else idx_bases).add(parsed[0])
    # An index without its data file is removed, unless it has the newest base:
    # then it keeps next_t from going backwards (recovery recreates empty data).
    top = max(data_bases | idx_bases, default=0)
    for base in idx_bases - data_bases - {top}:
        logger.warning("removing %s: its data file is missing", index_name(base))
        (directory / index_name(base)).unlink()
    bases = sorted(data_bases | {top})
    epoch = ""
    if data_bases | idx_bases:
        with contextlib.suppress(FileNotFoundError, UnicodeDecodeError):
            epoch = (directory / EPOCH_NAME).read_text("ascii").strip()
    if not epoch:  # a new (or wiped) history
        epoch = secrets.token_hex(8)
        write_atomic(directory / EPOCH_NAME, epoch.encode() + b"\n")
    segments = [Segment(directory, b, count=nb - b) for b, nb in itertools.pairwise(bases)]
    for seg in segments:  # sizes for total_bytes / retention: a stat, no read
        with contextlib.suppress(FileNotFoundError):
            seg.data_bytes = seg.data_path.stat().st_size
            seg.idx_bytes = seg.idx_path.stat().st_size
    last = Segment(directory, bases[-1])
    trusted = bool(clean) and clean.get("epoch") == epoch
    for action in last.recover_last(trusted=trusted):
        logger.warning("recovery: %s", action)
    segments.append(last)
    if clean and clean.get("next_t") != last.base_t + last.count:
        logger.warning(
            "CLEAN marker said %s, the files end at t=%d", clean, last.base_t + last.count
        )
    sync_dir(directory)
    return epoch, segments
