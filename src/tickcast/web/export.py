"""``GET /export``: any range of history as NDJSON, CSV, Arrow or Parquet (docs/export.md).

The route checks the read token and the query, fixes the range and (for the flat
tables) the columns, and only then starts the response, so every refusal is a
JSON error before any byte of data. The body is streamed by
:func:`~tickcast.export.stream.export_chunks` from the service's
:class:`~tickcast.storage.history.History`, which is what makes the same route
work on the producer (ring + segment files) and on an edge (ring + ``history_url``).

A failure mid-stream is raised out of the body: the server then closes the
connection without the chunked encoding's last chunk, and every HTTP client
reports an incomplete body instead of a short file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Annotated, Literal
from weakref import WeakKeyDictionary

import msgspec
from msgspec import UNSET, Meta, UnsetType
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from quart import Quart, Response, request
from quart_schema import document_querystring, security_scheme

from tickcast.errors import error_body
from tickcast.export.params import CONTENT_TYPES, EXTENSIONS, KNOWN_PARAMS, parse_export_params
from tickcast.service import Service
from tickcast.transports.intake import authorize
from tickcast.web import schemas
from tickcast.web.openapi import READ_ACCESS, answers, page, takes_query

if TYPE_CHECKING:
    from tickcast.export.stream import Exports

__all__ = ["EXPORT_HEADERS", "ExportQuery", "exports_of", "install"]


class ExportQuery(msgspec.Struct):
    from_t: (
        Annotated[int, Meta(ge=0, description="The first t wanted (default: `oldest_t`).")]
        | UnsetType
    ) = UNSET
    from_ts: (
        Annotated[
            float,
            Meta(ge=0, description="Start at the first tick with `ts >= from_ts` (unix seconds)."),
        ]
        | UnsetType
    ) = UNSET
    to_t: (
        Annotated[
            int,
            Meta(
                ge=0,
                description="The last t wanted, inclusive (default: `latest_t`); "
                "below `from_t`: an empty range.",
            ),
        ]
        | UnsetType
    ) = UNSET
    to_ts: (
        Annotated[
            float,
            Meta(
                ge=0,
                description="End at the last tick with `ts <= to_ts`; below `from_ts`: empty.",
            ),
        ]
        | UnsetType
    ) = UNSET
    format: Literal["ndjson", "csv", "arrow", "parquet"] = "ndjson"
    table: Literal["ticks", "agents", "actions", "matches"] = "ticks"
    fields: schemas.Fields | UnsetType = UNSET


# Response headers of a 200, for /openapi.json.
EXPORT_HEADERS: dict[str, tuple[str, str]] = {
    "X-Tickcast-From-T": ("integer", "The first t exported."),
    "X-Tickcast-To-T": ("integer", "The last t exported (`From-T - 1`: the range is empty)."),
    "X-Tickcast-Epoch": ("string", "The history the ticks belong to."),
    "X-Tickcast-Truncated": (
        "string",
        "`true` when the range asked for starts before `oldest_t` (retention deleted it).",
    ),
}

_DESCRIPTION = (
    "The range as a file, streamed: `ndjson` (one stored tick per line; `fields` applies), "
    "or the flat `table` as `csv`, `arrow` (IPC stream) or `parquet` (zstd). The headers "
    "give the range exported. A failure mid-stream (a corrupt record) aborts the response: "
    "the body ends without its last chunk, never as a short well-formed file."
)

_exports: WeakKeyDictionary[Service, Exports] = WeakKeyDictionary()
# The export machinery (pyarrow: ~70 MB of RSS and ~0.1 s to import) is imported by
# the first export, inside the route, so that a server that never exports does not
# carry it; tests/test_export.py checks that serving imports no pyarrow.


def exports_of(service: Service) -> Exports:
    """The export counters of ``service`` (created, and added to its /metrics, on first use)."""
    from tickcast.export.stream import Exports

    exports = _exports.get(service)
    if exports is None:
        exports = _exports[service] = Exports()
        service.metrics.registry.register(_Collector(exports))
    return exports


class _Collector(Collector):
    def __init__(self, exports: Exports) -> None:
        self._exports = exports

    def collect(self) -> Iterator[Metric]:
        st = self._exports.statistics()
        yield GaugeMetricFamily("tickcast_exports_running", "Exports in progress.", st.running)
        yield CounterMetricFamily("tickcast_exports", "Exports started.", value=st.started)
        yield CounterMetricFamily(
            "tickcast_exports_failed", "Exports aborted by an error.", value=st.failed
        )
        yield CounterMetricFamily(
            "tickcast_exports_cancelled", "Exports the client left.", value=st.cancelled
        )
        yield CounterMetricFamily("tickcast_export_ticks", "Ticks exported.", value=st.ticks)
        yield CounterMetricFamily("tickcast_export_bytes", "Bytes exported.", value=st.bytes)


def install(app: Quart, service: Callable[[], Service]) -> None:
    """Add ``GET /export`` to ``app``; ``service()`` gives the running service (or raises)."""

    @app.get("/export")
    @document_querystring(ExportQuery)
    @page(*CONTENT_TYPES.values(), description=_DESCRIPTION, headers=EXPORT_HEADERS)
    @answers(400, 401, 503)
    @security_scheme(READ_ACCESS)
    @takes_query(*KNOWN_PARAMS)
    async def export() -> Response:
        """Any range of history as NDJSON, CSV, Arrow or Parquet, streamed."""
        from tickcast.export.formats import encoder_for  # see _exports: on first use
        from tickcast.export.stream import export_chunks, probe_schema, resolve_range
        from tickcast.export.tables import Flattener

        svc = service()
        authorize(
            svc.config.read_token, request.args, authorization=request.headers.get("authorization")
        )
        params = parse_export_params(request.args)
        why = svc.unavailable()
        if why is not None:
            body = error_body("unavailable", why)
            return Response(body, status=503, content_type="application/json")
        history = svc.history
        rng = await resolve_range(history, params)
        fmt, table = params.format, params.table
        name = "ticks" if fmt == "ndjson" else table
        filename = f"tickcast-{name}-{rng.from_t}-{rng.to_t}.{EXTENSIONS[fmt]}"
        headers = {
            "X-Tickcast-From-T": str(rng.from_t),
            "X-Tickcast-To-T": str(rng.to_t),
            "X-Tickcast-Epoch": rng.epoch,
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "no-store",
        }
        if rng.truncated:
            headers["X-Tickcast-Truncated"] = "true"
        if request.method == "HEAD":  # the range without the work
            return Response(b"", content_type=CONTENT_TYPES[fmt], headers=headers)
        exports = exports_of(svc)
        schema = None
        if fmt != "ndjson":
            flattener = Flattener(table)
            schema = await probe_schema(history, flattener, rng, limiter=exports.encoders)
        metadata = {
            "tickcast.epoch": rng.epoch,
            "tickcast.table": table,
            "tickcast.from_t": str(rng.from_t),
            "tickcast.to_t": str(rng.to_t),
        }
        encoder = encoder_for(fmt, table, schema, fields=params.fields, metadata=metadata)
        chunks = export_chunks(history, rng, encoder, exports)
        response = Response(chunks, content_type=CONTENT_TYPES[fmt], headers=headers)
        response.timeout = None  # a long export is not a hang
        return response
