"""The tick model and codec (plain Python, no I/O).

Invariants:

* A tick is encoded to JSON bytes exactly once (:meth:`EncodedTick.from_dict`);
  the segment line, the ring entry, ``/incremental``'s element and every
  WebSocket message are those bytes.
* A field selection (the stream's ``fields``) is computed at most once per tick per
  field set and cached on the tick, never once per client.
* Keys keep the order ``type, t, ts, s, agents, actions, matches``.
* An :class:`EncodedTick` never changes once built: ``t``, ``ts`` and ``raw`` are
  fixed, and the caches only ever hold bytes derived from ``raw``, so any number of
  sessions may share one without copying or locking.

Why the key order matters beyond looks: ``t`` and ``ts`` are then within the first
bytes of every record, so a stored record is wrapped (:meth:`EncodedTick.from_stored`)
by reading them off its head with a regular expression instead of parsing kilobytes
of JSON, and a light client can do the same (docs/protocol.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from tickcast.wire import read_head

__all__ = [
    "BATCH_HEAD",
    "BATCH_TAIL",
    "HEAD_KEYS",
    "OPTIONAL_KEYS",
    "EncodedTick",
    "Fields",
    "batch_message",
    "encode_message",
    "parse_fields",
    "read_head",
]

# Always sent, whatever `fields` says: a client cannot check continuity without `t`.
HEAD_KEYS = ("type", "t", "ts")
# The keys `fields` chooses among, in wire order. The API documents (web/schemas.py)
# and the query parser derive their lists from this one.
OPTIONAL_KEYS = ("s", "agents", "actions", "matches")

Fields = tuple[str, ...] | None
"""A canonical field selection: a sorted-by-spec tuple of optional keys, or None for all."""


def _exact(data: bytes) -> bytes:
    """An exact-size copy of orjson output.

    orjson's result keeps the allocation it grew into: 10,000 kept ~2.4 KB ticks
    measured +78 MB of RSS as returned, +24 MB as copies (and the copy costs no
    measurable time: 5.3 vs 5.8 us per dumps+copy vs dumps).
    """
    return memoryview(data).tobytes()


def parse_fields(text: str | None) -> Fields:
    """Parse ``"s,agents"`` into a canonical selection.

    Canonical means equal selections are equal values: order and repeats in the
    text do not matter (``"agents,s,s"`` is ``("s", "agents")``), and choosing every
    key is ``None``. The caches (views, frames, the raw transport's lanes) are keyed
    by this value, so ``fields=s,agents`` and ``fields=agents,s`` share one encoding.

    Raises:
        ValueError: an unknown or empty field name; the message names it.
    """
    if text is None:
        return None
    names = [part.strip() for part in text.split(",")]
    for name in names:
        if name not in OPTIONAL_KEYS:
            raise ValueError(f"unknown field {name!r}; choose from {','.join(OPTIONAL_KEYS)}")
    chosen = tuple(k for k in OPTIONAL_KEYS if k in names)
    return None if len(chosen) == len(OPTIONAL_KEYS) else chosen


def encode_message(obj: dict[str, Any]) -> bytes:
    """Encode a protocol message (hello, heartbeat, error, pong) to JSON bytes.

    One function so that every server message goes through the same encoder as the
    ticks (orjson: compact separators, UTF-8; a NaN becomes null).
    """
    return orjson.dumps(obj)


class EncodedTick:
    """One tick as bytes, plus its field-selected views cached on first use.

    Attributes:
        t: the sequence number.
        ts: the production time (unix seconds).
        raw: the full JSON encoding, no trailing newline.
    """

    __slots__ = ("_frames", "_views", "raw", "t", "ts")

    def __init__(self, t: int, ts: float, raw: bytes) -> None:
        self.t = t
        self.ts = ts
        self.raw = raw
        # Created on first use: most ticks of a large ring are never read again, and an
        # empty dict per tick would cost ~64 bytes each for nothing.
        self._views: dict[Fields, bytes] | None = None  # fields -> JSON of that view
        # (fields, wbits) -> a whole WebSocket frame; filled by transports/frames.py.
        self._frames: dict[tuple[Fields, int], bytes] | None = None

    @classmethod
    def from_dict(cls, tick: dict[str, Any]) -> EncodedTick:
        """Encode a tick dict (keys already in wire order: ``type, t, ts, s, agents, ...``)."""
        return cls(int(tick["t"]), float(tick["ts"]), _exact(orjson.dumps(tick)))

    @classmethod
    def from_raw(cls, raw: bytes, *, t: int | None = None) -> EncodedTick:
        """Wrap stored bytes; parses them once to learn ``t`` and ``ts``.

        The bytes are kept as they are, not re-encoded: what was stored is what
        clients get.

        Raises:
            ValueError: not a JSON tick object, or (with ``t``) a tick with another
                ``t`` than the index promised; the storage layer treats either as a
                corrupt record.
        """
        obj = orjson.loads(raw)
        if not isinstance(obj, dict) or obj.get("type") != "tick":
            raise ValueError("not a tick object")
        tick_t = int(obj["t"])
        if t is not None and tick_t != t:
            raise ValueError(f"record holds t={tick_t}, expected t={t}")
        return cls(tick_t, float(obj["ts"]), raw)

    @classmethod
    def from_stored(cls, raw: bytes, t: int | None = None) -> EncodedTick:
        """Wrap a stored record, reading ``t`` and ``ts`` off its head (no full parse).

        Ticks are stored with ``type, t, ts`` first (the wire order, docs/protocol.md);
        anything else falls back to a full parse.

        Raises:
            ValueError: as :meth:`from_raw`; a record whose head names another ``t``
                than expected is refused without a parse.
        """
        head = read_head(raw)
        if head is None:
            return cls.from_raw(raw, t=t)
        head_t, ts = head
        if t is not None and head_t != t:
            raise ValueError(f"record holds t={head_t}, expected t={t}")
        return cls(head_t, ts, raw)

    def view(self, fields: Fields) -> bytes:
        """The JSON of this tick restricted to ``fields`` (cached per field set).

        The first call per field set parses ``raw`` and encodes the view; every later
        call, from any client, is a dict lookup. A key the tick lacks is left out
        rather than sent as null.
        """
        if fields is None:
            return self.raw
        views = self._views
        if views is None:
            views = self._views = {}
        out = views.get(fields)
        if out is None:
            obj = orjson.loads(self.raw)
            keep = {k: obj[k] for k in HEAD_KEYS}
            for k in fields:
                if k in obj:
                    keep[k] = obj[k]
            out = views[fields] = _exact(orjson.dumps(keep))
        return out

    def drop_caches(self) -> None:
        """Forget the cached views and frames (the ring calls this as the tick ages)."""
        self._views = None
        self._frames = None

    def __repr__(self) -> str:
        return f"EncodedTick(t={self.t}, {len(self.raw)} bytes)"


BATCH_HEAD = b'{"type":"batch","ticks":['
BATCH_TAIL = b"]}"


def batch_message(views: Iterable[bytes]) -> bytes:
    """``{"type":"batch","ticks":[...]}`` from already-encoded tick views (no re-encoding).

    Each view is valid JSON on its own, so joining them with commas is valid JSON,
    and a batch costs one copy of the bytes, not a parse and an encode.
    """
    return BATCH_HEAD + b",".join(views) + BATCH_TAIL
