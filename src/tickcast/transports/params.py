"""Query parameters of ``/ws/stream`` and ``/incremental`` (plain Python).

Every invalid value raises :class:`BadParam` naming the parameter; the caller turns
it into HTTP 400 with a JSON body (before any WebSocket upgrade).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from tickcast.tick import Fields, parse_fields

__all__ = [
    "MAX_BATCH",
    "BadParam",
    "StreamParams",
    "fields_param",
    "int_param",
    "parse_stream_params",
]

MAX_BATCH = 1000  # ticks per batch message, at most

_DIGITS = re.compile(r"-?[0-9]+\Z")


class BadParam(ValueError):
    """A query parameter is invalid; ``param`` names it (HTTP 400 before the upgrade)."""

    def __init__(self, param: str, detail: str) -> None:
        super().__init__(f"{param}: {detail}")
        self.param = param
        self.detail = detail


@dataclass(frozen=True, slots=True)
class StreamParams:
    from_t: int | None = None
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
    """Validate ``from_t``, ``fields`` and ``batch``.

    Raises:
        BadParam: naming the first invalid parameter.
    """
    from_t = int_param(query, "from_t", 0, None)
    batch = int_param(query, "batch", 1, MAX_BATCH)
    return StreamParams(from_t=from_t, fields=fields_param(query), batch=batch or 1)
