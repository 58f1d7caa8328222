"""The query of ``GET /export`` (plain Python): one function, every rule.

Every invalid value raises :class:`~tickcast.transports.params.BadParam` naming the
parameter (the route answers 400 before any byte of data).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, get_args

from tickcast.tick import Fields
from tickcast.transports.params import (
    BadParam,
    fields_param,
    int_param,
    reject_unknown,
    ts_param,
)

__all__ = [
    "CONTENT_TYPES",
    "EXTENSIONS",
    "FORMATS",
    "KNOWN_PARAMS",
    "TABLES",
    "ExportParams",
    "FormatName",
    "TableName",
    "parse_export_params",
]

# The names of the formats and tables live here, in plain Python, so that the route
# (web/export.py) can check a query and describe itself without importing pyarrow:
# that import (~70 MB of RSS, ~0.1 s) is made by the first export, not at start-up.
FormatName = Literal["ndjson", "csv", "arrow", "parquet"]
FORMATS: tuple[FormatName, ...] = get_args(FormatName)
CONTENT_TYPES: dict[FormatName, str] = {
    "ndjson": "application/x-ndjson",
    "csv": "text/csv; charset=utf-8",
    "arrow": "application/vnd.apache.arrow.stream",
    "parquet": "application/vnd.apache.parquet",
}
EXTENSIONS: dict[FormatName, str] = {
    "ndjson": "ndjson",
    "csv": "csv",
    "arrow": "arrows",
    "parquet": "parquet",
}
TableName = Literal["ticks", "agents", "actions", "matches"]
TABLES: tuple[TableName, ...] = get_args(TableName)

# Every parameter /export takes; ``token`` is the read token (checked by the route).
KNOWN_PARAMS = frozenset(
    {"from_t", "from_ts", "to_t", "to_ts", "format", "table", "fields", "token"}
)


@dataclass(frozen=True, slots=True)
class ExportParams:
    """A valid ``/export`` query (None: not given)."""

    from_t: int | None = None
    from_ts: float | None = None
    to_t: int | None = None  # inclusive
    to_ts: float | None = None  # inclusive
    format: FormatName = "ndjson"
    table: TableName = "ticks"
    fields: Fields = None  # ndjson only


def parse_export_params(query: Mapping[str, str]) -> ExportParams:
    """Validate an ``/export`` query.

    ``from_t`` and ``from_ts`` may be given together (the range starts at the first
    tick that meets both), as may ``to_t`` and ``to_ts`` (it ends at the last tick
    that meets both). An end before the start is an empty range, not an error, as
    on ``/incremental``: OpenAPI cannot state a rule between two parameters, and no
    request the published schema calls valid is refused.

    Raises:
        BadParam: an unknown parameter or an invalid value; the first one found, named.
    """
    reject_unknown(query, KNOWN_PARAMS)
    from_t = int_param(query, "from_t", 0, None)
    from_ts = ts_param(query, "from_ts")
    to_t = int_param(query, "to_t", 0, None)
    to_ts = ts_param(query, "to_ts")
    fmt = query.get("format", "ndjson")
    if fmt not in FORMATS:
        raise BadParam("format", f"must be one of {', '.join(FORMATS)}, got {fmt!r}")
    table = query.get("table", "ticks")
    if table not in TABLES:
        raise BadParam("table", f"must be one of {', '.join(TABLES)}, got {table!r}")
    return ExportParams(
        from_t=from_t,
        from_ts=from_ts,
        to_t=to_t,
        to_ts=to_ts,
        format=fmt,
        table=table,
        fields=fields_param(query),
    )
