"""The producer's writer (storage/local.py): written before published, in order.

A tick appended while the writer is idle is written and published by ``append``
itself (no channel, no wake-up of the writer); one appended while the writer has
work, or that cannot be written on the event loop (a rollover, ``fsync=always``),
goes through the writer. Either way each tick is on disk before it is published,
and ticks are published in ``t`` order, once each.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import orjson
import pytest
import trio
import trio.testing

from tickcast.config import Config
from tickcast.producer import Producer
from tickcast.storage.local import LocalHistory
from tickcast.storage.store import SegmentStore
from tickcast.tick import EncodedTick


def tick(t: int) -> EncodedTick:
    return EncodedTick.from_dict(
        {"type": "tick", "t": t, "ts": 1.0 + t, "s": {}, "agents": [], "actions": [], "matches": []}
    )


def config(tmp_path: Path, **overrides: object) -> Config:
    return replace(Config(data_dir=tmp_path / "segments", ring_size=64), **overrides)


class Recorder:
    """The publish callback: checks that each published tick is already on disk."""

    def __init__(self, log: LocalHistory) -> None:
        self.log = log
        self.published: list[int] = []

    def __call__(self, published: EncodedTick) -> None:
        assert published.t == len(self.published), "published out of order or twice"
        assert self.log.store.latest_t is not None and self.log.store.latest_t >= published.t
        self.published.append(published.t)


async def test_an_idle_writer_lets_append_publish_before_it_returns(tmp_path: Path) -> None:
    log = await LocalHistory.open(config(tmp_path))
    recorder = Recorder(log)
    async with trio.open_nursery() as nursery:
        await nursery.start(log.run_writer, recorder)
        for t in range(5):
            await trio.testing.wait_all_tasks_blocked()  # the writer is waiting, idle
            await log.append(tick(t))
            assert recorder.published == list(range(t + 1))  # already written and published
            assert log.latest_t == t
        nursery.cancel_scope.cancel()
    store = SegmentStore.open(tmp_path / "segments")
    assert [orjson.loads(raw)["t"] for raw in store.tail(10)] == list(range(5))


@pytest.mark.parametrize("fsync", ["interval", "always", "never"])
async def test_order_holds_across_inline_queued_and_threaded_writes(
    tmp_path: Path, fsync: str
) -> None:
    # Small segments: a rollover (a threaded write through the writer) every ~20
    # ticks; bursts without a yield in between queue ticks behind the writer.
    log = await LocalHistory.open(config(tmp_path, fsync=fsync, segment_bytes=4096))
    recorder = Recorder(log)
    count = 400
    async with trio.open_nursery() as nursery:
        await nursery.start(log.run_writer, recorder)
        for t in range(count):
            await log.append(tick(t))
            if t % 7 == 0:
                await trio.testing.wait_all_tasks_blocked()
        with trio.fail_after(10):
            await log.wait_published(count - 1)
        nursery.cancel_scope.cancel()
    assert recorder.published == list(range(count))
    assert log.failure is None
    store = SegmentStore.open(tmp_path / "segments")
    assert store.latest_t == count - 1
    assert len(store.segments) > 5  # rollovers happened


async def test_produce_numbers_concurrent_callers_consecutively(tmp_path: Path) -> None:
    # A ring of 4 makes append() wait on the writer often: a caller that waits there
    # must not let another take its t (POST /ingest requests run concurrently).
    producer = await Producer.open(config(tmp_path, ring_size=4, fsync="always"))
    content = {"s": {}, "agents": [], "actions": [], "matches": []}
    numbered: list[int] = []

    async def feed(ts: float) -> None:
        for _ in range(40):
            tick = await producer.produce({**content, "ts": ts})
            assert tick.ts == ts  # a ts given is kept
            numbered.append(tick.t)

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(producer.run_writer)
            async with trio.open_nursery() as feeders:
                for i in range(3):
                    feeders.start_soon(feed, 1.0 + i)
            await producer.service.wait_for_t(119)
            nursery.cancel_scope.cancel()
    assert sorted(numbered) == list(range(120))
    stored = SegmentStore.open(tmp_path / "segments").read(0, 200)
    assert [orjson.loads(raw)["t"] for raw in stored] == list(range(120))
    assert producer.next_t == 120
