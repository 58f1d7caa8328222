"""The service: what every route and session shares, in either role.

A :class:`Service` is the same for the producer (history from its own segment
files, see ``producer.py``) and for a scale-out edge (history from a Redis
stream): config, a :class:`~tickcast.storage.history.History`, the hub, the
connection limits, the traffic counters and the metrics. Its role feeds it
through :meth:`Service.publish`, once per tick, in ``t`` order.

Invariants: :meth:`Service.publish` is synchronous and never awaits a client
(the hub's rule); the service owns no task (its role's tasks run in the
assembly's nurseries, ``assembly.py``); what ``/health`` reports is the
history's health plus the failures its components recorded with
:meth:`Service.fail`, and streams are refused (503) only while
:attr:`Service.waiting` says why.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from tickcast.config import Config
from tickcast.fanout.hub import Hub
from tickcast.fanout.limits import Limits
from tickcast.fanout.traffic import Traffic
from tickcast.metrics import Metrics, ServiceStatistics
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
    traffic: Traffic
    metrics: Metrics
    started_at: float = field(default_factory=time.monotonic)
    failures: dict[str, str] = field(default_factory=dict)
    # Why streams cannot start yet, set by the role: an edge until it knows which
    # epoch it serves (the first tick of the stream). None: ready.
    waiting: str | None = None

    @classmethod
    def create(cls, config: Config, history: History) -> Service:
        """A service over ``history``, its metrics bound to its counters."""
        service = cls(
            config, history, Hub(lag_limit=config.lag_limit), Limits(config), Traffic(), Metrics()
        )
        service.metrics.bind(service.statistics)
        return service

    def publish(self, tick: EncodedTick) -> None:
        """Hand a published tick to every client (its role calls this, in ``t`` order)."""
        self.hub.publish(tick)
        self.metrics.observe_push(tick)

    async def wait_for_t(self, t: int) -> None:
        """Wait until tick ``t`` has been published.

        Raises:
            StoreError: the history failed before publishing ``t``.
        """
        await self.history.wait_published(t)

    def fail(self, component: str, reason: str) -> None:
        """Record that ``component`` failed; ``/health`` reports it (503)."""
        log.error("%s failed: %s", component, reason)
        self.failures[component] = reason

    def recover(self, component: str) -> None:
        """Clear a failure recorded with :meth:`fail` (the component works again)."""
        if self.failures.pop(component, None) is not None:
            log.info("%s recovered", component)

    def unavailable(self) -> str | None:
        """Why streams cannot start now (:attr:`waiting`: an edge not yet fed), or None."""
        return self.waiting

    def health(self) -> tuple[bool, list[str]]:
        ok, reasons = self.history.health()
        reasons = [f"{k} failed: {v}" for k, v in self.failures.items()] + reasons
        return ok and not self.failures, reasons

    def statistics(self) -> ServiceStatistics:
        return ServiceStatistics(
            history=self.history.statistics(),
            hub=self.hub.statistics(),
            limits=self.limits.statistics(),
            traffic=self.traffic.statistics(),
        )

    @property
    def uptime_s(self) -> float:
        return time.monotonic() - self.started_at
