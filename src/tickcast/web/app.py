"""The Quart-Trio app: routes only (SPEC §4), plus ``/ws/stream`` over ASGI.

The app owns no tasks: the service (history, hub, source, writer) lives in the
nursery of ``server.py`` or of the ASGI lifespan (``asgi.py``), and is attached
with :func:`attach`. Every error response is JSON ``{"error", "detail"}``.

``/ws/stream`` here is the portable transport for a stock ``hypercorn`` deployment:
a bounded trio memory channel per connection, fed by the hub with ``send_nowait``
and drained by the connection's task. ``tickcast serve`` answers ``/ws/stream`` on
its raw fast path instead (``wsraw``); both speak the same protocol (``stream``).
"""

from __future__ import annotations

import hmac
import logging
from importlib import resources
from typing import Any

import msgspec
import orjson
import trio
from quart import Quart, Response, request, websocket
from quart_schema import QuartSchema, document_querystring, document_response
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from tickcast import __version__
from tickcast.errors import CorruptRecordError, ProtocolError
from tickcast.metrics import CONTENT_TYPE
from tickcast.service import Service
from tickcast.sources.ingest import MAX_INGEST_BYTES, build_tick
from tickcast.tick import EncodedTick
from tickcast.transports.session import (
    MAX_CLIENT_MESSAGE,
    BadParam,
    SlowConsumer,
    StreamParams,
    StreamSession,
    client_reply,
    fields_param,
    int_param,
    parse_stream_params,
    too_big,
)

__all__ = ["attach", "create_app"]

log = logging.getLogger("tickcast.app")

SERVICE_KEY = "TICKCAST_SERVICE"
MAX_LIMIT = 10_000
ASGI_QUEUE = 64  # ticks buffered per ASGI connection before it falls back to catch-up


# -- documentation models (OpenAPI only; the handlers build their JSON directly) -------


class IncrementalQuery(msgspec.Struct):
    from_t: int = 0
    limit: int = 1000
    fields: str | None = None


class IncrementalResponse(msgspec.Struct):
    from_t: int
    count: int
    latest_t: int | None
    next_t: int
    data: list[dict[str, Any]]


class HealthResponse(msgspec.Struct):
    status: str
    epoch: str
    oldest_t: int | None
    latest_t: int | None
    clients: int
    uptime_s: float
    reasons: list[str] = []


class ErrorResponse(msgspec.Struct):
    error: str
    detail: str


# -- helpers ------------------------------------------------------------------------------


def error_response(status: int, error: str, detail: str) -> Response:
    body = msgspec.json.encode({"error": error, "detail": detail})
    return Response(body, status=status, content_type="application/json")


def _service(app: Quart) -> Service:
    service = app.config.get(SERVICE_KEY)
    if service is None:
        raise _Unavailable
    assert isinstance(service, Service)
    return service


class _Unavailable(Exception):
    pass


def attach(app: Quart, service: Service | None) -> None:
    """Give the app its running service (None detaches it)."""
    app.config[SERVICE_KEY] = service


# -- the app --------------------------------------------------------------------------------


