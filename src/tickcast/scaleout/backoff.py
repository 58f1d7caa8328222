"""Capped exponential backoff with jitter, and a throttle for retry reports (plain Python).

The appender and the follower sleep ``Backoff.next_delay()`` after a failed
connection cycle and call ``reset()`` once a cycle got going again. The jitter
(each delay is drawn from the upper half of its step) keeps many edges that lost
the same Redis from reconnecting in lockstep. While Redis stays unreachable they
log the failure once at once, then at most once per ``Throttle.every_s``.

Plain and clock-free on purpose: neither class reads a clock or sleeps. The caller
sleeps (``trio.sleep``, so the autojump clock of the tests applies) and passes its
own ``now`` to :meth:`Throttle.ready`, and a test passes ``random_fn`` to make the
jitter exact. The client package has its own backoff (``client/cursor.py``),
because the client may not import the server's modules.
"""

from __future__ import annotations

import random
from collections.abc import Callable

__all__ = ["Backoff", "Throttle"]


class Backoff:
    """Delays ``initial_s``, doubling up to ``max_s``, each jittered into ``[d/2, d]``.

    The defaults suit a Redis on the same network: the first retry comes after
    25-50 ms (a blip costs almost nothing), and a long outage is retried every
    1-2 s, which bounds both the reconnection storm and the time to notice recovery.

    Raises:
        ValueError: ``initial_s`` is not in ``(0, max_s]``.
    """

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
        """The delay before the next attempt; each call doubles the next one (capped).

        Never more than ``max_s`` and never less than ``initial_s / 2``, in seconds.
        """
        step = self._step
        self._step = min(step * 2, self.max_s)
        return step / 2 + step / 2 * self._random()

    def reset(self) -> None:
        """Start again from ``initial_s`` (call once a connection works again)."""
        self._step = self.initial_s


class Throttle:
    """Says yes at the first call, then at most once per ``every_s`` (the caller's clock).

    For log lines about a condition that lasts (Redis unreachable): the first
    failure is reported at once, and a long outage does not flood the log.
    """

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
