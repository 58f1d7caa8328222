"""A periodic timer for the simulator: one wake-up per period, on a fixed grid.

``trio.sleep_until`` is a cancel scope whose deadline expires: trio cancels the
scope, delivers ``Cancelled`` to the sleeping task and unwinds it through the
scope's ``__exit__``. At 20 ticks a second that exception path is most of what an
idle tick costs in Python (≈100 µs of CPU per tick measured in place, out of a
fixed cost near 1 ms; see docs/performance.md). On Linux a ``timerfd`` armed
with the period does the same job as a readable file descriptor: the task waits
with ``wait_readable`` and reads the number of periods that have elapsed, with
no exception and no deadline in trio's heap.

Both timers keep to the grid ``start + k * period``, so the rate does not drift
with the cost of a step, and neither bursts after a stall: :meth:`Metronome.wait`
returns once, with the number of periods that went by. The timerfd counts the
kernel's monotonic time, which is trio's default clock; a caller running trio on
another clock (``trio.testing.MockClock`` in tests) says so with
``clock="trio"``, and the metronome sleeps on that clock instead, so virtual
time keeps working. The choice is the caller's: nothing here guesses it.
"""

from __future__ import annotations

import ctypes
import math
import os
import sys
from types import TracebackType
from typing import Literal

import trio

__all__ = ["Metronome"]

# From <linux/time.h> and <sys/timerfd.h>: the values are part of the kernel ABI, so
# they are written here rather than read from a header at run time.
_CLOCK_MONOTONIC = 1
_TFD_NONBLOCK = os.O_NONBLOCK
_TFD_CLOEXEC = 0o2_000_000  # O_CLOEXEC on every Linux architecture trio runs on


class _Timespec(ctypes.Structure):
    _fields_ = (("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long))


class _Itimerspec(ctypes.Structure):
    _fields_ = (("it_interval", _Timespec), ("it_value", _Timespec))


def _libc() -> ctypes.CDLL | None:
    """libc with the two timerfd calls typed, or None where there is no timerfd.

    ctypes rather than a C extension: two calls do not justify a build step, and
    anything missing just means the portable sleep is used.
    """
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)  # the process's own symbols, libc's among them
        libc.timerfd_create.argtypes = (ctypes.c_int, ctypes.c_int)
        libc.timerfd_settime.argtypes = (
            ctypes.c_int,
            ctypes.c_int,
            ctypes.POINTER(_Itimerspec),
            ctypes.c_void_p,
        )
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _libc()


def _timerfd(period: float) -> int | None:
    """A non-blocking timerfd expiring every ``period`` seconds from now (None: none)."""
    if _LIBC is None:
        return None
    fd: int = _LIBC.timerfd_create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
    if fd < 0:
        return None
    whole, nanos = divmod(max(1, round(period * 1e9)), 1_000_000_000)  # 0 would disarm it
    spec = _Itimerspec(_Timespec(whole, nanos), _Timespec(whole, nanos))
    if _LIBC.timerfd_settime(fd, 0, ctypes.byref(spec), None) != 0:
        os.close(fd)
        return None
    return fd


class Metronome:
    """Wake every ``period`` seconds, counted from when the metronome was entered.

    Use as ``with Metronome(period) as beat: ... await beat.wait()``.

    ``clock`` is the time the grid is on: ``"kernel"`` (default), the kernel's
    monotonic clock through a timerfd where there is one (Linux), which is what
    trio's default clock reads, else trio's sleep; ``"trio"``, always trio's
    sleep on trio's current clock, for a run on a clock of its own (a
    ``MockClock``).

    Raises:
        ValueError: ``period`` is not a positive finite number.
    """

    def __init__(self, period: float, *, clock: Literal["kernel", "trio"] = "kernel") -> None:
        if not (math.isfinite(period) and period > 0):
            raise ValueError(f"period must be a positive number of seconds, got {period}")
        self.period = period
        self.clock = clock
        self._fd: int | None = None
        self._deadline = 0.0  # the fallback's next grid point (trio time)

    def __enter__(self) -> Metronome:
        """Start the grid now: the first :meth:`wait` returns one period from here."""
        if self.clock == "kernel":
            self._fd = _timerfd(self.period)
        self._deadline = trio.current_time() + self.period
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the timerfd, telling trio first so that no task waits on a closed fd."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            trio.lowlevel.notify_closing(fd)
            os.close(fd)

    async def wait(self) -> int:
        """Wait for the next grid point; return how many periods have gone by (≥ 1).

        More than 1 means the caller overran: the missed grid points are not
        delivered one by one (no burst); the next wait is for the next grid point.

        Cancellation: safe at any point; the grid is unaffected, so a later wait
        returns at once if a grid point passed meanwhile (counting every period
        missed), else at the next one.
        """
        if self._fd is None:
            return await self._sleep()
        while True:
            await trio.lowlevel.wait_readable(self._fd)
            try:
                expirations = os.read(self._fd, 8)
            except BlockingIOError:  # woken without an expiry (e.g. another reader)
                continue
            return int.from_bytes(expirations, sys.byteorder)

    async def _sleep(self) -> int:
        """The portable timer: ``sleep_until`` on the grid, skipping missed points."""
        await trio.sleep_until(self._deadline)
        now = trio.current_time()
        missed = max(0, math.floor((now - self._deadline) / self.period))
        self._deadline += (missed + 1) * self.period
        return missed + 1
