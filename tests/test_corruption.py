"""A flipped byte in a segment is never served: /incremental says so, /health says so,
a stream that needs the record closes with 1011 (docs/storage.md integrity)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
import trio
from trio_websocket import ConnectionClosed

from conftest import Running, collect_ticks, make_config, recv_json, running
from conftest import ws_connect as open_websocket_url


def flip_byte_of_record(data_dir: Path, t: int) -> tuple[Path, int]:
    """Flip one byte inside record ``t`` (found through its .idx entry)."""
    for idx in sorted(data_dir.glob("*.idx")):
        raw = idx.read_bytes()
        base = struct.unpack_from("<Q", raw, 8)[0]
        count = (len(raw) - 16) // 16
        if base <= t < base + count:
            offset, length, _crc = struct.unpack_from("<QII", raw, 16 + (t - base) * 16)
            data = idx.with_suffix(".jsonl")
            with data.open("r+b") as f:
                f.seek(offset + length // 2)
                byte = f.read(1)
                f.seek(offset + length // 2)
                f.write(bytes([byte[0] ^ 0x01]))
            return data, offset
    raise AssertionError(f"t={t} not on disk")


@pytest.fixture
async def small_ring(tmp_path: Path) -> Running:  # type: ignore[misc]
    async with running(make_config(tmp_path, ring_size=20, rate=300.0)) as srv:
        await srv.wait_for_t(120)
        await trio.to_thread.run_sync(srv.producer.log.store.sync)
        yield srv


async def test_flipped_byte_is_reported_not_served(small_ring: Running) -> None:
    srv = small_ring
    path, offset = flip_byte_of_record(srv.config.data_dir, 10)
    r = await srv.get("/incremental?from_t=5&limit=10")
    assert r.status_code == 500
    body = r.json()
    assert body["error"] == "corrupt_record"
    assert path.name in body["detail"]
    assert f"byte {offset}" in body["detail"]
    assert "t=10" in body["detail"]
    health = await srv.get("/health")
    assert health.status_code == 503
    assert health.json()["status"] == "degraded"
    assert path.name in health.json()["reason"]
    # Reads that do not touch the damaged record still work.
    ok = (await srv.get("/incremental?from_t=0&limit=10")).json()
    assert [t["t"] for t in ok["data"]] == list(range(10))


async def test_stream_needing_a_corrupt_record_closes_1011(small_ring: Running) -> None:
    srv = small_ring
    flip_byte_of_record(srv.config.data_dir, 10)
    async with open_websocket_url(srv.ws_url("?from_t=5")) as ws:
        await recv_json(ws)
        with pytest.raises(ConnectionClosed) as info:
            await collect_ticks(ws, 50)
    assert info.value.reason.code == 1011
    assert "corrupt" in (info.value.reason.reason or "")
