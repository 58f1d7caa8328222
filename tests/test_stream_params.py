"""Tests for ``/ws/stream`` query parameters and client-message replies (synchronous)."""

from __future__ import annotations

import math
import time

import orjson
import pytest

from tickcast.protocol import StreamProtocol
from tickcast.transports.params import BadParam, StreamParams, parse_stream_params, start_t

# -- parse_stream_params --------------------------------------------------------------


def test_defaults() -> None:
    p = parse_stream_params({})
    assert p == StreamParams(from_t=None, fields=None, batch=1)
    assert (p.from_t, p.fields, p.batch) == (None, None, 1)


@pytest.mark.parametrize(("raw", "value"), [("0", 0), ("12", 12), ("123456789", 123456789)])
def test_from_t(raw: str, value: int) -> None:
    p = parse_stream_params({"from_t": raw})
    assert p.from_t == value
    assert (p.fields, p.batch) == (None, 1)


@pytest.mark.parametrize("raw", ["-1", "x", "1.5", "", "0x10", "1e3"])
def test_bad_from_t(raw: str) -> None:
    with pytest.raises(BadParam) as info:
        parse_stream_params({"from_t": raw})
    assert info.value.param == "from_t"
    assert info.value.detail
    assert "from_t" in str(info.value)


@pytest.mark.parametrize(("raw", "value"), [("1", 1), ("2", 2), ("1000", 1000)])
def test_batch(raw: str, value: int) -> None:
    assert parse_stream_params({"batch": raw}).batch == value


@pytest.mark.parametrize("raw", ["0", "1001", "x", "-5", "2.0", ""])
def test_bad_batch(raw: str) -> None:
    with pytest.raises(BadParam) as info:
        parse_stream_params({"batch": raw})
    assert info.value.param == "batch"
    assert "batch" in str(info.value)


def test_bad_batch_detail_gives_the_range() -> None:
    with pytest.raises(BadParam) as info:
        parse_stream_params({"batch": "1001"})
    assert "1..1000" in info.value.detail


def test_fields() -> None:
    assert parse_stream_params({"fields": "s"}).fields == ("s",)
    assert parse_stream_params({"fields": "agents,s"}).fields == ("s", "agents")
    assert parse_stream_params({"fields": "s,agents,actions,matches"}).fields is None


@pytest.mark.parametrize("raw", ["s,zzz", "zzz", "", "s,"])
def test_bad_fields(raw: str) -> None:
    with pytest.raises(BadParam) as info:
        parse_stream_params({"fields": raw})
    assert info.value.param == "fields"
    assert info.value.detail


def test_bad_fields_detail_names_the_field() -> None:
    with pytest.raises(BadParam) as info:
        parse_stream_params({"fields": "s,zzz"})
    assert "zzz" in info.value.detail


def test_all_params_together() -> None:
    p = parse_stream_params({"from_t": "7", "fields": "matches", "batch": "50"})
    assert p == StreamParams(from_t=7, fields=("matches",), batch=50)


def test_bad_param_is_a_value_error() -> None:
    # Callers that only know ValueError still catch it.
    with pytest.raises(ValueError):
        parse_stream_params({"batch": "0"})


def test_unknown_params_are_ignored() -> None:
    assert parse_stream_params({"token": "abc"}) == StreamParams()


def client_reply(data: bytes | str) -> bytes:
    return StreamProtocol(from_t=None, lag_limit=10).reply(data)


# -- client_reply ---------------------------------------------------------------------


def test_ping_with_id_gets_pong_with_id() -> None:
    before = time.time()
    reply = orjson.loads(client_reply(b'{"type":"ping","id":5}'))
    after = time.time()
    assert reply["type"] == "pong"
    assert reply["id"] == 5
    assert isinstance(reply["ts"], float)
    assert before - 1e-6 <= reply["ts"] <= after + 1e-6
    assert set(reply) == {"type", "ts", "id"}


def test_ping_id_is_echoed_as_is() -> None:
    reply = orjson.loads(client_reply('{"type":"ping","id":"abc-1"}'))
    assert reply["id"] == "abc-1"
    reply = orjson.loads(client_reply('{"type":"ping","id":{"n":[1,2]}}'))
    assert reply["id"] == {"n": [1, 2]}


def test_ping_without_id_has_no_id() -> None:
    reply = orjson.loads(client_reply(b'{"type":"ping"}'))
    assert reply["type"] == "pong"
    assert "id" not in reply
    assert isinstance(reply["ts"], float)


