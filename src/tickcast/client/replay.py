"""What a replay asks of the stream beyond a start: its speed and where its range ends.

Plain Python, no I/O. :meth:`Replay.checked` owns the checks of what a caller passed
to ``Client.replay(...)`` (each bad argument a ``ValueError`` naming it, before any
connection is tried); :meth:`Replay.query` is what every connection of the replay
adds to its ``/ws/stream`` query. The value is frozen and lives as long as the
replay: a replay that is interrupted (connection lost, server restart) reconnects at
the last ``t`` received + 1 with this same speed and range end, so the rest of the
range plays as the start did.

Units and bounds, as on the wire (docs/protocol.md): ``speed`` multiplies the pace
of the ticks' own ``ts`` (``1.0``: as they were produced), in ``MIN_SPEED..MAX_SPEED``,
or ``"max"``: as fast as the client reads. ``to_t`` is the last ``t`` of the range,
inclusive; ``to_ts`` the last tick by time (unix seconds), inclusive.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from ..wire import MAX_SPEED, MIN_SPEED

__all__ = ["MAX_SPEED", "MIN_SPEED", "Replay", "Speed", "parse_speed"]

# A replay's speed: a factor on the ticks' own pace, or "max" (as fast as they are read).
Speed = float | Literal["max"]


def parse_speed(text: str) -> Speed:
    """``"max"`` or a decimal such as ``"10"`` or ``"0.25"`` (a command-line flag).

    Raises:
        ValueError: neither; or a number outside ``MIN_SPEED..MAX_SPEED``.
    """
    if text == "max":
        return "max"
    try:
        speed = float(text)
    except ValueError:
        raise ValueError(
            f"speed: expected a number in {MIN_SPEED:g}..{MAX_SPEED:g} or 'max', got {text!r}"
        ) from None
    _check_speed(speed)
    return speed


def _check_speed(speed: object) -> None:
    if speed == "max":
        return
    if (
        not isinstance(speed, int | float)
        or isinstance(speed, bool)
        or not math.isfinite(speed)
        or not MIN_SPEED <= speed <= MAX_SPEED
    ):
        raise ValueError(
            f"speed: expected a number in {MIN_SPEED:g}..{MAX_SPEED:g} or 'max', got {speed!r}"
        )


def _check_ts(name: str, ts: object) -> None:
    if ts is not None and (
        not isinstance(ts, int | float) or isinstance(ts, bool) or not math.isfinite(ts) or ts < 0
    ):
        raise ValueError(f"{name}: must be unix seconds >= 0, got {ts!r}")


@dataclass(frozen=True)
class Replay:
    """A replay's speed and range end, the same on every connection of one replay."""

    speed: Speed = 1.0
    to_t: int | None = None  # the last t, inclusive
    to_ts: float | None = None  # the last tick by time (unix seconds), inclusive

    @classmethod
    def checked(
        cls,
        *,
        speed: Speed,
        to_t: int | None,
        to_ts: float | None,
        from_t: int | None,
        from_ts: float | None,
    ) -> Replay:
        """The replay, once every argument is known good (``from_t``/``from_ts``, the
        start, are checked by the caller; here only against the end).

        Raises:
            ValueError: naming the first bad argument: a speed out of range, a
                negative or non-integer ``to_t``, a bad ``to_ts``, both ``to_t`` and
                ``to_ts``, or an end before the start.
        """
        _check_speed(speed)
        if to_t is not None and (not isinstance(to_t, int) or isinstance(to_t, bool) or to_t < 0):
            raise ValueError(f"to_t: must be an integer >= 0, got {to_t!r}")
        _check_ts("to_ts", to_ts)
        if to_t is not None and to_ts is not None:
            raise ValueError("to_ts: give to_t or to_ts, not both")
        if to_t is not None and from_t is not None and to_t < from_t:
            raise ValueError(f"to_t: must be >= from_t ({from_t}), got {to_t}")
        if to_ts is not None and from_ts is not None and to_ts < from_ts:
            raise ValueError(f"to_ts: must be >= from_ts ({from_ts!r}), got {to_ts!r}")
        return cls(
            speed="max" if speed == "max" else float(speed),
            to_t=to_t,
            to_ts=None if to_ts is None else float(to_ts),
        )

    def query(self) -> dict[str, str]:
        """The ``/ws/stream`` parameters of every connection of this replay.

        A float's ``repr`` in ``MIN_SPEED..MAX_SPEED`` is always a plain decimal
        (``0.1``, ``10.0``, ``1000.0``), never an exponent.
        """
        query: dict[str, str] = {}
        if self.to_t is not None:
            query["to_t"] = str(self.to_t)
        if self.to_ts is not None:
            query["to_ts"] = repr(self.to_ts)
        query["speed"] = "max" if self.speed == "max" else repr(self.speed)
        return query
