"""The Redis Streams layout of scale-out (docs/scale-out.md): key names, entries, decisions.

Plain Python, no I/O: the appender and the follower are thin Redis loops around
these functions, and the tests exercise them synchronously.

Keys, for a ``redis_key`` prefix ``P`` (default ``tickcast``):

``P:ticks:<epoch>``
    One stream per epoch. Entry ID ``<t+1>-0`` (so ``t`` is the ID's first part
    minus one; Redis refuses ``0-0``), fields ``epoch`` (the epoch, again) and
    ``tick`` (the tick's exact JSON bytes). Trimmed with ``MAXLEN ~ redis_maxlen``.
``P:epochs``
    The control stream: one entry (auto ID, fields ``epoch`` and ``access``) each
    time a producer starts appending under an epoch, or a read access, that is not
    already the last one listed. Its last entry is the current epoch. ``access``
    is ``token`` when the producer requires a read token and ``open`` otherwise:
    an edge without a ``read_token`` refuses to serve a protected stream (an entry
    without the field, from an older producer, counts as ``open``; an unknown
    value as ``token``). Trimmed with ``MAXLEN ~ 100``.

Why a stream per epoch plus a control stream:

* IDs are ``t``-based, so re-appending a tick is refused by Redis (an ID at or
  below the stream's top) and appends are idempotent by ``t``. A new epoch
  restarts ``t`` at 0, below the old top: it cannot share the old key.
* An edge blocked in ``XREAD`` on ``P:ticks:<old>`` would never see ticks in a
  new key. It reads ``P:epochs`` in the same ``XREAD`` call, so an epoch change
  wakes it at once (a polled ``P:epoch`` string key would cost a round trip per
  block timeout and add up to one block time of latency).
* Redis restarted without persistence comes back empty, and an ``XREAD`` on a
  missing key just blocks. So the epoch also travels in every entry and in the
  key name: an edge never mistakes a tick of one epoch for one of another, and
  the producer re-announces its epoch on ``P:epochs`` when it finds it missing.

Not for Redis Cluster: the appender's check-and-append script and the follower's
``XREAD`` touch both keys, which would need a common hash slot.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import TickcastError
from ..tick import EncodedTick

__all__ = [
    "EPOCHS_MAXLEN",
    "Announcement",
    "Entry",
    "EntryFields",
    "Step",
    "StreamFormatError",
    "append_start",
    "decide",
    "decode_announcement",
    "decode_entry",
    "decode_epoch",
    "encode_entry",
    "encode_epoch",
    "entry_id",
    "epochs_key",
    "initial_cursor",
    "t_of_id",
    "ticks_key",
]

EPOCHS_MAXLEN = 100  # entries kept in P:epochs (only the last one is ever read)

_EPOCH = b"epoch"
_TICK = b"tick"
_ACCESS = b"access"
_OPEN, _TOKEN = b"open", b"token"

EntryFields = Mapping[bytes | str, bytes | str]
"""An entry's fields as coredis returns them (bytes, the client not decoding)."""


class StreamFormatError(TickcastError):
    """A stream entry or ID does not follow the layout (foreign writer, corruption).

    Integration note: belongs in :mod:`tickcast.errors` once the scale-out roles
    are wired in; it lives here while this package is self-contained.
    """


# -- keys and IDs -----------------------------------------------------------------------


def ticks_key(prefix: str, epoch: str) -> str:
    """The stream holding the ticks of ``epoch``: ``<prefix>:ticks:<epoch>``."""
    return f"{prefix}:ticks:{epoch}"


def epochs_key(prefix: str) -> str:
    """The control stream announcing epochs: ``<prefix>:epochs``."""
    return f"{prefix}:epochs"


def entry_id(t: int) -> str:
    """The stream ID of tick ``t``: ``<t+1>-0``.

    ``entry_id(-1)`` is ``"0-0"``, which as an ``XREAD``/``XRANGE (`` cursor means
    "from the very first tick".
    """
    return f"{t + 1}-0"


def t_of_id(identifier: bytes | str) -> int:
    """The ``t`` an entry ID stands for (inverse of :func:`entry_id`).

    Raises:
        StreamFormatError: not an ID of the form ``<t+1>-0`` with ``t >= 0``.
    """
    text = identifier.decode("ascii", "replace") if isinstance(identifier, bytes) else identifier
    ms, sep, seq = text.partition("-")
    if sep != "-" or seq != "0" or not ms.isdigit() or int(ms) < 1:
        raise StreamFormatError(f"stream ID {text!r} is not <t+1>-0")
    return int(ms) - 1


# -- entries ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Entry:
    """A decoded tick entry.

    Attributes:
        epoch: the epoch written with the tick.
        tick: the tick, its ``raw`` being the exact bytes the producer appended.
    """

    epoch: str
    tick: EncodedTick

    @property
    def t(self) -> int:
        return self.tick.t


