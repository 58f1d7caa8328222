"""Query parameters of the HTTP routes and ``/ws/stream`` (plain Python).

Every invalid value, and every parameter a route does not take (a typo such as
``lmit`` is never dropped silently), raises :class:`BadParam` naming the parameter;
the caller turns it into HTTP 400 with a JSON body (before any WebSocket upgrade).

Why not let a framework parse them: the rules are the same for the stream (read by
the raw front door before any framework sees the request) and for the HTTP routes,
and the messages must be the same words in both. The documented constraints
(``web/schemas.py``, hence ``/openapi.json`` and ``/asyncapi.json``) describe what
these functions accept, and ``tests/test_query_params.py`` holds the two together.

Invariants: parameters are checked in a fixed, documented order and the first
fault is the one named; values are accepted only in their plain decimal form
(no ``+``, no whitespace, no ``0x``, no ``inf``/``nan``), so what a client sends is
what the server understood; nothing here does I/O.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

from tickcast.tick import Fields, parse_fields
from tickcast.wire import MAX_BATCH, MAX_SPEED, MIN_SPEED

__all__ = [
    "MAX_BATCH",
    "PAGE_PARAMS",
    "STREAM_PARAMS",
    "BadParam",
    "PageParams",
    "StreamParams",
    "fields_param",
    "int_param",
    "parse_page_params",
    "parse_stream_params",
    "reject_unknown",
    "speed_param",
    "start_params",
    "start_t",
    "ts_param",
]

# The query parameters /ws/stream takes (``token``: the read token, for browsers).
STREAM_PARAMS = frozenset(
    {"from_t", "from_ts", "to_t", "to_ts", "speed", "fields", "batch", "token"}
)
# The query parameters /incremental takes.
PAGE_PARAMS = frozenset({"from_t", "from_ts", "to_t", "to_ts", "limit", "fields", "token"})

# ASCII digits only (Python's int() also takes "١٢" and "1_000"); the sign is allowed
# so that "-1" is answered "must be >= 0" rather than "not an integer".
_DIGITS = re.compile(r"-?[0-9]+\Z")
# A decimal with an optional exponent; float() would also take "inf", "nan" and spaces.
_DECIMAL = re.compile(r"-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?\Z")


class BadParam(ValueError):
    """A query parameter is invalid; ``param`` names it (HTTP 400 before the upgrade)."""

    def __init__(self, param: str, detail: str) -> None:
        super().__init__(f"{param}: {detail}")
        self.param = param
        self.detail = detail


@dataclass(frozen=True, slots=True)
class StreamParams:
    """``/ws/stream``'s query, validated: where to start and end, the pace, which keys,
    how many per message.

    Neither ``from_t`` nor ``from_ts``: the stream starts with the latest tick.
    ``batch`` is at least 1 (1: every tick its own message). ``speed`` is None (no
    pacing: history as fast as the client reads, under the lag rule), a factor of real
    time, or ``math.inf`` for ``max``.
    """

    from_t: int | None = None
    from_ts: float | None = None  # unix seconds; with from_t too, both bounds apply
    fields: Fields = None
    batch: int = 1
    to_t: int | None = None  # the last tick of the range, inclusive
    to_ts: float | None = None  # the range ends before the first tick with ts > to_ts
    speed: float | None = None


def reject_unknown(query: Iterable[str], known: Collection[str]) -> None:
    """Refuse a query that carries a parameter not in ``known``.

    Every route calls this with the names it takes, so that a typo (``lmit``) or a
    parameter it does not have is answered 400 instead of being ignored.

    Raises:
        BadParam: naming the first unknown parameter, and listing the known ones.
    """
    for name in query:
        if name not in known:
            takes = ", ".join(sorted(known)) if known else "no query parameters"
            raise BadParam(name, f"unknown parameter (this path takes {takes})")


@dataclass(frozen=True, slots=True)
class PageParams:
    """``/incremental``'s query: the range (each bound optional) and the page size."""

    from_t: int | None = None
    from_ts: float | None = None
    to_t: int | None = None  # the last t of the page, inclusive
    to_ts: float | None = None  # the page ends at the last tick with ts <= to_ts
    limit: int | None = None  # as given (the route applies its default and cap)
    fields: Fields = None


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
    """``(from_t, from_ts)``: where a page or stream starts (either, both or neither).

    Given both, both bounds apply: the start is the first tick with ``t >= from_t``
    and ``ts >= from_ts`` (see :func:`start_t`).

    Raises:
        BadParam: an invalid value.
    """
    return int_param(query, "from_t", 0, None), ts_param(query, "from_ts")


