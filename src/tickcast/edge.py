"""The edge role (SPEC §7): no source and no segment files, the producer's ticks
read from a Redis stream and served to this process's own clients.

::

    Follower (XREAD) ──on_ticks──▶ Edge ──▶ MirrorHistory (ring) ──▶ Service.publish (hub)
                     ──on_epoch──▶ new epoch: every client closed 4009, the ring reset
                     ──on_gap────▶ fill the hole from history_url, else 4008 to every client
                     ──on_state──▶ /health 503 "degraded" while the stream cannot be read

Clients stay connected while Redis is away (heartbeats go on) and continue
gap-free when it returns: the follower re-reads from the last tick it delivered.
A hole it cannot fill is never passed over silently: the clients that needed
the lost ticks are closed with 4008 naming the ``from_t`` to resume with, and a
resume before the edge's oldest tick gets ``truncated`` in its hello.
"""

from __future__ import annotations

import logging

import httpx
import orjson
import trio

from tickcast.config import Config
from tickcast.metrics import ServiceStatistics
from tickcast.scaleout import Follower
from tickcast.service import Service
from tickcast.storage.mirror import MirrorHistory
from tickcast.tick import EncodedTick
from tickcast.wire import PAGE_LIMIT

__all__ = ["Edge", "ProducerHistory"]

log = logging.getLogger("tickcast.edge")

HEALTH_EVERY_S = 5.0  # how often the producer's oldest_t and epoch are re-read
HTTP_TIMEOUT_S = 10.0


class ProducerHistory:
    """Ticks older than the edge's ring, read from the producer's ``/incremental``.

    Only for the edge's epoch: :meth:`run` re-reads the producer's ``/health``
    every ``HEALTH_EVERY_S`` and offers nothing while the epochs differ.
    """

    def __init__(self, base_url: str, mirror_epoch: MirrorEpoch) -> None:
        self._base = base_url.rstrip("/")
        self._epoch = mirror_epoch
        self._oldest_t: int | None = None
        self._producer_epoch: str | None = None
        self._client = httpx.AsyncClient(timeout=HTTP_TIMEOUT_S)

    @property
    def oldest_t(self) -> int | None:
        return self._oldest_t if self._producer_epoch == self._epoch() else None

    async def read(self, from_t: int, limit: int) -> list[EncodedTick]:
        if self._producer_epoch != self._epoch():
            return []
        try:
            resp = await self._client.get(
                f"{self._base}/incremental",
                params={"from_t": from_t, "limit": min(limit, PAGE_LIMIT)},
            )
            resp.raise_for_status()
            body = orjson.loads(resp.content)
        except (httpx.HTTPError, orjson.JSONDecodeError) as exc:
            log.warning("history_url read from t=%d failed: %s", from_t, exc)
            return []
        # The producer's bytes, re-encoded by orjson as they were encoded: identical.
        return [EncodedTick.from_stored(orjson.dumps(tick), tick["t"]) for tick in body["data"]]

    async def find_ts(self, ts: float) -> int | None:
        if self._producer_epoch != self._epoch():
            return None
        try:
            resp = await self._client.get(
                f"{self._base}/incremental", params={"from_ts": repr(ts), "limit": 1}
            )
            resp.raise_for_status()
            return int(orjson.loads(resp.content)["from_t"])
        except (httpx.HTTPError, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            log.warning("history_url seek to ts=%r failed: %s", ts, exc)
            return None

    async def refresh(self) -> None:
        """Re-read the producer's epoch and oldest ``t`` (errors leave them unknown)."""
        try:
            resp = await self._client.get(f"{self._base}/health")
            health = orjson.loads(resp.content)
            self._producer_epoch = health["epoch"]
            self._oldest_t = health["oldest_t"]
        except (httpx.HTTPError, orjson.JSONDecodeError, KeyError, TypeError) as exc:
            log.warning("history_url %s unreachable: %s", self._base, exc)
            self._producer_epoch = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Refresh every ``HEALTH_EVERY_S`` until cancelled; closes the HTTP client."""
        task_status.started()
        try:
            while True:
                await self.refresh()
                await trio.sleep(HEALTH_EVERY_S)
        finally:
            with trio.CancelScope(shield=True):
                await self._client.aclose()


class MirrorEpoch:
    """The mirror's current epoch, as a callable (for :class:`ProducerHistory`)."""

    def __init__(self, mirror: MirrorHistory) -> None:
        self._mirror = mirror

    def __call__(self) -> str | None:
        return self._mirror.epoch if self._mirror.ready else None


class Edge:
    """The edge's service and the sink its follower feeds (see the module docstring)."""

    def __init__(self, config: Config) -> None:
        if config.redis_url is None:
            raise ValueError("an edge needs redis_url")
        self.mirror = MirrorHistory(config.ring_size)
        self.producer_history: ProducerHistory | None = None
        if config.history_url is not None:
            self.producer_history = ProducerHistory(config.history_url, MirrorEpoch(self.mirror))
            self.mirror.backfill = self.producer_history
        self.service = Service.create(config, self.mirror)
        self.follower = Follower(
            self, url=config.redis_url, key=config.redis_key, backlog=config.ring_size
        )
        self.service.metrics.bind(self.statistics)

    def statistics(self) -> ServiceStatistics:
        st = self.follower.statistics()
        base = self.service.statistics()
        extra = (
            ("tickcast_redis_connected", "1 while the edge reads the stream.", float(st.connected)),
            ("tickcast_redis_gaps", "Holes in the stream this edge saw.", float(st.gaps)),
        )
        return ServiceStatistics(base.history, base.hub, base.limits, base.traffic, extra)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Follow the stream (and refresh the producer's history range) until cancelled."""
        async with trio.open_nursery() as nursery:
            if self.producer_history is not None:
                await nursery.start(self.producer_history.run)
            await nursery.start(self.follower.run)
            task_status.started()

    # -- TickSink ---------------------------------------------------------------------

    async def on_epoch(self, epoch: str) -> None:
        mirror = self.mirror
        if not mirror.ready:
            log.info("edge: following epoch %s", epoch)
        elif epoch != mirror.epoch:
            log.warning("edge: epoch %s -> %s: closing every client (4009)", mirror.epoch, epoch)
            self.service.hub.reset_all()
        else:
            return
        mirror.reset(epoch)
        if self.producer_history is not None:
            await self.producer_history.refresh()

    async def on_ticks(self, ticks: list[EncodedTick]) -> None:
        mirror, publish = self.mirror, self.service.publish
        for tick in ticks:
            mirror.publish(tick)
            publish(tick)
        mirror.wake()

    async def on_gap(self, expected_t: int, got_t: int) -> None:
        if self.mirror.latest_t == expected_t - 1 and await self._fill(expected_t, got_t):
            return
        log.warning(
            "edge: ticks %d..%d are lost to this edge: 4008 to every client", expected_t, got_t - 1
        )
        self.service.hub.evict_all()
        self.mirror.restart_at(got_t)

    async def _fill(self, expected_t: int, got_t: int) -> bool:
        """Publish ``expected_t .. got_t - 1`` from the producer's history, if it has them."""
        if self.producer_history is None:
            return False
        t = expected_t
        while t < got_t:
            ticks = await self.producer_history.read(t, got_t - t)
            if not ticks or ticks[0].t != t:
                return False
            await self.on_ticks(ticks)
            t = ticks[-1].t + 1
        log.info("edge: filled ticks %d..%d from history_url", expected_t, got_t - 1)
        return True

    async def on_state(self, connected: bool) -> None:
        if connected:
            self.service.recover("redis")
        else:
            self.service.fail("redis", "cannot read the stream")
