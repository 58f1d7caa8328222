"""The async core of the client: follow the stream across connections, page history.

::

    follow()                       one loop per stream() / astream() / replay() call
    ├── websocket.connect()        TCP + upgrade           (anyio, wsproto)
    ├── WebSocket.receive()        whole messages
    ├── Cursor                     every decision          (sans-I/O, cursor.py)
    └── Backoff                    how long to wait before the next attempt
    history_pages()                GET /incremental        (httpx, same Cursor checks)

Everything here runs under trio or asyncio (anyio). Cancel scopes and timeouts
live inside single awaits, never across a ``yield``, so the generators may be
resumed from different tasks (the blocking wrappers do so).

What this layer owns: the loops and the waits (connect, receive, sleep). What it
does not: every decision about a message, a close code or an HTTP status is the
``Cursor``'s, which is plain Python and tested without sockets; the loops here act
on its answer (:class:`~tickcast.client.cursor.Next`: reconnect now, or back off).

Invariants a caller can rely on:

* the ``t`` values yielded are strictly consecutive across reconnects and pages,
  or an exception says why they cannot be (gap, truncation, no progress); with
  ``on_gap="continue"`` a gap is logged as a warning instead;
* nothing is buffered beyond one server message or one page: the next message is
  read, or the next page requested, only when the consumer asks for more;
* a replay reconnects as a stream does, with its own speed and range end on every
  connection, and ends (the generator returns) only when its range is complete.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator

import anyio
import httpx

from ..wire import PAGE_LIMIT
from .cursor import Backoff, Cursor, Next, Tick, silence_limit_s
from .replay import Replay
from .settings import Settings
from .websocket import Closed, Rejected, WebSocket, connect

__all__ = ["CONNECT_TIMEOUT_S", "PAGE_LIMIT", "follow", "history_pages"]

log = logging.getLogger("tickcast.client")

CONNECT_TIMEOUT_S = 10.0  # TCP connect + upgrade + hello
# Per /incremental request (httpx: connect, read, write and pool each). Generous: a page
# of PAGE_LIMIT large ticks read from a producer's disk can take seconds.
HTTP_TIMEOUT_S = 30.0
END_CLOSE_S = 5.0  # after a replay's "end": at most this long for the server's close


async def follow(
    settings: Settings,
    from_t: int | None,
    from_ts: float | None = None,
    replay: Replay | None = None,
) -> AsyncGenerator[list[Tick], None]:
    """Yield the stream's ticks, one server message's worth at a time, forever (or,
    for a ``replay`` with a range end, until the range is complete).

    Starts at ``from_t``, or at the first tick with ``ts >= from_ts`` (neither: the
    latest tick). Reconnects by itself: at once after a 4008 or 4009, after a
    backoff when the server is away or busy, each time with ``from_t`` = the last
    ``t`` yielded + 1. The backoff starts again from its first step only once a
    tick has been yielded, never on a bare hello. Closing the generator (or
    cancelling the task iterating it) closes the connection.

    With ``replay``, every connection asks for its speed and range end as well, so
    an interrupted replay goes on at the same speed towards the same end. It
    returns after the server's ``end`` (and its close 1000), or without
    reconnecting when the connection broke after the range's last tick came.

    Raises:
        GapError: a resume would skip ticks, with ``on_gap="raise"``.
        NoProgressError: the server closed with 4008 at the same ``t`` again and
            again (``MAX_STALLS`` times) without a tick in between.
        RefusedError, StreamClosedError, BadMessageError: see ``tickcast.errors``.

    Backpressure: the socket is read only while the consumer iterates, so a slow
    consumer slows the server's sends to it; past ``max_lag`` the server closes
    with 4008 and this resumes at once from the last tick yielded, without loss.

    Cancellation: inside a receive or a backoff sleep, the connection is closed
    (bounded, shielded) and the cancellation propagates; nothing is retried.
    """
    to_t = replay.to_t if replay is not None else None
    cursor = Cursor(next_t=from_t, on_gap=settings.on_gap, from_ts=from_ts, to_t=to_t)
    backoff = Backoff(settings.backoff_initial_s, settings.backoff_max_s)
    idle_nows = 0  # reconnects "at once" in a row that yielded nothing
    # One connection per turn of this loop; every way out of a connection ends in
    # `step`, which says whether to reconnect at once or after a backoff.
    while True:
        ws: WebSocket | None = None
        yielded = False
        try:
            with anyio.fail_after(CONNECT_TIMEOUT_S):
                query = _stream_query(settings, cursor, replay)
                target = settings.endpoint.target("/ws/stream", query)
                ws = await connect(
                    settings.endpoint,
                    target,
                    headers=settings.headers,
                    compression=settings.compression,
                )
                hello = cursor.hello(await ws.receive())
            step = Next.NOW  # unless the connection is followed and ends (below)
            if hello is not None:
                log.info(
                    "connected to %s (from_t=%s, latest_t=%s%s)",
                    settings.endpoint.host_header,
                    cursor.next_t,
                    hello.get("latest_t"),
                    "".join(f", {k}={v}" for k, v in (replay.query() if replay else {}).items()),
                )
                # The server promises a heartbeat every heartbeat_s; a connection silent
                # for longer than the limit derived from it is dead, whatever TCP says.
                silence_s = silence_limit_s(hello.get("heartbeat_s"))
                while True:
                    with anyio.fail_after(silence_s):
                        data = await ws.receive()
                    ticks = cursor.take(data)
                    if ticks:
                        if not yielded:  # progress: the next failure waits the least again
                            backoff.reset()
                        yielded = True
                        yield ticks
                    elif cursor.ended:
                        await _await_close(ws)
                        return
        except Closed as exc:
            step = cursor.closed(exc.code, exc.reason)
        except Rejected as exc:
            step = cursor.refused(exc.status, exc.body)
        except TimeoutError:
            log.warning("no answer within the deadline (connect, or two heartbeats)")
            step = Next.BACK_OFF
        except OSError as exc:
            log.warning("cannot connect to %s: %s", settings.endpoint.host_header, exc)
            step = Next.BACK_OFF
        finally:
            if ws is not None:
                await ws.aclose()
        if cursor.finished():  # the range's last tick came; its "end" was lost
            return
        idle_nows = 0 if yielded or step is Next.BACK_OFF else idle_nows + 1
        if idle_nows > 1:  # e.g. 4008 after 4008 with no tick between: do not spin
            step = Next.BACK_OFF
        if step is Next.BACK_OFF:
            delay_s = backoff.delay_s()
            log.warning("reconnecting in %.2f s (from_t=%s)", delay_s, cursor.next_t)
            await anyio.sleep(delay_s)


async def _await_close(ws: WebSocket) -> None:
    """After a replay's ``end``: let the server close (1000), answering its close frame.

    Bounded by ``END_CLOSE_S``; whatever comes before the close is dropped (nothing
    is expected). The caller closes the socket either way.
    """
    with anyio.move_on_after(END_CLOSE_S):
        try:
            while True:
                await ws.receive()
        except Closed as exc:
            log.debug("closed %d (%s) after the end of the range", exc.code, exc.reason)


def _stream_query(settings: Settings, cursor: Cursor, replay: Replay | None) -> dict[str, str]:
    """The ``/ws/stream`` query for the next connection: where to start, fields, a
    replay's range end and speed, batch.

    ``batch`` is left out at its server default (1) to keep URLs in logs short.
    """
    query = settings.query(cursor.query_start())
    if replay is not None:
        query.update(replay.query())
    if settings.batch != 1:
        query["batch"] = str(settings.batch)
    return query


async def history_pages(
    settings: Settings, from_t: int | None, to_t: int | None, from_ts: float | None = None
) -> AsyncGenerator[list[Tick], None]:
    """Yield the ticks with ``from_t <= t < to_t`` (``to_t=None``: up to the latest
    at the time of each page), one ``/incremental`` page at a time.

    With ``from_ts`` instead of ``from_t``: from the first tick with ``ts >= from_ts``.
    Pages of up to ``PAGE_LIMIT`` ticks. Retries a page after a backoff when the
    server is away or busy (connection refused, 429, 502-504), or when it gives an
    empty page although it has ticks there (an edge that cannot read its producer's
    history), the latter at most ``MAX_STALLS`` times in a row.

    Raises:
        TruncatedError: ``from_t`` is older than the oldest tick kept, with
            ``on_gap="raise"`` (with ``"continue"`` the pages start at ``oldest_t``).
        NoProgressError: empty pages, ``MAX_STALLS`` in a row, for a range the
            server says it has.
        RefusedError: a 4xx (400, 401...) or a 500 (a corrupt record in the range).
        BadMessageError: a page that does not continue the previous one.

    Backpressure: the next page is requested only when the consumer has taken the
    current one, so memory holds one page at most. Cancellation closes the HTTP
    client (``async with``) and propagates.
    """
    cursor = Cursor(next_t=from_t, on_gap=settings.on_gap, from_ts=from_ts)
    backoff = Backoff(settings.backoff_initial_s, settings.backoff_max_s)
    url = settings.endpoint.http_url("/incremental")
    async with httpx.AsyncClient(headers=settings.headers, timeout=HTTP_TIMEOUT_S) as http:
        while True:
            limit = PAGE_LIMIT
            if to_t is not None and cursor.next_t is not None:
                limit = min(PAGE_LIMIT, to_t - cursor.next_t)
            if limit <= 0:
                return
            query = {**settings.query(cursor.query_start()), "limit": str(limit)}
            try:
                response = await http.get(url, params=query)
            except httpx.TransportError as exc:
                log.warning("GET %s failed: %r", url, exc)
                await anyio.sleep(backoff.delay_s())
                continue
            if response.status_code != 200:
                cursor.refused(response.status_code, response.content)  # raises, or:
                await anyio.sleep(backoff.delay_s())
                continue
            page = response.json()
            # latest_t is read from each page, so a range without to_t follows a growing
            # history until it catches up with the newest tick of that moment.
            latest_t = page["latest_t"]
            if page["count"] == 0 and latest_t is not None and page["from_t"] <= latest_t:
                # The server has ticks from here but gave none: it cannot read them now.
                cursor.stalled(f"an empty page from t={page['from_t']} (latest_t={latest_t})")
                await anyio.sleep(backoff.delay_s())
                continue
            backoff.reset()
            if page["count"] > 0 and cursor.next_t is not None:
                cursor.truncated(page["from_t"])  # a page starting late: retention
            ticks: list[Tick] = page["data"]
            if to_t is not None and ticks and cursor.next_t is None:  # started by time
                ticks = [tick for tick in ticks if tick["t"] < to_t]
            cursor.advance(ticks)
            if ticks:
                yield ticks
            if not ticks or page["next_t"] > latest_t:
                return
            if to_t is not None and cursor.next_t is not None and cursor.next_t >= to_t:
                return
