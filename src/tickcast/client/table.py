"""``Client.table()``: a range of history as a ``pyarrow.Table``, from ``GET /export``.

The server streams the flat table as an Arrow IPC stream; :class:`ExportDownload`
reads it with httpx and decodes each record batch as its bytes arrive
(:mod:`~tickcast.client.arrowstream`), so a long range never sits in memory twice.
The same download, with a hook per chunk, drives ``tickcast export``.

Ranges: in the client ``to_t`` is exclusive (as in ``history()``); on the wire
``/export``'s ``to_t`` is the last tick, so the request asks for ``to_t - 1``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Literal, TextIO, get_args

import anyio
import httpx
import pyarrow as pa

from ..errors import ClientError, ExportAbortedError, RefusedError
from .arrowstream import StreamDecoder
from .cursor import RETRY_STATUSES, Backoff, Cursor, error_detail
from .progress import Progress
from .settings import Settings

__all__ = ["TABLES", "ExportDownload", "ExportRange", "TableName", "export_query", "fetch_table"]

TableName = Literal["ticks", "agents", "actions", "matches"]
TABLES: tuple[TableName, ...] = get_args(TableName)
HTTP_TIMEOUT_S = 60.0  # between two reads of the body; the whole export may take longer
RETRIES = 5  # a server that is starting (503) or busy (429): asked again after a backoff


@dataclass(frozen=True)
class ExportRange:
    """What the server said it exports (its response headers)."""

    from_t: int
    to_t: int  # inclusive; from_t - 1 when empty
    epoch: str
    truncated: bool

    @property
    def count(self) -> int:
        return max(0, self.to_t - self.from_t + 1)


class ExportDownload:
    """One ``GET /export``: the range it covers, then its body in chunks."""

    def __init__(self, settings: Settings, query: dict[str, str]) -> None:
        self._settings = settings
        self._query = query

    async def chunks(self, on_range: Callable[[ExportRange], None]) -> AsyncIterator[bytes]:
        """The body, chunk by chunk; ``on_range`` is called once, before the first chunk.

        Asks again after a backoff while the server answers 429 or 502-504, or cannot
        be reached (before any byte of the body only).

        Raises:
            RefusedError: the server refused the request (400, 401, 500 corrupt_record...).
            ExportAbortedError: the body broke off before its end.
        """
        settings = self._settings
        url = settings.endpoint.http_url("/export")
        backoff = Backoff(settings.backoff_initial_s, settings.backoff_max_s)
        timeout = httpx.Timeout(HTTP_TIMEOUT_S)
        async with httpx.AsyncClient(headers=settings.headers, timeout=timeout) as http:
            for attempt in range(RETRIES + 1):
                last = attempt == RETRIES
                try:
                    async with http.stream("GET", url, params=self._query) as response:
                        if response.status_code != 200:
                            body = await response.aread()
                            if response.status_code not in RETRY_STATUSES or last:
                                raise RefusedError(response.status_code, error_detail(body))
                        else:
                            on_range(_range_of(response.headers))
                            try:
                                async for chunk in response.aiter_raw():
                                    yield chunk
                            except httpx.HTTPError as exc:
                                raise ExportAbortedError(
                                    f"the export broke off: {exc} (the server log says why)"
                                ) from None
                            return
                except httpx.TransportError as exc:
                    if last:
                        raise ClientError(f"cannot reach {url}: {exc}") from None
                await anyio.sleep(backoff.delay_s())


def _range_of(headers: httpx.Headers) -> ExportRange:
    try:
        return ExportRange(
            from_t=int(headers["x-tickcast-from-t"]),
            to_t=int(headers["x-tickcast-to-t"]),
            epoch=headers.get("x-tickcast-epoch", ""),
            truncated=headers.get("x-tickcast-truncated") == "true",
        )
    except (KeyError, ValueError):
        raise ClientError("not a tickcast /export response (no X-Tickcast-From-T/To-T)") from None


def export_query(
    from_t: int, to_t: int | None, *, table: str, fmt: str = "arrow"
) -> dict[str, str]:
    """The ``/export`` query of the client's range ``from_t <= t < to_t``."""
    query = {"from_t": str(from_t), "format": fmt, "table": table}
    if to_t is not None:
        query["to_t"] = str(to_t - 1)
    return query


async def fetch_table(
    settings: Settings,
    from_t: int,
    to_t: int | None,
    table: TableName,
    *,
    progress: TextIO | None = None,
) -> pa.Table:
    """The rows of ``table`` for ticks ``from_t <= t < to_t`` (see ``Client.atable``).

    With ``progress``, a progress line is drawn there (ticks received of the range
    the server announced) and ended when the table is complete or the export fails.
    """
    if table not in TABLES:
        raise ValueError(f"table: must be one of {', '.join(TABLES)}, got {table!r}")
    if to_t is not None and to_t <= from_t:  # an empty range: nothing to ask
        return pa.table({"t": pa.array([], pa.int64()), "ts": pa.array([], pa.float64())})
    decoder = StreamDecoder()
    batches: list[pa.RecordBatch] = []
    cursor = Cursor(next_t=from_t, on_gap=settings.on_gap)
    meter = Progress(progress)
    start = [from_t]

    def on_range(rng: ExportRange) -> None:
        if rng.truncated:
            cursor.truncated(rng.from_t)  # raises TruncatedError with on_gap="raise"
        meter.total, start[0] = rng.count, rng.from_t

    download = ExportDownload(settings, export_query(from_t, to_t, table=table))
    try:
        async for chunk in download.chunks(on_range):
            try:
                fed = decoder.feed(chunk)
            except ValueError as exc:
                raise ExportAbortedError(f"the export is not an Arrow stream: {exc}") from None
            batches += fed
            rows = [batch for batch in fed if batch.num_rows]
            if rows:  # the t of the last row received, as ticks done of the range
                meter.update(rows[-1].column(0)[-1].as_py() - start[0] + 1)
        if not decoder.done or decoder.schema is None:
            raise ExportAbortedError("the export ended before the end of its Arrow stream")
    except BaseException:
        meter.interrupt()
        raise
    result = pa.Table.from_batches(batches, schema=decoder.schema)
    meter.update(meter.total, force=True)
    meter.finish(f"{meter.total:,} ticks, {result.num_rows:,} rows of {table}")
    return result
