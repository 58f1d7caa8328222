"""One export, driven from a :class:`~tickcast.storage.history.History` (trio).

::

    resolve_range()   the ticks the request names, clamped to what is published
    probe_schema()    the table's columns, from samples spread over the range
    export_chunks()   batches: History.read -> encoder (worker thread), pipelined

Everything before :func:`export_chunks` happens before the response starts, so a
bad request or a corrupt record there is still an HTTP error with a JSON body.

Invariants of :func:`export_chunks`:

* memory is bounded by two batches (one encoded while the next is read),
  whatever the range;
* each batch's CPU work (flattening, encoding) runs in a worker thread (at most
  ``ENCODE_THREADS`` at once per server), so live clients on the event loop are
  not held up; cancellation (the client went away) waits for at most the work in
  hand, then nothing is left running: no task, no thread;
* the ticks exported are exactly ``from_t .. to_t``: a tick missing on the way
  (retention deleted it, an edge's ``history_url`` failed) or a corrupt record
  raises :class:`ExportAborted` after the bytes already sent, so the caller can
  abort the response instead of ending it as a well-formed but short file.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from functools import partial

import pyarrow as pa
import trio

from tickcast.errors import StoreError, TickcastError
from tickcast.export.formats import Encoder
from tickcast.export.params import ExportParams
from tickcast.export.tables import Flattener, SchemaDriftError, base_schema, unify
from tickcast.storage.history import History, range_end
from tickcast.tick import EncodedTick

__all__ = [
    "BATCH_TICKS",
    "ExportAborted",
    "ExportRange",
    "ExportStatistics",
    "Exports",
    "Outcome",
    "export_chunks",
    "probe_schema",
    "probe_starts",
    "resolve_range",
]

log = logging.getLogger("tickcast.export")

# A batch is at most BATCH_TICKS ticks and about BATCH_BYTES of stored JSON (the size
# of the ticks read so far decides how many the next read asks for; before any, the
# mean size of the ticks in memory). The first is at most FIRST_BATCH_TICKS, so that
# the first bytes leave at once. Ingested ticks may be large (up to 16 MiB each):
# counts alone would not bound memory.
BATCH_TICKS = 4096
BATCH_BYTES = 2 * 2**20
FIRST_BATCH_TICKS = 256
PROBES = 9  # samples spread over the range that decide a table's columns
PROBE_TICKS = 256  # ticks per sample, at most
PROBE_BYTES = 2**20  # ... and about this many bytes
DEFAULT_TICK_BYTES = 2500  # the mean size assumed while nothing is in memory
# Batches encoded at once, over all exports of a server: more exports wait their
# turn instead of taking every core (and the GIL) from live clients.
ENCODE_THREADS = 2


class Outcome(enum.Enum):
    """How an export ended."""

    COMPLETED = "completed"
    FAILED = "failed"  # an error aborted it (the response was cut off)
    CANCELLED = "cancelled"  # the client went away


class ExportAborted(TickcastError):
    """An export cannot deliver its whole range; the response must be aborted."""


@dataclass(frozen=True, slots=True)
class ExportRange:
    """The ticks an export holds: ``from_t .. to_t`` inclusive (``to_t = from_t - 1``: none)."""

    from_t: int
    to_t: int
    epoch: str
    truncated: bool = False

    @property
    def count(self) -> int:
        return max(0, self.to_t - self.from_t + 1)


@dataclass(frozen=True, slots=True)
class ExportStatistics:
    """Counters of a server's exports (``/metrics``)."""

    running: int
    started: int
    completed: int
    failed: int
    cancelled: int
    ticks: int
    bytes: int


