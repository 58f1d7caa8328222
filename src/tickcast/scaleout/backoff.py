"""Capped exponential backoff with jitter, and a throttle for retry reports (plain Python).

The appender and the follower sleep ``Backoff.next_delay()`` after a failed
connection cycle and call ``reset()`` once a cycle got going again. The jitter
(each delay is drawn from the upper half of its step) keeps many edges that lost
the same Redis from reconnecting in lockstep. While Redis stays unreachable they
log the failure once at once, then at most once per ``Throttle.every_s``.
"""

from __future__ import annotations

import random
from collections.abc import Callable

__all__ = ["Backoff", "Throttle"]


class Backoff:
    """Delays ``initial_s``, doubling up to ``max_s``, each jittered into ``[d/2, d]``."""

    def __init__(
        self,
        *,
        initial_s: float = 0.05,
        max_s: float = 2.0,
        random_fn: Callable[[], float] = random.random,
    ) -> None:
        if not 0 < initial_s <= max_s:
            raise ValueError(f"need 0 < initial_s <= max_s, got {initial_s}, {max_s}")
        self.initial_s = initial_s
        self.max_s = max_s
        self._random = random_fn
        self._step = initial_s

    def next_delay(self) -> float:
        """The delay before the next attempt; each call doubles the next one (capped)."""
        step = self._step
        self._step = min(step * 2, self.max_s)
        return step / 2 + step / 2 * self._random()

    def reset(self) -> None:
        """Start again from ``initial_s`` (call once a connection works again)."""
        self._step = self.initial_s


class Throttle:
    """Says yes at the first call, then at most once per ``every_s`` (the caller's clock)."""

    def __init__(self, every_s: float) -> None:
        if every_s <= 0:
            raise ValueError(f"every_s must be > 0, got {every_s}")
        self.every_s = every_s
        self._last: float | None = None

    def ready(self, now: float) -> bool:
        """True if nothing was let through in the last ``every_s`` before ``now``."""
        if self._last is not None and now - self._last < self.every_s:
            return False
        self._last = now
        return True

    def reset(self) -> None:
        """The next :meth:`ready` says yes (call once the reported condition is over)."""
        self._last = None
