"""Scale-out through Redis Streams: the producer's appender, the edge's follower.

docs/scale-out.md describes it for operators.

* :mod:`.layout` — key names, entry format, the follower's per-entry decision
  (plain Python; the design notes are in its docstring).
* :mod:`.appender` — :class:`Appender` copies a producer's published ticks into
  ``<redis_key>:ticks:<epoch>``, idempotently, re-appending what Redis lost.
* :mod:`.follower` — :class:`Follower` reads them back in order into a
  :class:`TickSink`, reporting gaps and epoch changes.
* :mod:`.client` — the one place that opens coredis clients.
"""

from .appender import Appender, AppenderStatistics, TickSource
from .follower import Follower, FollowerStatistics, TickSink
from .layout import StreamFormatError

__all__ = [
    "Appender",
    "AppenderStatistics",
    "Follower",
    "FollowerStatistics",
    "StreamFormatError",
    "TickSink",
    "TickSource",
]
