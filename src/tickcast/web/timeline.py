"""``GET /timeline``: an overview of the retained history for the dashboard's timeline.

A million-tick history cannot be fetched tick by tick to draw it; this route
answers at most ``points`` ticks sampled evenly across ``oldest_t .. latest_t``
(or a range of it), each reduced to its ``t``, ``ts`` and the numeric members
of its ``s`` (docs/api.md, ``GET /timeline``).

The sample grid is what keeps the route cheap. Inside the range the samples are
the multiples of a power-of-two ``stride``, plus the range's two ends, so the
same ``t`` values come back from one call to the next as the history grows (a
longer history doubles the stride, keeping every other sample), and for
different ``points`` (one grid is a subset of the other). Each sample is read
once with :meth:`History.read` (``read(t, 1)``, from the ring or the segment
files) and kept in a bounded cache per service; later calls read only what is
new: mostly the latest tick.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Annotated, Any
from weakref import WeakKeyDictionary

import msgspec
import orjson
import trio
from msgspec import UNSET, Meta, UnsetType
from quart import Quart, Response, request
from quart_schema import document_querystring, document_response, security_scheme

from tickcast.service import Service
from tickcast.storage.history import History
from tickcast.transports.intake import authorize
from tickcast.transports.params import int_param
from tickcast.web.openapi import READ_ACCESS, answers, takes_query

__all__ = [
    "DEFAULT_POINTS",
    "MAX_POINTS",
    "READERS",
    "TIMELINE_PARAMS",
    "Samples",
    "TimelineQuery",
    "TimelineResponse",
    "install",
    "numeric_members",
    "sample_grid",
]

DEFAULT_POINTS = 1000
MAX_POINTS = 4000
TIMELINE_PARAMS = frozenset({"points", "from_t", "to_t", "token"})
CACHED_SAMPLES = 32_768  # per service; a sample is its ts and a few numbers
# Tasks reading missing samples at once. Over a 1M-tick history on two CPUs, for ~980
# samples read from the files: in a serving process two took ~130 ms against ~165 ms
# for one (alone, without the simulator running: ~100 against ~200 ms); four, or one
# task per sample, were slower than two.
READERS = 2


Sample = tuple[float, dict[str, float]]


class TimelineQuery(msgspec.Struct):
    points: Annotated[
        int,
        Meta(
            ge=2,
            le=MAX_POINTS,
            description="The most samples wanted; the range's two ends are always in.",
        ),
    ] = DEFAULT_POINTS
    from_t: (
        Annotated[int, Meta(ge=0, description="The first t of the range (default: `oldest_t`).")]
        | UnsetType
    ) = UNSET
    to_t: (
        Annotated[
            int,
            Meta(
                ge=0,
                description="The last t of the range, inclusive (default: `latest_t`); "
                "below the start: no samples.",
            ),
        ]
        | UnsetType
    ) = UNSET


class TimelineResponse(msgspec.Struct):
    """Ticks sampled evenly across the range: `t[i]`, `ts[i]` and `s[name][i]` are one tick.

    `s` has one list per numeric member of `s` seen in any sample (`null` where a
    sample lacks it or it is not a number there).
    """

    epoch: str
    oldest_t: Annotated[int, Meta(ge=0)] | None
    latest_t: Annotated[int, Meta(ge=0)] | None
    stride: Annotated[
        int, Meta(ge=1, description="t between samples inside the range (1: every tick)")
    ]
    t: list[Annotated[int, Meta(ge=0)]]
    ts: list[float]
    s: dict[str, list[float | None]]


def sample_grid(first: int, last: int, points: int) -> tuple[int, list[int]]:
    """``(stride, ts)``: at most ``points`` (>= 2) ``t`` values spread over ``first..last``.

    Every ``t`` when they fit; else ``first``, the multiples of the smallest power
    of two ``stride`` that keeps the count within ``points``, and ``last``.
    """
    if last < first:
        return 1, []
    span = last - first
    if span + 1 <= points:
        return 1, list(range(first, last + 1))
    if points == 2:
        return span, [first, last]
    stride = 1 << max(0, math.ceil(math.log2(span / (points - 2))))
    inner = range((first // stride + 1) * stride, last, stride)
    return stride, [first, *inner, last]


def numeric_members(raw: bytes) -> Sample:
    """A stored tick's ``ts`` and the members of its ``s`` that are numbers (not booleans)."""
    obj = orjson.loads(raw)
    s = obj.get("s")
    numbers: dict[str, float] = {}
    if isinstance(s, dict):
        for key, value in s.items():
            if isinstance(value, int | float) and not isinstance(value, bool):
                numbers[key] = value
    return float(obj["ts"]), numbers


