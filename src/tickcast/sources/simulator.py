"""The built-in market simulator: agents trading one instrument (plain Python, no I/O).

Model:

* Agent ``i`` follows strategy ``i % 4``: 0 trend follower (trades with an EMA of
  log returns), 1 fundamentalist (buys below, sells above a slowly moving fundamental
  value), 2 noise trader (random side, limit scattered around the mid), 3 market maker
  (quotes both sides, spread widening with volatility, skewed against its inventory).
* Each tick an agent is active with a probability set by its strategy and scaled by its
  experience; active agents place limit orders (``actions``).
* One uniform-price call auction crosses the buys and sells: each fill is a match with
  ``a`` = buyer and ``b`` = seller. Residual orders that cross the mid then fill against
  the outside book (``b == -1``) with a probability growing with how far they cross.
  ``prob`` is the fraction of ``a``'s order that the fill executed.
* The new price is the clearing price (or the old one if nothing crossed), moved by the
  net outside flow and pulled gently toward the fundamental value.
* ``experience`` is an EMA, updated when the agent acts, of a score in [0, 1] mixing its
  fill rate and its marked-to-market P&L over the tick.

Invariants:

* A tick is a function of ``(seed, t)`` and the market state: the tick's randomness comes
  from ``random.Random("tickcast:{seed}:{t}")`` (SHA-512 seeding, stable across
  processes, unlike ``hash()`` of a str), and the fundamental value is a deterministic
  function of ``(seed, t)``. So ``Market(seed=s).step(t, ts)`` for t = 0, 1, 2, ... gives
  identical ticks apart from ``ts``.
* ``PRICE_MIN <= price <= PRICE_MAX``; ``0 <= experience <= 1``; ``-1 <= imbalance <= 1``;
  ``0 <= prob <= 1``; ``a != b`` (no self-trades); ``b`` is -1 or an agent id;
  ``|inventory| <= MAX_INVENTORY`` (orders are sized to respect it).

Resume: a tick carries the price, the volatility and the experiences, and
:meth:`Market.resume` restores them (the returns window is refilled so that its std is
the persisted volatility). Inventories, P&L and momentum are not in the tick and restart
from zero, so a resumed run is a plausible continuation, not bit-identical with an
uninterrupted one. The fundamental value depends only on ``(seed, t)`` and continues.
"""

from __future__ import annotations

import math
import operator
import random
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from tickcast.config import DEFAULT_AGENTS

__all__ = ["DEFAULT_AGENTS", "INITIAL_PRICE", "PRICE_SCALE", "Market"]

# The tick carries price / PRICE_SCALE (`price_norm`), a number near 0.5 that a chart
# can plot on a fixed scale without knowing the instrument; actions and fills carry
# the unscaled price.
PRICE_SCALE: float = 100_000.0
INITIAL_PRICE: float = 50_000.0

# Price bounds (a safety net; the fundamental pull keeps the price near INITIAL_PRICE)
PRICE_MIN: Final = INITIAL_PRICE / 50
PRICE_MAX: Final = INITIAL_PRICE * 50
# Statistics
VOL_WINDOW: Final = 50  # ticks in the rolling std of log returns
MOMENTUM_ALPHA: Final = 0.1  # EMA weight of the last return in the momentum
LIQ_BAND: Final = 0.0025  # orders within 0.25 % of the mid count as depth
LIQ_REF_PER_AGENT: Final = 0.25  # depth per agent that reads as liquidity 1.0
# Strategies: trend, fundamental, noise, maker
TREND, FUNDAMENTAL, NOISE, MAKER = range(4)
ACTIVITY: Final = (0.30, 0.30, 0.35, 0.60)  # chance to act per tick at experience 0.5
TREND_REACH: Final = 0.002  # trend followers cross the mid by up to this fraction
FUNDAMENTAL_EDGE: Final = 0.0005  # no order when price is this close to value
NOISE_SCATTER: Final = 0.0015  # std of a noise trader's limit around the mid
MAKER_HALF_SPREAD: Final = 0.0005
VOL_REF: Final = 0.001  # volatility at which makers double their spread
MAX_INVENTORY: Final = 5.0
MIN_SIZE: Final = 0.0001
# Outside book and price formation
OUTSIDE_HALF_SPREAD: Final = 0.001
IMPACT: Final = 0.0004  # log-price move per unit of net outside flow per sqrt(agent)
VALUE_PULL: Final = 0.002  # share of the log gap to value the outside market closes per tick
# (amplitude, period in ticks) of the sinusoids making the fundamental log-value. At the
# default 10 ticks/s the periods are 4 min, 15 min and 1 h: visible swings on a live
# chart at every zoom, and at most ~8 % away from INITIAL_PRICE in all.
FUNDAMENTAL_WAVES: Final = ((0.04, 2_400), (0.025, 9_000), (0.015, 36_000))
# Experience
EXPERIENCE_ALPHA: Final = 0.05
INITIAL_EXPERIENCE: Final = 0.5
NV_MAGICCONST: Final = 4 * math.exp(-0.5) / math.sqrt(2.0)  # random.normalvariate's
PNL_REF: Final = 0.002  # P&L per tick, as a fraction of the mid, that scores 0.5 + 0.5 tanh(1)


