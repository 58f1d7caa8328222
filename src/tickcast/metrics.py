"""Prometheus metrics: counters kept by each component, read at scrape time.

Components keep their own counters and expose frozen ``statistics()`` snapshots;
:class:`Metrics` reads one :class:`ServiceStatistics` per scrape and renders it.
Only the push-latency and GC-pause histograms are observed here (once per tick,
not once per client). Each :class:`Metrics` has its own registry, so several
services can live in one process (tests).

Why counters are pulled, not pushed: the hot path (the hub's fan-out, a session's
writes) only bumps plain integers on its own objects; nothing on it touches a
Prometheus object or takes a lock. A scrape pays for reading them, once.

Invariants:

* a scrape reads one snapshot (``ServiceStatistics``), so the figures of one scrape
  are from the same moment of the event loop (nothing awaits while it is built);
* metric names are part of the user-visible API (docs/protocol.md and
  docs/performance.md name some, and dashboards query them): renaming one breaks
  someone's alerts, so do it only on purpose and update those docs with it;
* until :meth:`Metrics.bind` is called, a scrape shows the two histograms only.

Exposition: the Prometheus text format 0.0.4 (``CONTENT_TYPE``). In it, a counter's
samples are named ``<name>_total``, which is why the gauge ``tickcast_connections``
(open now) and the counter ``tickcast_connections_total`` (accepted so far) can
share a family name. OpenMetrics would reject that pair; it is not served.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tickcast.fanout.hub import HubStatistics
from tickcast.fanout.limits import LimitsStatistics
from tickcast.fanout.traffic import TrafficStatistics
from tickcast.storage.history import HistoryStatistics
from tickcast.tick import EncodedTick

__all__ = ["CONTENT_TYPE", "Metrics", "ServiceStatistics"]

# The Content-Type of /metrics: the classic text format, which every Prometheus reads.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Seconds. Dense below 10 ms, where a healthy fan-out lands, and open to 5 s, where
# only a stalled loop or a GC storm would put it.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0)


@dataclass(frozen=True, slots=True)
class ServiceStatistics:
    """Everything ``/metrics`` shows, read in one step.

    Each part is the frozen ``statistics()`` of the component that owns the
    counters. A role with counters of its own (the scale-out edge's Redis link)
    adds them as ``extra`` gauges instead of a new field, so the producer's
    snapshot does not grow fields it would always leave empty.
    """

    history: HistoryStatistics
    hub: HubStatistics
    limits: LimitsStatistics
    traffic: TrafficStatistics
    extra: tuple[tuple[str, str, float], ...] = ()  # (name, help, value) gauges of a role


class Metrics(Collector):
    """The histograms, plus the components' counters read through ``snapshot``.

    A prometheus_client ``Collector`` registered in its own registry: the registry
    calls :meth:`collect` at each scrape, and the counters are read then.
    """

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
        self._snapshot: Callable[[], ServiceStatistics] | None = None
        self.registry.register(self)

    def bind(self, snapshot: Callable[[], ServiceStatistics]) -> None:
        """Read the service's counters through ``snapshot`` at each scrape (the last wins)."""
        self._snapshot = snapshot

    def watch_gc(self) -> None:
        """Time every cyclic GC run into ``tickcast_gc_pause_seconds`` (until unwatched)."""
        if self._on_gc not in gc.callbacks:
            gc.callbacks.append(self._on_gc)

    def unwatch_gc(self) -> None:
        """Stop timing GC runs (the service leaves steady state; idempotent).

        ``gc.callbacks`` is process-wide: without this, a stopped service would keep
        observing every GC of the process, and a test process would pile up callbacks.
        """
        if self._on_gc in gc.callbacks:
            gc.callbacks.remove(self._on_gc)

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        # Called by the interpreter around each collection ("start", then "stop"), on
        # the thread that triggered it; it must be quick and never raise.
        if phase == "start":
            self._gc_started = time.perf_counter()
        else:
            self.gc_pause.observe(time.perf_counter() - self._gc_started)

    def observe_push(self, tick: EncodedTick) -> None:
        """Record how long ``tick`` took from its ``ts`` to the end of its fan-out.

        Called once per tick after the hub has offered it to every live client (not
        per client), so its cost does not grow with the audience. Wall-clock time, so
        a clock step backwards is clamped to 0 rather than recorded as negative.
        """
        self.push_latency.observe(max(0.0, time.time() - tick.ts))

    def render(self) -> bytes:
        """The body of ``/metrics``: every metric in the text format (``CONTENT_TYPE``)."""
        return generate_latest(self.registry)

    def collect(self) -> Iterator[Metric]:
        """Yield the components' counters from one snapshot (the registry's hook).

        Counters are yielded as ``CounterMetricFamily`` with their totals so far:
        they only grow for the life of the process, and Prometheus' ``rate()``
        handles the reset a restart causes.
        """
        if self._snapshot is None:
            return
        st = self._snapshot()
        yield GaugeMetricFamily(
            "tickcast_connections", "Open WebSocket connections.", value=st.limits.open
        )
        yield CounterMetricFamily(
            "tickcast_connections", "WebSocket connections accepted.", value=st.traffic.accepted
        )
        yield CounterMetricFamily(
            "tickcast_refused_connections",
            "Connections refused by a limit (HTTP 429).",
            value=st.limits.refused,
        )
        yield CounterMetricFamily(
            "tickcast_ticks_produced", "Ticks published.", value=st.hub.published
        )
        yield CounterMetricFamily(
            "tickcast_messages_sent", "WebSocket messages sent.", value=st.traffic.messages
        )
        yield CounterMetricFamily(
            "tickcast_bytes_sent", "WebSocket payload bytes sent.", value=st.traffic.payload_bytes
        )
        yield CounterMetricFamily(
            "tickcast_fell_behind",
            "Times a live client fell back to catching up from history.",
            value=st.hub.fell_behind,
        )
        yield CounterMetricFamily(
            "tickcast_slow_consumer_closes",
            "Connections closed with 4008.",
            value=st.hub.slow_closes,
        )
        yield GaugeMetricFamily(
            "tickcast_segment_bytes",
            "Bytes of segment data and index on disk.",
            value=st.history.segment_bytes,
        )
        yield GaugeMetricFamily(
            "tickcast_segments", "Segment files on disk.", value=st.history.segments
        )
        yield GaugeMetricFamily(
            "tickcast_ring_bytes",
            "Bytes of tick JSON held in the ring.",
            value=st.history.ring_bytes,
        )
        latest = st.history.latest_t
        # -1 while nothing is published: a gauge must be a number, and -1 cannot be a t.
        yield GaugeMetricFamily(
            "tickcast_latest_t", "Latest published t.", value=-1 if latest is None else latest
        )
        for name, help_text, value in st.extra:
            yield GaugeMetricFamily(name, help_text, value=value)
