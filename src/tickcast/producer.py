"""The producer role: a source's ticks into the segment files, then to clients.

:meth:`Producer.produce` is the one place a tick enters: the ring, then the
writer's queue (``LocalHistory.append``). The writer task writes each batch to
the segment files and only then publishes it through :meth:`Service.publish`,
so no client ever sees a tick a process crash could lose (SPEC §5). A scale-out
edge has no producer: it publishes what it reads from the stream.
"""

from __future__ import annotations

from dataclasses import dataclass

import trio

from tickcast.config import Config
from tickcast.service import Service
from tickcast.storage.local import LocalHistory
from tickcast.tick import EncodedTick

__all__ = ["Producer"]


@dataclass(eq=False)
class Producer:
    """A service whose history is its own segment files, and the way ticks enter it."""

    service: Service
    log: LocalHistory  # the same object as ``service.history``

    @classmethod
    async def open(cls, config: Config) -> Producer:
        """Open (and recover) the segment files and build the service over them."""
        log = await LocalHistory.open(config)
        return cls(Service.create(config, log), log)

    async def produce(self, tick: EncodedTick) -> None:
        """Append ``tick`` (``t`` must be ``log.next_t``) to the ring and the writer's queue.

        Waits only on the writer's bounded queue; never on a client. The writer
        publishes the tick once it is written.

        Raises:
            StoreError: the writer has failed.
        """
        await self.log.append(tick)

    async def run_writer(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the segment writer, publishing each tick once written (until cancelled)."""
        await self.log.run_writer(self.service.publish, task_status=task_status)
