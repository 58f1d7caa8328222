"""The producer role: a source's ticks into the segment files, then to clients.

:meth:`Producer.produce` is the one place a tick enters: the ring, then the
writer's queue (``LocalHistory.append``). The writer task writes each batch to
the segment files and only then publishes it through :meth:`Service.publish`,
so no client ever sees a tick a process crash could lose (SPEC §5). A scale-out
edge has no producer: it publishes what it reads from the stream.

With ``redis_url`` set, the producer also runs an :class:`~tickcast.scaleout.Appender`
that copies every published tick (the exact bytes) into the Redis stream. It only
*reads* history (ring, then segment files), so a slow or absent Redis never
delays the producer's own clients or its writer; after Redis or the producer
restarts it re-appends whatever the stream is missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import trio

from tickcast.config import Config
from tickcast.metrics import ServiceStatistics
from tickcast.service import Service
from tickcast.storage.local import LocalHistory
from tickcast.tick import EncodedTick

if TYPE_CHECKING:
    from tickcast.scaleout import Appender

__all__ = ["Producer"]


@dataclass(eq=False)
class Producer:
    """A service whose history is its own segment files, and the way ticks enter it."""

    service: Service
    log: LocalHistory  # the same object as ``service.history``
    appender: Appender | None = field(default=None)

    @classmethod
    async def open(cls, config: Config) -> Producer:
        """Open (and recover) the segment files and build the service over them."""
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

    async def produce(self, tick: EncodedTick) -> None:
        """Append ``tick`` (``t`` must be ``log.next_t``) to the ring and the writer's queue.

        Waits only on the writer's bounded queue; never on a client. The tick is
        published once it is written: by the writer, or before this returns when
        the writer was idle (``LocalHistory.append``; then this does not yield).

        Raises:
            StoreError: the writer has failed.
        """
        await self.log.append(tick)

    async def run_writer(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the segment writer, publishing each tick once written (until cancelled)."""
        await self.log.run_writer(self.service.publish, task_status=task_status)


class _StreamSource:
    """What the appender reads: the producer's published history (never waits on it)."""

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
