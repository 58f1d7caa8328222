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
    """Config, history, hub, limits and counters of one running tickcast.

    A plain holder with no lifecycle of its own: the assembly builds it, the role
    feeds it, and the routes reach it through the app's typed accessor. One per
    process in production; tests run several side by side, which is why nothing
    here is a module global (the metrics registry included).
    """

    config: Config
    history: History
    hub: Hub
    limits: Limits
    traffic: Traffic
    metrics: Metrics
    started_at: float = field(default_factory=time.monotonic)  # for uptime_s only
    # component -> why it failed; shown by /health until recover(). Keyed by component
    # so a failure repeated every retry is one entry, not a growing list.
    failures: dict[str, str] = field(default_factory=dict)
    # Why streams cannot start yet, set by the role: an edge until it knows which
    # epoch it serves (the first tick of the stream). None: ready.
    waiting: str | None = None

    @classmethod
    def create(cls, config: Config, history: History) -> Service:
        """A service over ``history``, its metrics bound to its counters.

        The hub gets the effective ``max_lag`` (``Config.lag_limit``); a role with
        counters of its own binds the metrics again to its own snapshot (the last
        bind wins), as the edge does.
        """
        service = cls(
            config, history, Hub(lag_limit=config.lag_limit), Limits(config), Traffic(), Metrics()
        )
        service.metrics.bind(service.statistics)
        return service

    def publish(self, tick: EncodedTick) -> None:
        """Hand a published tick to every client (its role calls this, in ``t`` order).

        Synchronous and bounded: the hub never awaits a client, so the cost is the
        fan-out itself, and the push latency is observed once, after it.
        """
        self.hub.publish(tick)
        self.metrics.observe_push(tick)

    async def wait_for_t(self, t: int) -> None:
        """Wait until tick ``t`` has been published.

        Cancellation: a plain wait on the history; nothing to undo.

        Raises:
            StoreError: the history failed before publishing ``t``.
        """
        await self.history.wait_published(t)

    def fail(self, component: str, reason: str) -> None:
        """Record that ``component`` failed; ``/health`` reports it (503).

        Logged as an error each call. Recording a failure does not stop anything:
        streams and reads go on from what the history holds, which is the point of
        reporting a failure instead of raising it.
        """
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
        """(ok, reasons) for ``/health``: the history's, after the recorded failures."""
        ok, reasons = self.history.health()
        reasons = [f"{k} failed: {v}" for k, v in self.failures.items()] + reasons
        return ok and not self.failures, reasons

    def statistics(self) -> ServiceStatistics:
        """One snapshot of every component's counters, for ``/metrics``."""
        return ServiceStatistics(
            history=self.history.statistics(),
            hub=self.hub.statistics(),
            limits=self.limits.statistics(),
            traffic=self.traffic.statistics(),
        )

    @property
    def uptime_s(self) -> float:
        """Seconds since the service was built (monotonic: immune to clock steps)."""
        return time.monotonic() - self.started_at
