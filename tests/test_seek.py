"""Seeking by time (docs/api.md): ``from_ts`` on ``/incremental`` and ``/ws/stream``,
alone or with ``from_t`` (both bounds apply), and ``/incremental``'s ``to_t``/``to_ts``.

The ticks come through ``POST /ingest`` with chosen ``ts`` values, so every expected
start is known exactly; a small ring puts most of them in the segment files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import trio

from conftest import Running, Transport, collect_ticks, make_config, recv_json, running
from conftest import ws_connect as open_websocket_url
from wsclient import RawClient, Rejected

TOKEN = "ingest-s3cret"
CONTENT = {
    "s": {"price_norm": 0.5, "volatility": 0.0, "liquidity": 1.0, "imbalance": 0.0},
    "agents": [{"id": 0, "experience": 0.1}],
    "actions": [],
    "matches": [],
}
RING = 20
# Equal pairs, so an exact ts hits the first of a run: t = 0..199, ts 1000.0 .. 1099.5
STAMPS = [1000.0 + (t // 2) + (0.5 if t >= 120 else 0.0) for t in range(200)]


async def ingest(srv: Running, stamps: Sequence[float]) -> None:
    """Append one tick per ``ts``; returns once they are all published."""
    async with httpx.AsyncClient() as client:
        for i in range(0, len(stamps), 50):
            body = [{**CONTENT, "ts": ts} for ts in stamps[i : i + 50]]
            r = await client.post(
                srv.url("/ingest"),
                content=orjson.dumps(body),
                headers={"Authorization": f"Bearer {TOKEN}"},
            )
            assert r.status_code == 200, r.text


def seek_config(tmp_path: Path, **kw: Any) -> Any:
    return make_config(
        tmp_path,
        source="ingest",
        ingest_token=TOKEN,
        ring_size=RING,
        segment_bytes=4096,  # ~18 ticks a segment: ~11 segments below the ring
        **kw,
    )


def first_at_or_after(stamps: Sequence[float], x: float) -> int:
    return next((t for t, ts in enumerate(stamps) if ts >= x), len(stamps))


async def page(srv: Running, query: str) -> dict[str, Any]:
    r = await srv.get(f"/incremental?{query}")
    assert r.status_code == 200, r.text
    body = r.json()
    assert isinstance(body, dict)
    return body


async def test_incremental_from_ts_exact_first_tick_in_files_and_ring(tmp_path: Path) -> None:
    async with running(seek_config(tmp_path)) as srv:
        with trio.fail_after(30):
            await ingest(srv, STAMPS)
        ring_oldest = srv.producer.log.ring.oldest_t
        assert ring_oldest == len(STAMPS) - RING
        assert srv.producer.log.store.segment_count > 5
        targets = [0, 1, 2, 37, 38, 119, 120, 121, ring_oldest - 1, ring_oldest, 185, 199]
        for k in targets:
            for x in (STAMPS[k], STAMPS[k] - 0.25):
                expected = first_at_or_after(STAMPS, x)
                body = await page(srv, f"from_ts={x}&limit=3")
                assert body["from_t"] == expected, (k, x)
                assert body["data"][0]["t"] == expected
                assert body["data"][0]["ts"] >= x
                assert expected == 0 or STAMPS[expected - 1] < x
                assert body["next_t"] == expected + body["count"]


async def test_incremental_from_ts_edges(tmp_path: Path) -> None:
    async with running(seek_config(tmp_path)) as srv:
        with trio.fail_after(30):
            await ingest(srv, STAMPS[:50])
        body = await page(srv, "from_ts=2000000000.5")  # past the latest tick
        assert (body["from_t"], body["count"], body["next_t"]) == (50, 0, 50)
        assert body["latest_t"] == 49 and body["data"] == []
        body = await page(srv, "from_ts=0&limit=2")  # before the oldest
        assert [t["t"] for t in body["data"]] == [0, 1]
        body = await page(srv, "from_ts=1.0e3&limit=1")  # exponent form
        assert body["from_t"] == 0
        for query, param in [
            ("from_ts=x", "from_ts"),
            ("from_ts=-1", "from_ts"),
            ("from_ts=nan", "from_ts"),
            ("from_ts=inf", "from_ts"),
            ("from_ts=1e999", "from_ts"),
            ("from_ts=", "from_ts"),
        ]:
            r = await srv.get(f"/incremental?{query}")
            assert r.status_code == 400, query
            assert r.json()["error"] == "bad_request"
            assert param in r.json()["detail"]


def last_at_or_before(stamps: Sequence[float], x: float) -> int:
    return max((t for t, ts in enumerate(stamps) if ts <= x), default=-1)


async def test_incremental_from_t_and_from_ts_both_apply(tmp_path: Path) -> None:
    async with running(seek_config(tmp_path)) as srv:
        with trio.fail_after(30):
            await ingest(srv, STAMPS)
        # The later bound wins, whichever it is, in the files and in the ring.
        for from_t, x in [(3, 1000.0), (3, 1010.0), (150, 1010.0), (100, 1090.0), (185, 0.0)]:
            expected = max(from_t, first_at_or_after(STAMPS, x))
            body = await page(srv, f"from_t={from_t}&from_ts={x}&limit=4")
            assert body["from_t"] == expected, (from_t, x)
            assert [t["t"] for t in body["data"]] == list(range(expected, expected + 4))
            assert all(t["ts"] >= x for t in body["data"])


async def test_incremental_to_t_and_to_ts_end_the_page_inclusive(tmp_path: Path) -> None:
    async with running(seek_config(tmp_path)) as srv:
        with trio.fail_after(30):
            await ingest(srv, STAMPS)

        async def ts_of(query: str) -> list[int]:
            return [t["t"] for t in (await page(srv, query))["data"]]

        assert await ts_of("from_t=10&to_t=12") == [10, 11, 12]
        assert await ts_of("from_t=10&to_t=10") == [10]
        assert await ts_of("from_t=10&to_t=100&limit=5") == list(range(10, 15))
        assert await ts_of("from_t=195&to_t=5000") == list(range(195, 200))
        assert await ts_of("to_t=2") == [0, 1, 2]
        for x in (STAMPS[7], STAMPS[7] - 0.25, STAMPS[150], 999.0, 5e9):
            last = last_at_or_before(STAMPS, x)
            assert await ts_of(f"from_t=0&to_ts={x}") == list(range(last + 1)), x
        # Every bound at once: from both starts, to the earlier of both ends.
        query = f"from_t=30&from_ts={STAMPS[40]}&to_t=190&to_ts={STAMPS[45]}"
        assert await ts_of(query) == list(range(40, 46))
        # A range that holds nothing (an end before the start): an empty page where it
        # would start, not a 400, since the schema cannot say that to_t >= from_t.
        for query, start in [(f"from_ts={STAMPS[60]}&to_t=50", 60), ("from_t=5&to_t=4", 5)]:
            body = await page(srv, query)
            assert (body["from_t"], body["count"], body["next_t"], body["data"]) == (
                start,
                0,
                start,
                [],
            ), query
        for query in ["to_t=-1", "to_t=x", "to_ts=-1", "to_ts=nan"]:
            r = await srv.get(f"/incremental?{query}")
            assert r.status_code == 400, query
            assert r.json()["error"] == "bad_request"
            assert r.json()["detail"].startswith("to_t"), r.json()


async def test_stream_from_t_and_from_ts_both_apply(tmp_path: Path, transport: Transport) -> None:
    async with running(seek_config(tmp_path), transport) as srv:
        with trio.fail_after(30):
            await ingest(srv, STAMPS)
        for from_t, x, expected in [
            (5, STAMPS[40], 40),
            (150, 1000.0, 150),
            (185, STAMPS[190], 190),
        ]:
            query = f"?from_t={from_t}&from_ts={x}&batch=50"
            async with open_websocket_url(srv.ws_url(query), max_message_size=2**24) as ws:
                with trio.fail_after(30):
                    hello = await recv_json(ws)
                    assert hello["type"] == "hello" and "truncated" not in hello
                    replay = await collect_ticks(ws, 200 - expected)
            assert [t["t"] for t in replay] == list(range(expected, 200)), (from_t, x)


async def test_stream_from_ts_replays_from_the_files_then_goes_live(tmp_path: Path) -> None:
    async with running(seek_config(tmp_path)) as srv:
        with trio.fail_after(30):
            await ingest(srv, STAMPS)
        k = 38  # the first of a pair (36, 37 share a ts)
        async with open_websocket_url(
            srv.ws_url(f"?from_ts={STAMPS[k]}&batch=50"), max_message_size=2**24
        ) as ws:
            with trio.fail_after(30):
                hello = await recv_json(ws)
                assert hello["type"] == "hello" and "truncated" not in hello
                assert (hello["oldest_t"], hello["latest_t"]) == (0, 199)
                replay = await collect_ticks(ws, 200 - k)
                assert [t["t"] for t in replay] == list(range(k, 200))
                assert replay[0]["ts"] == STAMPS[k] and STAMPS[k - 1] < STAMPS[k]
                await ingest(srv, [2000.0])
                live = await collect_ticks(ws, 1)
        assert live[0]["t"] == 200


async def test_stream_from_ts_in_the_ring(tmp_path: Path) -> None:
    async with running(seek_config(tmp_path)) as srv:
        with trio.fail_after(30):
            await ingest(srv, STAMPS)
        x = STAMPS[190] - 0.25
        async with open_websocket_url(srv.ws_url(f"?from_ts={x}")) as ws:
            with trio.fail_after(30):
                assert (await recv_json(ws))["type"] == "hello"
                ticks = await collect_ticks(ws, 10)
        assert [t["t"] for t in ticks] == list(range(190, 200))


async def test_stream_from_ts_past_the_end_starts_with_the_next_tick(tmp_path: Path) -> None:
    async with running(seek_config(tmp_path)) as srv:
        with trio.fail_after(30):
            await ingest(srv, STAMPS[:30])
        async with open_websocket_url(srv.ws_url("?from_ts=5000000000")) as ws:
            with trio.fail_after(30):
                hello = await recv_json(ws)
                assert hello["latest_t"] == 29 and "truncated" not in hello
                # Like a future from_t: the next tick produced is the first one sent,
                # whatever its ts (from_ts is resolved to a t at connect, not a filter).
                await ingest(srv, [1001.0, 1002.0])
                ticks = await collect_ticks(ws, 2)
        assert [(t["t"], t["ts"]) for t in ticks] == [(30, 1001.0), (31, 1002.0)]


async def test_stream_from_ts_on_an_empty_history_waits_for_the_first_tick(
    tmp_path: Path,
) -> None:
    async with (
        running(seek_config(tmp_path)) as srv,
        open_websocket_url(srv.ws_url("?from_ts=1")) as ws,
    ):
        with trio.fail_after(30):
            hello = await recv_json(ws)
            assert (hello["oldest_t"], hello["latest_t"]) == (None, None)
            await ingest(srv, [1000.0])
            assert (await collect_ticks(ws, 1))[0]["t"] == 0


async def test_stream_bad_from_ts_is_400_before_the_upgrade(tmp_path: Path) -> None:
    async with running(seek_config(tmp_path)) as srv:
        for query in ["from_ts=abc", "from_ts=-3", "from_t=1&from_ts=1e999"]:
            with trio.fail_after(10), pytest.raises(Rejected) as info:
                await RawClient.connect(srv.port, f"/ws/stream?{query}")
            assert info.value.status == 400
            body = orjson.loads(info.value.body)
            assert body["error"] == "bad_request" and "from_ts" in body["detail"]


async def test_from_ts_before_the_oldest_after_retention_is_truncated(tmp_path: Path) -> None:
    config = seek_config(tmp_path, retain_bytes=12 * 1024)
    async with running(config) as srv:
        with trio.fail_after(30):
            await ingest(srv, STAMPS)
        oldest = srv.service.history.oldest_t
        assert oldest is not None and 0 < oldest < len(STAMPS) - RING
        body = await page(srv, "from_ts=0&limit=1")
        assert body["from_t"] == oldest
        async with open_websocket_url(srv.ws_url("?from_ts=0&batch=500")) as ws:
            with trio.fail_after(30):
                hello = await recv_json(ws)
                assert hello["truncated"] is True and hello["oldest_t"] == oldest
                assert (await collect_ticks(ws, 1))[0]["t"] == oldest
        # A time after the oldest tick's is no truncation: nothing it asks for is gone.
        x = STAMPS[oldest + 5]
        expected = first_at_or_after(STAMPS, x)
        async with open_websocket_url(srv.ws_url(f"?from_ts={x}")) as ws:
            with trio.fail_after(30):
                hello = await recv_json(ws)
                assert "truncated" not in hello
                assert (await collect_ticks(ws, 1))[0]["t"] == expected


async def test_both_bounds_are_truncated_only_if_from_t_reached_below_the_oldest(
    tmp_path: Path,
) -> None:
    config = seek_config(tmp_path, retain_bytes=12 * 1024)
    async with running(config) as srv:
        with trio.fail_after(30):
            await ingest(srv, STAMPS)
        oldest = srv.service.history.oldest_t
        assert oldest is not None and oldest > 0
        for from_t, truncated in [(0, True), (oldest - 1, True), (oldest, False)]:
            query = f"?from_t={from_t}&from_ts=0&batch=500"
            async with open_websocket_url(srv.ws_url(query), max_message_size=2**24) as ws:
                with trio.fail_after(30):
                    hello = await recv_json(ws)
                    assert hello.get("truncated", False) is truncated, from_t
                    assert (await collect_ticks(ws, 1))[0]["t"] == oldest
