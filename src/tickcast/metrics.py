"""Prometheus metrics: plain counters on the hot path, rendered at scrape time.

The hot path only increments integers (``messages_sent += 1``); the push latency
histogram is observed once per tick (when the hub has handed it to every live
client), not once per client. Each :class:`Metrics` has its own registry, so
several services can live in one process (tests).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tickcast.tick import EncodedTick

if TYPE_CHECKING:
    from tickcast.service import Service

__all__ = ["CONTENT_TYPE", "Metrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)


class Metrics(Collector):
    """Counters incremented by transports, plus gauges read off the service."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.push_latency = Histogram(
            "tickcast_push_latency_seconds",
            "Time from a tick's ts until the hub handed it to every live client.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.gc_pause = Histogram(
            "tickcast_gc_pause_seconds",
            "Cyclic garbage collector pauses (every generation).",
            buckets=(0.0001, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1),
            registry=self.registry,
        )
        self._gc_started = 0.0
        self.messages_sent = 0
        self.bytes_sent = 0
        self.connections_total = 0
        self._service: Service | None = None

    def bind(self, service: Service) -> None:
        self._service = service
        self.registry.register(self)

    def watch_gc(self) -> None:
        """Time every cyclic GC run into ``tickcast_gc_pause_seconds`` (until unwatched)."""
        if self._on_gc not in gc.callbacks:
            gc.callbacks.append(self._on_gc)

    def unwatch_gc(self) -> None:
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self.gc_pause.observe(time.perf_counter() - self._gc_started)

    def observe_push(self, tick: EncodedTick) -> None:
        self.push_latency.observe(max(0.0, time.time() - tick.ts))

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def collect(self) -> Iterator[Metric]:
        svc = self._service
        if svc is None:
            return
        yield GaugeMetricFamily(
            "tickcast_connections", "Open WebSocket connections.", value=svc.limits.total
        )
        yield CounterMetricFamily(
            "tickcast_connections",
            "WebSocket connections accepted.",
            value=self.connections_total,
        )
        yield CounterMetricFamily(
            "tickcast_refused_connections",
            "Connections refused by a limit (HTTP 429).",
            value=svc.limits.refused,
        )
        yield CounterMetricFamily(
            "tickcast_ticks_produced", "Ticks published.", value=svc.hub.published
        )
        yield CounterMetricFamily(
            "tickcast_messages_sent", "WebSocket messages sent.", value=self.messages_sent
        )
        yield CounterMetricFamily(
            "tickcast_bytes_sent", "WebSocket payload bytes sent.", value=self.bytes_sent
        )
        yield CounterMetricFamily(
            "tickcast_fell_behind",
            "Times a live client fell back to catching up from history.",
            value=svc.hub.fell_behind,
        )
        yield CounterMetricFamily(
            "tickcast_slow_consumer_closes",
            "Connections closed with 4008.",
            value=svc.hub.evicted,
        )
        yield GaugeMetricFamily(
            "tickcast_segment_bytes",
            "Bytes of segment data and index on disk.",
            value=svc.history.store.total_bytes,
        )
        yield GaugeMetricFamily(
            "tickcast_segments", "Segment files on disk.", value=svc.history.store.segment_count
        )
        yield GaugeMetricFamily(
            "tickcast_ring_bytes",
            "Bytes of tick JSON held in the ring.",
            value=svc.history.ring.nbytes,
        )
        latest = svc.history.latest_t
        yield GaugeMetricFamily(
            "tickcast_latest_t", "Latest published t.", value=-1 if latest is None else latest
        )
