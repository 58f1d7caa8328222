"""Seeking by time: which ``t`` a ``from_ts`` starts at (plain Python, no trio).

What the search returns (docs/protocol.md "Seeking by time"; docs/storage.md "Seeking by
time"). Over a range of ticks ``lo .. hi-1`` and with ``p(t) = ts(t) >= x``,
:func:`lower_bound` returns the one ``r`` in ``lo .. hi`` that its probes lead to,
and it always satisfies:

  (1) ``r == hi`` or ``ts(r) >= x``;
  (2) ``r == lo`` or ``ts(r - 1) < x``.

* When ``ts`` never decreases over the range, ``r`` is *the first* ``t`` with
  ``ts(t) >= x``, and in a run of equal ``ts`` the first of the run.
* When some tick's ``ts`` is lower than its predecessor's (a wall clock stepped
  back, or an ingest publisher's own ``ts``), ``r`` is still a crossing point
  ((1) and (2) hold, deterministically for a given history) but not necessarily
  the first one: a stepped-back clock makes the values in the stepped-back
  interval occur twice, and a seek into that interval starts at one of its two
  crossings. Seeks to any other time are exact. Finding the first crossing in
  every case would need a scan or a running-max index; neither is kept.

Cost: O(log n) probes, no scan. In the segment files (:class:`TimeIndex`) a
binary search over the segments by the ``ts`` of each one's last record (cached
for sealed segments, which never change), then over the records of one segment
through its dense index: per probe one 16-byte ``pread`` of the index entry and
one ``pread`` of at most ``HEAD_BYTES`` of the record, whose ``t`` and ``ts`` are
read off its head (ticks start ``{"type":"tick","t":N,"ts":X``). A head that does
not parse or names another ``t`` falls back to a verified read of the whole
record (``SegmentStore.read``: CRC, index check, retention), so a damaged record
is reported, never silently used.
"""

from __future__ import annotations

import bisect
import contextlib
import os
from collections.abc import Callable, Sequence

from tickcast.errors import CorruptRecordError, StoreError
from tickcast.storage.ring import Ring
from tickcast.storage.segment import ENTRY, ENTRY_SIZE, HEADER_SIZE, Segment
from tickcast.storage.store import SegmentStore
from tickcast.tick import EncodedTick, read_head

__all__ = ["HEAD_BYTES", "TimeIndex", "lower_bound", "ring_lower_bound"]

# '{"type":"tick","t":' (19) + t (<= 20 digits) + ',"ts":' (6) + ts (<= 24) + ',' = 70
HEAD_BYTES = 96
_ATTEMPTS = 16  # a search restarts when retention deletes a segment under it


def lower_bound(lo: int, hi: int, x: float, ts_of: Callable[[int], float]) -> int:
    """The ``r`` in ``lo .. hi`` with (1) and (2) of the module docstring, by bisection.

    ``ts_of(t)`` is called only for ``lo <= t < hi``, about ``log2(hi - lo)`` times.
    """
    while lo < hi:
        mid = (lo + hi) // 2
        if ts_of(mid) >= x:
            hi = mid
        else:
            lo = mid + 1
    return lo


def ring_lower_bound(ring: Ring, lo: int, end: int, x: float) -> int | None:
    """The answer within the ring's ticks ``lo .. end``, or None when ``ts(lo) >= x``
    (it is then at ``lo`` or before it, older than the ring's part searched).

    Every ``t`` in ``lo .. end`` must be in the ring (no await between the caller's
    reading of the range and this call).
    """

    def ts_of(t: int) -> float:
        tick = ring.get(t)
        assert tick is not None  # lo .. end stay in the ring: no await before the search
        return tick.ts

    if lo > end or ts_of(lo) >= x:
        return None
    return lower_bound(lo + 1, end + 1, x, ts_of)


class _Moved(Exception):
    """Retention deleted a record the search was probing: search again."""


