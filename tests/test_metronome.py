"""The simulator's timer (sources/metronome.py): a fixed grid, never early, no burst.

The kernel timer is checked in real time, with lower bounds only (a busy machine
wakes late, never early); the same contract is checked exactly for the fallback on
trio's virtual clock.
"""

from __future__ import annotations

import math
import os
import sys
import time

import pytest
import trio
import trio.testing

from tickcast.sources.metronome import Metronome

PERIOD = 0.02


def timerfds() -> set[int]:
    """This process's open timerfd descriptors (Linux: /proc/self/fd)."""
    out = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") == "anon_inode:[timerfd]":
                out.add(int(name))
        except OSError:  # the descriptor listdir itself used, now closed
            pass
    return out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="timerfd is Linux's")
async def test_timerfd_keeps_the_grid_and_is_never_early() -> None:
    start = trio.current_time()
    before = timerfds()
    with trio.fail_after(30), Metronome(PERIOD) as metronome:
        assert len(timerfds() - before) == 1  # the kernel's timer drives it
        elapsed = 0
        for _ in range(10):
            count = await metronome.wait()
            assert count >= 1
            elapsed += count
            # grid point number `elapsed` has passed: never early
            assert trio.current_time() >= start + elapsed * PERIOD
        assert elapsed >= 10


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="timerfd is Linux's")
async def test_timerfd_reports_an_overrun_once_then_keeps_the_grid() -> None:
    start = trio.current_time()
    with trio.fail_after(30), Metronome(PERIOD) as metronome:
        time.sleep(3.5 * PERIOD)  # noqa: ASYNC251 (a step blocking the loop 3.5 periods)
        missed = await metronome.wait()
        assert missed >= 3  # one wake-up for all of them: no burst
        count = await metronome.wait()
        assert count >= 1
        assert trio.current_time() >= start + (missed + count) * PERIOD


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="timerfd is Linux's")
async def test_timerfd_is_closed_on_exit() -> None:
    with Metronome(PERIOD) as metronome:
        fd = metronome._fd
        assert fd is not None
        os.fstat(fd)
    with pytest.raises(OSError):
        os.fstat(fd)


def test_fallback_on_a_virtual_clock_has_the_same_contract() -> None:
    returns: list[tuple[float, int]] = []  # (periods since entering, what wait() returned)

    async def main() -> None:
        start = trio.current_time()

        async def wait() -> None:
            count = await metronome.wait()
            returns.append((round((trio.current_time() - start) / PERIOD, 6), count))

        before = timerfds() if sys.platform.startswith("linux") else set()
        with Metronome(PERIOD, clock="trio") as metronome:
            if sys.platform.startswith("linux"):
                assert timerfds() == before  # no kernel timer: it sleeps on the mock clock
            for _ in range(3):
                await wait()
            clock.jump(3.5 * PERIOD)  # an overrun of three periods and a half
            await wait()
            await wait()

    clock = trio.testing.MockClock(autojump_threshold=0)
    trio.run(main, clock=clock)
    # the overrun: one wake-up counting 3, at once; then the grid again (7, not 7.5)
    assert returns == [(1, 1), (2, 1), (3, 1), (6.5, 3), (7, 1)]


@pytest.mark.parametrize("period", [0.0, -1.0, math.inf, math.nan])
def test_a_period_that_is_not_a_positive_number_is_refused(period: float) -> None:
    with pytest.raises(ValueError, match="period"):
        Metronome(period)
