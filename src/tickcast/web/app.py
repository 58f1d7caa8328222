"""The Quart-Trio app: routes only (SPEC §4), plus ``/ws/stream`` over ASGI.

The app owns no tasks: the service (history, hub, source, writer) lives in the
nursery of ``server.py`` or of the ASGI lifespan (``asgi.py``), and is attached
with :func:`attach`. Every error response is JSON ``{"error", "detail"}``.

``/ws/stream`` here is the portable transport for a stock ``hypercorn`` deployment
(``transports.asgi``); ``tickcast serve`` answers it on its raw fast path instead
(``transports.raw``). Both admit connections through ``transports.intake`` and
speak the same protocol (``transports.session``).
"""

from __future__ import annotations

import hmac
import logging
from importlib import resources
from typing import Annotated, Any

import msgspec
import orjson
import trio
from msgspec import UNSET, Meta, UnsetType
from quart import Quart, Response, request, websocket
from quart_schema import document_querystring, document_response, security_scheme
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from tickcast.errors import CorruptRecordError, StoreError, error_body
from tickcast.metrics import CONTENT_TYPE
from tickcast.producer import Producer
from tickcast.service import Service
from tickcast.sources.ingest import MAX_INGEST_BYTES, build_tick
from tickcast.tick import EncodedTick
from tickcast.transports.asgi import AsgiSession
from tickcast.transports.heartbeats import Heartbeats, service_heartbeats
from tickcast.transports.intake import Refusal, admit, authorize
from tickcast.transports.params import BadParam, fields_param, int_param, start_params
from tickcast.web import apidocs, export, keepalive, openapi, schemas
from tickcast.web.openapi import INGEST_ACCESS, READ_ACCESS, answers, json_body, page

__all__ = ["attach", "create_app"]

log = logging.getLogger("tickcast.app")

SERVICE_KEY = "TICKCAST_SERVICE"
PRODUCER_KEY = "TICKCAST_PRODUCER"
BEATS_KEY = "TICKCAST_HEARTBEATS"  # the stream sessions' heartbeat timer, once started
MAX_LIMIT = 10_000


# -- documentation models (OpenAPI only; the handlers build their JSON directly) -------


class IncrementalQuery(msgspec.Struct):
    from_t: Annotated[
        int,
        Meta(
            ge=0,
            description="The first t wanted; the page starts at max(from_t, oldest_t).",
        ),
    ] = 0
    from_ts: schemas.FromTs | UnsetType = UNSET
    limit: Annotated[
        int,
        Meta(
            ge=1,
            description=f"Ticks per page; over {MAX_LIMIT} is capped at {MAX_LIMIT} (no error).",
        ),
    ] = 1000
    fields: schemas.Fields | UnsetType = UNSET


class IncrementalResponse(msgspec.Struct):
    """Up to `limit` consecutive ticks (`count: 0` past `latest_t`)."""

    from_t: Annotated[int, Meta(ge=0, description="t of the first tick in data")]
    count: Annotated[int, Meta(ge=0, le=MAX_LIMIT)]
    latest_t: Annotated[int, Meta(ge=0)] | None
    next_t: Annotated[int, Meta(ge=0, description="from_t + count: the from_t of the next page")]
    data: list[schemas.Tick]


class HealthResponse(msgspec.Struct):
    """Liveness and the range of history (`degraded` with reasons on 503)."""

    status: Annotated[str, Meta(pattern="^(ok|degraded)$")]
    epoch: str
    oldest_t: Annotated[int, Meta(ge=0)] | None
    latest_t: Annotated[int, Meta(ge=0)] | None
    clients: Annotated[int, Meta(ge=0)]
    uptime_s: float
    reason: str | UnsetType = UNSET  # degraded only
    reasons: list[str] | UnsetType = UNSET  # degraded only


class IngestResponse(msgspec.Struct):
    """The ticks were written and published."""

    accepted: Annotated[int, Meta(ge=0)]
    first_t: Annotated[int, Meta(ge=0)]
    latest_t: Annotated[int, Meta(ge=0)] | None


# -- helpers ------------------------------------------------------------------------------


def error_response(status: int, error: str, detail: str) -> Response:
    return Response(error_body(error, detail), status=status, content_type="application/json")


def _service(app: Quart) -> Service:
    service = app.config.get(SERVICE_KEY)
    if service is None:
        raise _Unavailable
    assert isinstance(service, Service)
    return service


class _Unavailable(Exception):
    pass


def _authorize(service: Service) -> None:
    """The read token check of the HTTP routes that need it (raises :class:`Refusal`)."""
    auth = request.headers.get("authorization")
    authorize(service.config.read_token, request.args, authorization=auth)


def attach(app: Quart, service: Service | None, *, producer: Producer | None = None) -> None:
    """Give the app its running service (None detaches it).

    ``producer`` is the service's producer role, if it has one (``POST /ingest``).
    """
    app.config[SERVICE_KEY] = service
    app.config[PRODUCER_KEY] = producer
    app.config[BEATS_KEY] = None


def _heartbeats(app: QuartTrio, service: Service) -> Heartbeats:
    """The one heartbeat timer of the app's stream sessions, started on first use.

    It runs in ``app.nursery`` (open while the app is served) and ends with it.
    """
    beats = app.config.get(BEATS_KEY)
    if beats is None:
        beats = app.config[BEATS_KEY] = service_heartbeats(service)
        app.nursery.start_soon(beats.run)
    assert isinstance(beats, Heartbeats)
    return beats


