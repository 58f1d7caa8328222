"""``Client.replay``/``areplay`` and ``tickcast tail --speed`` (docs/client.md, "Replay").

The argument checks and the cursor's end-of-range decisions are tested
synchronously; the exact queries a replay sends, first and after an interruption,
against a scripted server on a real socket; the rest against a real tickcast
(in-process, under both WebSocket transports, restarted on the same port, and
``tickcast tail`` as a subprocess).
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import aclosing
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from conftest import PYTHON, Running, free_port, make_config, running
from test_client import FAST, WAIT_S, Ws, hello, msg, scripted_server, tick
from tickcast.client import Client
from tickcast.client.cursor import Cursor
from tickcast.client.replay import Replay, parse_speed


async def replayed(client: Client, **kwargs: Any) -> list[int]:
    """The ``t`` of every tick of ``client.areplay(**kwargs)``, which must end by itself."""
    got: list[int] = []
    with trio.fail_after(WAIT_S):
        async with aclosing(client.areplay(**kwargs)) as ticks:
            async for item in ticks:
                got.append(item["t"])
    return got


# -- the arguments and the decisions, without I/O ---------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({}, "from_t: a replay starts somewhere"),
        ({"from_t": -1}, "from_t"),
        ({"from_t": 0, "from_ts": 1.0}, "from_ts: give from_t or from_ts, not both"),
        ({"from_t": 0, "speed": 0.05}, "speed"),
        ({"from_t": 0, "speed": 1001}, "speed"),
        ({"from_t": 0, "speed": float("nan")}, "speed"),
        ({"from_t": 0, "speed": True}, "speed"),
        ({"from_t": 0, "speed": "fast"}, "speed"),
        ({"from_t": 0, "to_t": -1}, "to_t"),
        ({"from_t": 0, "to_t": 2.5}, "to_t"),
        ({"from_t": 5, "to_t": 4}, r"to_t: must be >= from_t \(5\), got 4"),
        ({"from_t": 0, "to_ts": float("inf")}, "to_ts"),
        ({"from_ts": 10.0, "to_ts": 9.5}, r"to_ts: must be >= from_ts \(10.0\), got 9.5"),
        ({"from_t": 0, "to_t": 5, "to_ts": 9.0}, "to_ts: give to_t or to_ts, not both"),
    ],
)
async def test_replay_arguments_are_checked_before_connecting(
    kwargs: dict[str, Any], named: str
) -> None:
    client = Client("http://127.0.0.1:1")  # nothing listens: a check must come first
    with pytest.raises(ValueError, match=named):
        client.replay(**kwargs)
    with pytest.raises(ValueError, match=named):
        await anext(client.areplay(**kwargs))


def test_speed_and_range_on_the_wire() -> None:
    assert parse_speed("max") == "max"
    assert parse_speed("10") == 10.0
    assert parse_speed("0.25") == 0.25
    for bad in ("fast", "0", "1e4", ""):
        with pytest.raises(ValueError, match="speed"):
            parse_speed(bad)
    assert Replay(speed=10.0, to_t=9).query() == {"to_t": "9", "speed": "10.0"}
    assert Replay(speed="max", to_ts=1.5).query() == {"to_ts": "1.5", "speed": "max"}
    # repr() of any speed in range is a plain decimal (never 1e+03).
    assert [Replay(speed=s).query()["speed"] for s in (0.1, 1.0, 1000.0)] == [
        "0.1",
        "1.0",
        "1000.0",
    ]


def test_cursor_ends_at_the_end_message_or_past_to_t() -> None:
    cursor = Cursor(next_t=5, to_t=7)
    cursor.hello(msg(type="hello", epoch="e", oldest_t=0, latest_t=9))
    ack = msg(type="replay", state="playing", t=5, speed=10.0)
    assert cursor.take(ack) == [] and cursor.next_t == 5  # an acknowledgement moves nothing
    cursor.take(msg(type="batch", ticks=[{"type": "tick", "t": 5}, {"type": "tick", "t": 6}]))
    assert not cursor.finished()
    cursor.take(msg(type="tick", t=7))
    assert cursor.finished()  # t=7 came: nothing to reconnect for, even without the end
    assert not cursor.ended
    cursor.take(msg(type="end", t=7))
    assert cursor.ended and cursor.finished()
    # By time, the end message alone says the range is complete.
    by_time = Cursor(from_ts=1.0)
    by_time.take(msg(type="tick", t=40))
    assert not by_time.finished()
    by_time.take(msg(type="end", t=40))
    assert by_time.finished()


# -- the queries a replay sends: first, and after an interruption -------------------------


async def test_an_interrupted_replay_resumes_at_the_same_speed_and_end() -> None:
    scripts = (
        Ws([hello("A", 20), tick(5), tick(6), tick(7)], close=(1001, "server shutting down")),
        Ws(
            [
                hello("A", 20),
                {"type": "replay", "state": "playing", "t": 8, "speed": 10.0},
                tick(8),
                tick(9),
                {"type": "end", "t": 9},
            ],
            close=(1000, "end of range"),
        ),
    )
    async with scripted_server(*scripts) as fake:
        got = await replayed(Client(fake.url, **FAST), from_t=5, to_t=9, speed=10)
    assert got == [5, 6, 7, 8, 9]
    assert [target for target, _ in fake.requests] == [
        "/ws/stream?from_t=5&to_t=9&speed=10.0&batch=100",
        "/ws/stream?from_t=8&to_t=9&speed=10.0&batch=100",
    ]


async def test_a_replay_by_time_resumes_by_t_with_the_same_to_ts() -> None:
    scripts = (
        Ws([hello("A", 20), tick(3)], close=(4008, "slow consumer; resume with from_t=4")),
        Ws([hello("A", 20), tick(4), {"type": "end", "t": 4}], close=(1000, "end of range")),
    )
    async with scripted_server(*scripts) as fake:
        client = Client(fake.url, batch=1, **FAST)
        got = await replayed(client, from_ts=1.25, to_ts=2.5, speed="max")
    assert got == [3, 4]
    assert [target for target, _ in fake.requests] == [
        "/ws/stream?from_ts=1.25&to_ts=2.5&speed=max",
        "/ws/stream?from_t=4&to_ts=2.5&speed=max",
    ]


async def test_a_connection_lost_after_the_last_tick_ends_the_replay() -> None:
    # The end message was lost with the connection, but t=6 = to_t came: the range is
    # complete, and a reconnect would ask for from_t=7 > to_t (a 400).
    scripts = (Ws([hello("A", 20), tick(5), tick(6)], close=(1001, "server shutting down")),)
    async with scripted_server(*scripts) as fake:
        got = await replayed(Client(fake.url, **FAST), from_t=5, to_t=6, speed=2)
    assert got == [5, 6]
    assert len(fake.requests) == 1


async def test_areplay_under_asyncio_ends_with_the_range() -> None:
    end = [hello("A", 9), tick(5), tick(6), {"type": "end", "t": 6}]
    async with scripted_server(Ws(end, close=(1000, "end of range"))) as fake:
        client = Client(fake.url, **FAST)

        async def consume() -> list[int]:
            async with asyncio.timeout(WAIT_S), aclosing(client.areplay(from_t=5)) as ticks:
                return [item["t"] async for item in ticks]

        got = await trio.to_thread.run_sync(asyncio.run, consume())
    assert got == [5, 6]
    assert [target for target, _ in fake.requests] == ["/ws/stream?from_t=5&speed=1.0&batch=100"]


# -- against a real tickcast ----------------------------------------------------------


async def test_replay_gives_exactly_the_range_then_ends(stream_server: Running) -> None:
    srv = stream_server
    await srv.wait_for_t(60)
    client = Client(srv.url(""), fields=["s"], batch=7)
    assert await replayed(client, from_t=10, to_t=50, speed="max") == list(range(10, 51))
    assert await replayed(client, from_t=20, to_t=20, speed=1000) == [20]
    page = (await srv.get("/incremental?from_t=0&limit=60")).json()["data"]
    by_time = await replayed(client, from_ts=page[30]["ts"], to_ts=page[40]["ts"], speed="max")
    assert by_time == list(range(30, 41))
    # The blocking twin, from a thread (this one runs the server): a plain for that ends.
    blocking = partial(client.replay, 25, to_t=32, speed="max")
    ticks = await trio.to_thread.run_sync(lambda: list(blocking()))
    assert [t["t"] for t in ticks] == list(range(25, 33))
    assert list(ticks[0]) == ["type", "t", "ts", "s"]


async def test_speed_paces_the_replay(server: Running) -> None:
    await server.wait_for_t(130)
    page = (await server.get("/incremental?from_t=0&limit=130")).json()["data"]
    span_s = page[120]["ts"] - page[20]["ts"]  # about 1 s at 100 ticks/s
    client = Client(server.url(""), fields=["s"])
    elapsed: dict[object, float] = {}
    for speed in (1.0, "max"):
        start = trio.current_time()
        assert await replayed(client, from_t=20, to_t=120, speed=speed) == list(range(20, 121))
        elapsed[speed] = trio.current_time() - start
    # Loose on purpose (pacing accuracy is measured in bench/): at speed 1 the server
    # waits out the ticks' own gaps, at max it does not wait at all.
    assert elapsed[1.0] >= 0.5 * span_s, (elapsed, span_s)
    assert elapsed["max"] < elapsed[1.0], (elapsed, span_s)


async def test_replay_resumes_across_a_server_restart(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tickcast.client")
    config = make_config(tmp_path, port=free_port())  # the same port and data, twice
    to_t = 290  # about 2.9 s of ticks at speed 1: the restart lands in the middle
    got: list[int] = []
    twenty, done = trio.Event(), trio.Event()

    async def consume(client: Client) -> None:
        async with aclosing(client.areplay(from_t=0, to_t=to_t, speed=1)) as ticks:
            async for item in ticks:
                got.append(item["t"])
                if len(got) == 20:
                    twenty.set()
        done.set()

    with trio.fail_after(WAIT_S):
        async with trio.open_nursery() as nursery:
            async with running(config) as first:
                await first.wait_for_t(to_t + 10)
                nursery.start_soon(consume, Client(first.url(""), fields=["s"], **FAST))
                await twenty.wait()
            stopped_at = len(got)  # the first server has closed the stream (1001)
            async with running(config) as second:
                restarted = trio.current_time()
                await done.wait()
                resumed_s = trio.current_time() - restarted
                page = (await second.get(f"/incremental?from_t=0&limit={to_t + 1}")).json()
    assert got == list(range(to_t + 1))
    assert stopped_at <= to_t  # the restart did interrupt the replay
    # The rest was paced at speed 1 again (loosely: accuracy is bench/'s business).
    rest_s = page["data"][to_t]["ts"] - page["data"][stopped_at]["ts"]
    assert resumed_s >= 0.5 * rest_s, (resumed_s, rest_s)
    connects = [r.getMessage() for r in caplog.records if r.getMessage().startswith("connected")]
    assert len(connects) >= 2, connects
    assert all(f"to_t={to_t}, speed=1.0)" in line for line in connects), connects
    assert f"from_t={stopped_at}," in connects[-1], (stopped_at, connects)


# -- tickcast tail --speed ---------------------------------------------------------------


@pytest.mark.parametrize("speed", [["--speed", "10"], ["--speed", "max"], []])
async def test_tail_replays_exactly_the_range(server: Running, speed: list[str]) -> None:
    await server.wait_for_t(40)
    cmd = [PYTHON, "-m", "tickcast.cli", "tail", server.url(""), "--fields", "s"]
    cmd += ["--from-t", "10", "--to-t", "40", *speed]
    with trio.fail_after(WAIT_S):
        done = await trio.run_process(cmd, capture_stdout=True, capture_stderr=True, check=False)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stderr == b""
    lines = done.stdout.splitlines()
    assert [int(line.split(b'"t":')[1].split(b",")[0]) for line in lines] == list(range(10, 41))


@pytest.mark.parametrize(
    ("flags", "error"),
    [
        (["--from-t", "0", "--speed", "fast"], "speed: expected a number in 0.1..1000 or 'max'"),
        (["--speed", "10"], "from_t: a replay starts somewhere"),
        (["--from-t", "9", "--to-t", "3"], "to_t: must be >= from_t (9), got 3"),
    ],
)
async def test_tail_names_a_bad_replay_flag(flags: list[str], error: str) -> None:
    cmd = [PYTHON, "-m", "tickcast.cli", "tail", "http://127.0.0.1:1", *flags]
    with trio.fail_after(WAIT_S):
        done = await trio.run_process(cmd, capture_stdout=True, capture_stderr=True, check=False)
    assert done.returncode == 1
    assert f"tickcast: error: {error}" in done.stderr.decode()
    assert done.stdout == b""
