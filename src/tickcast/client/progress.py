"""One progress line on a terminal, for work a person waits for (plain Python).

``tickcast export`` and ``Client.table(..., progress=True)`` show how far a long
export has come, counted in ticks of the range (the ``t`` of the last row
received, against the range the server announced in its headers), how fast it
goes and how long is left, redrawn in place at most every ``PROGRESS_EVERY_S``:

    12,000/1,000,000 ticks (1%)  95,000 ticks/s  10 s left

Nothing is written without a stream to write to, so callers keep one code path.
"""

from __future__ import annotations

import time
from typing import TextIO

__all__ = ["PROGRESS_EVERY_S", "Progress"]

PROGRESS_EVERY_S = 0.25


class Progress:
    """``12,000/1,000,000 ticks (1%)  95,000 ticks/s  10 s left`` on one stderr line."""

    def __init__(self, out: TextIO | None) -> None:
        self._out = out
        self._started = time.monotonic()
        self._shown = 0.0
        self.total = 0
        self.done = 0

    def update(self, done: int, *, force: bool = False) -> None:
        self.done = max(self.done, min(done, self.total))
        now = time.monotonic()
        if self._out is None or (not force and now - self._shown < PROGRESS_EVERY_S):
            return
        self._shown = now
        elapsed = max(now - self._started, 1e-9)
        rate = self.done / elapsed
        pct = 100.0 * self.done / self.total if self.total else 100.0
        left = (self.total - self.done) / rate if rate > 0 else float("inf")
        eta = f"{left:,.0f} s left" if left != float("inf") else "--"
        line = f"{self.done:,}/{self.total:,} ticks ({pct:.0f}%)  {rate:,.0f} ticks/s  {eta}"
        self._out.write(f"\r{line:<72}")
        self._out.flush()

    def finish(self, message: str) -> None:
        if self._out is not None:
            self._out.write(f"\r{message:<72}\n")
            self._out.flush()

    def interrupt(self) -> None:
        """End the progress line, so that a message after it starts on its own."""
        if self._out is not None and self._shown:
            self._out.write("\n")
            self._out.flush()
