"""The Python client of a tickcast feed; ``docs/client.md`` has the details.

::

    from tickcast.client import Client

    c = Client("http://127.0.0.1:8000", fields=["s", "matches"])
    for tick in c.stream(from_t=120_000):         # blocking; never misses, never repeats
        ...                                       # (or from_ts=<unix seconds>)
    async for tick in c.astream(from_t=120_000):  # the same under trio or asyncio
        ...
    for tick in c.replay(from_t=48_000, to_t=48_999, speed=10):  # paced by ts, 10x;
        ...                                       # ends after t=48999 (inclusive)
    ticks = c.history(from_t=0, to_t=5_000)        # ticks 0..4999, paging /incremental
    agents = c.table(0, 5_000, table="agents")     # the same range as a pyarrow.Table

Modules, in the order a tick passes them: ``websocket`` (bytes: anyio + wsproto),
``cursor`` (every decision: position, gaps, close codes, backoff, the end of a
replay's range; plain Python), ``replay`` (a replay's speed and range end),
``follow`` (the async loop across connections, and history pages), ``blocking``
(the synchronous face), ``api`` (:class:`Client`).
"""

from __future__ import annotations

from ..errors import (
    BadMessageError,
    ClientError,
    EpochChangedError,
    ExportAbortedError,
    GapError,
    NoProgressError,
    RefusedError,
    StreamClosedError,
    TruncatedError,
)
from .api import Client
from .settings import OnGap

__all__ = [
    "BadMessageError",
    "Client",
    "ClientError",
    "EpochChangedError",
    "ExportAbortedError",
    "GapError",
    "NoProgressError",
    "OnGap",
    "RefusedError",
    "StreamClosedError",
    "TruncatedError",
]
