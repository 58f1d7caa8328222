"""A client that closes while a backlog is being sent gets its close answered.

The ``websockets`` library's client, leaving its loop during a big ``from_t=0``
replay, sends a close frame and then reads (and drops) what still arrives until
the server's close frame comes back, for at most its ``close_timeout``. The server
must read that close whatever its outbox for the client holds, stop sending ticks,
and answer: here the answer must arrive long before the timeout, on both
transports. (How fast it comes is a figure for bench/, not an assertion: on an
idle machine it is a few milliseconds.)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import trio
from websockets.frames import Close
from websockets.sync.client import connect
from wsproto.events import CloseConnection, Ping, Pong, TextMessage

from conftest import Running, Transport, make_config, running
from tickcast.transports.raw import CATCH_UP_HIGH_WATER, RawSession
from wsclient import RawClient

CLOSE_TIMEOUT_S = 5.0  # the client's patience (websockets' default is 10 s)


def leave_during_replay(url: str, *, after: int) -> tuple[Close | None, float, int]:
    """Read ``after`` messages, leave; the server's close frame, the close's duration.

    ``max_queue=None``: websockets reads on while it waits for the close. With its
    default (16 messages) it stops reading once 16 are waiting, and a close sent
    behind more than that cannot reach it: it then times out by design, whatever
    the server does (python-websockets/websockets#1555).
    """
    with connect(url, close_timeout=CLOSE_TIMEOUT_S, max_size=None, max_queue=None) as ws:
        for n, _ in enumerate(ws, start=1):
            if n == after:
                break
        started = time.monotonic()
    return ws.protocol.close_rcvd, time.monotonic() - started, n


async def test_close_during_a_backlog_is_answered(tmp_path: Path, transport: Transport) -> None:
    # ~30 KB ticks: a few hundred of them are more than the outbox's high-water mark
    # and both kernel buffers together.
    config = make_config(tmp_path, rate=400.0, agents=300, ring_size=3000, max_lag=100_000)
    async with running(config, transport) as srv:
        await srv.wait_for_t(400)
        url = srv.ws_url("?from_t=0")
        with trio.fail_after(3 * CLOSE_TIMEOUT_S):
            close, took, read = await trio.to_thread.run_sync(
                lambda: leave_during_replay(url, after=20)
            )
        assert read == 20
        assert close is not None, f"no close frame from the server in {took:.1f} s"
        assert close.code == 1000
        assert took < CLOSE_TIMEOUT_S
        # The connection is gone from the server too (its slot given back).
        await each_tick_until(srv, lambda: not srv.service.limits.total)


async def each_tick_until(srv: Running, done: Callable[[], bool]) -> None:
    """Check ``done()`` at each published tick until it holds (5 s at most)."""
    t = srv.service.history.latest_t or 0
    with trio.fail_after(CLOSE_TIMEOUT_S):
        while not done():
            t += 1
            await srv.service.wait_for_t(t)


def backlog(srv: Running) -> bool:
    """The raw session's outbox holds more than its high-water mark."""
    return any(
        isinstance(s, RawSession) and s._out_bytes > CATCH_UP_HIGH_WATER
        for s in srv.service.hub.subscribers()
    )


async def test_a_close_is_read_whatever_the_outbox_holds(
    tmp_path: Path, transport: Transport
) -> None:
    config = make_config(tmp_path, rate=400.0, agents=300, ring_size=3000, max_lag=100_000)
    async with running(config, transport) as srv:
        await srv.wait_for_t(400)
        client = await RawClient.connect(srv.port, "/ws/stream?from_t=0", rcvbuf=4096)
        try:
            if transport == "raw":
                await each_tick_until(srv, lambda: backlog(srv))  # and we read nothing
            await client.sock.send(client.ws.send(CloseConnection(code=1000)))
            # Read without our reading: the slot is given back, no more ticks queued.
            await each_tick_until(srv, lambda: not srv.service.limits.total)
            # Now read: the ticks that were already on their way, in order, then the
            # answer to our close.
            ts: list[int] = []
            closes: list[CloseConnection] = []
            with trio.fail_after(CLOSE_TIMEOUT_S):
                while data := await client.sock.recv(1 << 20):
                    client.ws.receive_data(data)
                    for event in client.ws.events():
                        if isinstance(event, TextMessage):
                            assert not closes, "a message after the close"
                            if event.message_finished and '"type":"tick"' in event.data[:20]:
                                ts.append(int(event.data.split('"t":')[1].split(",")[0]))
                        elif isinstance(event, CloseConnection):
                            closes.append(event)
            assert [c.code for c in closes] == [1000]
            assert ts == list(range(ts[0], ts[0] + len(ts))) if ts else True
        finally:
            client.aclose()


async def test_a_ping_is_answered_ahead_of_the_backlog(
    tmp_path: Path, transport: Transport
) -> None:
    config = make_config(tmp_path, rate=400.0, agents=300, ring_size=3000, max_lag=100_000)
    async with running(config, transport) as srv:
        await srv.wait_for_t(400)
        client = await RawClient.connect(srv.port, "/ws/stream?from_t=0", rcvbuf=4096)
        queued: int | None = None
        try:
            if transport == "raw":
                await each_tick_until(srv, lambda: backlog(srv))  # and we read nothing
                (session,) = [s for s in srv.service.hub.subscribers() if isinstance(s, RawSession)]
                queued = session.sent_t  # the last tick waiting in its outbox
            await client.sock.send(client.ws.send(Ping(b"p1")))
            ts: list[int] = []
            parts: list[str] = []
            pong: Pong | None = None
            with trio.fail_after(CLOSE_TIMEOUT_S):
                while pong is None:
                    data = await client.sock.recv(1 << 20)
                    assert data, "closed before the pong"
                    client.ws.receive_data(data)
                    for event in client.ws.events():
                        if isinstance(event, Pong):
                            pong = event
                            break
                        if isinstance(event, TextMessage):
                            parts.append(event.data)
                            if event.message_finished:
                                text = "".join(parts)
                                parts.clear()
                                if text.startswith('{"type":"tick"'):
                                    ts.append(int(text.split('"t":')[1].split(",")[0]))
            assert pong.payload == b"p1"
            if queued is not None:
                # The pong went right after the frame being sent, not behind the outbox.
                assert ts and ts[-1] < queued, (ts[-1:], queued)
        finally:
            client.aclose()