def start_t(from_t: int | None, seek_t: int | None) -> int | None:
    """Where a page or stream starts, given ``from_t`` and the ``t`` a ``from_ts`` seek
    found (None when that parameter is absent): the later of the two bounds.

    The later one because both are lower bounds: a tick must satisfy both.
    """
    if seek_t is None:
        return from_t
    return seek_t if from_t is None else max(from_t, seek_t)


def fields_param(query: Mapping[str, str]) -> Fields:
    """The ``fields`` query parameter as a canonical selection.

    Raises:
        BadParam: an unknown or empty field name.
    """
    try:
        return parse_fields(query.get("fields"))
    except ValueError as exc:
        raise BadParam("fields", str(exc)) from None


def speed_param(query: Mapping[str, str]) -> float | None:
    """The ``speed`` query parameter: None when absent, ``math.inf`` for ``max``.

    Raises:
        BadParam: not ``max`` nor a plain decimal in ``MIN_SPEED..MAX_SPEED``.
    """
    raw = query.get("speed")
    if raw is None:
        return None
    if raw == "max":
        return math.inf
    value = float(raw) if _DECIMAL.match(raw) else math.nan
    if not MIN_SPEED <= value <= MAX_SPEED:  # nan fails too
        raise BadParam(
            "speed", f"must be max or a number in {MIN_SPEED:g}..{MAX_SPEED:g}, got {raw!r}"
        )
    return value


def parse_stream_params(query: Mapping[str, str]) -> StreamParams:
    """Validate ``/ws/stream``'s query: no unknown parameter, then ``from_t`` /
    ``from_ts``, ``to_t`` / ``to_ts``, ``speed``, ``batch`` and ``fields``, in that order.

    Unlike a page, a stream whose end is before its start is refused: it could
    only close at once.

    Raises:
        BadParam: naming the first unknown or invalid parameter.
    """
    reject_unknown(query, STREAM_PARAMS)
    from_t, from_ts = start_params(query)
    to_t = int_param(query, "to_t", 0, None)
    if to_t is not None and from_t is not None and to_t < from_t:
        raise BadParam("to_t", f"must be >= from_t ({from_t}), got {to_t}")
    to_ts = ts_param(query, "to_ts")
    if to_ts is not None and from_ts is not None and to_ts < from_ts:
        raise BadParam("to_ts", f"must be >= from_ts ({query['from_ts']}), got {query['to_ts']}")
    speed = speed_param(query)
    batch = int_param(query, "batch", 1, MAX_BATCH)
    return StreamParams(
        from_t=from_t,
        from_ts=from_ts,
        fields=fields_param(query),
        batch=batch or 1,
        to_t=to_t,
        to_ts=to_ts,
        speed=speed,
    )


def parse_page_params(query: Mapping[str, str]) -> PageParams:
    """Validate ``/incremental``'s query: no unknown parameter, then the start, the
    end, ``limit`` and ``fields``, in that order.

    An end before the start is not an error (the schema cannot say so, and every
    request it calls valid is answered): the page is empty.

    Raises:
        BadParam: naming the first unknown or invalid parameter.
    """
    reject_unknown(query, PAGE_PARAMS)
    from_t, from_ts = start_params(query)
    to_t = int_param(query, "to_t", 0, None)
    to_ts = ts_param(query, "to_ts")
    return PageParams(
        from_t=from_t,
        from_ts=from_ts,
        to_t=to_t,
        to_ts=to_ts,
        limit=int_param(query, "limit", 1, None),
        fields=fields_param(query),
    )