class Samples:
    """The samples one service has read, by ``t`` (bounded; forgotten on a new epoch)."""

    def __init__(self, limit: int = CACHED_SAMPLES) -> None:
        self._limit = limit
        self._epoch: str | None = None
        self._by_t: dict[int, Sample] = {}

    async def read(self, history: History, ts: list[int]) -> dict[int, Sample]:
        """The samples at ``ts`` that ``history`` still holds (a t retention took is left out).

        Missing ones are read with ``history.read(t, 1)`` (a run of consecutive
        ``t`` in one read), by ``READERS`` tasks each reading its share one after
        the other. Cancellation: as :meth:`History.read`'s; what was read is not kept.

        Raises:
            CorruptRecordError: a sampled record failed its checksum.
        """
        if history.epoch != self._epoch:
            self._epoch = history.epoch
            self._by_t = {}
        cached = self._by_t
        missing = [t for t in ts if t not in cached]
        found: dict[int, Sample] = {}

        async def read_runs(runs: list[tuple[int, int]]) -> None:
            for first, count in runs:
                for tick in await history.read(first, count, upto=first + count - 1):
                    found[tick.t] = numeric_members(tick.raw)

        runs = _runs(missing)
        async with trio.open_nursery() as nursery:
            for k in range(READERS):
                nursery.start_soon(read_runs, runs[k::READERS])
        out = {t: sample for t in ts if (sample := cached.get(t) or found.get(t)) is not None}
        if len(cached) + len(found) > self._limit:
            for t in list(cached)[: len(cached) + len(found) - self._limit]:
                del cached[t]  # oldest first: dicts keep insertion order
        cached.update(found)
        return out


def _runs(ts: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted ``ts`` as ``(first, count)`` runs of consecutive values."""
    runs: list[tuple[int, int]] = []
    for t in ts:
        if runs and runs[-1][0] + runs[-1][1] == t:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((t, 1))
    return runs


async def timeline(history: History, samples: Samples, query: dict[str, int | None]) -> bytes:
    """The JSON body of ``GET /timeline`` for a validated ``query``."""
    oldest, latest = history.oldest_t, history.latest_t
    stride, grid = 1, list[int]()
    if oldest is not None and latest is not None:
        first = max(oldest, query["from_t"] or 0)
        last = latest if query["to_t"] is None else min(latest, query["to_t"])
        stride, grid = sample_grid(first, last, query["points"] or DEFAULT_POINTS)
    got = await samples.read(history, grid)
    kept = [t for t in grid if t in got]
    names: dict[str, None] = {}
    for t in kept:
        names.update(dict.fromkeys(got[t][1]))
    body: dict[str, Any] = {
        "epoch": history.epoch,
        "oldest_t": oldest,
        "latest_t": latest,
        "stride": stride,
        "t": kept,
        "ts": [got[t][0] for t in kept],
        "s": {name: [got[t][1].get(name) for t in kept] for name in names},
    }
    return orjson.dumps(body)


_samples: WeakKeyDictionary[Service, Samples] = WeakKeyDictionary()


def install(app: Quart, service: Callable[[], Service]) -> None:
    """Add ``GET /timeline`` to ``app``; ``service()`` gives the running service (or raises)."""

    @app.get("/timeline")
    @document_querystring(TimelineQuery)
    @document_response(TimelineResponse, 200)
    @answers(400, 401, 503)
    @security_scheme(READ_ACCESS)
    @takes_query(*TIMELINE_PARAMS)
    async def get_timeline() -> Response:
        """An overview of the history: at most ``points`` ticks sampled evenly across it,
        each as its ``t``, ``ts`` and the numeric members of its ``s``."""
        svc = service()
        authorize(
            svc.config.read_token, request.args, authorization=request.headers.get("authorization")
        )
        query = {
            "points": int_param(request.args, "points", 2, MAX_POINTS),
            "from_t": int_param(request.args, "from_t", 0, None),
            "to_t": int_param(request.args, "to_t", 0, None),
        }
        samples = _samples.get(svc)
        if samples is None:
            samples = _samples[svc] = Samples()
        body = await timeline(svc.history, samples, query)
        return Response(body, content_type="application/json")
