#!/usr/bin/env python3
"""The fixed CPU cost of one tick: each target running with no client at all.

What a server spends per tick whatever the number of clients (producing the tick,
writing it, waking its tasks) is, at N clients, that much per message divided by N.
``bench/fanout.py``'s CPU per message includes it; this measures it alone, so the
per-client part can be told apart. Targets alternate, ``--rounds`` times, each pinned
to CPU 0 (as in ``fanout.py``) and measured for ``--duration`` seconds after
``--settle``.

    .venv/bin/python bench/tick_cost.py --targets floor,tickcast --rounds 2
    .venv/bin/python bench/tick_cost.py --targets floor,base,tickcast --baseline HEAD~1
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from fanout import SERVER_CPU, baseline_tree, str_list  # noqa: E402
from loadtest.targets import start_target, stop_target  # noqa: E402

__all__ = ["main"]


def measure(name: str, rate: float, settle_s: float, duration_s: float) -> tuple[float, float]:
    """(CPU seconds, of which user mode) per tick of target ``name`` with no client."""
    target = start_target(name, rate=rate, compression=False, cpu=SERVER_CPU)
    try:
        time.sleep(settle_s)
        proc = psutil.Process(target.pid)
        c0, w0 = proc.cpu_times(), time.monotonic()
        time.sleep(duration_s)
        c1, w1 = proc.cpu_times(), time.monotonic()
    finally:
        stop_target(target)
    ticks = (w1 - w0) * rate
    user = c1.user - c0.user
    return (user + c1.system - c0.system) / ticks, user / ticks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=str_list, default=["floor", "tickcast"])
    parser.add_argument("--rate", type=float, default=20.0, help="ticks per second")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--settle", type=float, default=3.0, help="seconds before measuring")
    parser.add_argument("--duration", type=float, default=15.0, help="measured seconds")
    parser.add_argument("--baseline", metavar="REF", help="git ref for the target 'base'")
    args = parser.parse_args(argv)
    with baseline_tree(args.baseline):
        for round_ in range(args.rounds):
            costs = {
                name: measure(name, args.rate, args.settle, args.duration) for name in args.targets
            }
            floor = costs.get("floor")
            for name, (cost, user) in costs.items():
                ratio = f"  x{cost / floor[0]:.2f} of the floor" if floor else ""
                print(
                    f"round {round_ + 1} {name:>9}: {cost * 1e6:6.0f} us CPU per tick"
                    f" ({user * 1e6:4.0f} us user){ratio}"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
