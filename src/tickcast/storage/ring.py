"""The ring buffer: the newest ``capacity`` ticks in memory (plain Python, no I/O).

Invariants: ticks are appended with consecutive ``t``; the ring holds exactly the
ticks ``oldest_t .. latest_t`` (at most ``capacity`` of them); lookups by ``t``
are O(1) (slot ``t % capacity``).

Why a ring indexed by ``t`` rather than a deque: the common reads are "the tick
``t``" (a client catching up) and "the newest tick" (a new client's first tick),
and both are one slot lookup; a replay of ``n`` ticks is ``n`` lookups with no search.

The ring does not start at ``t = 0`` necessarily: the first tick appended (after a
restart from the segments, or when an edge joins the stream late) may carry any
``t``, and ``oldest_t`` is then that tick's until the ring has wrapped.

Memory: the ring holds references to :class:`~tickcast.tick.EncodedTick` objects
and their encoded JSON (``nbytes``); the cached views and frames of a tick are
dropped once it is ``CACHE_TICKS`` behind the newest, so a large ring does not hold
a frame per field set for every tick it keeps.
"""

from __future__ import annotations

from tickcast.tick import EncodedTick

__all__ = ["CACHE_TICKS", "Ring"]

# Ticks behind the newest whose encoded views/frames stay cached: live clients and
# clients catching up from a short lag read them; further back, a replay is rare
# enough to re-encode.
CACHE_TICKS = 1024


class Ring:
    """A fixed-capacity buffer of consecutive ticks, indexed by ``t``.

    Plain and synchronous: no method awaits, so a reader on the trio thread always
    sees a consistent range (the writer appends from the same thread).
    """

    __slots__ = ("_bytes", "_capacity", "_first", "_latest", "_slots")

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self._capacity = capacity
        self._slots: list[EncodedTick | None] = [None] * capacity
        self._latest: int | None = None
        self._bytes = 0
        self._first = 0

    @property
    def capacity(self) -> int:
        """The most ticks held at once (the ``ring_size`` setting)."""
        return self._capacity

    @property
    def latest_t(self) -> int | None:
        """The newest ``t`` held, or None when empty."""
        return self._latest

    @property
    def oldest_t(self) -> int | None:
        """The oldest ``t`` still held, or None when empty."""
        if self._latest is None:
            return None
        return max(self._first, self._latest - self._capacity + 1)

    @property
    def nbytes(self) -> int:
        """Bytes of tick JSON held (for metrics)."""
        return self._bytes

    def __len__(self) -> int:
        """Ticks held now: ``latest_t - oldest_t + 1``, 0 when empty."""
        if self._latest is None:
            return 0
        return self._latest - self.oldest_t + 1  # type: ignore[operator]

    def append(self, tick: EncodedTick) -> None:
        """Add the next tick; ``tick.t`` must be ``latest_t + 1`` (any ``t`` when empty).

        When full, the oldest tick is overwritten (and its bytes leave ``nbytes``).

        Raises:
            ValueError: ``tick.t`` is not the next ``t``; the ring is unchanged. A
                hole in the ring would break every reader's "consecutive" promise,
                so it is refused here rather than served.
        """
        if self._latest is None:
            self._first = tick.t
        elif tick.t != self._latest + 1:
            raise ValueError(f"ring expects t={self._latest + 1}, got t={tick.t}")
        slot = tick.t % self._capacity
        old = self._slots[slot]
        if old is not None:
            self._bytes -= len(old.raw)
        self._slots[slot] = tick
        self._bytes += len(tick.raw)
        self._latest = tick.t
        # Views and frames are hot only near the live edge: drop them as ticks cross
        # CACHE_TICKS behind it. (A replay of older ticks rebuilds and keeps theirs until
        # they leave the ring: bounded by the ring, usually far less.)
        if self._capacity > CACHE_TICKS:
            aged = self._slots[(tick.t - CACHE_TICKS) % self._capacity]
            if aged is not None and aged.t == tick.t - CACHE_TICKS:
                aged.drop_caches()

    def get(self, t: int) -> EncodedTick | None:
        """The tick ``t`` if the ring still holds it (None: too old, or not yet)."""
        oldest = self.oldest_t
        if oldest is None or t < oldest or t > self._latest:  # type: ignore[operator]
            return None
        return self._slots[t % self._capacity]

    def latest(self) -> EncodedTick | None:
        """The newest tick, or None when empty."""
        return None if self._latest is None else self._slots[self._latest % self._capacity]

    def range(self, from_t: int, limit: int, *, upto: int | None = None) -> list[EncodedTick]:
        """Up to ``limit`` consecutive ticks from ``from_t`` (which must be held), to ``upto``.

        The list is consecutive from ``from_t`` and never longer than ``limit``; it ends
        at the newest tick or at ``upto`` (inclusive), whichever comes first.

        Returns:
            The ticks; ``[]`` when the ring is empty, ``from_t`` is past the newest,
            or ``limit < 1``.

        Raises:
            KeyError: ``from_t`` is older than the ring; the caller reads it from the
                segments (``storage/history.py``'s ``read_through``) instead.
        """
        oldest = self.oldest_t
        latest = self._latest
        if oldest is None or latest is None or from_t > latest or limit < 1:
            return []
        if from_t < oldest:
            raise KeyError(from_t)
        end = latest if upto is None else min(latest, upto)
        end = min(end, from_t + limit - 1)
        cap = self._capacity
        slots = self._slots
        return [slots[t % cap] for t in range(from_t, end + 1)]  # type: ignore[misc]
