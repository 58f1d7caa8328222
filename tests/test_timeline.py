"""``GET /timeline`` (docs/api.md): the sample grid, then the route on a real server over
a stored history (read from the segment files and the ring), against ``/incremental``;
an ingest source's own members, the range parameters, 400s and the read token."""

from __future__ import annotations

from collections.abc import AsyncIterator
from itertools import pairwise
from pathlib import Path
from typing import Any

import orjson
import pytest

from conftest import Running, make_config, running
from tickcast.sources.simulator import Market
from tickcast.storage import SegmentStore
from tickcast.tick import EncodedTick
from tickcast.web.timeline import MAX_POINTS, Samples, numeric_members, sample_grid

HISTORY = 3000  # ticks on disk before the server starts; the last RING of them in memory
RING = 500
TOKEN = "r3ad"


# -- the grid (plain Python) ----------------------------------------------------------


def test_grid_is_every_tick_when_they_fit() -> None:
    assert sample_grid(5, 14, 10) == (1, list(range(5, 15)))
    assert sample_grid(7, 7, 2) == (1, [7])
    assert sample_grid(8, 7, 10) == (1, [])


@pytest.mark.parametrize("points", [2, 3, 4, 10, 999, 1000, MAX_POINTS])
def test_grid_keeps_within_points_with_both_ends(points: int) -> None:
    for first, last in [(0, 999_999), (3, 10_000), (12_345, 2_000_001), (0, points), (1, 5000)]:
        stride, grid = sample_grid(first, last, points)
        assert len(grid) <= points, (first, last, points)
        assert grid[0] == first and grid[-1] == last
        assert grid == sorted(set(grid))
        assert stride & (stride - 1) == 0 or points == 2  # a power of two
        # Evenly spread: no gap wider than a stride.
        assert max(b - a for a, b in pairwise(grid)) <= stride
        if points > 2 and last - first + 1 > points:
            assert len(grid) > points // 2 - 2  # not needlessly sparse


def test_grid_keeps_its_samples_as_history_grows() -> None:
    # The same t values come back as latest_t moves on, so a cache of them stays useful.
    _, before = sample_grid(0, 100_000, 1000)
    _, after = sample_grid(0, 100_500, 1000)
    assert set(before[1:-1]) <= set(after)
    _, doubled = sample_grid(0, 200_000, 1000)  # the stride doubles: every other sample
    assert {t for t in doubled[1:-1] if t < 100_000} <= set(before)
    _, fewer = sample_grid(0, 100_000, 300)  # fewer points: a subset of the same grid
    assert set(fewer[1:-1]) <= set(before)


def test_numeric_members_are_numbers_only() -> None:
    raw = orjson.dumps(
        {"type": "tick", "t": 1, "ts": 2.5, "s": {"a": 1, "b": 0.5, "c": True, "d": "x", "e": []}}
    )
    assert numeric_members(raw) == (2.5, {"a": 1, "b": 0.5})
    assert numeric_members(b'{"type":"tick","t":1,"ts":3,"s":null}') == (3.0, {})


# -- the route ------------------------------------------------------------------------


def fill(data_dir: Path, raws: list[bytes]) -> None:
    """Write ``raws`` (ticks 0..n-1) into a fresh segment store, as a producer would."""
    with SegmentStore.open(data_dir, segment_bytes=1 << 20) as store:
        for i in range(0, len(raws), 500):
            store.append([(i + k, raw) for k, raw in enumerate(raws[i : i + 500])])


def simulated(n: int) -> list[bytes]:
    market = Market(agents=4, seed=11)
    return [orjson.dumps(market.step(t, 1_700_000_000.0 + t / 10)) for t in range(n)]


def served(tmp_path: Path, raws: list[bytes], **overrides: Any) -> Any:
    """A server over ``raws`` already stored; nothing produces (ingest, nothing posted)."""
    fill(tmp_path / "segments", raws)
    options = {"source": "ingest", "ingest_token": "in", "ring_size": RING, **overrides}
    return running(make_config(tmp_path, **options))


@pytest.fixture
async def srv(tmp_path: Path) -> AsyncIterator[Running]:
    async with served(tmp_path, simulated(HISTORY)) as server:
        yield server


async def json_of(srv: Running, path: str, status: int = 200) -> Any:
    response = await srv.get(path)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    return response.json()


async def test_timeline_samples_the_whole_history_as_incremental_has_it(srv: Running) -> None:
    body = await json_of(srv, "/timeline?points=50")
    assert body["oldest_t"] == 0 and body["latest_t"] == HISTORY - 1
    assert body["epoch"] == srv.service.history.epoch
    ts = body["t"]
    assert 25 <= len(ts) <= 50 and ts[0] == 0 and ts[-1] == HISTORY - 1
    assert body["stride"] == 64 and all(t % 64 == 0 for t in ts[1:-1])
    assert list(body["s"]) == ["price_norm", "volatility", "liquidity", "imbalance"]
    # Each sample is the tick itself: from the files (t < 2500) and from the ring.
    page = await json_of(srv, f"/incremental?from_t=0&limit={HISTORY}&fields=s")
    ticks = {tick["t"]: tick for tick in page["data"]}
    for i, t in enumerate(ts):
        assert body["ts"][i] == ticks[t]["ts"]
        for name, values in body["s"].items():
            assert values[i] == ticks[t]["s"][name], (t, name)
    # A second call answers the same (from the samples kept).
    assert await json_of(srv, "/timeline?points=50") == body