def create_app() -> QuartTrio:
    """The Quart-Trio app with every route; attach a service before serving."""
    app = QuartTrio("tickcast")
    app.config["QUART_SCHEMA_CONVERSION_PREFERENCE"] = "msgspec"
    QuartSchema(
        app,
        info={"title": "tickcast", "version": __version__},
        swagger_ui_path=None,
        redoc_ui_path=None,
        scalar_ui_path=None,
        conversion_preference="msgspec",
    )

    @app.errorhandler(BadParam)
    async def bad_param(exc: BadParam) -> Response:
        return error_response(400, "bad_request", str(exc))

    @app.errorhandler(_Unavailable)
    async def unavailable(exc: _Unavailable) -> Response:
        return error_response(503, "unavailable", "the service is starting or stopping")

    @app.errorhandler(CorruptRecordError)
    async def corrupt(exc: CorruptRecordError) -> Response:
        return error_response(500, "corrupt_record", str(exc))

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        name = (exc.name or "error").lower().replace(" ", "_")
        return error_response(exc.code or 500, name, exc.description or name)

    @app.errorhandler(Exception)
    async def internal(exc: Exception) -> Response:
        log.exception("unhandled error in %s", request.path)
        return error_response(500, "internal", f"{type(exc).__name__}")

    @app.get("/health")
    @document_response(HealthResponse, 200)
    @document_response(HealthResponse, 503)
    async def health() -> Response:
        """Liveness and the range of history; 503 when the source or writer failed."""
        service = _service(app)
        history = service.history
        ok, reasons = service.health()
        body: dict[str, Any] = {
            "status": "ok" if ok else "degraded",
            "epoch": history.epoch,
            "oldest_t": history.oldest_t,
            "latest_t": history.latest_t,
            "clients": service.limits.total,
            "uptime_s": round(service.uptime_s, 3),
        }
        if not ok:
            body["reason"] = "; ".join(reasons)
            body["reasons"] = reasons
        return Response(
            msgspec.json.encode(body), status=200 if ok else 503, content_type="application/json"
        )

    @app.get("/incremental")
    @document_querystring(IncrementalQuery)
    @document_response(IncrementalResponse, 200)
    @document_response(ErrorResponse, 400)
    async def incremental() -> Response:
        """Up to ``limit`` (max 10000) consecutive ticks from ``max(from_t, oldest_t)``."""
        from_t = int_param(request.args, "from_t", 0, None)
        from_t = 0 if from_t is None else from_t
        limit = int_param(request.args, "limit", 1, None)
        limit = 1000 if limit is None else min(limit, MAX_LIMIT)
        fields = fields_param(request.args)
        service = _service(app)
        history = service.history
        latest = history.latest_t
        ticks = await history.read(from_t, limit, upto=latest)
        oldest = history.oldest_t
        start = ticks[0].t if ticks else max(from_t, oldest if oldest is not None else 0)
        head = msgspec.json.encode(
            {"from_t": start, "count": len(ticks), "latest_t": latest, "next_t": start + len(ticks)}
        )
        body = head[:-1] + b',"data":[' + b",".join(t.view(fields) for t in ticks) + b"]}"
        return Response(body, content_type="application/json")

    @app.get("/metrics")
    async def metrics() -> Response:
        """Prometheus text exposition."""
        return Response(_service(app).metrics.render(), content_type=CONTENT_TYPE)

    @app.get("/")
    async def dashboard() -> Response:
        """The live dashboard."""
        page = resources.files("tickcast").joinpath("web/static/dashboard.html").read_bytes()
        return Response(page, content_type="text/html; charset=utf-8")

    @app.get("/docs")
    async def docs() -> Response:
        """A readable page of the OpenAPI description (no CDN needed)."""
        page = resources.files("tickcast").joinpath("web/static/docs.html").read_bytes()
        return Response(page, content_type="text/html; charset=utf-8")

    @app.websocket("/ws/stream")
    async def stream() -> Response | None:
        service = _service(app)
        try:
            params = parse_stream_params(websocket.args)
        except BadParam as exc:
            return error_response(400, "bad_request", str(exc))
        peer = websocket.remote_addr or ""
        ip = service.limits.client_ip(peer, websocket.headers.get("x-forwarded-for"))
        refusal = service.limits.acquire(ip)
        if refusal is not None:
            return error_response(429, "too_many_connections", refusal)
        session = AsgiSession(service, params, ip=ip)
        try:
            await websocket.accept()
            await session.serve()
        finally:
            session.release()
        return None

    numbering = trio.Lock()  # one ingest request at a time assigns t: t stays consecutive

    @app.post("/ingest")
    async def ingest() -> Response:
        """Append ticks from an external simulation (bearer token; ``--source ingest``)."""
        service = _service(app)
        config = service.config
        if config.source != "ingest" or not config.ingest_token:
            detail = "this server's source is the built-in simulator"
            return error_response(409, "not_ingest", detail)
        auth = request.headers.get("authorization", "")
        expected = f"Bearer {config.ingest_token}"
        if not hmac.compare_digest(auth.encode(), expected.encode()):
            return error_response(401, "unauthorized", "missing or wrong bearer token")
        body = await request.get_data(cache=False)
        if len(body) > MAX_INGEST_BYTES:
            return error_response(413, "too_large", f"body over {MAX_INGEST_BYTES} bytes")
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            return error_response(400, "bad_request", "body is not JSON")
        items = payload if isinstance(payload, list) else [payload]
        history = service.history
        async with numbering:
            t0 = history.next_t
            try:
                ticks = [build_tick(t0 + i, c) for i, c in enumerate(items)]
            except ValueError as exc:
                return error_response(400, "bad_request", str(exc))
            for tick in ticks:
                await service.produce(EncodedTick.from_dict(tick))
            if ticks:  # answer once they are written and published
                await service.wait_for_t(ticks[-1]["t"])
        out = {"accepted": len(ticks), "first_t": t0, "latest_t": history.latest_t}
        return Response(msgspec.json.encode(out), content_type="application/json")

    return app


class AsgiSession(StreamSession):
    """A stream session over Quart's websocket object (memory channel per client)."""

    def __init__(self, service: Service, params: StreamParams, *, ip: str) -> None:
        super().__init__(service, params, ip=ip)
        self._send, self._receive = trio.open_memory_channel[EncodedTick](ASGI_QUEUE)
        self._scope = trio.CancelScope()
        self._heartbeat_s = service.config.heartbeat_s

    async def send_message(self, payload: bytes) -> None:
        await websocket.send(payload.decode())
        self.service.metrics.messages_sent += 1
        self.service.metrics.bytes_sent += len(payload)

    def deliver(self, tick: EncodedTick) -> bool:
        try:
            self._send.send_nowait(tick)
        except trio.WouldBlock:
            return False
        self.next_t = tick.t + 1
        return True

    def evict(self) -> None:
        self.evicted = True
        self.release()
        self._scope.cancel()

    async def live_phase(self) -> None:
        next_heartbeat = trio.current_time() + self._heartbeat_s
        while True:
            first: EncodedTick | None
            try:
                first = self._receive.receive_nowait()
            except trio.WouldBlock:
                if not self.live:
                    return
                first = None
                with trio.move_on_at(next_heartbeat):
                    first = await self._receive.receive()
                if first is None:
                    next_heartbeat = trio.current_time() + self._heartbeat_s
                    await self.send_message(self.heartbeat())
                    continue
            group = [first]
            while len(group) < self.params.batch:
                try:
                    group.append(self._receive.receive_nowait())
                except trio.WouldBlock:
                    break
            await self.send_ticks(group)

    async def _reader(self) -> None:
        while True:
            data = await websocket.receive()
            size = len(data.encode()) if isinstance(data, str) else len(data)
            if size > MAX_CLIENT_MESSAGE:
                raise too_big(size)
            await self.send_message(client_reply(data))

    async def serve(self) -> None:
        end: BaseException | None = None
        try:
            with self._scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._reader)
                    await self.run()
        except* (SlowConsumer, ProtocolError, CorruptRecordError) as group:
            end = group.exceptions[0]
        except* Exception as group:  # a bug or a store failure: 1011, logged
            log.exception("stream session for %s failed", self.ip, exc_info=group)
            end = group.exceptions[0]
        code, reason = self.close_reason(end)
        if end is not None or self.evicted:
            await websocket.close(code, reason)
