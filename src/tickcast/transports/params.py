"""Query parameters of ``/ws/stream`` and ``/incremental`` (plain Python).

Every invalid value raises :class:`BadParam` naming the parameter; the caller turns
it into HTTP 400 with a JSON body (before any WebSocket upgrade).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

from tickcast.tick import Fields, parse_fields
from tickcast.wire import MAX_BATCH

__all__ = [
    "MAX_BATCH",
    "BadParam",
    "StreamParams",
    "fields_param",
    "int_param",
    "parse_stream_params",
    "start_params",
    "ts_param",
]


_DIGITS = re.compile(r"-?[0-9]+\Z")
_DECIMAL = re.compile(r"-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\Z")


class BadParam(ValueError):
    """A query parameter is invalid; ``param`` names it (HTTP 400 before the upgrade)."""

    def __init__(self, param: str, detail: str) -> None:
        super().__init__(f"{param}: {detail}")
        self.param = param
        self.detail = detail


@dataclass(frozen=True, slots=True)
class StreamParams:
    from_t: int | None = None
    from_ts: float | None = None  # unix seconds; never set together with from_t
    fields: Fields = None
    batch: int = 1


def int_param(query: Mapping[str, str], name: str, lo: int, hi: int | None) -> int | None:
    """The integer query parameter ``name`` in ``lo..hi``, or None when absent.

    Raises:
        BadParam: not a plain decimal integer, or out of range.
    """
    raw = query.get(name)
    if raw is None:
        return None
    if not _DIGITS.match(raw):
        raise BadParam(name, f"must be an integer, got {raw!r}")
    try:
        value = int(raw)
    except ValueError:  # over Python's int_max_str_digits (4300)
        raise BadParam(name, f"must be an integer, got {len(raw)} digits") from None
    if value < lo or (hi is not None and value > hi):
        bound = f">= {lo}" if hi is None else f"in {lo}..{hi}"
        raise BadParam(name, f"must be {bound}, got {value}")
    return value


def ts_param(query: Mapping[str, str], name: str) -> float | None:
    """The unix-time query parameter ``name`` (seconds, a finite decimal >= 0), or None.

    Raises:
        BadParam: not a plain decimal number (``1732450000.5``, ``1.7e9``), or negative.
    """
    raw = query.get(name)
    if raw is None:
        return None
    value = float(raw) if _DECIMAL.match(raw) else math.nan
    if not math.isfinite(value):
        raise BadParam(name, f"must be unix seconds (a decimal number), got {raw!r}")
    if value < 0:
        raise BadParam(name, f"must be >= 0, got {raw}")
    return value


def start_params(query: Mapping[str, str]) -> tuple[int | None, float | None]:
    """``(from_t, from_ts)``: where a page or stream starts; at most one is given.

    Raises:
        BadParam: an invalid value, or both given.
    """
    from_t = int_param(query, "from_t", 0, None)
    from_ts = ts_param(query, "from_ts")
    if from_t is not None and from_ts is not None:
        raise BadParam("from_ts", "give from_t or from_ts, not both")
    return from_t, from_ts


def fields_param(query: Mapping[str, str]) -> Fields:
    """The ``fields`` query parameter as a canonical selection.

    Raises:
        BadParam: an unknown or empty field name.
    """
    try:
        return parse_fields(query.get("fields"))
    except ValueError as exc:
        raise BadParam("fields", str(exc)) from None


def parse_stream_params(query: Mapping[str, str]) -> StreamParams:
    """Validate ``from_t`` / ``from_ts``, ``batch`` and ``fields``, in that order.

    Raises:
        BadParam: naming the first invalid parameter.
    """
    from_t, from_ts = start_params(query)
    batch = int_param(query, "batch", 1, MAX_BATCH)
    return StreamParams(
        from_t=from_t, from_ts=from_ts, fields=fields_param(query), batch=batch or 1
    )
