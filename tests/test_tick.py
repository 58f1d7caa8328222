"""Tests for the tick model and codec (synchronous, no I/O)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tickcast.tick import (
    HEAD_KEYS,
    OPTIONAL_KEYS,
    EncodedTick,
    batch_message,
    encode_message,
    parse_fields,
)

TS0 = 1_732_450_000.123456
WIRE_ORDER = ["type", "t", "ts", "s", "agents", "actions", "matches"]


def make_tick(t: int, ts: float = TS0) -> dict[str, Any]:
    """A small tick dict with its keys in wire order."""
    return {
        "type": "tick",
        "t": t,
        "ts": ts,
        "s": {"price_norm": 0.49875, "volatility": 0.003, "liquidity": 1.0, "imbalance": 0.0},
        "agents": [{"id": 0, "experience": 0.123}, {"id": 1, "experience": 0.5}],
        "actions": [{"id": 0, "side": "buy", "price": 50000.0, "size": 1.0}],
        "matches": [{"a": 0, "b": -1, "prob": 0.0}],
    }


def key_order(raw: bytes) -> list[str]:
    return list(orjson.loads(raw))


# -- constants ------------------------------------------------------------------------


def test_key_constants_follow_spec_order() -> None:
    assert list(HEAD_KEYS) + list(OPTIONAL_KEYS) == WIRE_ORDER


# -- from_dict ------------------------------------------------------------------------


def test_from_dict_bytes_are_orjson_of_the_dict() -> None:
    d = make_tick(12345)
    tick = EncodedTick.from_dict(d)
    assert tick.raw == orjson.dumps(d)
    assert tick.t == 12345
    assert tick.ts == TS0
    assert isinstance(tick.t, int)
    assert isinstance(tick.ts, float)


def test_from_dict_keeps_spec_key_order_and_head_first() -> None:
    tick = EncodedTick.from_dict(make_tick(7))
    assert key_order(tick.raw) == WIRE_ORDER
    assert tick.raw.startswith(b'{"type":"tick","t":7,"ts":')
    assert b"\n" not in tick.raw


def test_from_dict_roundtrips_values() -> None:
    d = make_tick(3, ts=1_732_450_000.000001)
    assert orjson.loads(EncodedTick.from_dict(d).raw) == d


# -- from_raw -------------------------------------------------------------------------


def test_from_raw_reads_t_and_ts_and_keeps_the_bytes() -> None:
    raw = orjson.dumps(make_tick(42, ts=1.5))
    tick = EncodedTick.from_raw(raw)
    assert (tick.t, tick.ts) == (42, 1.5)
    assert tick.raw is raw


def test_from_raw_with_matching_t() -> None:
    raw = orjson.dumps(make_tick(42))
    assert EncodedTick.from_raw(raw, t=42).t == 42


def test_from_raw_wrong_t_raises() -> None:
    raw = orjson.dumps(make_tick(42))
    with pytest.raises(ValueError, match="t=42"):
        EncodedTick.from_raw(raw, t=41)


@pytest.mark.parametrize(
    "raw",
    [
        orjson.dumps({"type": "heartbeat", "t": 1, "ts": 1.0}),
        orjson.dumps({"t": 1, "ts": 1.0}),
        orjson.dumps([1, 2, 3]),
        b"17",
    ],
    ids=["wrong-type", "no-type", "array", "number"],
)
def test_from_raw_wrong_type_raises(raw: bytes) -> None:
    with pytest.raises(ValueError, match="not a tick"):
        EncodedTick.from_raw(raw)


# -- from_stored ----------------------------------------------------------------------


def test_from_stored_reads_head_without_a_full_parse() -> None:
    # The body after the head is not valid JSON: only a head read can succeed.
    raw = b'{"type":"tick","t":99,"ts":1732450000.5,"s":GARBAGE'
    tick = EncodedTick.from_stored(raw)
    assert (tick.t, tick.ts) == (99, 1732450000.5)
    assert tick.raw is raw


def test_from_stored_agrees_with_from_raw() -> None:
    raw = orjson.dumps(make_tick(123, ts=TS0))
    stored = EncodedTick.from_stored(raw, 123)
    parsed = EncodedTick.from_raw(raw)
    assert (stored.t, stored.ts, stored.raw) == (parsed.t, parsed.ts, parsed.raw)


def test_from_stored_wrong_t_raises() -> None:
    raw = orjson.dumps(make_tick(5))
    with pytest.raises(ValueError, match="expected t=6"):
        EncodedTick.from_stored(raw, 6)


def test_from_stored_falls_back_for_a_differently_ordered_object() -> None:
    raw = orjson.dumps({"ts": 2.25, "t": 8, "type": "tick", "s": {}})
    tick = EncodedTick.from_stored(raw)
    assert (tick.t, tick.ts) == (8, 2.25)
    assert tick.raw is raw


def test_from_stored_fallback_still_checks_t() -> None:
    raw = orjson.dumps({"t": 8, "type": "tick", "ts": 2.25})
    with pytest.raises(ValueError, match="expected t=9"):
        EncodedTick.from_stored(raw, 9)


def test_from_stored_fallback_still_checks_type() -> None:
    raw = orjson.dumps({"t": 8, "type": "hello", "ts": 2.25})
    with pytest.raises(ValueError):
        EncodedTick.from_stored(raw)


# -- view -----------------------------------------------------------------------------


def test_view_none_is_raw_itself() -> None:
    tick = EncodedTick.from_dict(make_tick(1))
    assert tick.view(None) is tick.raw


@pytest.mark.parametrize(
    "fields",
    [("s",), ("agents",), ("s", "agents"), ("actions", "matches"), ("s", "agents", "matches")],
)
def test_view_keeps_head_and_chosen_keys_in_spec_order(fields: tuple[str, ...]) -> None:
    d = make_tick(4)
    out = EncodedTick.from_dict(d).view(fields)
    expected_keys = list(HEAD_KEYS) + [k for k in OPTIONAL_KEYS if k in fields]
    assert key_order(out) == expected_keys
    assert orjson.loads(out) == {k: d[k] for k in expected_keys}
    assert out.startswith(b'{"type":"tick","t":4,"ts":')


def test_view_of_empty_selection_is_just_the_head() -> None:
    out = EncodedTick.from_dict(make_tick(4)).view(())
    assert orjson.loads(out) == {"type": "tick", "t": 4, "ts": TS0}


def test_view_is_cached_per_field_set() -> None:
    tick = EncodedTick.from_dict(make_tick(1))
    first = tick.view(("s",))
    assert tick.view(("s",)) is first
    other = tick.view(("agents",))
    assert other is not first
    assert tick.view(("agents",)) is other
    assert tick.view(("s",)) is first


def test_view_of_a_stored_tick_can_be_read_back() -> None:
    raw = orjson.dumps(make_tick(10))
    view = EncodedTick.from_stored(raw).view(("s",))
    back = EncodedTick.from_stored(view)
    assert (back.t, back.ts) == (10, TS0)


# -- parse_fields ---------------------------------------------------------------------


def test_parse_fields_none() -> None:
    assert parse_fields(None) is None


def test_parse_fields_single() -> None:
    assert parse_fields("s") == ("s",)


def test_parse_fields_is_canonical_spec_order() -> None:
    assert parse_fields("agents,s") == ("s", "agents")
    assert parse_fields("matches,actions,s") == ("s", "actions", "matches")
    assert parse_fields("agents,s") == parse_fields("s,agents")


def test_parse_fields_tolerates_spaces() -> None:
    assert parse_fields(" s , agents ") == ("s", "agents")


def test_parse_fields_all_four_is_none() -> None:
    assert parse_fields("s,agents,actions,matches") is None
    assert parse_fields("matches,actions,agents,s") is None


@pytest.mark.parametrize(
    ("text", "bad"),
    [("zzz", "zzz"), ("s,zzz", "zzz"), ("type", "type"), ("S", "S")],
)
def test_parse_fields_unknown_name_raises_naming_it(text: str, bad: str) -> None:
    with pytest.raises(ValueError, match=repr(bad)):
        parse_fields(text)


@pytest.mark.parametrize("text", ["", "s,", ",s", "s,,agents"])
def test_parse_fields_empty_name_raises(text: str) -> None:
    with pytest.raises(ValueError, match="unknown field ''"):
        parse_fields(text)


# -- messages -------------------------------------------------------------------------


def test_batch_message_is_valid_json_with_the_views() -> None:
    ticks = [EncodedTick.from_dict(make_tick(t)) for t in (5, 6, 7)]
    views = [t.view(("s",)) for t in ticks]
    msg = batch_message(views)
    obj = orjson.loads(msg)
    assert obj["type"] == "batch"
    assert list(obj) == ["type", "ticks"]
    assert obj["ticks"] == [orjson.loads(v) for v in views]
    assert [tick["t"] for tick in obj["ticks"]] == [5, 6, 7]
    # Views are embedded byte for byte, not re-encoded.
    for v in views:
        assert v in msg


def test_batch_message_accepts_a_generator_and_full_ticks() -> None:
    ticks = [EncodedTick.from_dict(make_tick(t)) for t in (0, 1)]
    obj = orjson.loads(batch_message(t.raw for t in ticks))
    assert obj["ticks"] == [make_tick(0), make_tick(1)]


def test_batch_message_of_one_and_none() -> None:
    one = EncodedTick.from_dict(make_tick(1))
    assert orjson.loads(batch_message([one.raw])) == {"type": "batch", "ticks": [make_tick(1)]}
    assert orjson.loads(batch_message([])) == {"type": "batch", "ticks": []}


def test_encode_message() -> None:
    msg = {"type": "pong", "ts": 1.25, "id": 5}
    out = encode_message(msg)
    assert isinstance(out, bytes)
    assert out == b'{"type":"pong","ts":1.25,"id":5}'
    assert orjson.loads(out) == msg


def test_repr_names_t() -> None:
    tick = EncodedTick.from_dict(make_tick(77))
    assert "t=77" in repr(tick)