_PRICE: Final = operator.attrgetter("price")


@dataclass(slots=True)
class _Order:
    """One limit order of one tick; ``left`` is what the auction has not filled yet.

    Orders live for one tick only: there is no resting book, which is what makes a
    tick a function of the seed, ``t`` and the state carried over (price, returns,
    momentum, experiences, inventories).
    """

    agent: int
    side: int  # +1 buy, -1 sell
    price: float
    size: float
    left: float


class Market:
    """A deterministic agent market producing one tick (docs/protocol.md, "tick") per :meth:`step`.

    Args:
        agents: number of agents (ids ``0 .. agents-1``); the tick size grows linearly.
        seed: the simulation seed; the same seed gives the same ticks.

    Raises:
        ValueError: ``agents`` is less than 1.
    """

    def __init__(self, *, agents: int = DEFAULT_AGENTS, seed: int) -> None:
        # The fundamental's phases come from their own stream ("...:fundamental"), not
        # from a tick's, so the value at t does not depend on which ticks were stepped.
        if agents < 1:
            raise ValueError(f"agents must be at least 1, got {agents}")
        self._n = agents
        self._seed = seed
        self._price = INITIAL_PRICE
        self._returns: deque[float] = deque(maxlen=VOL_WINDOW)
        self._vol: float | None = None  # _volatility() of _returns, until they change
        self._momentum = 0.0
        self._experience = [INITIAL_EXPERIENCE] * agents
        self._inventory = [0.0] * agents
        # (agent, strategy, chance to act at experience 0.5) for each agent, in id order
        self._roster = [(i, i % 4, ACTIVITY[i % 4]) for i in range(agents)]
        # The tick's "agents" entries, rebuilt only for agents whose experience moved.
        # An entry is replaced, never changed, so a tick already returned stays as it was.
        self._entries = [{"id": i, "experience": INITIAL_EXPERIENCE} for i in range(agents)]
        phases = random.Random(f"tickcast:{seed}:fundamental")
        self._waves = [
            (amp, 2 * math.pi / period, phases.uniform(0, 2 * math.pi))
            for amp, period in FUNDAMENTAL_WAVES
        ]

    @classmethod
    def resume(
        cls, last_tick: Mapping[str, Any], *, agents: int = DEFAULT_AGENTS, seed: int
    ) -> Market:
        """A market continuing from a persisted tick (the dict parsed from its JSON).

        Restores the price, the volatility and the experience of every agent id present
        in both the tick and the new market (others start at the default); call
        ``step(last_tick["t"] + 1, ts)`` next. See the module docstring for what resets.

        Raises:
            ValueError: the tick lacks a field or holds a non-positive price.
        """
        market = cls(agents=agents, seed=seed)
        try:
            state = last_tick["s"]
            price = float(state["price_norm"]) * PRICE_SCALE
            volatility = float(state["volatility"])
            experiences = {int(a["id"]): float(a["experience"]) for a in last_tick["agents"]}
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"cannot resume from tick: {exc!r}") from None
        if not math.isfinite(price) or price <= 0:
            raise ValueError(f"cannot resume from tick: price {price} is not positive")
        market._price = min(max(price, PRICE_MIN), PRICE_MAX)
        vol = volatility if math.isfinite(volatility) and volatility > 0 else 0.0
        # A window alternating +vol, -vol has mean 0 and population std exactly vol.
        market._returns.extend(vol if k % 2 else -vol for k in range(VOL_WINDOW))
        market._vol = None
        for agent, experience in experiences.items():
            if 0 <= agent < agents and math.isfinite(experience):
                market._experience[agent] = min(max(experience, 0.0), 1.0)
                market._entries[agent] = _entry(agent, market._experience[agent])
        return market

    def step(self, t: int, ts: float) -> dict[str, Any]:
        """Advance one tick and return the tick dict.

        Args:
            t: the tick's sequence number; it (with the seed) determines the randomness.
            ts: the production time, copied into the tick rounded to microseconds.

        Returns:
            A new dict with keys ``type, t, ts, s, agents, actions, matches``. The
            entries of ``agents`` are shared with the ticks before and after it in
            which that agent's experience is the same: read the tick, do not change it.
        """
        # Seeded by (seed, t), not drawn from a generator carried between steps: a step
        # after a restart gets the randomness of its own t (the module's invariants).
        rng = random.Random(f"tickcast:{self._seed}:{t}")
        mid, value = self._price, self._value(t)
        vol = self._vol if self._vol is not None else self._volatility()
        orders = self._place_orders(rng, mid, value, vol)

        # Market state seen by the orders, before matching.
        depth = bought = sold = 0.0
        for o in orders:
            if abs(o.price / mid - 1) <= LIQ_BAND:
                depth += o.size
            if o.side > 0:
                bought += o.size
            else:
                sold += o.size
        liquidity = depth / (self._n * LIQ_REF_PER_AGENT)
        imbalance = (bought - sold) / (bought + sold) if orders else 0.0

        fills, clearing = _auction(orders)
        price = mid if clearing is None else clearing
        outside_flow = 0.0
        for order in orders:  # residuals against the outside book
            reach = order.side * (order.price / mid - 1) / OUTSIDE_HALF_SPREAD
            if order.left > 0 and reach > 0 and rng.random() < reach:
                quote = mid * (1 + order.side * OUTSIDE_HALF_SPREAD)
                fill_price = quote if reach >= 1 else order.price
                fills.append((order, None, order.left, fill_price))
                outside_flow += order.side * order.left
                order.left = 0.0
        price *= math.exp(IMPACT * outside_flow / math.sqrt(self._n))
        price *= math.exp(VALUE_PULL * math.log(value / price))
        price = min(max(price, PRICE_MIN), PRICE_MAX)

        matches = self._settle(orders, fills, mid, price)
        log_return = math.log(price / mid)
        self._returns.append(log_return)
        self._vol = self._volatility()  # this tick's, and what the next one starts from
        self._momentum += MOMENTUM_ALPHA * (log_return - self._momentum)
        self._price = price
        return {
            "type": "tick",
            "t": t,
            "ts": round(ts, 6),
            "s": {
                "price_norm": round(price / PRICE_SCALE, 6),
                "volatility": round(self._vol, 6),
                "liquidity": round(liquidity, 4),
                "imbalance": round(imbalance, 4),
            },
            "agents": self._entries.copy(),
            "actions": [
                {
                    "id": o.agent,
                    "side": "buy" if o.side > 0 else "sell",
                    "price": o.price,
                    "size": o.size,
                }
                for o in orders
            ],
            "matches": matches,
        }

    # -- internals ---------------------------------------------------------------------

    def _value(self, t: int) -> float:
        """The fundamental value at tick ``t``: a function of ``(seed, t)`` only.

        Deterministic rather than a random walk so that it needs no state: a resumed
        market continues the same value path, and fundamentalists pull the price
        back toward it whatever the agents did before the restart.
        """
        return INITIAL_PRICE * math.exp(sum(a * math.sin(w * t + p) for a, w, p in self._waves))

    def _volatility(self) -> float:
        """Population std of the log returns in the rolling window (0 when empty).

        Once per step (``step`` caches it in ``_vol``); O(``VOL_WINDOW``), which is
        small next to the order loop.
        """
        n = len(self._returns)
        if n == 0:
            return 0.0
        mean = sum(self._returns) / n
        return math.sqrt(sum([(r - mean) ** 2 for r in self._returns]) / n)

    def _place_orders(
        self, rng: random.Random, mid: float, value: float, vol: float
    ) -> list[_Order]:
        """Decide who acts this tick and what each active agent orders.

        The hot loop of a step. ``rng.lognormvariate`` and ``rng.choice((1, -1))`` are
        written out (CPython 3.11's algorithms, drawing the same numbers from
        ``rng.random`` and ``rng.getrandbits``) to save two calls per draw.
        """
        orders: list[_Order] = []
        inventory, experience = self._inventory, self._experience
        rand, randbits = rng.random, rng.getrandbits
        momentum = self._momentum
        gap = math.log(value / mid)
        half = MAKER_HALF_SPREAD * (1 + min(vol / VOL_REF, 3.0))

        def add(agent: int, side: int, price: float, size: float) -> None:
            room = MAX_INVENTORY - side * inventory[agent]
            size = round(min(size, room), 4)
            if size >= MIN_SIZE:
                orders.append(_Order(agent, side, round(price, 2), size, size))

        def coin() -> int:  # rng.choice((1, -1))
            r = randbits(2)
            while r >= 2:
                r = randbits(2)
            return 1 if r == 0 else -1

        log, exp = math.log, math.exp
        for agent, strategy, activity in self._roster:
            if rand() >= activity * (0.5 + experience[agent]):
                continue
            while True:  # rng.lognormvariate(-0.7, 0.5): median ~0.5 units
                u1 = rand()
                u2 = 1.0 - rand()
                z = NV_MAGICCONST * (u1 - 0.5) / u2
                if z * z / 4.0 <= -log(u2):
                    break
            size = exp(-0.7 + z * 0.5)
            if strategy == TREND:
                side = coin() if momentum == 0 else 1 if momentum > 0 else -1
                add(agent, side, mid * (1 + side * TREND_REACH * rand()), size)
            elif strategy == FUNDAMENTAL:
                if abs(gap) >= FUNDAMENTAL_EDGE:
                    side = 1 if gap > 0 else -1
                    reach = min(abs(gap), 2 * OUTSIDE_HALF_SPREAD) * rand()
                    add(agent, side, mid * (1 + side * reach), size * min(abs(gap) / 0.005, 3.0))
            elif strategy == NOISE:
                side = coin()
                add(agent, side, mid * math.exp(rng.gauss(0.0, NOISE_SCATTER)), size)
            else:  # MAKER
                center = mid * (1 - half * inventory[agent] / MAX_INVENTORY)
                add(agent, 1, center * (1 - half), size)
                add(agent, -1, center * (1 + half), size)
        return orders

    def _settle(
        self,
        orders: list[_Order],
        fills: list[tuple[_Order, _Order | None, float, float]],
        mid: float,
        price: float,
    ) -> list[dict[str, Any]]:
        """Book the fills into inventories and experiences; return the tick's matches.

        An agent's score for the tick is half its fill rate (filled / ordered) and half
        its P&L marked to the new price, squashed by ``tanh`` so that one lucky tick
        cannot dominate; ``experience`` moves toward it by ``EXPERIENCE_ALPHA``. Only
        agents that ordered are scored, so an idle agent's experience holds.
        """
        inventory = self._inventory
        ordered: dict[int, float] = {}
        for o in orders:
            ordered[o.agent] = ordered.get(o.agent, 0.0) + o.size
        filled = dict.fromkeys(ordered, 0.0)
        move = price - mid
        pnl = {agent: inventory[agent] * move for agent in ordered}
        matches: list[dict[str, Any]] = []
        for a, b, qty, fill_price in fills:
            agent, signed = a.agent, a.side * qty
            inventory[agent] += signed
            filled[agent] += qty
            pnl[agent] += signed * (price - fill_price)
            if b is None:
                counterparty = -1
            else:
                counterparty, signed = b.agent, b.side * qty
                inventory[counterparty] += signed
                filled[counterparty] += qty
                pnl[counterparty] += signed * (price - fill_price)
            prob = round(min(qty / a.size, 1.0), 4)
            matches.append({"a": agent, "b": counterparty, "prob": prob})
        experience, entries = self._experience, self._entries
        for agent, size in ordered.items():
            pnl_score = 0.5 + 0.5 * math.tanh(pnl[agent] / (PNL_REF * mid))
            score = 0.5 * min(filled[agent] / size, 1.0) + 0.5 * pnl_score
            experience[agent] += EXPERIENCE_ALPHA * (score - experience[agent])
            entries[agent] = _entry(agent, experience[agent])
        return matches


