"""The service: what every route and transport shares, and the path of a new tick.

:meth:`Service.produce` is the one place a tick enters: the ring, then the writer's
queue. The writer publishes it to the hub (:meth:`Service.publish`) once it is
written to the segment files. Sources call nothing else.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import trio

from tickcast.config import Config
from tickcast.fanout.hub import Hub
from tickcast.fanout.limits import Limits
from tickcast.metrics import Metrics
from tickcast.storage.history import History
from tickcast.tick import EncodedTick

__all__ = ["Service"]

log = logging.getLogger("tickcast.service")


@dataclass(eq=False)
class Service:
    """Config, history, hub, limits and counters of one running tickcast."""

    config: Config
    history: History
    hub: Hub
    limits: Limits
    metrics: Metrics
    started_at: float = field(default_factory=time.monotonic)
    failures: dict[str, str] = field(default_factory=dict)

    @classmethod
    async def open(cls, config: Config) -> Service:
        history = await History.open(config)
        hub = Hub(lag_limit=config.lag_limit)
        service = cls(config, history, hub, Limits(config), Metrics())
        service.metrics.bind(service)
        return service

    async def produce(self, tick: EncodedTick) -> None:
        """Append ``tick`` to history (the ring and the writer's queue).

        The writer publishes it (:meth:`publish`) once it is written to the segment
        files. Waits only on the writer's bounded queue; never on a client.
        """
        await self.history.append(tick)

    def publish(self, tick: EncodedTick) -> None:
        """Hand a written tick to every client (called by the writer, in ``t`` order)."""
        self.hub.publish(tick)
        self.metrics.observe_push(tick)

    async def run_writer(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the history writer, publishing each tick once written (see ``History``)."""
        await self.history.run_writer(self.publish, task_status=task_status)

    async def wait_for_t(self, t: int) -> None:
        """Wait until tick ``t`` has been published.

        Raises:
            StoreError: the writer failed before publishing ``t``.
        """
        await self.history.wait_published(t)

    def fail(self, component: str, reason: str) -> None:
        """Record that ``component`` failed; ``/health`` reports it (503)."""
        log.error("%s failed: %s", component, reason)
        self.failures[component] = reason

    def health(self) -> tuple[bool, list[str]]:
        ok, reasons = self.history.health()
        reasons = [f"{k} failed: {v}" for k, v in self.failures.items()] + reasons
        return ok and not self.failures, reasons

    @property
    def uptime_s(self) -> float:
        return time.monotonic() - self.started_at
