"""The producer role: a source's ticks into the segment files, then to clients.

:meth:`Producer.produce` is the one place a tick enters, and the one place
ticks are numbered: it gives each payload the next ``t`` (and ``ts`` when the
payload has none), encodes it once, and appends it to the ring, then the
writer's queue (``LocalHistory.append``). Invariant: ``t`` is consecutive from
the last tick on disk, whoever calls (the simulator, concurrent ``POST
/ingest`` requests), because callers take turns from numbering to the ring.

The writer task writes each batch to the segment files and only then
publishes it through :meth:`Service.publish`, so no client ever sees a tick a
process crash could lose (docs/storage.md, durability). A scale-out
edge has no producer: it publishes what it reads from the stream.

With ``redis_url`` set, the producer also runs an :class:`~tickcast.scaleout.Appender`
that copies every published tick (the exact bytes) into the Redis stream. It only
*reads* history (ring, then segment files), so a slow or absent Redis never
delays the producer's own clients or its writer; after Redis or the producer
restarts it re-appends whatever the stream is missing.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from tickcast.config import Config
from tickcast.metrics import ServiceStatistics
from tickcast.service import Service
from tickcast.storage.local import LocalHistory
from tickcast.tick import OPTIONAL_KEYS, EncodedTick

if TYPE_CHECKING:
    from tickcast.scaleout import Appender

__all__ = ["Producer"]


@dataclass(eq=False)
class Producer:
    """A service whose history is its own segment files, and the way ticks enter it.

    Built by :meth:`open` (the assembly calls it); its tasks (:meth:`run_writer`, the
    source, the appender's ``run``) are started by the assembly, which owns their
    nursery. The producer itself starts nothing.
    """

    service: Service
    log: LocalHistory  # the same object as ``service.history``
    appender: Appender | None = field(default=None)
    # FIFO (trio's Lock is fair): concurrent produce() calls are numbered in call order.
    _turn: trio.Lock = field(default_factory=trio.Lock, repr=False)

    @classmethod
    async def open(cls, config: Config) -> Producer:
        """Open (and recover) the segment files and build the service over them.

        Recovery (a torn tail after a crash) happens here, before anything is
        served; its cost is bounded by one segment (docs/storage.md).

        Raises:
            StoreError: the data directory is in use by another process, or cannot
                be opened or recovered.
        """
        log = await LocalHistory.open(config)
        producer = cls(Service.create(config, log), log)
        if config.redis_url is not None:
            from tickcast.scaleout import Appender  # coredis only when scaling out (~0.4 s)

            producer.appender = Appender(
                _StreamSource(log),
                url=config.redis_url,
                key=config.redis_key,
                maxlen=config.redis_maxlen,
                protected=config.read_token is not None,
            )
            producer.service.metrics.bind(producer.statistics)
        return producer

    def statistics(self) -> ServiceStatistics:
        """The service's counters, plus the appender's gauges when scaling out."""
        base = self.service.statistics()
        if self.appender is None:
            return base
        st = self.appender.statistics()
        extra = (
            ("tickcast_redis_connected", "1 while appends to Redis succeed.", float(st.connected)),
            (
                "tickcast_redis_appended_t",
                "The newest tick known to be in the Redis stream.",
                -1.0 if st.appended_t is None else float(st.appended_t),
            ),
        )
        return ServiceStatistics(base.history, base.hub, base.limits, base.traffic, extra)

    @property
    def next_t(self) -> int:
        """The ``t`` :meth:`produce` gives the next tick (the simulator seeds its step with it)."""
        return self.log.next_t

    async def produce(self, payload: Mapping[str, Any]) -> EncodedTick:
        """Number one tick's content, append it to the ring and the writer's queue.

        ``payload`` carries the content keys ``s, agents, actions, matches`` and
        optionally ``ts`` (unix seconds); anything else in it (a ``type`` or ``t``)
        is ignored. The tick gets ``t = next_t`` and, without a ``ts``, the time
        now. Concurrent callers (several ``POST /ingest`` requests) take turns, in
        the order they called, so ``t`` stays consecutive without a lock of theirs.

        Waits only on the writer's bounded queue; never on a client. The tick is
        published once it is written: by the writer, or before this returns when
        the writer was idle (``LocalHistory.append``; then this does not yield).

        Returns:
            The encoded tick, as clients and the segment files will see it.

        Raises:
            StoreError: the writer has failed.
            KeyError: a content key is missing (callers validate first).
        """
        # One produce() at a time from numbering to the ring: append() may wait (the
        # writer's backpressure), and a second caller must not take the same t. The
        # lock is taken without a yield when free (the simulator's every tick).
        await self._take_turn()
        try:
            return await self._produce(payload)
        finally:
            self._turn.release()

    async def produce_many(self, payloads: Sequence[Mapping[str, Any]]) -> list[EncodedTick]:
        """:meth:`produce` for a list, in one turn: its ticks get consecutive ``t``.

        A ``POST /ingest`` list is numbered as one block, so its answer (``first_t``
        and the count) names exactly its own ticks even while other requests post
        concurrently; they wait for the block, in the order they called. Checkpoints
        after every tick, so a long list never holds the event loop.

        Raises:
            StoreError: the writer has failed (the ticks before it are produced).
            KeyError: a content key is missing (callers validate first).
        """
        await self._take_turn()
        try:
            ticks = []
            for payload in payloads:
                ticks.append(await self._produce(payload))
                await trio.lowlevel.checkpoint()  # _produce() may not yield
            return ticks
        finally:
            self._turn.release()

    async def _take_turn(self) -> None:
        """Take the turn: at once (no yield) when free, else in the order of callers."""
        try:
            self._turn.acquire_nowait()
        except trio.WouldBlock:
            await self._turn.acquire()

    async def _produce(self, payload: Mapping[str, Any]) -> EncodedTick:
        """Number, encode and append one tick; the caller holds the turn."""
        # Keys are built in wire order (type, t, ts, then OPTIONAL_KEYS): the codec
        # keeps dict order, and readers rely on t and ts leading (tick.py).
        ts = payload.get("ts")
        tick: dict[str, Any] = {
            "type": "tick",
            "t": self.log.next_t,
            "ts": round(time.time() if ts is None else float(ts), 6),
        }
        for key in OPTIONAL_KEYS:
            tick[key] = payload[key]
        encoded = EncodedTick.from_dict(tick)
        await self.log.append(encoded)
        return encoded

    async def run_writer(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the segment writer, publishing each tick once written (until cancelled).

        Cancellation drains: what is queued is written, synced and published before
        this returns (``LocalHistory.run_writer``), so a clean shutdown loses nothing.
        """
        await self.log.run_writer(self.service.publish, task_status=task_status)


class _StreamSource:
    """What the appender reads: the producer's published history (never waits on it).

    An adapter rather than the history itself, so the appender sees the five members
    of its ``TickSource`` and nothing it could write to.
    """

    def __init__(self, log: LocalHistory) -> None:
        self._log = log

    @property
    def epoch(self) -> str:
        return self._log.epoch

    @property
    def oldest_t(self) -> int | None:
        return self._log.oldest_t

    @property
    def latest_t(self) -> int | None:
        return self._log.latest_t

    async def read(self, from_t: int, limit: int) -> list[EncodedTick]:
        return await self._log.read(from_t, limit)

    async def wait_for_t(self, t: int) -> None:
        await self._log.wait_published(t)