class TimeIndex:
    """Searches a :class:`SegmentStore` by ``ts`` (any thread, like ``SegmentStore.read``).

    Keeps the ``ts`` of each sealed segment's last record (8 bytes a segment).
    """

    def __init__(self, store: SegmentStore) -> None:
        """An index over ``store`` that starts empty and learns as it searches.

        Nothing is read up front, so start-up cost stays independent of history; the
        first search over a segment reads one record head to cache its last ``ts``.
        """
        self._store = store
        self._last_ts: dict[int, float] = {}  # base_t of a sealed segment -> its last ts

    def find(self, x: float, *, before: int | None = None) -> int:
        """The start for ``ts >= x`` among the stored ticks ``oldest_t .. before - 1``.

        ``before`` defaults to ``next_t``; the caller vouches that ``ts(before) >= x``
        when that tick exists (it is then the answer if no earlier tick qualifies).
        Returns ``r`` with (1) and (2) of the module docstring over that range;
        ``before`` when nothing there has ``ts >= x`` (or the range is empty).

        Raises:
            CorruptRecordError: a probed record failed its checks.
            StoreError: an I/O error, or retention kept deleting the range.
        """
        for _ in range(_ATTEMPTS):
            segs = self._store.segments
            end = segs[-1].base_t + segs[-1].count
            if before is not None:
                end = min(end, before)
            try:
                return self._search(segs, x, end)
            except _Moved:
                continue
            except OSError as exc:  # CorruptRecordError is no OSError: it goes up as is
                raise StoreError(f"time search failed: {exc}") from exc
        raise StoreError(f"time search for ts={x} kept losing segments to retention")

    def _search(self, segs: Sequence[Segment], x: float, end: int) -> int:
        """Two bisections: over the segments by their last ``ts``, then inside one.

        Raises:
            _Moved: retention deleted a probed record; :meth:`find` searches again.
        """
        # Segments holding ticks below ``end`` (an empty last segment has base_t == next_t).
        k_end = bisect.bisect_left(segs, end, key=lambda s: s.base_t)
        if k_end == 0:
            return end
        k = lower_bound(0, k_end, x, lambda i: self._last_of(segs, i, end))
        if k == k_end:
            return end
        seg = segs[k]
        last = min(seg.base_t + seg.count, end) - 1  # ts(last) >= x: searched above
        # ts(seg.base_t - 1) < x when k > 0: it is the previous segment's last record.
        with _Probe(self._store, seg) as probe:
            return lower_bound(seg.base_t, last, x, probe.ts)

    def _last_of(self, segs: Sequence[Segment], i: int, end: int) -> float:
        """``ts`` of segment ``i``'s last record below ``end`` (cached once sealed)."""
        seg = segs[i]
        sealed = i < len(segs) - 1 and seg.base_t + seg.count <= end
        if sealed:
            cached = self._last_ts.get(seg.base_t)
            if cached is not None:
                return cached
        with _Probe(self._store, seg) as probe:
            ts = probe.ts(min(seg.base_t + seg.count, end) - 1)
        if sealed:
            if len(self._last_ts) > len(segs):  # forget segments retention deleted
                oldest = segs[0].base_t
                self._last_ts = {b: v for b, v in self._last_ts.items() if b >= oldest}
            self._last_ts[seg.base_t] = ts
        return ts


class _Probe:
    """Reads ``ts`` off the heads of one segment's records (its two files open once)."""

    def __init__(self, store: SegmentStore, seg: Segment) -> None:
        self._store = store
        self._seg = seg
        self._idx = self._data = -1

    def __enter__(self) -> _Probe:
        """Open both files once for every probe of this search (a bisection makes ~log2 n)."""
        with contextlib.suppress(FileNotFoundError):  # then every probe reads verified
            self._idx = os.open(self._seg.idx_path, os.O_RDONLY)
            self._data = os.open(self._seg.data_path, os.O_RDONLY)
        return self

    def __exit__(self, *exc: object) -> None:
        """Close what was opened; exceptions pass through."""
        for fd in (self._idx, self._data):
            if fd >= 0:
                os.close(fd)

    def ts(self, t: int) -> float:
        """``ts`` of record ``t``, off its head; a verified full read if that fails."""
        i = t - self._seg.base_t
        if self._data >= 0 and i < self._seg.indexed:
            entry = os.pread(self._idx, ENTRY_SIZE, HEADER_SIZE + i * ENTRY_SIZE)
            if len(entry) == ENTRY_SIZE:
                offset, length, _ = ENTRY.unpack(entry)
                head = read_head(os.pread(self._data, min(length, HEAD_BYTES), offset))
                if head is not None and head[0] == t:
                    return head[1]
        return self._verified(t)

    def _verified(self, t: int) -> float:
        """``ts`` of record ``t`` through the store's checked read (index, CRC, retention).

        The slow path, for a head that does not parse or a segment whose files were
        not open: it is also how damage met by a search gets reported in ``/health``.

        Raises:
            _Moved: retention deleted ``t`` meanwhile.
            CorruptRecordError: the record is damaged, or holds another ``t``.
        """
        raws = self._store.read(t, 1)  # checks the index and the CRC; reports damage
        if not raws:
            raise _Moved
        try:
            tick = EncodedTick.from_stored(raws[0])
        except (ValueError, KeyError, TypeError):
            why = "record has no readable t and ts"
            raise CorruptRecordError(self._seg.data_path, 0, t, why) from None
        if tick.t != t:
            oldest = self._store.oldest_t
            if oldest is not None and oldest > t:
                raise _Moved  # read() started at the new oldest_t: retention took t
            why = f"record holds t={tick.t}"
            raise CorruptRecordError(self._seg.data_path, 0, t, why)
        return tick.ts
