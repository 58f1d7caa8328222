"""Reads of the segment files shared by the streams on one stretch (storage/shared_reads.py).

Over a real store: a history with a small ring, so that reads of old ticks come from
the files. Two streams taking the same step get the same tick objects (one read of
the files, frames built once); every answer is what an unshared read gives.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import trio

from tickcast.config import Config
from tickcast.storage.local import LocalHistory
from tickcast.storage.shared_reads import SharedReads
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


STEP = 100  # a replay's step at batch=100


async def test_streams_taking_one_step_share_the_ticks(tmp_path: Path) -> None:
    log = await filled(tmp_path)
    a = await log.read(1000, STEP, shared=True)
    b = await log.read(1000, STEP, shared=True)
    assert [t.t for t in a] == list(range(1000, 1000 + STEP))
    assert all(x is y for x, y in zip(a, b, strict=True))  # the same objects: encoded once
    c = await log.read(1000, STEP)  # a page reads on its own
    assert not any(x is y for x, y in zip(a, c, strict=True))


@pytest.mark.parametrize(("from_t", "limit"), [(0, 256), (5, 300), (255, 1), (1000, 1024)])
async def test_a_shared_read_is_the_unshared_read(tmp_path: Path, from_t: int, limit: int) -> None:
    log = await filled(tmp_path)
    await log.read(from_t, limit + 7, shared=True)  # a longer step kept: cut to the limit
    shared = await log.read(from_t, limit, shared=True)
    direct = await log.read(from_t, limit)
    assert [t.raw for t in shared] == [t.raw for t in direct]


async def test_streams_asking_at_once_share_one_read_of_the_files(tmp_path: Path) -> None:
    log = await filled(tmp_path)
    shared = SharedReads(log._read_files)
    results: list[list[EncodedTick]] = []

    async def stream() -> None:
        results.append(await shared.read(512, STEP))

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(stream)
    assert shared.reads == 1 and shared.shared == 2
    assert all(r[0] is results[0][0] for r in results)


async def test_a_step_is_shared_while_a_stream_holds_it_and_no_longer(tmp_path: Path) -> None:
    log = await filled(tmp_path)
    shared = SharedReads(log._read_files)
    held = await shared.read(0, STEP)
    assert (await shared.read(0, STEP)) is held and shared.reads == 1
    first = held[0]
    del held  # no stream holds it any more: nothing is kept
    again = await shared.read(0, STEP)
    assert shared.reads == 2 and again[0] is not first


async def test_a_step_cut_by_the_end_of_the_files_is_read_again_for_more(
    tmp_path: Path,
) -> None:
    ticks = [tick(t) for t in range(300)]
    end = 260  # the files hold 0..259 at first, then grow

    async def files(from_t: int, limit: int) -> list[EncodedTick]:
        return ticks[from_t : min(from_t + limit, end)]

    shared = SharedReads(files)
    short = await shared.read(200, STEP)
    assert [t.t for t in short] == list(range(200, 260))
    end = 300
    longer = await shared.read(200, STEP)
    assert [t.t for t in longer] == list(range(200, 300))
    assert [t.t for t in await shared.read(200, 50)] == list(range(200, 250))
    assert shared.reads == 2  # 200..259, then 200..299 (held, so shared for 50)
