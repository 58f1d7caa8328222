"""The Quart-Trio app: routes only (docs/api.md), plus ``/ws/stream`` over ASGI.

The app owns no tasks: the service (history, hub, source, writer) lives in the
nursery of ``assembly.py``, which attaches it (:meth:`TickcastApp.attach`) for
as long as it runs. Routes reach it through one typed accessor,
:meth:`TickcastApp.mounted`, which answers 503 ``unavailable`` while nothing is
attached. Every error response is JSON ``{"error", "detail"}``.

``/ws/stream`` here is the portable transport for a stock ``hypercorn`` deployment
(``transports.asgi``); ``tickcast serve`` answers it on its raw fast path instead
(``transports.raw``). Both admit connections through ``transports.intake`` and
speak the same protocol (``protocol.StreamProtocol``, driven by ``transports.stream``).
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass
from importlib import resources
from typing import Annotated, Any

import msgspec
import orjson
from msgspec import UNSET, Meta, UnsetType
from quart import Response, request, websocket
from quart_schema import document_querystring, document_response, security_scheme
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from tickcast.errors import CorruptRecordError, StoreError, error_body
from tickcast.metrics import CONTENT_TYPE
from tickcast.producer import Producer
from tickcast.service import Service
from tickcast.sources.ingest import MAX_INGEST_BYTES, tick_content
from tickcast.storage.history import range_end
from tickcast.tick import EncodedTick
from tickcast.transports.asgi import AsgiSession
from tickcast.transports.heartbeats import Heartbeats, service_heartbeats
from tickcast.transports.intake import Refusal, admit, authorize
from tickcast.transports.pacing import Pacer
from tickcast.transports.params import PAGE_PARAMS, BadParam, parse_page_params, reject_unknown
from tickcast.transports.params import start_t as page_start
from tickcast.web import apidocs, export, keepalive, openapi, schemas
from tickcast.web.openapi import (
    INGEST_ACCESS,
    READ_ACCESS,
    answers,
    json_body,
    page,
    query_names,
    takes_query,
)
from tickcast.wire import PAGE_LIMIT

__all__ = ["Mount", "TickcastApp", "create_app"]

log = logging.getLogger("tickcast.app")


# -- documentation models (OpenAPI only; the handlers build their JSON directly) -------


class IncrementalQuery(msgspec.Struct):
    from_t: Annotated[
        int,
        Meta(
            ge=0,
            description=(
                "The first t wanted; the page starts at max(from_t, oldest_t). With "
                "`from_ts` too, both bounds apply."
            ),
        ),
    ] = 0
    from_ts: schemas.FromTs | UnsetType = UNSET
    to_t: (
        Annotated[
            int,
            Meta(
                ge=0,
                description=(
                    "The last t wanted (inclusive): the page stops there. Below the "
                    "start: an empty page (`count: 0`)."
                ),
            ),
        ]
        | UnsetType
    ) = UNSET
    to_ts: (
        Annotated[
            float,
            Meta(
                ge=0,
                description=(
                    "The page stops at the last tick with `ts <= to_ts` (unix seconds, inclusive)."
                ),
            ),
        ]
        | UnsetType
    ) = UNSET
    limit: Annotated[
        int,
        Meta(
            ge=1,
            description=f"Ticks per page; over {PAGE_LIMIT} is capped at {PAGE_LIMIT} (no error).",
        ),
    ] = 1000
    fields: schemas.Fields | UnsetType = UNSET


class IncrementalResponse(msgspec.Struct):
    """Up to `limit` consecutive ticks (`count: 0` past `latest_t`)."""

    from_t: Annotated[int, Meta(ge=0, description="t of the first tick in data")]
    count: Annotated[int, Meta(ge=0, le=PAGE_LIMIT)]
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


class _Unavailable(Exception):
    """No service is attached (starting or stopping): 503 ``unavailable``."""


def _authorize(service: Service) -> None:
    """The read token check of the HTTP routes that need it (raises :class:`Refusal`)."""
    auth = request.headers.get("authorization")
    authorize(service.config.read_token, request.args, authorization=auth)


@dataclass(frozen=True, eq=False)
class Mount:
    """What the routes serve: the running service, and its producer if it has one.

    ``producer`` is None on an edge; ``POST /ingest`` appends through it.
    """

    service: Service
    producer: Producer | None = None


class TickcastApp(QuartTrio):
    """The Quart-Trio app, with the one slot the routes find the running service in."""

    def __init__(self) -> None:
        super().__init__("tickcast")
        self._mount: Mount | None = None
        self._beats: Heartbeats | None = None
        self._pacer: Pacer | None = None

    def attach(self, mount: Mount | None) -> None:
        """Serve ``mount`` from now on; None detaches it (routes answer 503)."""
        self._mount = mount
        self._beats = None
        self._pacer = None

    def mounted(self) -> Mount:
        """The attached service (and producer), for a route.

        Raises:
            _Unavailable: nothing is attached (the handler answers 503 ``unavailable``).
        """
        if self._mount is None:
            raise _Unavailable
        return self._mount

    def heartbeats(self) -> Heartbeats:
        """The one heartbeat timer of the app's stream sessions, started on first use.

        It runs in ``app.nursery`` (open while the app is served) and ends with it;
        attaching another service starts a new one.
        """
        if self._beats is None:
            self._beats = service_heartbeats(self.mounted().service)
            self.nursery.start_soon(self._beats.run)
        return self._beats

    def pacer(self) -> Pacer:
        """The one timer of the app's paced replays, started on first use (as
        :meth:`heartbeats`)."""
        if self._pacer is None:
            self._pacer = Pacer()
            self.nursery.start_soon(self._pacer.run)
        return self._pacer


# -- the app --------------------------------------------------------------------------------


def create_app() -> TickcastApp:
    """The Quart-Trio app with every route; attach a service before serving."""
    app = TickcastApp()
    openapi.install(app)
    keepalive.install(app)
    app.register_blueprint(apidocs.blueprint)
    export.install(app, lambda: app.mounted().service)  # GET /export (web/export.py)

    @app.before_request
    async def known_query() -> None:
        """Refuse a query parameter the route does not take (400 naming it)."""
        if request.routing_exception is None and request.endpoint is not None:
            reject_unknown(request.args, query_names(app.view_functions[request.endpoint]))

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
        service = app.mounted().service
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
    @takes_query(*PAGE_PARAMS)
    async def incremental() -> Response:
        """Up to ``limit`` consecutive ticks (capped) from ``max(from_t, oldest_t)``.

        With ``from_ts``: from the first tick whose ``ts >= from_ts`` (with ``from_t``
        too, the first that meets both). The page stops at ``to_t`` and at the last
        tick whose ``ts <= to_ts`` (both inclusive).
        """
        service = app.mounted().service
        _authorize(service)
        query = parse_page_params(request.args)
        limit = 1000 if query.limit is None else min(query.limit, PAGE_LIMIT)
        history = service.history
        seek = None if query.from_ts is None else await history.find_ts(query.from_ts)
        from_t = page_start(query.from_t, seek) or 0
        latest = history.latest_t
        upto = await range_end(history, query.to_t, query.to_ts)
        fields = query.fields
        ticks = await history.read(from_t, limit, upto=upto)
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
        return Response(app.mounted().service.metrics.render(), content_type=CONTENT_TYPE)

    @app.get("/")
    @page("text/html", description="The dashboard page.")
    @answers(401)
    @security_scheme(READ_ACCESS)
    @takes_query("token")
    async def dashboard() -> Response:
        """The live dashboard."""
        _authorize(app.mounted().service)
        body = resources.files("tickcast").joinpath("web/static/dashboard.html").read_bytes()
        return Response(body, content_type="text/html; charset=utf-8")

    favicon = resources.files("tickcast").joinpath("web/static/favicon.ico").read_bytes()

    @app.get("/favicon.ico")
    @page("image/x-icon", description="The dashboard's icon (served from the package).")
    async def icon() -> Response:
        """The icon browsers ask for."""
        response = Response(favicon, content_type="image/x-icon")
        response.cache_control.public = True
        response.cache_control.max_age = 86400
        return response

    @app.websocket("/ws/stream")
    async def stream() -> Response | None:
        service = app.mounted().service
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
        beats = app.heartbeats()
        session = AsgiSession(
            service, admission.params, ip=admission.ip, beats=beats, pacer=app.pacer()
        )
        try:
            await websocket.accept()
        except BaseException:
            session.release()
            raise
        await session.serve()  # releases the slot itself
        return None

    @app.post("/ingest")
    @json_body(schemas.TickContent | list[schemas.TickContent], "One tick's content, or a list.")
    @document_response(IngestResponse, 200)
    @answers(400, 401, 409, 413, 503)
    @security_scheme(INGEST_ACCESS)
    async def ingest() -> Response:
        """Append ticks from an external simulation (bearer token; ``--source ingest``)."""
        mount = app.mounted()
        service, producer, config = mount.service, mount.producer, mount.service.config
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
        try:
            contents = [tick_content(c) for c in items]  # all checked before any is numbered
        except ValueError as exc:
            return error_response(400, "bad_request", str(exc))
        ticks: list[EncodedTick] = []
        try:
            ticks = await producer.produce_many(contents)  # numbered there, as one block
            if ticks:  # answer once they are written and published
                await service.wait_for_t(ticks[-1].t)
        except StoreError as exc:
            return error_response(503, "unavailable", str(exc))
        first_t = ticks[0].t if ticks else producer.next_t
        out = {"accepted": len(ticks), "first_t": first_t, "latest_t": service.history.latest_t}
        return Response(msgspec.json.encode(out), content_type="application/json")

    return app