def encode_entry(epoch: str, tick: EncodedTick) -> dict[bytes, bytes]:
    """The fields of the entry for ``tick`` (its ID is :func:`entry_id` of ``tick.t``)."""
    return {_EPOCH: epoch.encode(), _TICK: tick.raw}


def _field(fields: EntryFields, name: bytes) -> bytes:
    value = fields.get(name, fields.get(name.decode()))
    if value is None:
        raise StreamFormatError(f"entry lacks the {name.decode()} field")
    return value.encode() if isinstance(value, str) else bytes(value)


def decode_entry(identifier: bytes | str, fields: EntryFields) -> Entry:
    """Decode a ``P:ticks:<epoch>`` entry as ``XREAD``/``XRANGE`` return it.

    Raises:
        StreamFormatError: a bad ID, a missing field, or a tick whose own ``t`` is
            not the one its ID stands for.
    """
    t = t_of_id(identifier)
    raw = _field(fields, _TICK)
    try:
        epoch = _field(fields, _EPOCH).decode()
        tick = EncodedTick.from_stored(raw, t)
    except (ValueError, KeyError, TypeError) as exc:  # not UTF-8, not a tick, wrong t
        raise StreamFormatError(f"entry for t={t}: {exc}") from None
    return Entry(epoch, tick)


@dataclass(frozen=True, slots=True)
class Announcement:
    """A decoded ``P:epochs`` entry.

    Attributes:
        epoch: the producer's epoch.
        protected: reading the producer's feed needs a read token (its ``read_token``
            is set), so an edge must not serve it without one.
    """

    epoch: str
    protected: bool = False


def encode_epoch(epoch: str, *, protected: bool = False) -> dict[bytes, bytes]:
    """The fields of a ``P:epochs`` entry announcing ``epoch`` (``epoch`` first: the
    appender's script reads it as the entry's first field)."""
    return {_EPOCH: epoch.encode(), _ACCESS: _TOKEN if protected else _OPEN}


def decode_announcement(fields: EntryFields) -> Announcement:
    """The epoch and read access a ``P:epochs`` entry announces.

    Raises:
        StreamFormatError: the entry has no valid ``epoch`` field.
    """
    try:
        epoch = _field(fields, _EPOCH).decode()
    except UnicodeDecodeError:
        raise StreamFormatError("the epoch field is not UTF-8") from None
    try:
        access = _field(fields, _ACCESS)
    except StreamFormatError:  # written by a producer that did not record it
        access = _OPEN
    return Announcement(epoch, protected=access != _OPEN)


def decode_epoch(fields: EntryFields) -> str:
    """The epoch a ``P:epochs`` entry announces.

    Raises:
        StreamFormatError: the entry has no valid ``epoch`` field.
    """
    return decode_announcement(fields).epoch


# -- decisions --------------------------------------------------------------------------


def append_start(
    stream_top_t: int | None, oldest_t: int | None, latest_t: int | None, maxlen: int
) -> int | None:
    """The first ``t`` the appender must append, or None while nothing is published.

    The stream should hold the last ``maxlen`` published ticks: everything after
    its top, but nothing older than the producer still has (``oldest_t``) nor
    older than ``maxlen`` ticks before ``latest_t`` (trimming would drop it at once).
    The result may exceed ``latest_t``: then the appender waits for that tick.
    """
    if latest_t is None:
        return None
    first = latest_t - maxlen + 1
    if oldest_t is not None:
        first = max(first, oldest_t)
    if stream_top_t is not None:
        first = max(first, stream_top_t + 1)
    return max(first, 0)


def initial_cursor(stream_top_t: int | None, backlog: int) -> int:
    """Where a follower with nothing delivered starts: it reads the ticks after this ``t``.

    The last ``backlog`` ticks of the stream (fewer if it holds fewer); everything
    from the start when the stream is empty (the producer is refilling it).
    """
    if stream_top_t is None:
        return -1
    return max(stream_top_t - backlog, -1)


class Step(enum.Enum):
    """What a follower does with the next entry of its ticks stream."""

    DELIVER = "deliver"  # the next tick: hand it to the sink
    GAP = "gap"  # ticks are missing before it (trimmed or lost): report, then deliver it
    STALE = "stale"  # at or before the last delivered tick: skip it
    EPOCH = "epoch"  # written under another epoch: history was reset


def decide(epoch: str, last_t: int | None, entry: Entry) -> Step:
    """Decide what to do with ``entry`` after delivering ``last_t`` under ``epoch``.

    ``last_t`` is None when nothing was delivered under ``epoch`` yet: then any
    tick of the epoch is the start.
    """
    if entry.epoch != epoch:
        return Step.EPOCH
    if last_t is None or entry.t == last_t + 1:
        return Step.DELIVER
    if entry.t <= last_t:
        return Step.STALE
    return Step.GAP
