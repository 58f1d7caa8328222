"""The synthetic tick of the reference peers (standard library only).

``bench/peer_websockets.py`` and ``bench/peer_floor.py`` produce the same tick: the
docs/protocol.md shape (``type, t, ts, s, agents, actions, matches``) and about tickcast's
size, so a difference between the servers is not a difference in what they send.
"""

from __future__ import annotations

import random
import time
from typing import Any

__all__ = ["DEFAULT_AGENTS", "TickGenerator"]

DEFAULT_AGENTS = 21  # ~2.5 KB of JSON per tick, tickcast's default size


class TickGenerator:
    """Synthetic market simulation producing ticks of the docs/protocol.md shape.

    Each agent contributes one ``agents`` entry, one ``actions`` entry and one
    ``matches`` entry, so ``agents`` scales the tick size linearly (21 agents is
    about 2.5 KB of JSON).
    """

    def __init__(self, agents: int, *, seed: int | None = None) -> None:
        self._rng = random.Random(seed)
        self._experience = [self._rng.random() for _ in range(agents)]
        self._price = 50_000.0
        self._volatility = 0.003
        self._imbalance = 0.0

    def __call__(self, t: int) -> dict[str, Any]:
        rng = self._rng
        self._volatility = min(0.05, max(0.0005, self._volatility * rng.uniform(0.95, 1.05)))
        self._price *= 1.0 + rng.gauss(0.0, self._volatility)
        self._imbalance = max(-1.0, min(1.0, 0.9 * self._imbalance + rng.gauss(0.0, 0.1)))
        n = len(self._experience)
        actions = []
        for i in range(n):
            self._experience[i] = min(1.0, self._experience[i] + rng.uniform(0.0, 0.001))
            actions.append(
                {
                    "id": i,
                    "side": "buy" if rng.random() < 0.5 else "sell",
                    "price": round(self._price * rng.uniform(0.995, 1.005), 2),
                    "size": round(rng.uniform(0.1, 5.0), 3),
                }
            )
        return {
            "type": "tick",
            "t": t,
            "ts": round(time.time(), 6),
            "s": {
                "price_norm": round(self._price / 100_000.0, 6),
                "volatility": round(self._volatility, 6),
                "liquidity": round(rng.uniform(0.5, 1.5), 6),
                "imbalance": round(self._imbalance, 6),
            },
            "agents": [
                {"id": i, "experience": round(x, 6)} for i, x in enumerate(self._experience)
            ],
            "actions": actions,
            "matches": [
                {"a": i, "b": rng.randrange(-1, n), "prob": round(rng.random(), 4)}
                for i in range(n)
            ],
        }