class Exports:
    """Counts exports as :func:`export_chunks` runs them, and bounds their threads."""

    def __init__(self) -> None:
        self.encoders = trio.CapacityLimiter(ENCODE_THREADS)
        self._running = self._started = self._completed = 0
        self._failed = self._cancelled = self._ticks = self._bytes = 0
        self._changed = trio.Event()

    def statistics(self) -> ExportStatistics:
        return ExportStatistics(
            self._running,
            self._started,
            self._completed,
            self._failed,
            self._cancelled,
            self._ticks,
            self._bytes,
        )

    async def wait_changed(self) -> None:
        """Wait until an export starts or ends (for tests and tools)."""
        await self._changed.wait()

    def opened(self) -> None:
        self._running += 1
        self._started += 1
        self._wake()

    def sent(self, ticks: int, nbytes: int) -> None:
        self._ticks += ticks
        self._bytes += nbytes

    def closed(self, outcome: Outcome) -> None:
        self._running -= 1
        if outcome is Outcome.COMPLETED:
            self._completed += 1
        elif outcome is Outcome.FAILED:
            self._failed += 1
        else:
            self._cancelled += 1
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()


async def resolve_range(history: History, params: ExportParams) -> ExportRange:
    """The range ``params`` names, clamped to ``oldest_t .. latest_t`` (as now).

    ``from_t`` defaults to ``oldest_t``, ``to_t`` to ``latest_t``. ``truncated``: the
    range asked for starts before ``oldest_t`` (retention deleted its head).

    Raises:
        CorruptRecordError: a seek by time probed a corrupt record.
    """
    latest, oldest, epoch = history.latest_t, history.oldest_t, history.epoch
    start = params.from_t if params.from_t is not None else (oldest or 0)
    if latest is None or oldest is None:
        return ExportRange(start, start - 1, epoch)
    truncated = start < oldest
    if params.from_ts is not None:
        by_time = await history.find_ts(params.from_ts)
        # Landed on oldest_t: deleted ticks before it may have matched (as a stream's hello).
        truncated = truncated or (by_time == oldest > 0 and start <= oldest)
        start = max(start, by_time)
    start = max(start, oldest)
    end = await range_end(history, params.to_t, params.to_ts)
    if end is None or end < start:
        return ExportRange(start, start - 1, epoch, truncated)
    return ExportRange(start, end, epoch, truncated)


