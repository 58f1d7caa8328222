"""Tests for the sans-I/O market simulator (synchronous)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from tickcast.sources.simulator import (
    DEFAULT_AGENTS,
    INITIAL_PRICE,
    PRICE_SCALE,
    Market,
    _auction,
    _Order,
)

TS0 = 1_732_450_000.0


def run(market: Market, start: int, count: int) -> Iterator[dict[str, Any]]:
    for t in range(start, start + count):
        yield market.step(t, TS0 + t / 10)


def without_ts(tick: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in tick.items() if k != "ts"}


def test_tick_keys_and_types() -> None:
    tick = Market(seed=1).step(0, TS0 + 0.1234567)
    assert list(tick) == ["type", "t", "ts", "s", "agents", "actions", "matches"]
    assert tick["type"] == "tick"
    assert tick["t"] == 0
    assert tick["ts"] == round(TS0 + 0.1234567, 6)
    assert list(tick["s"]) == ["price_norm", "volatility", "liquidity", "imbalance"]
    assert all(type(v) is float for v in tick["s"].values())
    assert [a["id"] for a in tick["agents"]] == list(range(DEFAULT_AGENTS))
    for agent in tick["agents"]:
        assert list(agent) == ["id", "experience"]
        assert type(agent["id"]) is int
        assert type(agent["experience"]) is float
    for tick in run(Market(seed=1), 0, 50):
        for action in tick["actions"]:
            assert list(action) == ["id", "side", "price", "size"]
            assert type(action["id"]) is int
            assert type(action["price"]) is float
            assert type(action["size"]) is float
        for match in tick["matches"]:
            assert list(match) == ["a", "b", "prob"]
            assert type(match["a"]) is int
            assert type(match["b"]) is int
            assert type(match["prob"]) is float


def test_first_price_matches_initial() -> None:
    tick = Market(seed=3).step(0, TS0)
    assert tick["s"]["price_norm"] * PRICE_SCALE == pytest.approx(INITIAL_PRICE, rel=0.01)


def test_default_tick_size_is_1_to_5_kb() -> None:
    sizes = [len(orjson.dumps(tick)) for tick in run(Market(seed=5), 0, 500)]
    assert all(1024 <= size <= 5120 for size in sizes), (min(sizes), max(sizes))
    assert 1800 <= sum(sizes) / len(sizes) <= 3500


def test_more_agents_gives_bigger_ticks() -> None:
    def mean_size(agents: int) -> float:
        sizes = [len(orjson.dumps(t)) for t in run(Market(agents=agents, seed=9), 0, 50)]
        return sum(sizes) / len(sizes)

    small, default, big = mean_size(8), mean_size(DEFAULT_AGENTS), mean_size(1000)
    assert small < default < big
    assert 20_000 < big < 100_000  # roughly linear: 1000 agents -> tens of KB


def test_rejects_no_agents() -> None:
    with pytest.raises(ValueError, match="agents"):
        Market(agents=0, seed=1)


def test_same_seed_same_ticks() -> None:
    a = [without_ts(t) for t in run(Market(seed=42), 0, 300)]
    b = [without_ts(t) for t in run(Market(seed=42), 0, 300)]
    assert a == b
    # ts is taken from the caller only
    assert Market(seed=42).step(0, 1.0)["ts"] == 1.0


def test_same_seed_same_ticks_across_processes() -> None:
    """The per-tick randomness must not depend on the (salted) str hash of a process."""
    code = (
        "import orjson, sys; from tickcast.sources.simulator import Market; m = Market(seed=42);"
        "sys.stdout.buffer.write(orjson.dumps([m.step(t, 0.0) for t in range(20)]))"
    )
    outputs = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": os.pathsep.join(sys.path)}
        done = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, check=True
        )
        outputs.add(done.stdout)
    here = Market(seed=42)
    outputs.add(orjson.dumps([here.step(t, 0.0) for t in range(20)]))
    assert len(outputs) == 1


def test_different_seeds_differ() -> None:
    a = [without_ts(t) for t in run(Market(seed=1), 0, 20)]
    b = [without_ts(t) for t in run(Market(seed=2), 0, 20)]
    assert a != b
    assert [t["s"]["price_norm"] for t in a] != [t["s"]["price_norm"] for t in b]


def test_invariants_over_a_run() -> None:
    n = DEFAULT_AGENTS
    action_counts = set()
    for tick in run(Market(seed=11), 0, 2000):
        s = tick["s"]
        assert s["price_norm"] > 0
        assert s["volatility"] >= 0
        assert s["liquidity"] >= 0
        assert -1 <= s["imbalance"] <= 1
        if not tick["actions"]:
            assert s["imbalance"] == 0
        assert all(0 <= a["experience"] <= 1 for a in tick["agents"])
        action_counts.add(len(tick["actions"]))
        for action in tick["actions"]:
            assert 0 <= action["id"] < n
            assert action["side"] in ("buy", "sell")
            assert action["price"] > 0
            assert action["size"] > 0
        actors = {a["id"] for a in tick["actions"]}
        for match in tick["matches"]:
            assert 0 <= match["prob"] <= 1
            assert match["a"] in actors
            assert match["b"] == -1 or match["b"] in actors
            assert match["a"] != match["b"]
    assert len(action_counts) > 5  # not every agent acts every tick


def test_imbalance_follows_order_volume() -> None:
    for tick in run(Market(seed=12), 0, 200):
        buys = sum(a["size"] for a in tick["actions"] if a["side"] == "buy")
        sells = sum(a["size"] for a in tick["actions"] if a["side"] == "sell")
        if buys + sells:
            expected = (buys - sells) / (buys + sells)
            assert tick["s"]["imbalance"] == pytest.approx(expected, abs=1e-3)


def test_agent_matches_are_buyer_then_seller() -> None:
    seen = 0
    for tick in run(Market(seed=13), 0, 300):
        sides: dict[int, set[str]] = {}
        for action in tick["actions"]:
            sides.setdefault(action["id"], set()).add(action["side"])
        for match in tick["matches"]:
            if match["b"] != -1:
                assert "buy" in sides[match["a"]]
                assert "sell" in sides[match["b"]]
                seen += 1
    assert seen > 0


def test_auction_one_price_and_no_self_trade() -> None:
    def order(agent: int, side: int, price: float, size: float) -> _Order:
        return _Order(agent, side, price, size, size)

    bid = order(1, 1, 101.0, 1.0)
    own_ask, ask, dear_ask = (
        order(1, -1, 90.0, 1.0),
        order(2, -1, 95.0, 0.4),
        order(3, -1, 102.0, 1),
    )
    fills, clearing = _auction([bid, own_ask, ask, dear_ask])
    assert clearing == 98.0  # midpoint of the last crossing pair (101, 95)
    assert fills == [(bid, ask, 0.4, 98.0)]
    assert (bid.left, own_ask.left, ask.left, dear_ask.left) == (0.6, 1.0, 0.0, 1)
    assert _auction([order(1, 1, 99.0, 1.0), order(2, -1, 100.0, 1.0)]) == ([], None)


def test_fills_against_agents_and_the_book() -> None:
    matches = [m for tick in run(Market(seed=21), 0, 300) for m in tick["matches"]]
    assert len(matches) > 100
    assert any(m["b"] == -1 for m in matches)
    assert any(m["b"] != -1 for m in matches)
    assert any(m["prob"] < 1 for m in matches)  # partial fills happen


def test_state_evolves() -> None:
    ticks = list(run(Market(seed=22), 0, 500))
    prices = {t["s"]["price_norm"] for t in ticks}
    assert len(prices) > 100
    assert ticks[0]["s"]["volatility"] == 0  # one return has no spread
    assert any(t["s"]["volatility"] > 0 for t in ticks)
    first = [a["experience"] for a in ticks[0]["agents"]]
    last = [a["experience"] for a in ticks[-1]["agents"]]
    assert first != last
    assert len(set(last)) > DEFAULT_AGENTS // 2  # experience is per agent


def test_resume_continues_price_experience_and_t() -> None:
    seed = 31
    ticks = list(run(Market(seed=seed), 0, 400))
    last = orjson.loads(orjson.dumps(ticks[-1]))
    market = Market.resume(last, seed=seed)
    nxt = market.step(last["t"] + 1, TS0 + 1000)
    assert nxt["t"] == last["t"] + 1
    before, after = last["s"]["price_norm"], nxt["s"]["price_norm"]
    assert after == pytest.approx(before, rel=0.03)
    # The persisted volatility seeds the window: it does not restart from zero.
    assert nxt["s"]["volatility"] == pytest.approx(last["s"]["volatility"], rel=0.5)
    for old, new in zip(last["agents"], nxt["agents"], strict=True):
        assert new["experience"] == pytest.approx(old["experience"], abs=0.06)
    # and it keeps going without snapping back to INITIAL_PRICE
    later = list(run(market, last["t"] + 2, 50))
    assert later[-1]["t"] == last["t"] + 51
    assert later[0]["s"]["price_norm"] == pytest.approx(after, rel=0.03)


def test_resume_is_deterministic() -> None:
    last = list(run(Market(seed=32), 0, 100))[-1]
    a = [without_ts(t) for t in run(Market.resume(last, seed=32), 100, 50)]
    b = [without_ts(t) for t in run(Market.resume(last, seed=32), 100, 50)]
    assert a == b


def test_resume_from_a_far_price() -> None:
    tick = Market(seed=1).step(0, TS0)
    tick["s"]["price_norm"] = 0.8  # price 80 000, far from INITIAL_PRICE
    nxt = Market.resume(tick, seed=1).step(1, TS0)
    assert nxt["s"]["price_norm"] == pytest.approx(0.8, rel=0.03)


def test_resume_with_a_different_agent_count() -> None:
    last = list(run(Market(agents=8, seed=33), 0, 200))[-1]
    experiences = [a["experience"] for a in last["agents"]]
    assert experiences != [0.5] * 8
    grown = Market.resume(last, agents=12, seed=33).step(200, TS0)
    assert len(grown["agents"]) == 12
    for old, new in zip(last["agents"], grown["agents"][:8], strict=True):
        assert new["experience"] == pytest.approx(old["experience"], abs=0.06)
    shrunk = Market.resume(last, agents=4, seed=33).step(200, TS0)
    assert [a["id"] for a in shrunk["agents"]] == [0, 1, 2, 3]


@pytest.mark.parametrize(
    "tick",
    [
        {},
        {"s": {"price_norm": 0.5, "volatility": 0.0}},  # no agents
        {"s": {"price_norm": 0.0, "volatility": 0.0}, "agents": []},
        {"s": {"price_norm": "x", "volatility": 0.0}, "agents": []},
    ],
)
def test_resume_rejects_bad_ticks(tick: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="cannot resume"):
        Market.resume(tick, seed=1)


@pytest.mark.slow
def test_long_run_stays_bounded() -> None:
    market = Market(seed=77)
    low, high = math.inf, 0.0
    for t in range(100_000):
        price = market.step(t, TS0)["s"]["price_norm"] * PRICE_SCALE
        assert math.isfinite(price)
        low, high = min(low, price), max(high, price)
    assert 0.5 * INITIAL_PRICE < low <= high < 2 * INITIAL_PRICE


def test_a_returned_tick_does_not_change_with_later_steps() -> None:
    # Agent entries are shared between ticks while an agent's experience holds still.
    market = Market(seed=5)
    ticks = list(run(market, 0, 5))
    frozen = [orjson.dumps(tick) for tick in ticks]
    later = list(run(market, 5, 200))
    assert [orjson.dumps(tick) for tick in ticks] == frozen
    moved = {a["id"] for a in later[-1]["agents"]} - {
        a["id"] for a, b in zip(ticks[-1]["agents"], later[-1]["agents"], strict=True) if a == b
    }
    assert moved  # the experiences did change since, so entries were replaced, not changed
