"""LocalHistory: the producer's history, the ring in front of the segment store,
and the writer task that publishes each tick once it is written.

Path of a tick: the source calls :meth:`LocalHistory.append` (the tick enters the
ring and the writer's bounded channel). The writer task writes each batch to the
segment files and only then publishes it (marks it published and hands it to the
``publish`` callback, the hub). So a tick is in the ring *and written to the
operating system* before any client is sent it: a process crash (kill -9, OOM)
never loses or changes a tick a client saw, whatever the fsync policy, because
``t`` continues after the last tick on disk.

The common case skips the channel: when the writer is parked (waiting, nothing
queued or in hand) and the write can be made on the event loop (below),
``append`` writes the tick and publishes it itself. Nothing is ahead of it, so
the order is the same; what it saves is the writer's wake-up, a cancel scope
and two channel operations per tick (figures in docs/performance.md).

The fsync policy only decides what a power cut can take: with ``fsync=always``
the batch is fdatasynced before it is published; with ``interval`` the writer
syncs after publishing, at most once per second, so a sync never delays a tick.

Where the write runs. Anything that may wait on the disk (fdatasync, a rollover,
retention, recovery, reads of old segments) runs in a worker thread. The plain
append of a batch that fits the open segment, with ``fsync`` other than
``always``, is two ``os.write`` calls into the page cache (microseconds), and
the writer makes it on the event loop, as Redis writes its AOF before replying:
measured at 100 clients x 20 ticks/s, the worker-thread round trip put ~1 ms
on every tick's p50 latency, the inline write nothing measurable (figures in
docs/performance.md). If an inline write ever takes longer than
``INLINE_WRITE_LIMIT_S`` (the kernel throttling dirty pages, a slow disk), the
writer moves every write to the worker thread for ``THREADED_FOR_S``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from functools import partial

import trio

from tickcast.config import Config
from tickcast.errors import StoreError
from tickcast.storage.history import HistoryStatistics, read_through
from tickcast.storage.ring import Ring
from tickcast.storage.shared_reads import SharedReads
from tickcast.storage.store import SegmentStore
from tickcast.storage.timeindex import TimeIndex, ring_lower_bound
from tickcast.tick import EncodedTick

__all__ = ["LocalHistory"]

logger = logging.getLogger("tickcast.history")

# An inline write slower than this moves writes to a thread. A page-cache write takes
# microseconds; preemption on a busy machine costs a few ms (2 ms tripped it there);
# dirty-page throttling or a stalled disk costs tens to hundreds.
INLINE_WRITE_LIMIT_S = 0.05
THREADED_FOR_S = 10.0  # ... for this long
WRITE_QUEUE = 1024  # ticks the writer may lag behind the source before the source waits
# Concurrent history reads off the event loop. A bound, so that many clients resuming at
# once queue for the disk instead of each taking one of trio's worker threads.
READ_THREADS = 4


Publish = Callable[[EncodedTick], None]


class LocalHistory:
    """The ring + segment store pair, with the tick numbering they share.

    Implements :class:`~tickcast.storage.history.History`; appending
    (:meth:`append`, :meth:`run_writer`, :attr:`next_t`) is the producer's alone.
    """

    def __init__(self, store: SegmentStore, ring: Ring, *, fsync: str) -> None:
        """Internal: use :meth:`open`, which recovers the store and fills the ring.

        Everything already in the store counts as published: it was written by an
        earlier process, and a client may have been sent it.
        """
        self.store = store
        self.ring = ring
        self._times = TimeIndex(store)
        self._fsync = fsync
        self._send, self._receive = trio.open_memory_channel[EncodedTick](WRITE_QUEUE)
        self._readers = trio.CapacityLimiter(READ_THREADS)
        self._shared = SharedReads(self._read_files)  # streams on one stretch share reads
        # The last t the store has taken (fsynced too, with fsync=always): published.
        self._written_t = store.latest_t if store.latest_t is not None else -1
        self._written_changed = trio.Event()
        self._published_t: int | None = ring.latest_t
        self._first_t = store.next_t  # the first t published by this process
        self._published: trio.Event | None = None  # set (and dropped) on each publish
        self._threaded_until = 0.0  # monotonic time until which every write uses a thread
        # The writer's publish callback while it waits for a tick with nothing queued
        # or in hand (None otherwise, and before it starts): then append() may write
        # and publish the tick itself (see append). Only the writer sets it.
        self._parked: Publish | None = None
        self.failure: str | None = None

    # -- opening ----------------------------------------------------------------------

    @classmethod
    async def open(cls, config: Config) -> LocalHistory:
        """Open (and recover) the store in a thread, then refill the ring from its tail.

        The ring is refilled so that clients resuming right after a restart are
        served from memory, as before it. Cost: one read of ``ring_size`` records.

        Raises:
            StoreError: the directory is in use by another process or cannot be opened.
            CorruptRecordError: a record of the tail read back into the ring is damaged.
        """

        def _open() -> tuple[SegmentStore, list[EncodedTick]]:
            store = SegmentStore.open(
                config.data_dir,
                segment_bytes=config.segment_bytes,
                fsync=config.fsync,
                retain_bytes=config.retain_bytes,
                retain_s=config.retain_s,
            )
            raws = store.tail(config.ring_size)
            first = store.next_t - len(raws)
            return store, [EncodedTick.from_stored(raw, first + i) for i, raw in enumerate(raws)]

        store, ticks = await trio.to_thread.run_sync(_open)
        ring = Ring(config.ring_size)
        for tick in ticks:
            ring.append(tick)
        logger.info(
            "history: epoch %s, ticks %s..%s, %d in memory",
            store.epoch,
            store.oldest_t,
            store.latest_t,
            len(ring),
        )
        return cls(store, ring, fsync=config.fsync)

    # -- numbering --------------------------------------------------------------------

    @property
    def epoch(self) -> str:
        """The store's epoch (its ``EPOCH`` file): new when the directory is new or wiped."""
        return self.store.epoch

    @property
    def next_t(self) -> int:
        """The ``t`` the next appended tick must carry."""
        latest = self.ring.latest_t
        return self.store.next_t if latest is None else latest + 1

    @property
    def next_published_t(self) -> int:
        """The ``t`` of the next tick to be published (ticks may be queued before it)."""
        published = self._published_t
        return self._first_t if published is None else published + 1

    @property
    def oldest_t(self) -> int | None:
        """The oldest ``t`` still readable (None while nothing is published)."""
        if self._published_t is None:
            return None
        stored = self.store.oldest_t
        return stored if stored is not None else self.ring.oldest_t

    @property
    def latest_t(self) -> int | None:
        """The newest ``t`` published to clients."""
        return self._published_t

    def latest(self) -> EncodedTick | None:
        """The newest published tick, if the ring has it."""
        return None if self._published_t is None else self.ring.get(self._published_t)

    # -- writing ----------------------------------------------------------------------

    async def append(self, tick: EncodedTick) -> None:
        """Put ``tick`` in the ring, then write and publish it, or queue it for the writer.

        When the writer is idle (waiting, nothing queued or in hand) and the write
        can be made on the event loop (see the module docstring), the tick is written
        and published here, before this returns and without yielding: the writer's
        wake-up and the channel are skipped, and order is kept since nothing is
        ahead of it. Otherwise it is queued for the writer, which publishes it once
        written.

        Waits (backpressure on the source) while the writer is ``WRITE_QUEUE`` ticks
        behind, or while appending would push an unwritten tick out of the ring. The
        tick is published by the writer once it is written, not here.

        Raises:
            StoreError: the writer has failed (see :attr:`failure`).
        """
        # The ring must never drop a tick the writer has not written yet, or that tick
        # would be readable from neither: wait until the one it evicts is on disk.
        await self._wait_written(tick.t - self.ring.capacity)
        self.ring.append(tick)
        records = [(tick.t, tick.raw)]
        publish = self._parked
        if publish is not None and self._inline_ok(records):
            try:
                self._write_inline(records)
            except (StoreError, OSError) as exc:
                self._fail(f"{type(exc).__name__}: {exc}")
                raise StoreError(f"writer failed: {self.failure}") from exc
            self._written([tick], publish)
            return
        self._parked = None  # the writer has work from here on (it parks again when idle)
        await self._send.send(tick)

    async def _wait_written(self, t: int) -> None:
        """Wait until tick ``t`` is written (at once for ``t`` < 0 or already written).

        Cancellation: a plain event wait, nothing to undo.

        Raises:
            StoreError: the writer has failed; nothing will be written any more.
        """
        while self._written_t < t:
            if self.failure is not None:
                raise StoreError(f"writer failed: {self.failure}")
            await self._written_changed.wait()
        if self.failure is not None:
            raise StoreError(f"writer failed: {self.failure}")

    async def run_writer(
        self,
        publish: Publish,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Write queued ticks to the store, then publish them, until cancelled.

        Each batch (the first queued tick and everything queued behind it) is written
        in one store append (on the event loop or in a worker thread, see the module
        docstring); only then is each of its ticks marked published and passed to
        ``publish`` (synchronous, must not block). With ``fsync=interval`` the
        periodic fdatasync runs after publishing, or after a second without a queued
        tick. While it waits with nothing queued, :meth:`append` may write and
        publish a tick itself.

        On cancellation the remaining queued ticks are written (and published) and
        the store closed inside a shielded scope, so cancellation never loses a
        queued tick. A store failure is recorded in :attr:`failure` (``/health``
        turns 503) and ends the task; unwritten ticks are never published.
        """
        task_status.started()
        try:
            while self.failure is None:
                batch = self._drain()
                if not batch:
                    # Parked: append() may write and publish ticks itself meanwhile.
                    self._parked = publish
                    try:
                        with trio.move_on_after(1.0) as idle:
                            batch = [await self._receive.receive()]
                    finally:
                        self._parked = None
                    if idle.cancelled_caught:
                        # A second without a queued tick (some may have been written
                        # inline): fsync=interval syncs here, and retention runs.
                        if self.failure is None:  # an inline write may have failed
                            await trio.to_thread.run_sync(self._idle_upkeep)
                        continue
                await self._write([*batch, *self._drain()], publish)
                if self.store.sync_due():  # fsync=interval: a second since the last sync
                    await trio.to_thread.run_sync(self.store.sync)
        except StoreError as exc:
            self._fail(str(exc))
        except OSError as exc:
            self._fail(f"{type(exc).__name__}: {exc}")
        finally:
            with trio.CancelScope(shield=True):
                rest = self._drain()
                try:
                    if rest and self.failure is None:
                        await self._write(rest, publish)
                    await trio.to_thread.run_sync(self.store.close)
                except (StoreError, OSError) as exc:
                    self._fail(f"{type(exc).__name__}: {exc}")

    def _idle_upkeep(self) -> None:
        """Runs in a worker thread when no tick was queued for a second."""
        if self._fsync == "interval":  # not leaving the last ticks unsynced ("never": the OS)
            self.store.sync()
        self.store.enforce_retention()  # retain_s ages segments even without rollovers

    def _drain(self) -> list[EncodedTick]:
        """Every tick queued right now, without waiting (the rest of a batch)."""
        out = []
        while True:
            try:
                out.append(self._receive.receive_nowait())
            except trio.WouldBlock:
                return out

    async def _write(self, batch: list[EncodedTick], publish: Publish) -> None:
        """Append ``batch`` (inline or in a thread, as allowed), then publish it.

        Raises:
            StoreError: the append failed; nothing of the batch is published.
        """
        records = [(tick.t, tick.raw) for tick in batch]
        if self._inline_ok(records):
            self._write_inline(records)
        else:
            await trio.to_thread.run_sync(self.store.append, records)
        self._written(batch, publish)

    def _inline_ok(self, records: list[tuple[int, bytes]]) -> bool:
        """Whether the append of ``records`` may be made on the event loop (module docstring)."""
        return (
            self._fsync != "always"
            and time.monotonic() >= self._threaded_until
            and self.store.fits(records)
        )

    def _write_inline(self, records: list[tuple[int, bytes]]) -> None:
        """Append on the event loop, timing it; a slow write sends writes to a thread.

        The write itself is not interrupted (it blocks the loop for as long as it
        takes, once); only the following ``THREADED_FOR_S`` of writes move off it.
        """
        now = time.monotonic()
        self.store.append(records)  # page-cache writes only (see the module docstring)
        took = time.monotonic() - now
        if took > INLINE_WRITE_LIMIT_S:
            logger.warning("segment write took %.1f ms; writing in a thread", took * 1e3)
            self._threaded_until = now + THREADED_FOR_S

    def _written(self, batch: list[EncodedTick], publish: Publish) -> None:
        """``batch`` is written: mark it, then ``publish`` each of its ticks."""
        self._written_t = batch[-1].t
        self._written_changed.set()
        self._written_changed = trio.Event()
        for tick in batch:
            self._published_t = tick.t
            publish(tick)
        self._wake_published()

    def _wake_published(self) -> None:
        """Wake every :meth:`wait_published` caller, once per batch."""
        if self._published is not None:
            self._published.set()
            self._published = None

    async def wait_published(self, t: int) -> None:
        """Wait until tick ``t`` has been published.

        Raises:
            StoreError: the writer failed before publishing ``t``.
        """
        while (self._published_t if self._published_t is not None else -1) < t:
            if self.failure is not None:
                raise StoreError(f"writer failed: {self.failure}")
            if self._published is None:
                self._published = trio.Event()
            await self._published.wait()

    def _fail(self, reason: str) -> None:
        """Record the writer's failure and wake every waiter, so each raises it.

        Final: the writer does not restart, the source's ``append`` raises from now on,
        and ``/health`` says why. What was published stays readable.
        """
        logger.error("segment writer failed: %s", reason)
        self.failure = reason
        self._written_changed.set()
        self._wake_published()

    # -- reading ----------------------------------------------------------------------

    async def read(
        self, from_t: int, limit: int, *, upto: int | None = None, shared: bool = False
    ) -> list[EncodedTick]:
        """Up to ``limit`` consecutive published ticks from ``max(from_t, oldest_t)``.

        Served from the ring when it holds ``from_t``, else from the segment files in a
        worker thread, continuing in the ring where the files end. ``upto`` caps the
        range (default: the latest published tick).

        Raises:
            CorruptRecordError: a stored record failed its checksum.
        """
        return await read_through(
            self.ring,
            self._shared.read if shared else self._read_files,
            from_t,
            limit,
            oldest_t=self.oldest_t,
            latest_t=self._published_t,
            upto=upto,
        )

    async def _read_files(self, from_t: int, limit: int) -> list[EncodedTick]:
        """Read from the segment files in a worker thread (at most ``READ_THREADS`` at once).

        A stream's steps go through ``self._shared`` (``shared_reads.py``), which calls
        this in aligned chunks. Cancellation waits for the thread's read to finish
        (trio does not abandon a worker thread by default); one read is bounded by one
        page of records.
        """
        raws = await trio.to_thread.run_sync(self.store.read, from_t, limit, limiter=self._readers)
        return [EncodedTick.from_stored(raw) for raw in raws]

    async def find_ts(self, ts: float) -> int:
        """The ``t`` a seek to ``ts`` starts at: the first published tick with ``ts >= ts``.

        A binary search, in memory over the ring's published ticks when the oldest of
        them is older than ``ts``, else over the segment files below the ring (in a
        worker thread; see :mod:`~tickcast.storage.timeindex` for the cost and for what
        holds when a tick's ``ts`` is lower than its predecessor's). ``latest_t + 1``
        (:attr:`next_published_t`) when no published tick has ``ts >= ts``.

        Raises:
            CorruptRecordError: a probed record failed its checks.
        """
        end = self._published_t
        oldest = self.oldest_t
        if end is None or oldest is None:
            return self.next_published_t
        ring_oldest = self.ring.oldest_t
        lo = end + 1 if ring_oldest is None else max(ring_oldest, oldest)
        found = ring_lower_bound(self.ring, lo, end, ts)
        if found is not None:
            return found
        if lo == oldest:
            return lo
        # ts(lo) >= ts (or lo is past the end): the answer is at most lo, in the files.
        return await trio.to_thread.run_sync(
            partial(self._times.find, ts, before=lo), limiter=self._readers
        )

    def statistics(self) -> HistoryStatistics:
        """Ring and segment sizes for ``/metrics`` (the store's figures as last known)."""
        return HistoryStatistics(
            latest_t=self._published_t,
            ring_ticks=len(self.ring),
            ring_bytes=self.ring.nbytes,
            segment_bytes=self.store.total_bytes,
            segments=self.store.segment_count,
        )

    def health(self) -> tuple[bool, list[str]]:
        """(ok, reasons) for ``/health``: a failed writer or any corrupt record."""
        reasons = []
        if self.failure is not None:
            reasons.append(f"writer failed: {self.failure}")
        reasons += list(self.store.corruption)
        return not reasons, reasons
