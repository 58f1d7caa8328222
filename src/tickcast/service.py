"""The service: what every route and transport shares, and the path of a new tick.

:meth:`Service.produce` is the one place a tick enters: history first (ring, then
the writer's queue), then the hub. Sources call nothing else.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import trio

from .config import Config
from .history import History
from .hub import Hub
from .limits import Limits
from .metrics import Metrics
from .tick import EncodedTick

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
    _published: trio.Event | None = None

    @classmethod
    async def open(cls, config: Config) -> Service:
        history = await History.open(config)
        hub = Hub(lag_limit=config.lag_limit)
        service = cls(config, history, hub, Limits(config), Metrics())
        service.metrics.bind(service)
        return service

    async def produce(self, tick: EncodedTick) -> None:
        """Persist-queue ``tick`` and publish it to every client.

        Waits only on the writer's bounded queue (and on fsync with ``fsync=always``);
        never on a client.
        """
        await self.history.append(tick)
        self.history.mark_published(tick.t)
        self.hub.publish(tick)
        self.metrics.observe_push(tick)
        if self._published is not None:
            self._published.set()
            self._published = None

    async def wait_for_t(self, t: int) -> None:
        """Wait until tick ``t`` has been published."""
        while (self.history.latest_t if self.history.latest_t is not None else -1) < t:
            if self._published is None:
                self._published = trio.Event()
            await self._published.wait()

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