def probe_starts(rng: ExportRange, size: int = PROBE_TICKS) -> list[int]:
    """Where the samples of :func:`probe_schema` start (each ``size`` ticks long)."""
    span = max(rng.count - size, 0)
    return sorted({rng.from_t + span * i // (PROBES - 1) for i in range(PROBES)})


def _ticks_for(nbytes: int, tick_bytes: float, cap: int) -> int:
    """How many ticks of ``tick_bytes`` make about ``nbytes`` (1 .. ``cap``)."""
    return max(1, min(cap, int(nbytes / max(tick_bytes, 1.0))))


def _mean_tick_bytes(history: History) -> float:
    st = history.statistics()
    return st.ring_bytes / st.ring_ticks if st.ring_ticks else DEFAULT_TICK_BYTES


async def probe_schema(
    history: History,
    flattener: Flattener,
    rng: ExportRange,
    *,
    limiter: trio.CapacityLimiter | None = None,
) -> pa.Schema:
    """The columns of ``flattener``'s table over ``rng``, from ``PROBES`` samples.

    A member that appears only between the samples is found when its batch is
    flattened: :func:`export_chunks` then aborts (docs/export.md says how to avoid it).

    Raises:
        CorruptRecordError: a sampled record is corrupt.
    """
    if rng.count == 0:
        return base_schema()
    schemas = []
    size = _ticks_for(PROBE_BYTES, _mean_tick_bytes(history), PROBE_TICKS)
    for start in probe_starts(rng, size):
        ticks = await history.read(start, size, upto=rng.to_t)
        batch = await trio.to_thread.run_sync(flattener.flatten, ticks, limiter=limiter)
        schemas.append(batch.schema)
    return unify(schemas)


async def _read(history: History, t: int, n: int, to_t: int) -> list[EncodedTick]:
    """Ticks ``t .. t + n - 1`` (fewer at most at the end of a file), exactly from ``t``.

    Raises:
        ExportAborted: a corrupt record, or the history no longer starts at ``t``.
    """
    try:
        ticks = await history.read(t, n, upto=to_t)
    except StoreError as exc:  # CorruptRecordError among them
        raise ExportAborted(f"export aborted at t={t}: {exc}") from exc
    if not ticks or ticks[0].t != t:
        got = f"t={ticks[0].t}" if ticks else "nothing"
        raise ExportAborted(f"export aborted at t={t}: the history gave {got}")
    return ticks


async def _encode_while_reading(
    encode: Callable[[], Awaitable[bytes]],
    read: Callable[[], Awaitable[list[EncodedTick]]] | None,
) -> tuple[bytes, list[EncodedTick] | ExportAborted | None]:
    """``encode()`` (a batch) and ``read()`` (the next one) at the same time.

    The encoding runs in a worker thread and the read mostly in another, so a
    second core, when there is one, cuts an export's wall time; the server's CPU
    per tick is the same. Cancellation waits for both threads' work in hand.

    Returns:
        The encoded bytes, and the next batch, or the read's failure (to raise once
        the bytes before it are sent), or None (``read`` None: nothing follows).

    Raises:
        ExportAborted: ``encode`` failed.
    """
    if read is None:
        return await encode(), None
    data: list[bytes] = []
    failed: list[ExportAborted] = []

    async def encoding() -> None:
        try:
            data.append(await encode())
        except ExportAborted as exc:
            failed.append(exc)

    following: list[EncodedTick] | ExportAborted
    async with trio.open_nursery() as nursery:
        nursery.start_soon(encoding)
        try:
            following = await read()
        except ExportAborted as exc:
            following = exc
    if failed:
        raise failed[0]
    return data[0], following


async def export_chunks(
    history: History, rng: ExportRange, encoder: Encoder, exports: Exports
) -> AsyncIterator[bytes]:
    """The bytes of the export of ``rng``, one chunk per batch (empty chunks skipped).

    Batch k is encoded while batch k + 1 is read; at most these two are in memory.
    On cancellation (the client disconnected) it stops once the work in hand is
    done: no thread and no task outlives it.

    Raises:
        ExportAborted: a tick of the range is missing or corrupt, or a batch does not
            fit the columns chosen at the start; the chunks already yielded are a
            prefix of the file, which must not be passed on as complete.
    """
    exports.opened()
    outcome = Outcome.CANCELLED
    encoders = exports.encoders
    try:
        head = await trio.to_thread.run_sync(encoder.begin, limiter=encoders)
        if head:
            exports.sent(0, len(head))
            yield head
        t, end = rng.from_t, rng.to_t
        first = _ticks_for(BATCH_BYTES, _mean_tick_bytes(history), FIRST_BATCH_TICKS)
        ticks = await _read(history, t, min(first, end - t + 1), end) if t <= end else None
        while ticks is not None:
            t = ticks[-1].t + 1
            size = sum(len(tick.raw) for tick in ticks)
            n = min(_ticks_for(BATCH_BYTES, size / len(ticks), BATCH_TICKS), end - t + 1)
            read = partial(_read, history, t, n, end) if t <= end else None
            encode = partial(_encode, encoder, ticks, encoders)
            data, following = await _encode_while_reading(encode, read)
            exports.sent(len(ticks), len(data))
            del encode, read  # the batch just encoded is dropped before its bytes are sent
            if data:
                yield data
            del data
            if isinstance(following, ExportAborted):
                raise following
            ticks = following
        tail = await trio.to_thread.run_sync(encoder.end, limiter=encoders)
        if tail:
            exports.sent(0, len(tail))
            yield tail
        outcome = Outcome.COMPLETED
    except (trio.Cancelled, GeneratorExit):
        raise
    except ExportAborted as exc:
        outcome = Outcome.FAILED
        log.error("%s", exc)
        raise
    except Exception:
        outcome = Outcome.FAILED
        log.exception("export of t=%d..%d failed", rng.from_t, rng.to_t)
        raise
    finally:
        exports.closed(outcome)


async def _encode(
    encoder: Encoder, ticks: list[EncodedTick], limiter: trio.CapacityLimiter
) -> bytes:
    try:
        return await trio.to_thread.run_sync(encoder.encode, ticks, limiter=limiter)
    except SchemaDriftError as exc:
        raise ExportAborted(
            f"export aborted at t={ticks[0].t}: {exc}; export a shorter range"
        ) from exc
