"""The formats of ``/export``: batches of stored ticks in, bytes out (plain Python).

An :class:`Encoder` is fed consecutive batches of ticks and hands back the bytes
each one adds to the file, so a response can be streamed batch by batch with
bounded memory: ``begin()`` (a header: Arrow's schema, Parquet's magic, CSV's
header row), ``encode(ticks)`` per batch, ``end()`` (Arrow's end-of-stream marker,
Parquet's footer). It is synchronous and CPU-bound: the caller runs it in a
worker thread, one call at a time.

The columnar writers are Apache Arrow's (``pyarrow``): the IPC stream writer,
the Parquet writer (zstd) and the CSV writer. NDJSON needs none: it is the stored
lines themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.ipc as pa_ipc
import pyarrow.parquet as pq

from tickcast.export.params import CONTENT_TYPES, EXTENSIONS, FORMATS, FormatName, TableName
from tickcast.export.tables import Flattener, conform, to_text
from tickcast.tick import EncodedTick, Fields

__all__ = [
    "CONTENT_TYPES",
    "EXTENSIONS",
    "FORMATS",
    "Encoder",
    "FormatName",
    "NdjsonEncoder",
    "TableEncoder",
    "encoder_for",
]

# Parquet: batches are gathered into row groups of at least this many rows (a row
# group per batch of the narrow ticks table would be ~4k rows, too small to compress
# well); a batch of the list tables is larger than this on its own.
ROW_GROUP_ROWS = 64 * 1024


class Encoder(Protocol):
    """Bytes of one export file, produced batch by batch."""

    def begin(self) -> bytes:
        """The bytes before any row (may be empty)."""
        ...

    def encode(self, ticks: Sequence[EncodedTick]) -> bytes:
        """The bytes for these ticks (consecutive, after the previous batch's)."""
        ...

    def end(self) -> bytes:
        """The bytes after the last row; the encoder is done."""
        ...


class NdjsonEncoder:
    """One tick per line, the stored bytes themselves (or their ``fields`` view)."""

    def __init__(self, fields: Fields = None) -> None:
        self._fields = fields

    def begin(self) -> bytes:
        return b""

    def encode(self, ticks: Sequence[EncodedTick]) -> bytes:
        if not ticks:
            return b""
        fields = self._fields
        return b"\n".join([*(tick.view(fields) for tick in ticks), b""])  # one copy

    def end(self) -> bytes:
        return b""


class _Sink:
    """A file-like object the Arrow writers write to; :meth:`take` empties it."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | memoryview) -> int:
        self._parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def take(self) -> bytes:
        out = b"".join(self._parts)
        self._parts.clear()
        return out


class TableEncoder:
    """A flat table (see :mod:`~tickcast.export.tables`) as CSV, Arrow IPC or Parquet.

    ``schema`` is the export's one schema (from :func:`~tickcast.export.tables.unify`);
    every batch is conformed to it. CSV holds scalars only: nested columns are
    written as their JSON text.

    Raises (from :meth:`encode`):
        SchemaDriftError: a batch does not fit ``schema``.
    """

    def __init__(
        self,
        table: TableName,
        fmt: FormatName,
        schema: pa.Schema,
        *,
        metadata: dict[str, str] | None = None,
    ) -> None:
        if fmt == "ndjson":
            raise ValueError("ndjson is not a table format")
        self._flattener = Flattener(table)
        self._format = fmt
        self._schema = schema
        if fmt == "csv":
            self._out_schema = pa.schema(
                [pa.field(f.name, pa.string()) if pa.types.is_nested(f.type) else f for f in schema]
            )
        else:
            self._out_schema = schema.with_metadata(metadata or {})
        self._sink = _Sink()
        self._pending: list[pa.RecordBatch] = []
        self._pending_rows = 0
        self._writer: pa_ipc.RecordBatchStreamWriter | pq.ParquetWriter | pa_csv.CSVWriter
        if fmt == "arrow":
            self._writer = pa_ipc.new_stream(self._sink, self._out_schema)
        elif fmt == "parquet":
            self._writer = pq.ParquetWriter(self._sink, self._out_schema, compression="zstd")
        else:
            self._writer = pa_csv.CSVWriter(self._sink, self._out_schema)

    @property
    def schema(self) -> pa.Schema:
        """The columns of the file."""
        return self._out_schema

    def begin(self) -> bytes:
        return self._sink.take()

    def encode(self, ticks: Sequence[EncodedTick]) -> bytes:
        batch = conform(self._flattener.flatten(ticks), self._schema)
        if self._format == "csv":
            batch = pa.record_batch(
                [to_text(column) for column in batch.columns], schema=self._out_schema
            )
        else:
            batch = batch.replace_schema_metadata(self._out_schema.metadata)
        if self._format == "parquet":
            self._pending.append(batch)
            self._pending_rows += batch.num_rows
            if self._pending_rows >= ROW_GROUP_ROWS:
                self._flush_row_group()
        elif batch.num_rows:
            self._writer.write_batch(batch)
        return self._sink.take()

    def _flush_row_group(self) -> None:
        if self._pending_rows:
            table = pa.Table.from_batches(self._pending, schema=self._out_schema)
            assert isinstance(self._writer, pq.ParquetWriter)
            self._writer.write_table(table, row_group_size=max(self._pending_rows, 1))
        self._pending.clear()
        self._pending_rows = 0

    def end(self) -> bytes:
        if self._format == "parquet":
            self._flush_row_group()
        self._writer.close()
        return self._sink.take()


def encoder_for(
    fmt: FormatName,
    table: TableName,
    schema: pa.Schema | None,
    *,
    fields: Fields = None,
    metadata: dict[str, str] | None = None,
) -> Encoder:
    """The encoder of ``fmt`` (``schema``: the table's, unused by NDJSON)."""
    if fmt == "ndjson":
        return NdjsonEncoder(fields)
    if schema is None:
        raise ValueError("a table format needs the export's schema")
    return TableEncoder(table, fmt, schema, metadata=metadata)


assert set(CONTENT_TYPES) == set(FORMATS) == set(EXTENSIONS)
