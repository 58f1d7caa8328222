"""``Client``: what an analyst's script uses to read a tickcast feed (docs/client.md)."""

from __future__ import annotations

import math
import sys
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import aclosing
from functools import partial
from typing import TYPE_CHECKING, TextIO

from anyio.from_thread import start_blocking_portal

if TYPE_CHECKING:
    import pyarrow as pa

    from .table import TableName

from .blocking import BACKEND, iterate_blocking
from .cursor import Tick
from .follow import follow, history_pages
from .replay import Replay, Speed
from .settings import Endpoint, OnGap, Settings

__all__ = ["Client"]


class Client:
    """A tickcast server, and how to read it.

    A ``Client`` holds settings only; every ``stream()``, ``astream()`` and
    ``history()`` call opens its own connections, so one client may serve several
    streams, threads and event loops at once.

    Args:
        url: the server, e.g. ``"http://127.0.0.1:8000"`` (``https``, ``ws`` and
            ``wss`` too; a path prefix is kept, a trailing ``/ws/stream`` ignored).
        fields: only these of ``s, agents, actions, matches`` (plus ``type, t, ts``);
            a list or a comma string. None (default): the whole tick.
        batch: ticks per message when several are ready at once (replay, catch-up),
            1..1000. Larger batches catch up faster; live ticks are never held back.
        token: the read token (``--read-token`` on the server), sent as
            ``Authorization: Bearer <token>``.
        on_gap: ``"raise"`` (default): a resume that would skip ticks raises
            :class:`~tickcast.errors.TruncatedError` or
            :class:`~tickcast.errors.EpochChangedError`. ``"continue"``: log a warning
            and carry on, at ``oldest_t`` after a truncation, at ``t=0`` of the new
            history after an epoch change.
        backoff_initial_s: the first wait before reconnecting to a server that is away.
        backoff_max_s: the cap of the doubling waits (each drawn from [cap/2, cap]).
        compression: offer permessage-deflate (about 4x fewer bytes for full ticks).

    Raises:
        ValueError: a bad URL or option; the message names it.
    """

    def __init__(
        self,
        url: str,
        *,
        fields: Iterable[str] | str | None = None,
        batch: int = 100,
        token: str | None = None,
        on_gap: OnGap = "raise",
        # Reconnection
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 10.0,
        # Transport
        compression: bool = True,
    ) -> None:
        self.settings = Settings(
            endpoint=Endpoint.parse(url),
            fields=Settings.fields_tuple(fields),
            batch=batch,
            token=token,
            on_gap=on_gap,
            backoff_initial_s=backoff_initial_s,
            backoff_max_s=backoff_max_s,
            compression=compression,
        )
        self.settings.check()

    def __repr__(self) -> str:
        return f"Client({self.settings.endpoint.http_url('')!r})"

    async def astream(
        self, from_t: int | None = None, *, from_ts: float | None = None
    ) -> AsyncIterator[Tick]:
        """Every tick from ``from_t`` on (None: from the latest), forever, in order.

        ``from_ts`` (unix seconds) instead of ``from_t``: from the first tick whose
        ``ts >= from_ts``. Works under trio and asyncio. Never misses or repeats a
        tick: after a dropped connection, a server restart, a slow-consumer close
        (4008) or a switch to another edge, it resumes at the last ``t`` it yielded
        + 1. Never loops without progress: a server that closes with 4008 at the same
        ``t`` again and again, with no tick between, ends it with
        :class:`~tickcast.errors.NoProgressError`. See ``docs/client.md`` for the
        reconnect policy.

        Leaving the ``async for`` early closes the connection when the generator is
        closed; use ``contextlib.aclosing(client.astream())`` to make that immediate.

        Raises:
            GapError: a resume would skip ticks (``on_gap="raise"``).
            NoProgressError: the server cannot move the stream on (see above).
            RefusedError: the server refused the stream (400 bad option, 401 token).
            StreamClosedError: a close a reconnect cannot fix (1011 corrupt history).
            BadMessageError: the server broke the protocol (never expected).
            ValueError: a negative ``from_t``, a bad ``from_ts``, or both given.
        """
        _check_start(from_t, from_ts)
        async with aclosing(follow(self.settings, from_t, from_ts)) as batches:
            async for batch in batches:
                for tick in batch:
                    yield tick

    def stream(self, from_t: int | None = None, *, from_ts: float | None = None) -> Iterator[Tick]:
        """The blocking twin of :meth:`astream`: iterate with a plain ``for``.

        The connection lives in a worker thread (a trio event loop) for as long as the
        iterator does; breaking out of the loop, or Ctrl-C, closes it (Ctrl-C then
        raises one ``KeyboardInterrupt`` in the caller, as any blocking call does).
        """
        _check_start(from_t, from_ts)
        return iterate_blocking(partial(follow, self.settings, from_t, from_ts))

    async def areplay(
        self,
        from_t: int | None = None,
        *,
        from_ts: float | None = None,
        to_t: int | None = None,
        to_ts: float | None = None,
        speed: Speed = 1.0,
    ) -> AsyncIterator[Tick]:
        """The ticks from ``from_t`` (or ``from_ts``) to ``to_t`` (or ``to_ts``), paced.

        ``speed`` is a factor on the pace at which the ticks were produced, read off
        their ``ts``: ``1.0`` replays them as they came, ``10`` ten times faster,
        ``0.5`` at half speed (0.1 to 1000); ``"max"`` as fast as you read them. The
        server paces; gaps of more than 5 s between two ticks' ``ts`` count as 5 s.

        The range is inclusive at both ends: ``to_t`` is the last ``t`` yielded,
        ``to_ts`` (unix seconds) the last tick whose ``ts <= to_ts``; then the
        iterator ends. Without either, the replay runs into the live ticks and goes
        on following them at their own pace, forever, as :meth:`astream` does.

        Like :meth:`astream`, it never misses or repeats a tick, and resumes after a
        dropped connection or a server restart: at the last ``t`` it yielded + 1,
        with the same ``speed`` and the same ``to_t``/``to_ts``. A connection lost
        after the last tick of the range came ends the iterator without a reconnect.
        Close it early with ``contextlib.aclosing`` (see :meth:`astream`).

        Raises:
            GapError, NoProgressError, RefusedError, StreamClosedError,
            BadMessageError: as :meth:`astream`.
            ValueError: no start (``from_t`` or ``from_ts``), or a bad argument;
                the message names it.
        """
        replay = _replay(from_t, from_ts, to_t, to_ts, speed)
        async with aclosing(follow(self.settings, from_t, from_ts, replay)) as batches:
            async for batch in batches:
                for tick in batch:
                    yield tick

    def replay(
        self,
        from_t: int | None = None,
        *,
        from_ts: float | None = None,
        to_t: int | None = None,
        to_ts: float | None = None,
        speed: Speed = 1.0,
    ) -> Iterator[Tick]:
        """The blocking twin of :meth:`areplay`: iterate with a plain ``for``, which
        ends with the range (see :meth:`stream` for the worker thread and Ctrl-C)."""
        replay = _replay(from_t, from_ts, to_t, to_ts, speed)
        return iterate_blocking(partial(follow, self.settings, from_t, from_ts, replay))

    async def ahistory(
        self, from_t: int | None = None, to_t: int | None = None, *, from_ts: float | None = None
    ) -> list[Tick]:
        """The ticks with ``from_t <= t < to_t``, as a list, paging ``GET /incremental``.

        ``from_t`` defaults to 0 (the oldest tick kept); ``from_ts`` (unix seconds)
        instead starts at the first tick whose ``ts >= from_ts``. ``to_t`` is
        exclusive, like ``range``: ``history(0, 5_000)`` is ticks 0..4999, and
        ``stream(from_t=5_000)`` continues it without a gap. ``to_t=None``, or a
        ``to_t`` past the latest tick, gives what exists when each page is read.
        Pages hold up to 10000 ticks; a page the server cannot give now (away, 429,
        503, or empty although the server has those ticks) is asked again after a
        backoff.

        Raises:
            TruncatedError: ``from_t`` is older than the oldest tick kept
                (``on_gap="raise"``; with ``"continue"`` the list starts at ``oldest_t``).
            NoProgressError: the server keeps giving empty pages for ticks it has
                (an edge that cannot read its producer's history).
            RefusedError: 400 (bad option), 401 (token), 500 (a corrupt record).
            ValueError: ``from_t`` or ``to_t`` negative, ``to_t < from_t``, a bad
                ``from_ts``, or both ``from_t`` and ``from_ts``.
        """
        _check_start(from_t, from_ts)
        _check_t("to_t", to_t)
        if from_ts is None and from_t is None:
            from_t = 0
        if to_t is not None and from_t is not None and to_t < from_t:
            raise ValueError(f"to_t: must be >= from_t ({from_t}), got {to_t}")
        out: list[Tick] = []
        async with aclosing(history_pages(self.settings, from_t, to_t, from_ts)) as pages:
            async for page in pages:
                out += page
        return out

    def history(
        self, from_t: int | None = None, to_t: int | None = None, *, from_ts: float | None = None
    ) -> list[Tick]:
        """The blocking twin of :meth:`ahistory` (same arguments, same result)."""
        with start_blocking_portal(BACKEND) as portal:
            return portal.call(partial(self.ahistory, from_t, to_t, from_ts=from_ts))

    async def atable(
        self,
        from_t: int = 0,
        to_t: int | None = None,
        table: TableName = "ticks",
        *,
        progress: bool | TextIO = False,
    ) -> pa.Table:
        """The flat ``table`` of the ticks with ``from_t <= t < to_t``, as a ``pyarrow.Table``.

        One ``GET /export`` streamed as Arrow (``docs/export.md``): ``table`` is
        ``"ticks"`` (``t``, ``ts``, one column per member of ``s``) or ``"agents"``,
        ``"actions"``, ``"matches"`` (one row per element, ``t`` and ``ts`` first).
        ``to_t`` is exclusive, as in :meth:`history`; None: up to the latest tick.
        Then ``.to_pandas()``, ``polars.from_arrow(...)`` or DuckDB. With
        ``progress=True`` a progress line (ticks received, rate, time left) is drawn
        on stderr while the table arrives, as ``tickcast export`` does; pass a
        stream to draw it there instead.

        Raises:
            TruncatedError: ``from_t`` is older than the oldest tick kept
                (``on_gap="raise"``; with ``"continue"`` the table starts at ``oldest_t``).
            RefusedError: 400 (bad option), 401 (token), 500 (a corrupt record).
            ExportAbortedError: the export broke off mid-way (a corrupt record).
            ValueError: ``from_t`` or ``to_t`` negative, ``to_t < from_t``, unknown table.
        """
        _check_t("from_t", from_t)
        _check_t("to_t", to_t)
        if to_t is not None and to_t < from_t:
            raise ValueError(f"to_t: must be >= from_t ({from_t}), got {to_t}")
        from .table import fetch_table  # pyarrow is imported by the first table only

        out = sys.stderr if progress is True else (progress or None)
        return await fetch_table(self.settings, from_t, to_t, table, progress=out)

    def table(
        self,
        from_t: int = 0,
        to_t: int | None = None,
        table: TableName = "ticks",
        *,
        progress: bool | TextIO = False,
    ) -> pa.Table:
        """The blocking twin of :meth:`atable` (same arguments, same result)."""
        with start_blocking_portal(BACKEND) as portal:
            return portal.call(partial(self.atable, from_t, to_t, table, progress=progress))