def _entry(agent: int, experience: float) -> dict[str, Any]:
    """An agent's entry in a tick's ``agents``."""
    return {"id": agent, "experience": round(experience, 4)}


def _auction(
    orders: list[_Order],
) -> tuple[list[tuple[_Order, _Order | None, float, float]], float | None]:
    """Cross buys and sells at one clearing price.

    Walks the bids from the highest and the asks from the lowest while they cross. The
    clearing price is the midpoint of the last crossing pair, acceptable to every matched
    order. A pair of orders from the same agent never trades: the ask is skipped.

    Returns:
        The fills as ``(buy, sell, quantity, price)`` and the clearing price (None when
        nothing crossed).
    """
    bids = [o for o in orders if o.side > 0]
    bids.sort(key=_PRICE, reverse=True)  # stable: equal prices keep the orders' order
    asks = [o for o in orders if o.side < 0]
    asks.sort(key=_PRICE)
    pairs: list[tuple[_Order, _Order, float]] = []
    i = j = 0
    last: tuple[float, float] | None = None
    while i < len(bids) and j < len(asks) and bids[i].price >= asks[j].price:
        bid, ask = bids[i], asks[j]
        if bid.agent == ask.agent:
            j += 1
            continue
        qty = min(bid.left, ask.left)
        bid.left = round(bid.left - qty, 4)
        ask.left = round(ask.left - qty, 4)
        pairs.append((bid, ask, qty))
        last = (bid.price, ask.price)
        if bid.left <= 0:
            i += 1
        if ask.left <= 0:
            j += 1
    if last is None:
        return [], None
    clearing = (last[0] + last[1]) / 2
    return [(bid, ask, qty, clearing) for bid, ask, qty in pairs], clearing