async def test_timeline_of_a_range(srv: Running) -> None:
    body = await json_of(srv, "/timeline?from_t=100&to_t=109&points=1000")
    assert body["t"] == list(range(100, 110)) and body["stride"] == 1
    assert len(body["ts"]) == len(body["s"]["price_norm"]) == 10
    body = await json_of(srv, "/timeline?from_t=2000&points=3")
    assert body["t"][0] == 2000 and body["t"][-1] == HISTORY - 1 and len(body["t"]) <= 3
    empty = await json_of(srv, "/timeline?from_t=200&to_t=100")
    assert (empty["t"], empty["ts"], empty["s"]) == ([], [], {})
    past = await json_of(srv, f"/timeline?from_t={HISTORY + 5}")
    assert past["t"] == [] and past["latest_t"] == HISTORY - 1


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("points=1", "points"),
        (f"points={MAX_POINTS + 1}", "points"),
        ("points=ten", "points"),
        ("from_t=-1", "from_t"),
        ("to_t=1.5", "to_t"),
        ("pionts=10", "pionts"),
    ],
)
async def test_bad_parameters_are_a_400_naming_them(srv: Running, query: str, named: str) -> None:
    body = await json_of(srv, f"/timeline?{query}", 400)
    assert body["error"] == "bad_request" and body["detail"].startswith(f"{named}:")


async def test_an_ingest_source_charts_its_own_numeric_members(tmp_path: Path) -> None:
    ticks = [
        {"type": "tick", "t": t, "ts": 1_700_000_000 + t, "s": s}
        for t, s in enumerate(
            [
                {"mid": 100.5, "regime": "calm"},
                {"mid": 101, "spread": 0.25, "flag": True},
                {"spread": 0.5, "book": {"bid": 3}},
            ]
        )
    ]
    async with served(tmp_path, [orjson.dumps(tick) for tick in ticks]) as srv:
        body = await json_of(srv, "/timeline")
    assert body["t"] == [0, 1, 2] and body["ts"] == [1_700_000_000, 1_700_000_001, 1_700_000_002]
    assert body["s"] == {"mid": [100.5, 101, None], "spread": [None, 0.25, 0.5]}


async def test_an_empty_history_has_no_samples(tmp_path: Path) -> None:
    config = make_config(tmp_path, source="ingest", ingest_token="in")
    async with running(config) as srv:
        body = await json_of(srv, "/timeline")
    assert body["oldest_t"] is None and body["latest_t"] is None
    assert (body["t"], body["ts"], body["s"]) == ([], [], {})


async def test_the_read_token_guards_it(tmp_path: Path) -> None:
    async with served(tmp_path, simulated(10), read_token=TOKEN) as srv:
        refused = await json_of(srv, "/timeline", 401)
        assert refused["error"] == "unauthorized"
        assert len((await json_of(srv, f"/timeline?token={TOKEN}"))["t"]) == 10


class CountingHistory:
    """The part of History that Samples reads: ``read``, counted, over ticks 0..n-1."""

    def __init__(self, n: int, epoch: str = "e1") -> None:
        self.n = n
        self.epoch = epoch
        self.reads: list[tuple[int, int]] = []

    async def read(self, from_t: int, limit: int, *, upto: int | None = None) -> list[Any]:
        self.reads.append((from_t, limit))
        end = min(self.n - 1, from_t + limit - 1, self.n if upto is None else upto)
        return [
            EncodedTick.from_dict({"type": "tick", "t": t, "ts": float(t), "s": {"x": t * 2}})
            for t in range(from_t, end + 1)
        ]


async def test_samples_are_read_once_then_kept_within_a_bound() -> None:
    history: Any = CountingHistory(1000)
    samples = Samples(limit=8)
    got = await samples.read(history, [0, 1, 2, 500, 999])
    assert {t: s[1]["x"] for t, s in got.items()} == {0: 0, 1: 2, 2: 4, 500: 1000, 999: 1998}
    assert sorted(history.reads) == [(0, 3), (500, 1), (999, 1)]  # a run of t in one read
    history.reads.clear()
    assert await samples.read(history, [0, 500, 999]) == {t: got[t] for t in (0, 500, 999)}
    assert history.reads == []
    # Over the bound, the oldest are forgotten, and every sample asked for is answered.
    many = list(range(100, 110))
    assert list(await samples.read(history, many)) == many
    history.reads.clear()
    assert list(await samples.read(history, [0, 109])) == [0, 109]
    assert history.reads == [(0, 1)]
    # A new epoch: nothing kept is valid any more.
    history.epoch = "e2"
    history.reads.clear()
    await samples.read(history, [109])
    assert history.reads == [(109, 1)]
