"""``tickcast export``: a range of history into a file, with a progress line on stderr.

``ndjson``, ``csv`` and ``arrow`` are the server's bytes as they arrive;
``parquet`` is fetched as Arrow and written here with pyarrow's Parquet writer
(zstd), so that its progress can be shown too (a Parquet file cannot be read
before its footer, which comes last). The progress counts ticks: the ``t`` of
the last row received, of the range the response headers announce.

The file is written as ``FILE.part`` and renamed to ``FILE`` once complete: a
failure (the server aborting the export, a broken connection, Ctrl-C) leaves no
file behind, and the command exits non-zero with one line saying why.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path
from typing import BinaryIO, TextIO

import anyio
import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import ExportAbortedError
from ..wire import read_head
from .arrowstream import StreamDecoder
from .progress import Progress
from .settings import Endpoint, Settings
from .table import ExportDownload, ExportRange, export_query

__all__ = ["Progress", "run_export"]

ROW_GROUP_ROWS = 64 * 1024  # Parquet row groups (as the server's)


class _Lines:
    """The ``t`` at the head of the last complete line (NDJSON ticks, CSV rows)."""

    def __init__(self, fmt: str) -> None:
        self._fmt = fmt
        self._carry = b""
        self.last_t: int | None = None

    def feed(self, chunk: bytes) -> None:
        buf = self._carry + chunk
        end = buf.rfind(b"\n")
        if end < 0:
            self._carry = buf
            return
        start = buf.rfind(b"\n", 0, end) + 1
        line, self._carry = buf[start:end], buf[end + 1 :]
        if self._fmt == "ndjson":
            head = read_head(line)
            if head is not None:
                self.last_t = head[0]
        else:
            first = line.split(b",", 1)[0]
            if first.isdigit():
                self.last_t = int(first)


async def _download(
    settings: Settings, query: dict[str, str], fmt: str, sink: BinaryIO, progress: Progress
) -> ExportRange:
    rng: list[ExportRange] = []

    def on_range(got: ExportRange) -> None:
        rng.append(got)
        progress.total = got.count
        if got.truncated:
            progress.interrupt()
            print(
                f"tickcast export: ticks before {got.from_t} were deleted by retention; "
                f"exporting from {got.from_t}",
                file=sys.stderr,
            )

    lines = _Lines(fmt) if fmt in ("ndjson", "csv") else None
    decoder = StreamDecoder() if lines is None else None
    parquet: pq.ParquetWriter | None = None
    pending: list[pa.RecordBatch] = []
    rows = 0
    try:
        async for chunk in ExportDownload(settings, query).chunks(on_range):
            last_t = None
            if lines is not None:
                sink.write(chunk)
                lines.feed(chunk)
                last_t = lines.last_t
            else:
                assert decoder is not None
                try:
                    batches = decoder.feed(chunk)
                except ValueError as exc:
                    raise ExportAbortedError(f"the export is not an Arrow stream: {exc}") from None
                if fmt == "arrow":
                    sink.write(chunk)
                else:
                    if parquet is None and decoder.schema is not None:
                        parquet = pq.ParquetWriter(sink, decoder.schema, compression="zstd")
                    pending += batches
                    rows += sum(b.num_rows for b in batches)
                    if rows >= ROW_GROUP_ROWS:
                        _write_group(parquet, pending, rows)
                        pending, rows = [], 0
                batches = [b for b in batches if b.num_rows]
                if batches:
                    last_t = batches[-1].column(0)[-1].as_py()
            if last_t is not None and rng:
                progress.update(last_t - rng[0].from_t + 1)
    except BaseException:
        if parquet is not None:  # it would write its footer at exit, to a closed file
            with contextlib.suppress(Exception):
                parquet.close()
        raise
    if decoder is not None and not decoder.done:
        raise ExportAbortedError("the export ended before the end of its Arrow stream")
    if parquet is not None:
        _write_group(parquet, pending, rows)
        parquet.close()
    if not rng:
        raise ExportAbortedError("no response")
    return rng[0]


def _write_group(writer: pq.ParquetWriter | None, batches: list[pa.RecordBatch], rows: int) -> None:
    if writer is not None and rows:
        writer.write_table(pa.Table.from_batches(batches), row_group_size=rows)


def run_export(
    url: str,
    out: Path,
    *,
    from_t: int | None = None,
    to_t: int | None = None,
    table: str = "ticks",
    fmt: str = "parquet",
    token: str | None = None,
    progress: TextIO | None = None,
) -> ExportRange:
    """Write ticks ``from_t .. to_t`` (both inclusive, as on the wire) to ``out``.

    ``from_t`` None: from the oldest tick kept; ``to_t`` None: to the latest.

    Raises:
        ClientError: the server refused (RefusedError) or the export broke off
            (ExportAbortedError); ``out`` is not created.
        ValueError: a bad URL or option.
        OSError: ``out`` cannot be written.
    """
    settings = Settings(endpoint=Endpoint.parse(url), token=token)
    settings.check()
    query = export_query(0 if from_t is None else from_t, None, table=table)
    if from_t is None:
        del query["from_t"]
    if to_t is not None:
        query["to_t"] = str(to_t)
    query["format"] = "arrow" if fmt == "parquet" else fmt
    meter = Progress(progress)
    part = out.with_name(out.name + ".part")
    started = time.monotonic()
    try:
        with part.open("wb") as sink:
            rng = anyio.run(_download, settings, query, fmt, sink, meter, backend="trio")
        os.replace(part, out)
    except BaseException:
        meter.interrupt()
        part.unlink(missing_ok=True)
        raise
    meter.update(rng.count, force=True)
    size = out.stat().st_size
    meter.finish(
        f"wrote {out}: ticks {rng.from_t}..{rng.to_t} ({rng.count:,}), {size:,} bytes "
        f"in {time.monotonic() - started:.1f} s"
    )
    return rng