def test_accepts_str() -> None:
    assert orjson.loads(client_reply('{"type":"ping"}'))["type"] == "pong"


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b"[1]",
        b'{"type":"subscribe"}',
        b"{}",
        b'"ping"',
        b"null",
        b"",
        b"\xff\xfe",
        '{"type":"PING"}',
    ],
)
def test_bad_message(data: bytes | str) -> None:
    reply = orjson.loads(client_reply(data))
    assert reply["type"] == "error"
    assert reply["code"] == "bad_message"
    assert isinstance(reply["detail"], str)
    assert reply["detail"]


def test_unknown_type_is_named_in_the_detail() -> None:
    reply = orjson.loads(client_reply(b'{"type":"subscribe"}'))
    assert "subscribe" in reply["detail"]


# -- from_ts ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "value"),
    [
        ("0", 0.0),
        ("1732450000", 1732450000.0),
        ("1732450000.123456", 1732450000.123456),
        (".5", 0.5),
        ("5.", 5.0),
        ("1.7e9", 1.7e9),
        ("1E+3", 1000.0),
        ("-0", 0.0),
    ],
)
def test_from_ts(raw: str, value: float) -> None:
    p = parse_stream_params({"from_ts": raw})
    assert (p.from_t, p.from_ts) == (None, value)


@pytest.mark.parametrize(
    "raw", ["", "x", "-1", "-0.5", "nan", "inf", "-inf", "1e999", "0x10", " 5", "5 ", "1_000", "."]
)
def test_bad_from_ts(raw: str) -> None:
    with pytest.raises(BadParam) as info:
        parse_stream_params({"from_ts": raw})
    assert info.value.param == "from_ts"


def test_from_t_and_from_ts_together_are_both_kept() -> None:
    p = parse_stream_params({"from_t": "5", "from_ts": "1000.5"})
    assert (p.from_t, p.from_ts) == (5, 1000.5)
    # A bad from_t is still reported first (checks run in order).
    with pytest.raises(BadParam) as info:
        parse_stream_params({"from_t": "x", "from_ts": "1000.5"})
    assert info.value.param == "from_t"


@pytest.mark.parametrize(
    ("from_t", "seek_t", "start"),
    [(None, None, None), (5, None, 5), (None, 7, 7), (5, 7, 7), (9, 7, 9), (0, 0, 0)],
)
def test_start_t_is_the_later_bound(from_t: int | None, seek_t: int | None, start: int) -> None:
    assert start_t(from_t, seek_t) == start


@pytest.mark.parametrize("name", ["limit", "lmit", "Batch", "Speed", ""])
def test_an_unknown_stream_parameter_is_refused(name: str) -> None:
    with pytest.raises(BadParam) as info:
        parse_stream_params({"from_t": "1", name: "3"})
    assert info.value.param == name


# -- replay: speed, to_t, to_ts -------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "value"),
    [("1", 1.0), ("0.1", 0.1), ("1000", 1000.0), ("2.5", 2.5), (".5", 0.5), ("max", math.inf)],
)
def test_speed(raw: str, value: float) -> None:
    assert parse_stream_params({"speed": raw}).speed == value


@pytest.mark.parametrize(
    "raw", ["0", "0.09", "1000.1", "-1", "", "MAX", "inf", "nan", "1e9", " 1", "10x", "0x10"]
)
def test_bad_speed(raw: str) -> None:
    with pytest.raises(BadParam) as info:
        parse_stream_params({"speed": raw})
    assert info.value.param == "speed"
    assert "0.1..1000" in info.value.detail


def test_no_speed_is_none() -> None:
    assert parse_stream_params({}).speed is None


def test_a_range() -> None:
    params = parse_stream_params({"from_t": "5", "to_t": "5", "to_ts": "1.5", "from_ts": "1"})
    assert (params.from_t, params.to_t, params.from_ts, params.to_ts) == (5, 5, 1.0, 1.5)


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ({"from_t": "6", "to_t": "5"}, "to_t"),
        ({"from_ts": "2", "to_ts": "1.5"}, "to_ts"),
        ({"to_t": "-1"}, "to_t"),
        ({"to_ts": "x"}, "to_ts"),
    ],
)
def test_an_end_before_the_start_is_refused(query: dict[str, str], name: str) -> None:
    with pytest.raises(BadParam) as info:
        parse_stream_params(query)
    assert info.value.param == name


def test_the_order_of_checks_names_the_range_before_the_speed() -> None:
    with pytest.raises(BadParam) as info:
        parse_stream_params({"from_t": "6", "to_t": "5", "speed": "0"})
    assert info.value.param == "to_t"
