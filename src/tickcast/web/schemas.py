"""What goes over the wire, as msgspec Structs: the models of the API documents.

The messages a client reads besides ticks (hello, heartbeat, pong, error) and the
ping it sends are the Structs of ``wire.py``, which the server builds its messages
through; they are re-exported here. The rest (ticks, batches, the query strings)
the server never encodes through a Struct (a tick is bytes encoded once): those
exist so that ``/openapi.json`` and ``/asyncapi.json`` are generated from one typed
description (``msgspec.json.schema_components``) instead of hand-written JSON, and
the tests check real server output against them. Constraints come from the
constants the code enforces (``OPTIONAL_KEYS``, ``MAX_BATCH``).

Invariants:

* what a model says must hold for every answer the server gives: schemathesis
  (``tests/test_openapi.py``) and the AsyncAPI tests check real output against
  these models, so a model stricter than the server fails the tests, and a looser
  one would let a client rely on less than it could;
* a Struct's docstring and every ``Meta(description=...)`` are user-facing text: msgspec
  copies them into the JSON Schema, which ``/docs`` and tools show. Notes for
  maintainers therefore go in comments, as here, never in those docstrings;
* validation of real requests is not done here: ``transports/params.py`` parses the
  query strings (naming the bad parameter) and these models only describe them. The
  two are kept equal by ``tests/test_query_params.py``.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from msgspec import UNSET, Meta, UnsetType

from tickcast.tick import OPTIONAL_KEYS
from tickcast.wire import (
    MAX_BATCH,
    MAX_SPEED,
    MIN_SPEED,
    End,
    Error,
    Heartbeat,
    Hello,
    Live,
    Pause,
    Ping,
    Play,
    Pong,
    Replay,
    Seek,
    SetSpeed,
)

__all__ = [
    "FIELDS_PATTERN",
    "Actions",
    "Agents",
    "Batch",
    "End",
    "Error",
    "Heartbeat",
    "Hello",
    "Live",
    "Matches",
    "Pause",
    "Ping",
    "Play",
    "Pong",
    "Replay",
    "Seek",
    "SetSpeed",
    "State",
    "StreamQuery",
    "Tick",
    "TickContent",
]

# The regular expression that `fields` must match, built from the tick's own key list so
# that a new optional key is documented the moment the server serves it.
_NAME = "(?:" + "|".join(OPTIONAL_KEYS) + ")"
FIELDS_PATTERN = f"^{_NAME}(?:,{_NAME})*$"
"""``fields``: a comma list of tick keys, any order, repeats allowed, no empty item."""

# The default of `fields`: every key, which is what a stream without `fields` sends.
ALL_FIELDS = ",".join(OPTIONAL_KEYS)

# -- query parameters ---------------------------------------------------------------------
# Annotated types rather than Struct fields, so that the stream's query (StreamQuery) and
# the HTTP routes' query models (web/app.py) share one description and constraint each.

FromT = Annotated[
    int,
    Meta(
        ge=0,
        description=(
            "Resume: every tick with `t >= from_t` from history, then live, no gap, no "
            "duplicate (decimal digits only). Without it the stream starts with the latest tick."
        ),
    ),
]
FromTs = Annotated[
    float,
    Meta(
        ge=0,
        description=(
            "Start at the first tick with `ts >= from_ts` (unix seconds). "
            "With `from_t` too, both bounds apply: the first tick with `t >= from_t` "
            "and `ts >= from_ts`."
        ),
    ),
]
Fields = Annotated[
    str,
    Meta(
        pattern=FIELDS_PATTERN,
        description=(
            f"Comma list of `{ALL_FIELDS}`: only those keys (plus `type,t,ts`) are sent. "
            "Any order; repeats are allowed; an empty item is a 400."
        ),
        examples=["s", "s,matches"],
    ),
]
Token = Annotated[
    str,
    Meta(
        description=(
            "The read token, for clients that cannot send `Authorization: Bearer` "
            "(browsers). Only checked when the server has `read_token` set."
        )
    ),
]


# Every parameter is optional: UNSET (not None) keeps an absent parameter out of the
# schema's `required` list without inventing a null the server would refuse.
class StreamQuery(msgspec.Struct):
    """The query string of `GET /ws/stream`; a bad value refuses the upgrade (400)."""

    from_t: FromT | UnsetType = UNSET
    from_ts: FromTs | UnsetType = UNSET
    to_t: (
        Annotated[
            int,
            Meta(
                ge=0,
                description=(
                    "The last tick of the range (inclusive): after it the server sends "
                    "`end` and closes with 1000. Below `from_t`: 400."
                ),
            ),
        ]
        | UnsetType
    ) = UNSET
    to_ts: (
        Annotated[
            float,
            Meta(
                ge=0,
                description=(
                    "The range ends at the last tick before the first with `ts > to_ts` "
                    "(unix seconds); then `end` and close 1000. Below `from_ts`: 400."
                ),
            ),
        ]
        | UnsetType
    ) = UNSET
    speed: (
        Annotated[
            str,
            Meta(
                pattern=r"^(max|([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?)$",
                description=(
                    f"Replay history at this many times real time ({MIN_SPEED:g} to "
                    f"{MAX_SPEED:g}), paced by the ticks' `ts` (gaps over 5 s count as "
                    "5 s), or `max`: as fast as the client reads. Without it, history "
                    "goes as fast as the client reads, under the lag rule."
                ),
                examples=["10", "0.5", "max"],
            ),
        ]
        | UnsetType
    ) = UNSET
    fields: Fields = ALL_FIELDS
    batch: Annotated[
        int,
        Meta(
            ge=1,
            le=MAX_BATCH,
            description="Up to this many waiting ticks go in one `batch` message.",
        ),
    ] = 1
    token: Token | UnsetType = UNSET


# -- the tick (docs/protocol.md) ---------------------------------------------------------------
# The nested parts are described, not constrained: the built-in simulator writes the
# shape shown in the examples, but an ingest source serves what its simulation
# posted (any object in `s`, any list in the others), and a schema must hold for both.

State = Annotated[
    dict[str, Any],
    Meta(
        description=(
            "The market state. The built-in simulator's: `price_norm`, `volatility`, "
            "`liquidity`, `imbalance` (numbers)."
        ),
        examples=[{"price_norm": 0.49875, "volatility": 0.003, "liquidity": 1.0, "imbalance": 0.0}],
    ),
]
Agents = Annotated[
    list[Any],
    Meta(
        description="The agents. The built-in simulator's: `{id, experience}` each.",
        examples=[[{"id": 0, "experience": 0.123}]],
    ),
]
Actions = Annotated[
    list[Any],
    Meta(
        description=(
            "The orders placed this tick. The built-in simulator's: `{id, side, price, size}`, "
            "`side` one of `buy`, `sell`."
        ),
        examples=[[{"id": 0, "side": "buy", "price": 50000.0, "size": 1.0}]],
    ),
]
Matches = Annotated[
    list[Any],
    Meta(
        description=(
            "The fills. The built-in simulator's: `{a, b, prob}`, `b` -1 for the outside book."
        ),
        examples=[[{"a": 0, "b": -1, "prob": 0.0}]],
    ),
]


# The tag makes `type` a required constant ("tick") in the schema, as on the wire; the
# optional keys are UNSET by default because `fields` may leave any of them out. The
# server never builds a tick through this Struct: it serves the bytes it encoded once.
class Tick(msgspec.Struct, tag="tick", tag_field="type"):
    """One tick: keys in the order `type, t, ts, s, agents, actions, matches`.

    With `fields`, only the chosen keys of `s, agents, actions, matches` are present.
    """

    t: Annotated[int, Meta(ge=0, description="sequence number, +1 per tick")]
    ts: Annotated[float, Meta(description="production time, unix seconds")]
    s: State | UnsetType = UNSET
    agents: Agents | UnsetType = UNSET
    actions: Actions | UnsetType = UNSET
    matches: Matches | UnsetType = UNSET


# The body of POST /ingest (one of these, or a list). `t` is absent on purpose: the
# server numbers ticks itself, so a client cannot create a gap or a duplicate.
class TickContent(msgspec.Struct):
    """A tick as an external simulation posts it: the server assigns `t` (and `ts` if absent)."""

    s: State
    agents: Agents
    actions: Actions
    matches: Matches
    ts: float | UnsetType = UNSET


# -- stream messages (docs/protocol.md) ---------------------------------------------------------


# min_length=2: a single waiting tick is sent as a plain `tick` message, so a client
# never has to handle a batch of one; max_length is the cap on the `batch` parameter.
class Batch(msgspec.Struct, tag="batch", tag_field="type"):
    """Consecutive ticks that were already waiting (never a batch of one)."""

    ticks: Annotated[list[Tick], Meta(min_length=2, max_length=MAX_BATCH)]
