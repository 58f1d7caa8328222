"""The edge role (docs/scale-out.md): no source and no segment files, the producer's ticks
read from a Redis stream and served to this process's own clients.

::

    Follower (XREAD) ──on_ticks──▶ Edge ──▶ MirrorHistory (ring) ──▶ Service.publish (hub)
                     ──on_epoch──▶ new epoch: every client closed 4009, the ring reset;
                                   a protected producer and no read_token: stop (ConfigError)
                     ──on_gap────▶ fill the hole from history_url, else 4008 to every client
                     ──on_state──▶ /health 503 "degraded" while the stream cannot be read

Clients stay connected while Redis is away (heartbeats go on) and continue
gap-free when it returns: the follower re-reads from the last tick it delivered.
A hole it cannot fill is never passed over silently: the clients that needed
the lost ticks are closed with 4008 naming the ``from_t`` to resume with, and a
resume before the edge's oldest tick gets ``truncated`` in its hello.

Read access: a producer with a ``read_token`` records it in the stream's epochs
entries, and an edge without a ``read_token`` of its own refuses to serve that
stream (it stops with a :class:`~tickcast.errors.ConfigError` naming the setting).
The edge presents ``history_token`` (default: its ``read_token``) to
``history_url``; a 401/403 there is logged as an error and makes ``/health``
503 ``degraded`` naming ``history_token``, and the producer's older ticks are
not offered (a resume before the ring then gets ``truncated``, not a 4008 loop).

Invariants:

* the mirror and the hub see the same ticks in the same order: :meth:`Edge.on_ticks`
  appends each tick to the mirror and publishes it before taking the next, so a
  client that joins between two ticks finds in the ring every tick the hub has sent;
* ticks from the producer's ``/incremental`` are offered only while the producer's
  epoch (re-read every ``HEALTH_EVERY_S``) is the edge's: older ``t`` values of
  another epoch name other ticks, and serving them would break a resume silently;
* the follower awaits every sink call in turn (``scaleout/follower.py``), so the
  ``on_*`` methods never run concurrently with each other.

Cancellation: :meth:`Edge.run` owns the follower and the history refresher; cancelling
it stops both and closes the HTTP client (shielded, so the sockets are not leaked).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import httpx
import orjson
import trio

from tickcast.config import Config
from tickcast.errors import ConfigError
from tickcast.metrics import ServiceStatistics
from tickcast.scaleout import Follower
from tickcast.service import Service
from tickcast.storage.mirror import MirrorHistory
from tickcast.tick import EncodedTick
from tickcast.wire import PAGE_LIMIT

__all__ = ["Edge", "ProducerHistory"]

log = logging.getLogger("tickcast.edge")

HEALTH_EVERY_S = 5.0  # how often the producer's oldest_t and epoch are re-read
# Per request to history_url (connect, read, write and pool each): a producer that
# hangs costs a reader at most this, then the edge answers from its ring alone.
HTTP_TIMEOUT_S = 10.0
# Why the edge stops rather than serving: the operator protected the producer, and an
# open edge would undo that. Names the setting to change, as every start-up error does.
UNPROTECTED_EDGE = (
    "setting 'read_token': the producer requires a read token (its Redis stream says so), "
    "and this edge has none, so it would serve the feed openly: set read_token"
)


class ProducerHistory:
    """Ticks older than the edge's ring, read from the producer's ``/incremental``.

    Only for the edge's epoch: :meth:`run` re-reads the producer's ``/health``
    every ``HEALTH_EVERY_S`` and offers nothing while the epochs differ. Every
    request carries ``token`` (``history_token``) as ``Authorization: Bearer``.
    A 401/403 (to a read, or to the probe each refresh makes) is handed to
    ``report`` with a reason naming ``history_token``, once, and nothing is
    offered until an answer succeeds again (then ``report(None)``).

    It is the mirror's :class:`~tickcast.storage.mirror.Backfill`: every failure
    (network, timeout, HTTP error, a body that is not JSON) is logged and answered
    as "unavailable" (``[]`` or None), never raised, so a producer that is down
    makes a resume before the ring ``truncated`` instead of failing the stream.
    """

    def __init__(
        self,
        base_url: str,
        mirror: MirrorHistory,
        *,
        token: str | None = None,
        report: Callable[[str | None], None] | None = None,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._mirror = mirror  # its epoch is "" until known: never the producer's
        self._oldest_t: int | None = None
        self._producer_epoch: str | None = None
        self._token_sent = token is not None
        self._report = report
        self.refused: str | None = None  # why history_url refuses us, None while it does not
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        self._client = httpx.AsyncClient(timeout=HTTP_TIMEOUT_S, headers=headers)

    @property
    def _usable(self) -> bool:
        # Both: the producer takes our token, and its epoch (from the last refresh)
        # is the one the mirror serves.
        return self.refused is None and self._producer_epoch == self._mirror.epoch

    @property
    def oldest_t(self) -> int | None:
        """The producer's oldest ``t`` as of the last refresh; None while not usable.

        Stale by up to ``HEALTH_EVERY_S``: retention may have removed a few more
        ticks since, which a read then simply does not return.
        """
        return self._oldest_t if self._usable else None

    def _check_access(self, resp: httpx.Response) -> None:
        """Note whether ``history_url`` takes our token (401/403: it does not)."""
        if resp.status_code in (401, 403):
            if self.refused is None:
                status, fix = resp.status_code, "set history_token (default: the edge's read_token)"
                self.refused = (
                    f"history_url {self._base} refused history_token with HTTP {status}: "
                    f"{fix} to a read token the producer accepts"
                    if self._token_sent
                    else f"history_url {self._base} requires a read token (HTTP {status}) "
                    f"and none is sent: {fix}"
                )
                if self._report is not None:
                    self._report(self.refused)
        elif resp.is_success and self.refused is not None:
            self.refused = None
            if self._report is not None:
                self._report(None)

    async def read(self, from_t: int, limit: int) -> list[EncodedTick]:
        """Up to ``limit`` ticks from ``from_t`` (one page, at most ``PAGE_LIMIT``).

        One request, bounded by ``HTTP_TIMEOUT_S``; the caller pages. Cancellation
        abandons the request. Failures are logged and give ``[]``.
        """
        if self._producer_epoch != self._mirror.epoch:
            return []
        try:
            resp = await self._client.get(
                f"{self._base}/incremental",
                params={"from_t": from_t, "limit": min(limit, PAGE_LIMIT)},
            )
            self._check_access(resp)
            resp.raise_for_status()
            body = orjson.loads(resp.content)
        except (httpx.HTTPError, orjson.JSONDecodeError) as exc:
            log.warning("history_url read from t=%d failed: %s", from_t, exc)
            return []
        # The producer's bytes, re-encoded by orjson as they were encoded: identical.
        return [EncodedTick.from_stored(orjson.dumps(tick), tick["t"]) for tick in body["data"]]

    async def find_ts(self, ts: float) -> int | None:
        """The producer's first ``t`` with ``ts`` at or after ``ts``; None: unavailable.

        Asks ``/incremental?from_ts=`` for one tick and reads the ``from_t`` it
        answers with, so the producer's own seek (over its segments) decides.
        ``repr(ts)`` keeps every digit of the float.
        """
        if not self._usable:
            return None
        try:
            resp = await self._client.get(
                f"{self._base}/incremental", params={"from_ts": repr(ts), "limit": 1}
            )
            self._check_access(resp)
            resp.raise_for_status()
            return int(orjson.loads(resp.content)["from_t"])
        except (httpx.HTTPError, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            log.warning("history_url seek to ts=%r failed: %s", ts, exc)
            return None

    async def refresh(self) -> None:
        """Re-read the producer's epoch and oldest ``t`` (errors leave them unknown), and
        probe whether it takes our token (one tick of ``/incremental``).

        ``/health`` is open even on a protected producer, so the probe is what tells
        a wrong ``history_token`` apart from a producer that is down. Never raises
        for a network or decoding error: it logs and leaves the epoch unknown,
        which stops the offering until the next refresh succeeds.
        """
        try:
            resp = await self._client.get(f"{self._base}/health")
            health = orjson.loads(resp.content)
            self._producer_epoch = health["epoch"]
            self._oldest_t = health["oldest_t"]
            probe = await self._client.get(
                f"{self._base}/incremental", params={"from_t": self._oldest_t or 0, "limit": 1}
            )
            self._check_access(probe)
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


class Edge:
    """The edge's service and the sink its follower feeds (see the module docstring).

    Implements the follower's ``TickSink`` (``scaleout/follower.py``). Built once per
    process by the assembly (``assembly.py``); :meth:`run` is started in the
    service's nursery and the routes serve ``service`` exactly as on a producer.

    Raises:
        ValueError: ``config.redis_url`` is None (the assembly only builds an edge
            with one, so this is a programming error, not a setting error).
    """

    def __init__(self, config: Config) -> None:
        if config.redis_url is None:
            raise ValueError("an edge needs redis_url")
        self.config = config
        self.mirror = MirrorHistory(config.ring_size)
        self.producer_history: ProducerHistory | None = None
        if config.history_url is not None:
            token = config.history_token if config.history_token is not None else config.read_token
            self.producer_history = ProducerHistory(
                config.history_url, self.mirror, token=token, report=self._refused
            )
            self.mirror.backfill = self.producer_history
        self.service = Service.create(config, self.mirror)
        self.service.waiting = "waiting for the producer's stream"  # until on_epoch
        self.follower = Follower(
            self, url=config.redis_url, key=config.redis_key, backlog=config.ring_size
        )
        self.service.metrics.bind(self.statistics)

    def statistics(self) -> ServiceStatistics:
        """The service's counters plus the edge's own gauges (Redis link, gaps seen)."""
        st = self.follower.statistics()
        base = self.service.statistics()
        extra = (
            ("tickcast_redis_connected", "1 while the edge reads the stream.", float(st.connected)),
            ("tickcast_redis_gaps", "Holes in the stream this edge saw.", float(st.gaps)),
        )
        return ServiceStatistics(base.history, base.hub, base.limits, base.traffic, extra)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Follow the stream (and refresh the producer's history range) until cancelled.

        Reports started once both are running. A ``ConfigError`` from
        :meth:`on_epoch` (an unprotected edge of a protected producer) propagates
        out of the nursery: the edge stops rather than serve the feed openly.
        """
        async with trio.open_nursery() as nursery:
            if self.producer_history is not None:
                await nursery.start(self.producer_history.run)
            await nursery.start(self.follower.run)
            task_status.started()

    def _refused(self, reason: str | None) -> None:
        """``history_url`` refuses our token (``reason``), or takes it again (None)."""
        if reason is None:
            self.service.recover("history_url")
        else:
            self.service.fail("history_url", reason)  # logged as an error, shown in /health

    # -- TickSink ---------------------------------------------------------------------

    async def on_epoch(self, epoch: str, *, protected: bool) -> None:
        """Follow ``epoch``; refuse to serve a protected producer without a read token.

        Raises:
            ConfigError: the producer requires a read token and this edge has no
                ``read_token`` (it would serve the feed openly).
        """
        # Checked at every epoch entry, not only the first: a producer may start
        # requiring a token while edges run.
        if protected and self.config.read_token is None:
            raise ConfigError(UNPROTECTED_EDGE)
        mirror = self.mirror
        if not mirror.ready:
            log.info("edge: following epoch %s", epoch)
        elif epoch != mirror.epoch:
            log.warning("edge: epoch %s -> %s: closing every client (4009)", mirror.epoch, epoch)
            self.service.hub.reset_all()
        else:
            return
        mirror.reset(epoch)
        self.service.waiting = None
        if self.producer_history is not None:
            await self.producer_history.refresh()

    async def on_ticks(self, ticks: list[EncodedTick]) -> None:
        """Append each tick to the mirror and hand it to the hub, then wake waiters.

        Never blocks on a client: the hub's publish does not await (a client that
        cannot keep up falls back to catching up from the ring), so a slow client
        cannot slow the follower. Waiters are woken once per batch, not per tick.
        """
        mirror, publish = self.mirror, self.service.publish
        for tick in ticks:
            mirror.publish(tick)
            publish(tick)
        mirror.wake()

    async def on_gap(self, expected_t: int, got_t: int) -> None:
        """Fill the hole from ``history_url`` if possible, else strand no one silently.

        Filling is tried only when the mirror ends right before the hole (otherwise
        there is nothing consecutive to extend). When it fails, every client is
        closed with 4008 naming its own ``from_t`` and the mirror restarts at
        ``got_t``; a client that resumes before that gets ``truncated``.
        """
        if self.mirror.latest_t == expected_t - 1 and await self._fill(expected_t, got_t):
            return
        log.warning(
            "edge: ticks %d..%d are lost to this edge: 4008 to every client", expected_t, got_t - 1
        )
        self.service.hub.evict_all()
        self.mirror.restart_at(got_t)

    async def _fill(self, expected_t: int, got_t: int) -> bool:
        """Publish ``expected_t .. got_t - 1`` from the producer's history, if it has them.

        Page by page, each published as it arrives (clients get the filled ticks as
        live ticks). Returns False at the first page that is empty or does not
        start where expected; the ticks already published then stay published,
        and :meth:`on_gap` restarts the mirror past them.
        """
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
        """Mark ``/health`` degraded (503, component ``redis``) while Redis is away.

        Clients stay connected meanwhile; the follower resumes from its last tick.
        """
        if connected:
            self.service.recover("redis")
        else:
            self.service.fail("redis", "cannot read the stream")
