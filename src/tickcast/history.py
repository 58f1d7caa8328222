"""History: the ring buffer in front of the segment store, and the writer task.

Path of a tick: the source calls :meth:`History.append` (the tick enters the ring
and the writer's bounded channel), then publishes it to the hub. So a tick is in
the ring before any client is sent it, and every tick a client received is either
on disk or in the writer's channel, which the writer drains (shielded) when it is
cancelled: a clean stop loses nothing a client saw.

File I/O runs in worker threads (``trio.to_thread``), never on the event loop.
With ``fsync=always`` :meth:`append` returns only once the tick is fsynced, so no
client ever sees a tick that a power cut could lose.
"""

from __future__ import annotations

import logging

import trio

from .config import Config
from .errors import StoreError
from .log import SegmentStore
from .ring import Ring
from .tick import EncodedTick

__all__ = ["History"]

log = logging.getLogger("tickcast.history")

WRITE_QUEUE = 1024  # ticks the writer may lag behind the source before the source waits
READ_THREADS = 4  # concurrent history reads off the event loop


class History:
    """The ring + segment store pair, with the tick numbering they share."""

    def __init__(self, store: SegmentStore, ring: Ring, *, fsync: str) -> None:
        self.store = store
        self.ring = ring
        self._fsync = fsync
        self._send, self._receive = trio.open_memory_channel[EncodedTick](WRITE_QUEUE)
        self._readers = trio.CapacityLimiter(READ_THREADS)
        # The last t the store has taken (fsynced too, with fsync=always).
        self._written_t = store.latest_t if store.latest_t is not None else -1
        self._written_changed = trio.Event()
        self.published_t: int | None = ring.latest_t
        self.failure: str | None = None

    # -- opening ----------------------------------------------------------------------

    @classmethod
    async def open(cls, config: Config) -> History:
        """Open (and recover) the store in a thread, then refill the ring from its tail."""

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
        log.info(
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
        return self.store.epoch

    @property
    def next_t(self) -> int:
        """The ``t`` the next appended tick must carry."""
        latest = self.ring.latest_t
        return self.store.next_t if latest is None else latest + 1

    @property
    def oldest_t(self) -> int | None:
        """The oldest ``t`` still readable (None while nothing is published)."""
        if self.published_t is None:
            return None
        stored = self.store.oldest_t
        return stored if stored is not None else self.ring.oldest_t

    @property
    def latest_t(self) -> int | None:
        """The newest ``t`` published to clients."""
        return self.published_t

    def latest(self) -> EncodedTick | None:
        """The newest published tick, if the ring has it."""
        return None if self.published_t is None else self.ring.get(self.published_t)

    # -- writing ----------------------------------------------------------------------

    async def append(self, tick: EncodedTick) -> None:
        """Put ``tick`` in the ring and queue it for the writer.

        Waits (backpressure on the source) while the writer is ``WRITE_QUEUE`` ticks
        behind, or while appending would push an unwritten tick out of the ring; with
        ``fsync=always`` also waits until the tick is fsynced.

        Raises:
            StoreError: the writer has failed (see :attr:`failure`).
        """
        # The ring must never drop a tick the writer has not written yet, or that tick
        # would be readable from neither: wait until the one it evicts is on disk.
        await self._wait_written(tick.t - self.ring.capacity)
        self.ring.append(tick)
        await self._send.send(tick)
        if self._fsync == "always":
            await self._wait_written(tick.t)

    async def _wait_written(self, t: int) -> None:
        while self._written_t < t:
            if self.failure is not None:
                raise StoreError(f"writer failed: {self.failure}")
            await self._written_changed.wait()
        if self.failure is not None:
            raise StoreError(f"writer failed: {self.failure}")

    def mark_published(self, t: int) -> None:
        self.published_t = t

    async def run_writer(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Write queued ticks to the store until cancelled, then drain, fsync and close.

        On cancellation the remaining queued ticks are written and the store closed
        inside a shielded scope, so cancellation never loses a queued tick. A store
        failure is recorded in :attr:`failure` (``/health`` turns 503) and ends the task.
        """
        task_status.started()
        try:
            while True:
                with trio.move_on_after(1.0) as idle:
                    first = await self._receive.receive()
                if idle.cancelled_caught:
                    await trio.to_thread.run_sync(self._idle_upkeep)
                    continue
                await self._write([first, *self._drain()])
        except StoreError as exc:
            self._fail(str(exc))
        except OSError as exc:
            self._fail(f"{type(exc).__name__}: {exc}")
        finally:
            with trio.CancelScope(shield=True):
                rest = self._drain()
                try:
                    if rest and self.failure is None:
                        await self._write(rest)
                    await trio.to_thread.run_sync(self.store.close)
                except (StoreError, OSError) as exc:
                    self._fail(f"{type(exc).__name__}: {exc}")

    def _idle_upkeep(self) -> None:
        """Runs in a worker thread when no tick came for a second."""
        self.store.sync()  # fsync=interval must not leave the last ticks unsynced
        self.store.enforce_retention()  # retain_s ages segments even without rollovers

    def _drain(self) -> list[EncodedTick]:
        out = []
        while True:
            try:
                out.append(self._receive.receive_nowait())
            except trio.WouldBlock:
                return out

    async def _write(self, batch: list[EncodedTick]) -> None:
        records = [(tick.t, tick.raw) for tick in batch]
        await trio.to_thread.run_sync(self.store.append, records)
        self._written_t = batch[-1].t
        self._written_changed.set()
        self._written_changed = trio.Event()

    def _fail(self, reason: str) -> None:
        log.error("segment writer failed: %s", reason)
        self.failure = reason
        self._written_changed.set()

    # -- reading ----------------------------------------------------------------------

    async def read(self, from_t: int, limit: int, *, upto: int | None = None) -> list[EncodedTick]:
        """Up to ``limit`` consecutive published ticks from ``max(from_t, oldest_t)``.

        Served from the ring when it holds ``from_t``, else from the segment files in a
        worker thread, continuing in the ring where the files end. ``upto`` caps the
        range (default: the latest published tick).

        Raises:
            CorruptRecordError: a stored record failed its checksum.
        """
        end = self.published_t
        if end is None or limit < 1:
            return []
        if upto is not None:
            end = min(end, upto)
        oldest = self.oldest_t
        start = from_t if oldest is None else max(from_t, oldest)
        if start > end:
            return []
        limit = min(limit, end - start + 1)
        out: list[EncodedTick] = []
        while limit > 0:
            ring_oldest = self.ring.oldest_t
            if ring_oldest is not None and start >= ring_oldest:
                try:
                    out += self.ring.range(start, limit, upto=end)
                    return out
                except KeyError:  # the ring moved on while we read the files
                    continue
            n = limit if ring_oldest is None else min(limit, ring_oldest - start)
            raws = await trio.to_thread.run_sync(self.store.read, start, n, limiter=self._readers)
            if not raws:
                return out
            ticks = [EncodedTick.from_stored(raw) for raw in raws]
            if out and ticks[0].t != out[-1].t + 1:
                return out  # retention cut the range: return the consecutive part
            out += ticks
            start = ticks[-1].t + 1
            limit -= len(ticks)
        return out

    def health(self) -> tuple[bool, list[str]]:
        """(ok, reasons) for ``/health``: a failed writer or any corrupt record."""
        reasons = []
        if self.failure is not None:
            reasons.append(f"writer failed: {self.failure}")
        reasons += list(self.store.corruption)
        return not reasons, reasons