# -- the app --------------------------------------------------------------------------------


def create_app() -> QuartTrio:
    """The Quart-Trio app with every route; attach a service before serving."""
    app = QuartTrio("tickcast")
    openapi.install(app)
    keepalive.install(app)
    app.register_blueprint(apidocs.blueprint)
    export.install(app, lambda: _service(app))  # GET /export (web/export.py)

    @app.errorhandler(BadParam)
    async def bad_param(exc: BadParam) -> Response:
        return error_response(400, "bad_request", str(exc))

    @app.errorhandler(Refusal)
    async def refused(exc: Refusal) -> Response:
        response = error_response(exc.status, exc.error, exc.detail)
        response.headers.update(exc.headers())
        return response

    @app.errorhandler(_Unavailable)
    async def unavailable(exc: _Unavailable) -> Response:
        return error_response(503, "unavailable", "the service is starting or stopping")

    @app.errorhandler(CorruptRecordError)
    async def corrupt(exc: CorruptRecordError) -> Response:
        return error_response(500, "corrupt_record", str(exc))

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        name = (exc.name or "error").lower().replace(" ", "_")
        response = error_response(exc.code or 500, name, exc.description or name)
        # Keep what the exception says in headers: a 405's Allow (RFC 9110 §15.5.6).
        for key, value in exc.get_headers():
            if key.lower() != "content-type":
                response.headers[key] = value
        return response

    @app.errorhandler(Exception)
    async def internal(exc: Exception) -> Response:
        log.exception("unhandled error in %s", request.path)
        return error_response(500, "internal", f"{type(exc).__name__}")

    @app.get("/health")
    @document_response(HealthResponse, 200)
    @document_response(HealthResponse, 503)
    @answers(503)
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
    @answers(400, 401, 503)
    @security_scheme(READ_ACCESS)
    async def incremental() -> Response:
        """Up to ``limit`` (max 10000) consecutive ticks from ``max(from_t, oldest_t)``.

        With ``from_ts`` instead of ``from_t``: from the first tick whose ``ts >= from_ts``.
        """
        service = _service(app)
        _authorize(service)
        from_t, from_ts = start_params(request.args)
        limit = int_param(request.args, "limit", 1, None)
        limit = 1000 if limit is None else min(limit, MAX_LIMIT)
        fields = fields_param(request.args)
        history = service.history
        if from_ts is not None:
            from_t = await history.find_ts(from_ts)
        from_t = 0 if from_t is None else from_t
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
    @page("text/plain", description="Prometheus text exposition (format 0.0.4).")
    @answers(503)
    async def metrics() -> Response:
        """Prometheus text exposition."""
        return Response(_service(app).metrics.render(), content_type=CONTENT_TYPE)

    @app.get("/")
    @page("text/html", description="The dashboard page.")
    @answers(401)
    @security_scheme(READ_ACCESS)
    async def dashboard() -> Response:
        """The live dashboard."""
        _authorize(_service(app))
        body = resources.files("tickcast").joinpath("web/static/dashboard.html").read_bytes()
        return Response(body, content_type="text/html; charset=utf-8")

    @app.websocket("/ws/stream")
    async def stream() -> Response | None:
        service = _service(app)
        try:
            admission = admit(
                service.limits,
                websocket.args,
                peer=websocket.remote_addr or "",
                forwarded_for=websocket.headers.get("x-forwarded-for"),
                read_token=service.config.read_token,
                authorization=websocket.headers.get("authorization"),
                unavailable=service.unavailable(),
            )
        except Refusal as refused:
            response = error_response(refused.status, refused.error, refused.detail)
            response.headers.update(refused.headers())
            return response
        beats = _heartbeats(app, service)
        session = AsgiSession(service, admission.params, ip=admission.ip, beats=beats)
        try:
            await websocket.accept()
        except BaseException:
            session.release()
            raise
        await session.serve()  # releases the slot itself
        return None

    numbering = trio.Lock()  # one ingest request at a time assigns t: t stays consecutive

    @app.post("/ingest")
    @json_body(schemas.TickContent | list[schemas.TickContent], "One tick's content, or a list.")
    @document_response(IngestResponse, 200)
    @answers(400, 401, 409, 413, 503)
    @security_scheme(INGEST_ACCESS)
    async def ingest() -> Response:
        """Append ticks from an external simulation (bearer token; ``--source ingest``)."""
        service = _service(app)
        config = service.config
        producer = app.config.get(PRODUCER_KEY)
        if config.source != "ingest" or not config.ingest_token or producer is None:
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
        log_ = producer.log
        async with numbering:
            t0 = log_.next_t
            try:
                ticks = [build_tick(t0 + i, c) for i, c in enumerate(items)]
            except ValueError as exc:
                return error_response(400, "bad_request", str(exc))
            try:
                for tick in ticks:
                    await producer.produce(EncodedTick.from_dict(tick))
                    await trio.lowlevel.checkpoint()  # produce() may not yield: a long list
                if ticks:  # answer once they are written and published
                    await service.wait_for_t(ticks[-1]["t"])
            except StoreError as exc:
                return error_response(503, "unavailable", str(exc))
        out = {"accepted": len(ticks), "first_t": t0, "latest_t": service.history.latest_t}
        return Response(msgspec.json.encode(out), content_type="application/json")

    return app
