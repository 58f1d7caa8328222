"""``tickcast serve`` as a real process: signals, restarts, crashes, settings, stock Hypercorn."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import trio
from trio_websocket import ConnectionClosed

from conftest import PYTHON, ROOT, collect_ticks, free_port, recv_json, tickcast_process, wait_ready
from conftest import ws_connect as open_websocket_url


async def get_json(url: str) -> Any:
    async with httpx.AsyncClient() as client:
        return (await client.get(url)).json()


async def get(url: str) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.get(url)


def launch(cmd: list[str], log: Path, **kwargs: Any) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, **kwargs)


def stored_ticks(data_dir: Path) -> list[dict[str, Any]]:
    out = []
    for path in sorted(data_dir.glob("*.jsonl")):
        out += [orjson.loads(line) for line in path.read_bytes().splitlines()]
    return out


async def wait_exit(proc: subprocess.Popen[bytes], seconds: float) -> int | None:
    """The exit status, or None if still running after ``seconds``."""
    try:
        return await trio.to_thread.run_sync(lambda: proc.wait(seconds))
    except subprocess.TimeoutExpired:
        return None


async def test_sigterm_with_client_attached(tmp_path: Path) -> None:
    with tickcast_process(tmp_path) as srv:
        received: list[int] = []
        async with open_websocket_url(srv.ws_url()) as ws:
            await recv_json(ws)
            received += [t["t"] for t in await collect_ticks(ws, 10)]
            started = time.monotonic()
            srv.proc.send_signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed) as info:
                while True:
                    msg = await recv_json(ws)
                    if msg["type"] == "tick":
                        received.append(msg["t"])
            assert info.value.reason.code == 1001
        status = await wait_exit(srv.proc, 5.0)
        assert status == 0, srv.output()
        assert time.monotonic() - started < 5.0
        stored = {t["t"] for t in stored_ticks(srv.data_dir)}
        assert set(received) <= stored
        assert received == list(range(received[0], received[-1] + 1))
        assert (srv.data_dir / "CLEAN").exists()


async def test_sigint_stops_cleanly(tmp_path: Path) -> None:
    with tickcast_process(tmp_path) as srv:
        srv.proc.send_signal(signal.SIGINT)
        assert await wait_exit(srv.proc, 5.0) == 0, srv.output()


async def test_restart_continues_t_epoch_and_market(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with tickcast_process(tmp_path, data_dir=data, name="first") as first:
        epoch = (await get_json(first.url("/health")))["epoch"]
        async with open_websocket_url(first.ws_url()) as ws:
            await recv_json(ws)
            await collect_ticks(ws, 20)
        first.proc.send_signal(signal.SIGTERM)
        assert await wait_exit(first.proc, 5.0) == 0
    before = stored_ticks(data)
    last = before[-1]
    with tickcast_process(tmp_path, data_dir=data, name="second") as second:
        health = await get_json(second.url("/health"))
        assert health["epoch"] == epoch
        assert health["oldest_t"] == 0
        body = await get_json(second.url(f"/incremental?from_t={last['t']}&limit=2"))
        assert [t["t"] for t in body["data"]] == [last["t"], last["t"] + 1]
        assert body["data"][0] == last
        resumed = body["data"][1]
        # The simulator resumed from the last persisted market state.
        ratio = resumed["s"]["price_norm"] / last["s"]["price_norm"]
        assert 0.95 < ratio < 1.05
        # No t reused, none skipped, across the restart.
        all_ts = [t["t"] for t in (await get_json(second.url("/incremental?limit=10000")))["data"]]
        assert all_ts == list(range(len(all_ts)))


async def test_kill9_then_torn_tail_is_cut(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with tickcast_process(tmp_path, "--fsync", "always", data_dir=data, name="first") as first:
        async with open_websocket_url(first.ws_url()) as ws:
            await recv_json(ws)
            seen = [t["t"] for t in await collect_ticks(ws, 15)]
            # Killed the moment the 15th tick arrives, while ticks are still being sent.
            first.proc.send_signal(signal.SIGKILL)
            await wait_exit(first.proc, 5.0)
            with trio.fail_after(10), pytest.raises(ConnectionClosed):
                while True:
                    await ws.get_message()
    segment = sorted(data.glob("*.jsonl"))[-1]
    intact = stored_ticks(data)
    # A tick is written before it is sent, so a kill -9 (which loses what the process
    # has not written, never what the OS holds) loses no tick a client saw, the last
    # one included. (What fsync=always adds, surviving a power loss, a kill cannot show.)
    assert seen == list(range(seen[0], seen[0] + 15))
    assert set(seen) <= {t["t"] for t in intact}
    with segment.open("ab") as f:  # a torn write: half a record, no newline
        f.write(b'{"type":"tick","t":' + str(intact[-1]["t"] + 1).encode() + b',"ts":17')
    with tickcast_process(tmp_path, data_dir=data, name="second") as second:
        body = await get_json(second.url(f"/incremental?from_t={intact[-1]['t']}&limit=3"))
        ts = [t["t"] for t in body["data"]]
        assert ts[:2] == [intact[-1]["t"], intact[-1]["t"] + 1]
        assert body["data"][0] == intact[-1]
        # The torn record's t went to a new, whole tick, produced after the restart.
        assert body["data"][1]["ts"] >= body["data"][0]["ts"]
        assert set(body["data"][1]) == set(intact[-1])
        assert (await get_json(second.url("/health")))["status"] == "ok"
        second.proc.send_signal(signal.SIGTERM)
        assert await wait_exit(second.proc, 5.0) == 0
    for line in segment.read_bytes().splitlines():
        orjson.loads(line)  # every line is whole JSON again
    stored = [t["t"] for t in stored_ticks(data)]
    assert stored == list(range(stored[0], stored[0] + len(stored)))  # t once each, in order


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("TICKCAST_")}
    full_env.update(env or {})
    return subprocess.run(
        [PYTHON, "-m", "tickcast.cli", *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=30,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["--port", "abc"], {}, "--port"),
        (["--port", "70000"], {}, "port"),
        (["--fsync", "sometimes"], {}, "fsync"),
        (["--rate", "0"], {}, "rate"),
        (["--segment-bytes", "12XB"], {}, "--segment-bytes"),
        ([], {"TICKCAST_RATE": "fast"}, "TICKCAST_RATE"),
        ([], {"TICKCAST_RATTE": "5"}, "TICKCAST_RATTE"),
        (["--source", "ingest"], {}, "ingest_token"),
    ],
)
def test_bad_setting_stops_startup_naming_it(
    tmp_path: Path, args: list[str], env: dict[str, str], named: str
) -> None:
    result = run_cli("serve", "--data-dir", str(tmp_path / "d"), *args, env=env)
    assert result.returncode == 2
    assert named in result.stderr
    assert not (tmp_path / "d").exists()  # nothing was started


def test_help_lists_every_setting() -> None:
    result = run_cli("serve", "--help")
    assert result.returncode == 0
    for flag in [
        "--host",
        "--port",
        "--data-dir",
        "--source",
        "--rate",
        "--agents",
        "--seed",
        "--ring-size",
        "--heartbeat-s",
        "--max-lag",
        "--max-connections",
        "--max-connections-per-ip",
        "--trusted-proxies",
        "--compression",
        "--no-compression",
        "--segment-bytes",
        "--retain-bytes",
        "--retain-s",
        "--fsync",
        "--ingest-token",
    ]:
        assert flag in result.stdout, flag
    assert "TICKCAST_" in result.stdout


async def test_env_settings_apply(tmp_path: Path) -> None:
    with tickcast_process(
        tmp_path, env={"TICKCAST_HEARTBEAT_S": "7", "TICKCAST_RING_SIZE": "50"}
    ) as srv:
        async with open_websocket_url(srv.ws_url()) as ws:
            hello = await recv_json(ws)
        assert hello["heartbeat_s"] == 7.0


async def test_port_zero_logs_the_port(tmp_path: Path) -> None:
    log = tmp_path / "out.log"
    proc = launch(
        [
            PYTHON,
            "-m",
            "tickcast.cli",
            "serve",
            "--port",
            "0",
            "--data-dir",
            str(tmp_path / "d"),
        ],
        log,
        cwd=tmp_path,
    )
    try:
        with trio.fail_after(20):
            while "listening on http://127.0.0.1:" not in log.read_text():
                assert proc.poll() is None, log.read_text()
                await trio.sleep(0.05)
        port = int(log.read_text().split("listening on http://127.0.0.1:")[1].split()[0])
        wait_ready(port, proc)
        assert (await get(f"http://127.0.0.1:{port}/health")).status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        assert await wait_exit(proc, 5.0) == 0


async def test_stock_hypercorn_deployment(tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKCAST_")}
    env.update({"TICKCAST_DATA_DIR": str(data), "TICKCAST_RATE": "50", "TICKCAST_SEED": "1"})
    env["TICKCAST_PORT"] = "1"  # ignored under Hypercorn (--bind decides), and said so
    log = tmp_path / "hypercorn.log"
    proc = launch(
        [
            PYTHON,
            "-m",
            "hypercorn",
            "--worker-class",
            "trio",
            "--bind",
            f"127.0.0.1:{port}",
            "--graceful-timeout",
            "1",
            "tickcast.asgi:app",
        ],
        log,
        env=env,
        cwd=ROOT,
    )
    try:
        wait_ready(port, proc)
        received: list[int] = []
        async with open_websocket_url(f"ws://127.0.0.1:{port}/ws/stream?batch=5") as ws:
            hello = await recv_json(ws)
            assert hello["type"] == "hello"
            received = [t["t"] for t in await collect_ticks(ws, 10)]
            assert received == list(range(received[0], received[0] + len(received)))
            await ws.send_message('{"type":"ping","id":1}')
            while (await recv_json(ws))["type"] != "pong":
                pass
        body = await get_json(f"http://127.0.0.1:{port}/incremental?from_t=0&limit=5")
        assert body["count"] == 5
        r = await get(f"http://127.0.0.1:{port}/incremental?from_t=x")
        assert r.status_code == 400 and r.json()["error"] == "bad_request"
        # Start-up's objects are frozen and GC pauses exported here too (steady_state).
        with trio.fail_after(20):
            while True:
                text = (await get(f"http://127.0.0.1:{port}/metrics")).text
                (line,) = [
                    x for x in text.splitlines() if x.startswith("tickcast_gc_pause_seconds_count")
                ]
                if float(line.split()[1]) > 0:
                    break
                await trio.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        status = await wait_exit(proc, 10.0)
    assert status == 0, log.read_text()
    assert "TICKCAST_PORT=1 is ignored under Hypercorn: its --bind" in log.read_text()
    stored = {t["t"] for t in stored_ticks(data)}
    assert set(received) <= stored
    assert (data / "CLEAN").exists()