def _check_t(name: str, t: int | None) -> None:
    if t is not None and (not isinstance(t, int) or isinstance(t, bool) or t < 0):
        raise ValueError(f"{name}: must be an integer >= 0, got {t!r}")


def _replay(
    from_t: int | None,
    from_ts: float | None,
    to_t: int | None,
    to_ts: float | None,
    speed: Speed,
) -> Replay:
    """A replay's arguments, checked: a start (by ``t`` or time), an end, a speed."""
    _check_start(from_t, from_ts)
    if from_t is None and from_ts is None:
        raise ValueError("from_t: a replay starts somewhere: give from_t or from_ts")
    return Replay.checked(speed=speed, to_t=to_t, to_ts=to_ts, from_t=from_t, from_ts=from_ts)


def _check_start(from_t: int | None, from_ts: float | None) -> None:
    """A start by ``t`` or by time (unix seconds), not both."""
    _check_t("from_t", from_t)
    if from_ts is None:
        return
    if from_t is not None:
        raise ValueError("from_ts: give from_t or from_ts, not both")
    if (
        not isinstance(from_ts, int | float)
        or isinstance(from_ts, bool)
        or not math.isfinite(from_ts)
        or from_ts < 0
    ):
        raise ValueError(f"from_ts: must be unix seconds >= 0, got {from_ts!r}")
