"""A data directory holding a history of N simulated ticks, built once and kept between runs.

Used by ``bench/replay.py`` (and any benchmark that needs a big history behind a
server). The ticks are written straight through the storage layer by
``bench/export.py``'s :func:`build_history`: the bodies of ``distinct`` simulated
ticks, renumbered, with ``ts = 1 700 000 000 + t / 10`` (the default rate, 10
ticks/s: a tick every 100 ms). A 1 000 000-tick history of 21 agents is ~2.5 GB and
takes about a minute to build, so it is kept under ``CACHE_ROOT`` (the system's temp
directory) and reused by later runs with the same size.

Invariants: a cached directory is complete (it is built under a temporary name and
renamed when done), and nobody writes to it: a server that would append ticks is
pointed at a copy (:func:`copy_history`), since the store takes its directory's
``LOCK`` and the simulator resumes from, and appends to, whatever history it opens.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from export import build_history

__all__ = ["CACHE_ROOT", "TS0", "TS_GAP_S", "History", "cached_history", "copy_history"]

CACHE_ROOT = Path(tempfile.gettempdir()) / "tickcast-bench-histories"
TS0 = 1_700_000_000.0  # ts of tick 0 (build_history's)
TS_GAP_S = 0.1  # ts gap between consecutive ticks (build_history's: the default rate)


@dataclass(frozen=True)
class History:
    """A built history: ticks ``0 .. ticks - 1`` in ``path``."""

    path: Path
    ticks: int
    agents: int
    bytes_per_tick: float
    build_s: float  # how long building it took (0.0 if it came from the cache)

    @property
    def latest_t(self) -> int:
        return self.ticks - 1


def cached_history(
    ticks: int, agents: int, *, root: Path = CACHE_ROOT, distinct: int = 5_000
) -> History:
    """The history of ``ticks`` ticks of ``agents`` agents: from the cache, or built into it.

    The directory is ``root/<ticks>-ticks-<agents>-agents``; a JSON file next to it
    (``.json``) records its size, and its presence means the build finished.
    """
    name = f"{ticks}-ticks-{agents}-agents"
    path, meta = root / name, root / f"{name}.json"
    if path.is_dir() and meta.is_file():
        info = json.loads(meta.read_text())
        return History(path, ticks, agents, info["bytes_per_tick"], 0.0)
    root.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(path, ignore_errors=True)
    building = Path(tempfile.mkdtemp(prefix=f"{name}.building-", dir=root))
    start = time.perf_counter()
    try:
        size = build_history(building / "segments", ticks, agents, distinct)
        (building / "segments").rename(path)
    finally:
        shutil.rmtree(building, ignore_errors=True)
    meta.write_text(json.dumps({"ticks": ticks, "agents": agents, "bytes_per_tick": size}))
    return History(path, ticks, agents, size, time.perf_counter() - start)


def copy_history(history: History, dest: Path) -> float:
    """Copy ``history``'s directory to ``dest`` (which must not exist); returns seconds.

    The store's ``LOCK`` file is left behind: it is the open store's, not data.
    """
    start = time.perf_counter()
    shutil.copytree(history.path, dest, ignore=shutil.ignore_patterns("LOCK"))
    os.sync()  # the copy's dirty pages are written now, not during a measurement
    return time.perf_counter() - start
