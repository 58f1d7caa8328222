"""Reads of the segment files shared by the readers of one stretch (storage/shared_reads.py).

Over a real store: a history with a small ring, so that reads of old ticks come from
the files. Two readers of the same stretch get the same tick objects (one read of the
files, frames built once); every answer is what an unshared read gives.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import trio

from tickcast.config import Config
from tickcast.storage.local import LocalHistory
from tickcast.storage.shared_reads import CHUNK, SharedReads
from tickcast.tick import EncodedTick

TICKS = 6000


def tick(t: int) -> EncodedTick:
    return EncodedTick.from_dict({"type": "tick", "t": t, "ts": 1.0 + t, "s": {"x": t}})


async def filled(tmp_path: Path) -> LocalHistory:
    """A history of ticks 0..TICKS-1 written to the files; the ring holds the last 64."""
    config = replace(Config(data_dir=tmp_path / "segments", ring_size=64), fsync="never")
    log = await LocalHistory.open(config)
    async with trio.open_nursery() as nursery:
        await nursery.start(log.run_writer, lambda _tick: None)
        for t in range(TICKS):
            await log.append(tick(t))
        await log.wait_published(TICKS - 1)
        nursery.cancel_scope.cancel()
    return log


async def test_readers_of_one_stretch_share_the_ticks(tmp_path: Path) -> None:
    log = await filled(tmp_path)
    a = await log.read(1000, CHUNK, shared=True)
    b = await log.read(1000, CHUNK, shared=True)
    assert [t.t for t in a] == list(range(1000, 1000 + CHUNK))
    assert all(x is y for x, y in zip(a, b, strict=True))  # the same objects: encoded once


@pytest.mark.parametrize(("from_t", "limit"), [(0, 256), (5, 300), (255, 256), (1000, 1024)])
async def test_a_shared_read_is_the_unshared_read(tmp_path: Path, from_t: int, limit: int) -> None:
    log = await filled(tmp_path)
    shared = await log.read(from_t, limit, shared=True)
    direct = await log.read(from_t, limit)
    assert [t.raw for t in shared] == [t.raw for t in direct]


async def test_concurrent_readers_of_a_chunk_share_one_read_of_the_files(
    tmp_path: Path,
) -> None:
    log = await filled(tmp_path)
    shared = SharedReads(log._read_files)
    results: list[list[EncodedTick]] = []

    async def reader(from_t: int) -> None:
        results.append(await shared.read(from_t, CHUNK))

    async with trio.open_nursery() as nursery:
        for from_t in (512, 520, 600):
            nursery.start_soon(reader, from_t)
    # 512 reads the chunk 512..575; 520 waits for it, then shares the next one
    # (576..639), which 600 reads with 640..703.
    assert shared.reads == 2
    assert sorted(r[0].t for r in results) == [512, 520, 600]
    for r in results:
        assert [t.t for t in r] == list(range(r[0].t, r[0].t + CHUNK))


async def test_kept_chunks_are_bounded_in_bytes(tmp_path: Path) -> None:
    log = await filled(tmp_path)
    chunk_bytes = sum(len(t.raw) for t in await log._read_files(0, CHUNK))
    shared = SharedReads(log._read_files, keep_bytes=10 * chunk_bytes)
    for k in range(13):
        await shared.read(k * CHUNK, CHUNK)
    assert len(shared._kept) <= 10 and shared.kept_bytes <= 10 * chunk_bytes + CHUNK * 2
    await shared.read(0, CHUNK)  # pushed out: read again
    assert shared.reads == 14
    await shared.read(12 * CHUNK, CHUNK)  # still kept
    assert shared.reads == 14


async def test_a_probe_or_a_page_is_not_shared(tmp_path: Path) -> None:
    log = await filled(tmp_path)
    shared = SharedReads(log._read_files)
    assert [t.t for t in await shared.read(7, 1)] == [7]
    assert len(await shared.read(0, 2000)) == 2000
    assert shared.reads == 0 and not shared._kept


async def test_a_chunk_where_the_files_end_is_read_again_past_its_end(tmp_path: Path) -> None:
    ticks = [tick(t) for t in range(300)]
    end = 260  # the files hold 0..259 at first, then grow

    async def files(from_t: int, limit: int) -> list[EncodedTick]:
        return ticks[from_t : min(from_t + limit, end)]

    shared = SharedReads(files)
    assert [t.t for t in await shared.read(200, CHUNK)] == list(range(200, 260))
    end = 300
    assert [t.t for t in await shared.read(256, CHUNK)] == list(range(256, 300))
    assert shared.reads == 2  # 192..259 (the files ended), then 256.. again
