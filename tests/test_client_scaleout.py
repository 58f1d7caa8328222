"""tickcast.client against the real thing: scale-out edges and a read-token server.

A real producer and edge on a real Redis (``test_edge.py``'s helpers) for the
epoch change (4009) and for edges that cannot serve a range (a refused or broken
``history_url``): the client must end with a clear error there, within a bound,
never loop. A ``tickcast serve --read-token`` subprocess for the token.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from conftest import tickcast_process
from redis_server import RedisServer
from test_corruption import flip_byte_of_record
from test_edge import (
    EDGE_READ,
    READ,
    WRONG,
    EdgeRunning,
    edge_config,
    producer,
    refused_edge,
    running_edge,
    wait_edge_at,
)
from tickcast.client import (
    Client,
    EpochChangedError,
    NoProgressError,
    RefusedError,
    TruncatedError,
)

WAIT_S = 60
FAST = {"backoff_initial_s": 0.05, "backoff_max_s": 0.5}


async def next_ts(stream: Any, n: int) -> list[int]:
    """The ``t`` of the next ``n`` ticks of an ``astream()``."""
    with trio.fail_after(WAIT_S):
        return [(await anext(stream))["t"] for _ in range(n)]


def first_of_stream(client: Client, **start: Any) -> dict[str, Any]:
    """The first tick of the blocking ``client.stream()`` (run in a worker thread)."""
    with contextlib.closing(client.stream(**start)) as ticks:
        return next(iter(ticks))


async def in_thread(fn: Any, *args: Any, **kwargs: Any) -> Any:
    with trio.fail_after(WAIT_S):
        return await trio.to_thread.run_sync(partial(fn, *args, **kwargs), abandon_on_cancel=True)


# -- 4009: a real edge sees a new epoch ---------------------------------------------------


async def test_a_real_edges_epoch_change_raises_or_carries_on(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with running_edge(edge_config(tmp_path, redis_server)) as edge:
        strict = Client(edge.url(""), fields=["s"], **FAST)
        lenient = Client(edge.url(""), fields=["s"], on_gap="continue", **FAST)
        async with (
            aclosing(strict.astream(from_t=0)) as a,
            aclosing(lenient.astream(from_t=0)) as b,
        ):
            async with producer(tmp_path / "first", redis_server) as first:
                old = first.service.history.epoch
                await wait_edge_at(edge, 10)
                assert await next_ts(a, 5) == [0, 1, 2, 3, 4]
                before = await next_ts(b, 5)
            # A producer with a wiped history: a new epoch, t from 0 again. The edge
            # closes its clients with 4009; their resume sees the new epoch.
            async with producer(tmp_path / "second", redis_server) as second:
                new = second.service.history.epoch
                with trio.fail_after(WAIT_S), pytest.raises(EpochChangedError) as info:
                    while True:
                        await anext(a)
                assert (info.value.old, info.value.new) == (old, new)
                got = list(before)
                with trio.fail_after(WAIT_S):
                    while got[-1] != 0 or len(got) == len(before):
                        got.append((await anext(b))["t"])
                    got += await next_ts(b, 5)
    reset = len(got) - 6
    assert got[:reset] == list(range(reset))  # the old history, up to the close
    assert got[reset:] == [0, 1, 2, 3, 4, 5]  # the new one, from its first tick


# -- the read token, against a real tickcast serve --read-token ---------------------------


@pytest.fixture
def protected(tmp_path: Path) -> Iterator[str]:
    """The URL of a ``tickcast serve --read-token READ`` subprocess."""
    with tickcast_process(tmp_path, "--read-token", READ) as proc:
        yield proc.url("")


async def test_the_read_token_is_sent_and_a_refusal_is_raised_at_once(protected: str) -> None:
    client = Client(protected, token=READ, fields=["s"], **FAST)
    async with aclosing(client.astream(from_t=0)) as ticks:
        assert await next_ts(ticks, 3) == [0, 1, 2]
    with trio.fail_after(WAIT_S):
        assert [t["t"] for t in await client.ahistory(0, 3)] == [0, 1, 2]
    for token in (WRONG, None):
        other = Client(protected, token=token, **FAST)
        with trio.fail_after(WAIT_S), pytest.raises(RefusedError) as info:
            await next_ts(other.astream(), 1)
        assert info.value.status == 401 and "read token" in info.value.detail
        with trio.fail_after(WAIT_S), pytest.raises(RefusedError) as info:
            await other.ahistory(0, 5)
        assert info.value.status == 401


async def test_a_protected_edge_takes_its_own_read_token(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with producer(tmp_path, redis_server, read_token=READ):
        config = edge_config(tmp_path, redis_server, read_token=EDGE_READ)
        async with running_edge(config) as edge:
            await wait_edge_at(edge, 5)
            ok = Client(edge.url(""), token=EDGE_READ, **FAST)
            async with aclosing(ok.astream(from_t=0)) as ticks:
                assert await next_ts(ticks, 3) == [0, 1, 2]
            with trio.fail_after(WAIT_S), pytest.raises(RefusedError) as info:
                await next_ts(Client(edge.url(""), token=READ, **FAST).astream(), 1)
            assert info.value.status == 401


# -- an edge that cannot fill a hole: a clear error, never a loop -------------------------


async def test_an_edge_refused_by_history_url_gives_truncated_not_a_loop(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    async with refused_edge(tmp_path, redis_server) as edge:
        client = Client(edge.url(""), token=READ, **FAST)
        with pytest.raises(TruncatedError) as info:
            await in_thread(first_of_stream, client, from_t=0)
        assert info.value.next_t == 0 and info.value.oldest_t > 0
        with pytest.raises(TruncatedError):
            await in_thread(client.history, 0, 100)


@pytest.fixture
async def stuck_edge(tmp_path: Path, redis_server: RedisServer) -> AsyncIterator[EdgeRunning]:
    """An edge whose history_url cannot serve t=10 (a corrupt record on the producer),
    so every resume at t <= 10 ends with 4008 at the same t: a resume that cannot move."""
    async with producer(tmp_path, redis_server, rate=300.0, ring_size=20) as prod:
        await prod.wait_for_t(300)
        await trio.to_thread.run_sync(prod.producer.log.store.sync)
        flip_byte_of_record(prod.config.data_dir, 10)
        config = edge_config(tmp_path, redis_server, ring_size=100, history_url=prod.url(""))
        async with running_edge(config) as edge:
            await wait_edge_at(edge, 300)
            assert edge.edge.mirror.oldest_t == 0  # the producer's history is offered
            yield edge


async def test_a_resume_that_cannot_move_raises_no_progress(
    stuck_edge: EdgeRunning, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="tickcast.client")
    client = Client(stuck_edge.url(""), backoff_initial_s=0.1, backoff_max_s=1.0)
    with pytest.raises(NoProgressError) as info:
        await in_thread(first_of_stream, client, from_t=5)
    assert info.value.next_t == 5 and info.value.attempts >= 3
    assert "4008" in info.value.detail and "from_t=5" in info.value.detail
    # Each hello was answered, yet the waits grew: a hello that yields no tick does
    # not reset the backoff (0.05..0.1 s, then 0.1..0.2 s).
    delays = [
        float(r.getMessage().split()[2])
        for r in caplog.records
        if r.getMessage().startswith("reconnecting in")
    ]
    assert len(delays) >= 2 and delays[1] >= 0.1, delays


async def test_history_over_a_range_the_server_cannot_read_raises(stuck_edge: EdgeRunning) -> None:
    client = Client(stuck_edge.url(""), **FAST)
    with pytest.raises(NoProgressError) as info:
        await in_thread(client.history, 5, 100)
    assert info.value.next_t == 5
    assert "empty page" in info.value.detail
