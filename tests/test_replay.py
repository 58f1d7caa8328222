"""Replay over real sockets (docs/protocol.md, "Replay"), under both transports.

One test per guarantee: a range ends with ``end`` and 1000; each control message is
acknowledged before any tick that follows from it; between two acknowledgements the
ticks are consecutive; a seek goes exactly where asked (clamped and said so); a
paused or paced client is never a slow consumer; a bad control message changes
nothing; ``fields`` and ``batch`` apply to replays. Timing figures (pacing accuracy,
throughput) are in ``bench/replay.py``, not here: nothing below races a timer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from conftest import Running, Transport, make_config, recv_json, running, truncated
from conftest import ws_connect as open_websocket_url
from wsclient import RawClient, Rejected

WAIT_S = 30


def ticks_of(msg: dict[str, Any]) -> list[dict[str, Any]]:
    """The ticks a message carries (a tick, a batch, or none)."""
    if msg["type"] == "tick":
        return [msg]
    if msg["type"] == "batch":
        return list(msg["ticks"])
    return []


async def until_type(ws: WebSocketConnection, kind: str) -> tuple[dict[str, Any], list[int]]:
    """Read until a message of ``kind``; return it and the ``t`` of the ticks before it."""
    seen: list[int] = []
    while True:
        msg = await recv_json(ws)
        if msg["type"] == kind:
            return msg, seen
        assert msg["type"] in ("tick", "batch", "heartbeat"), msg
        seen += [tick["t"] for tick in ticks_of(msg)]


async def read_ticks(ws: WebSocketConnection, n: int) -> list[int]:
    """The ``t`` of the next ``n`` ticks (heartbeats skipped; nothing else expected)."""
    out: list[int] = []
    while len(out) < n:
        msg = await recv_json(ws)
        assert msg["type"] in ("tick", "batch", "heartbeat"), msg
        out += [tick["t"] for tick in ticks_of(msg)]
    return out


async def read_to_close(ws: WebSocketConnection) -> tuple[list[dict[str, Any]], int, str]:
    """Every message until the server closes: (messages, close code, reason)."""
    msgs: list[dict[str, Any]] = []
    with trio.fail_after(WAIT_S):
        try:
            while True:
                msgs.append(orjson.loads(await ws.get_message()))
        except ConnectionClosed as closed:
            assert closed.reason is not None
            return msgs, closed.reason.code, closed.reason.reason or ""


async def control(ws: WebSocketConnection, **msg: Any) -> tuple[dict[str, Any], list[int]]:
    """Send a control message; return its acknowledgement and the ticks sent before it."""
    await ws.send_message(orjson.dumps(msg).decode())
    return await until_type(ws, "replay")


def consecutive(ts: list[int], start: int) -> bool:
    return ts == list(range(start, start + len(ts)))


# -- a range ------------------------------------------------------------------------------


@pytest.mark.parametrize("speed", [None, "max", "1000"])
async def test_a_range_ends_with_end_and_1000(stream_server: Running, speed: str | None) -> None:
    await stream_server.wait_for_t(60)
    pace = "" if speed is None else f"&speed={speed}"
    async with open_websocket_url(stream_server.ws_url(f"?from_t=10&to_t=50&batch=7{pace}")) as ws:
        msgs, code, reason = await read_to_close(ws)
    assert msgs[0]["type"] == "hello"
    ticks = [t["t"] for m in msgs[1:-1] for t in ticks_of(m)]
    assert ticks == list(range(10, 51))
    assert msgs[-1] == {"type": "end", "t": 50}
    assert (code, reason) == (1000, "end of range")


async def test_a_range_by_time_ends_before_the_first_tick_past_to_ts(
    stream_server: Running,
) -> None:
    await stream_server.wait_for_t(40)
    first = (await stream_server.service.history.read(20, 1))[0]
    last = (await stream_server.service.history.read(30, 1))[0]
    query = f"?from_ts={first.ts!r}&to_ts={last.ts!r}&speed=max"
    async with open_websocket_url(stream_server.ws_url(query)) as ws:
        msgs, code, _ = await read_to_close(ws)
    assert [t["t"] for m in msgs for t in ticks_of(m)] == list(range(20, 31))
    assert msgs[-1] == {"type": "end", "t": 30}
    assert code == 1000


async def test_a_range_into_the_future_follows_new_ticks_then_ends(
    stream_server: Running,
) -> None:
    await stream_server.wait_for_t(5)
    latest = stream_server.service.history.latest_t or 0
    to_t = latest + 30  # not produced yet: the stream waits for each, then ends
    async with open_websocket_url(stream_server.ws_url(f"?from_t=0&to_t={to_t}")) as ws:
        msgs, code, _ = await read_to_close(ws)
    assert [t["t"] for m in msgs for t in ticks_of(m)] == list(range(0, to_t + 1))
    assert msgs[-1] == {"type": "end", "t": to_t}
    assert code == 1000


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("from_t=10&to_t=9", "to_t"),
        ("from_ts=10&to_ts=9.5", "to_ts"),
        ("speed=0", "speed"),
        ("speed=1001", "speed"),
        ("speed=fast", "speed"),
    ],
)
async def test_a_bad_replay_parameter_is_a_400_before_the_upgrade(
    stream_server: Running, query: str, param: str
) -> None:
    with trio.fail_after(WAIT_S), pytest.raises(Rejected) as info:
        await RawClient.connect(stream_server.port, f"/ws/stream?{query}")
    assert info.value.status == 400
    body = orjson.loads(info.value.body)
    assert body["error"] == "bad_request"
    assert body["detail"].startswith(f"{param}: "), body


async def test_fields_and_batch_apply_to_a_replay(stream_server: Running) -> None:
    await stream_server.wait_for_t(60)
    url = stream_server.ws_url("?from_t=0&to_t=59&speed=max&batch=20&fields=s")
    async with open_websocket_url(url) as ws:
        msgs, _, _ = await read_to_close(ws)
    batches = [m for m in msgs if m["type"] == "batch"]
    assert [len(b["ticks"]) for b in batches] == [20, 20, 20]
    for tick in (t for b in batches for t in b["ticks"]):
        assert set(tick) == {"type", "t", "ts", "s"}


# -- control messages -------------------------------------------------------------------


async def test_pause_holds_every_tick_until_play(stream_server: Running) -> None:
    await stream_server.wait_for_t(20)
    async with open_websocket_url(stream_server.ws_url("?from_t=0&speed=1")) as ws:
        await recv_json(ws)  # hello
        before = await read_ticks(ws, 3)
        ack, sent = await control(ws, type="pause")
        assert ack == {"type": "replay", "state": "paused", "t": ack["t"], "speed": 1}
        assert consecutive(before + sent, 0)
        assert ack["t"] == (before + sent)[-1] + 1
        # While paused, the server goes on producing; nothing reaches this client.
        await stream_server.wait_for_t(stream_server.service.history.latest_t + 20)
        ack2, during = await control(ws, type="play")
        assert during == []
        assert ack2 == {"type": "replay", "state": "playing", "t": ack["t"], "speed": 1}
        assert consecutive(await read_ticks(ws, 3), ack["t"])


async def test_seek_goes_exactly_there_in_both_directions(stream_server: Running) -> None:
    await stream_server.wait_for_t(200)
    async with open_websocket_url(stream_server.ws_url("?from_t=100&speed=2")) as ws:
        await recv_json(ws)
        await read_ticks(ws, 2)
        for target in (10, 150, 0, 199):
            ack, _ = await control(ws, type="seek", t=target)
            assert ack == {"type": "replay", "state": "playing", "t": target, "speed": 2}
            got = await read_ticks(ws, 3)
            assert consecutive(got[:3], target)


async def test_seek_by_time_starts_at_the_first_tick_at_or_after_it(
    stream_server: Running,
) -> None:
    await stream_server.wait_for_t(80)
    target = (await stream_server.service.history.read(42, 1))[0]
    async with open_websocket_url(stream_server.ws_url("?from_t=0&speed=1")) as ws:
        await recv_json(ws)
        ack, _ = await control(ws, type="seek", ts=target.ts)
        assert ack["t"] == 42
        assert (await read_ticks(ws, 2))[:2] == [42, 43]
        ack, _ = await control(ws, type="seek", ts=target.ts - 0.000001)  # just before it
        assert ack["t"] == 42


async def test_a_seek_outside_retention_is_clamped_and_says_so(stream_server: Running) -> None:
    await stream_server.wait_for_t(10)
    async with open_websocket_url(stream_server.ws_url("?from_t=0&speed=1")) as ws:
        await recv_json(ws)
        ack, _ = await control(ws, type="pause")
        ack, _ = await control(ws, type="seek", t=10**12)
        latest = stream_server.service.history.latest_t
        assert ack["clamped"] is True and ack["state"] == "paused"
        assert latest is not None and ack["t"] <= latest + 1
        ack, _ = await control(ws, type="seek", t=5)
        assert "clamped" not in ack and ack["t"] == 5


async def test_a_seek_below_the_oldest_tick_is_clamped_to_it(
    tmp_path: Path, transport: Transport
) -> None:
    async with truncated(tmp_path, transport) as srv:
        oldest = srv.service.history.oldest_t
        assert oldest is not None
        async with open_websocket_url(srv.ws_url(f"?from_t={oldest}&speed=1000")) as ws:
            await recv_json(ws)
            ack, _ = await control(ws, type="seek", t=3)
            assert ack == {
                "type": "replay",
                "state": "playing",
                "t": oldest,
                "speed": 1000,
                "clamped": True,
            }
            assert consecutive(await read_ticks(ws, 5), oldest)


async def test_live_sends_the_latest_tick_then_every_new_one(stream_server: Running) -> None:
    await stream_server.wait_for_t(50)
    async with open_websocket_url(stream_server.ws_url("?from_t=0&speed=1")) as ws:
        await recv_json(ws)
        await read_ticks(ws, 2)
        ack, _ = await control(ws, type="live")
        assert ack["state"] == "live" and ack["speed"] is None
        assert ack["t"] >= 50
        got = await read_ticks(ws, 20)
        assert consecutive(got, ack["t"])
        # Seek back: the speed set at the start applies again.
        ack, _ = await control(ws, type="seek", t=3)
        assert ack == {"type": "replay", "state": "playing", "t": 3, "speed": 1}


async def test_speed_changes_the_pace_and_is_acknowledged(stream_server: Running) -> None:
    await stream_server.wait_for_t(30)
    # (a range end far ahead: the replay never turns live, so it stays "playing")
    url = stream_server.ws_url("?from_t=0&to_t=1000000&speed=0.5")
    async with open_websocket_url(url) as ws:
        await recv_json(ws)
        first = await read_ticks(ws, 1)
        ack, sent = await control(ws, type="speed", speed="max")
        assert ack["speed"] == "max" and ack["state"] == "playing"
        assert consecutive(first + sent, 0) and ack["t"] == (first + sent)[-1] + 1
        assert consecutive(await read_ticks(ws, 25), ack["t"])
        ack, _ = await control(ws, type="speed", speed=100)
        assert ack["speed"] == 100


async def test_a_plain_resume_takes_controls_too(stream_server: Running) -> None:
    await stream_server.wait_for_t(30)
    async with open_websocket_url(stream_server.ws_url("?from_t=0")) as ws:
        await recv_json(ws)
        got = await read_ticks(ws, 40)  # caught up and live
        ack, sent = await control(ws, type="pause")
        assert ack["state"] == "paused" and ack["speed"] is None
        assert consecutive(got + sent, 0) and ack["t"] == (got + sent)[-1] + 1
        ack2, _ = await control(ws, type="play")  # as fast as it reads, then live
        assert ack2 == {"type": "replay", "state": "playing", "t": ack["t"], "speed": None}
        assert consecutive(await read_ticks(ws, 30), ack["t"])


async def test_controls_in_a_burst_are_each_acknowledged_in_order(
    stream_server: Running,
) -> None:
    await stream_server.wait_for_t(100)
    async with open_websocket_url(stream_server.ws_url("?from_t=0&speed=1&batch=10")) as ws:
        await recv_json(ws)
        for target in (10, 20, 30, 40):
            await ws.send_message(orjson.dumps({"type": "seek", "t": target}).decode())
        acks: list[int] = []
        ticks_after: dict[int, list[int]] = {}
        while len(acks) < 4 or len(ticks_after[acks[-1]]) < 3:
            msg = await recv_json(ws)
            if msg["type"] == "replay":
                acks.append(msg["t"])
                ticks_after[msg["t"]] = []
            elif acks:
                ticks_after[acks[-1]] += [t["t"] for t in ticks_of(msg)]
        assert acks == [10, 20, 30, 40]
        for start, got in ticks_after.items():
            assert consecutive(got, start)


@pytest.mark.parametrize(
    "message",
    [
        {"type": "seek"},
        {"type": "seek", "t": 1, "ts": 2.0},
        {"type": "seek", "t": -1},
        {"type": "seek", "t": "10"},
        {"type": "speed", "speed": 0},
        {"type": "speed", "speed": 5000},
        {"type": "speed"},
        {"type": "speed", "speed": "fast"},
    ],
)
async def test_a_bad_control_message_is_an_error_and_changes_nothing(
    stream_server: Running, message: dict[str, Any]
) -> None:
    await stream_server.wait_for_t(30)
    async with open_websocket_url(stream_server.ws_url("?from_t=0&speed=2")) as ws:
        await recv_json(ws)
        before = await read_ticks(ws, 2)
        await ws.send_message(orjson.dumps(message).decode())
        error, sent = await until_type(ws, "error")
        assert error["code"] == "bad_message"
        assert error["detail"].startswith(f"{message['type']}: ")
        after = await read_ticks(ws, 3)  # the stream goes on, unchanged
        assert consecutive(before + sent + after, 0)
        ack, _ = await control(ws, type="pause")
        assert ack["speed"] == 2  # the speed did not change


# -- not a slow consumer ----------------------------------------------------------------


async def test_a_paused_client_far_behind_is_not_a_slow_consumer(
    tmp_path: Path, transport: Transport
) -> None:
    config = make_config(tmp_path, max_lag=10, rate=200.0)
    async with running(config, transport) as srv:
        await srv.wait_for_t(20)
        async with open_websocket_url(srv.ws_url("?from_t=0&speed=1")) as ws:
            await recv_json(ws)
            ack, _ = await control(ws, type="pause")
            await srv.wait_for_t(srv.service.history.latest_t + 100)  # 10x max_lag behind
            ack2, during = await control(ws, type="play")
            assert during == [] and ack2["t"] == ack["t"]
            assert consecutive(await read_ticks(ws, 5), ack["t"])


async def test_a_slow_paced_replay_far_behind_is_not_a_slow_consumer(
    tmp_path: Path, transport: Transport
) -> None:
    config = make_config(tmp_path, max_lag=10, rate=200.0)
    async with running(config, transport) as srv:
        await srv.wait_for_t(5)
        async with open_websocket_url(srv.ws_url("?from_t=0&speed=0.5")) as ws:
            await recv_json(ws)
            got = await read_ticks(ws, 2)
            await srv.wait_for_t(srv.service.history.latest_t + 100)
            got += await read_ticks(ws, 2)  # still served, at its pace
            assert consecutive(got, 0)


async def test_a_paused_stream_still_gets_heartbeats(tmp_path: Path, transport: Transport) -> None:
    async with running(make_config(tmp_path, heartbeat_s=0.2), transport) as srv:
        await srv.wait_for_t(5)
        async with open_websocket_url(srv.ws_url("?from_t=0&speed=1")) as ws:
            await recv_json(ws)
            await control(ws, type="pause")
            with trio.fail_after(WAIT_S):
                while (await recv_json(ws))["type"] != "heartbeat":
                    pass
