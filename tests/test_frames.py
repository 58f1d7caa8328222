"""Tests for WebSocket frames serialised once per tick (synchronous, no I/O)."""

from __future__ import annotations

import random
import struct
import zlib
from typing import Any

import orjson
import pytest

from tickcast.tick import EncodedTick, batch_message
from tickcast.transports.frames import (
    OP_CLOSE,
    OP_TEXT,
    batch_frame,
    close_frame,
    deflate,
    frame,
    message_frame,
    tick_frame,
)

TAIL = b"\x00\x00\xff\xff"


def make_tick(t: int, agents: int = 20) -> dict[str, Any]:
    return {
        "type": "tick",
        "t": t,
        "ts": 1_732_450_000.123456 + t,
        "s": {"price_norm": 0.49875, "volatility": 0.003, "liquidity": 1.0, "imbalance": 0.0},
        "agents": [{"id": i, "experience": i / 7} for i in range(agents)],
        "actions": [{"id": 0, "side": "buy", "price": 50000.0, "size": 1.0}],
        "matches": [{"a": 0, "b": -1, "prob": 0.0}],
    }


def inflate(data: bytes, wbits: int = 15) -> bytes:
    """Decompress one permessage-deflate message (RFC 7692 §7.2.2)."""
    d = zlib.decompressobj(-wbits)
    return d.decompress(data + TAIL) + d.flush()


def parse_frame(data: bytes) -> tuple[int, int, bytes]:
    """(first byte, second byte, payload) of one unmasked frame, checking the length."""
    b0, b1 = data[0], data[1]
    n = b1 & 0x7F
    off = 2
    if n == 126:
        (n,) = struct.unpack("!H", data[2:4])
        off = 4
    elif n == 127:
        (n,) = struct.unpack("!Q", data[2:10])
        off = 10
    payload = data[off:]
    assert len(payload) == n
    return b0, b1, payload


# -- frame ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "length_bytes"),
    [
        (0, b"\x00"),
        (1, b"\x01"),
        (125, b"\x7d"),
        (126, b"\x7e\x00\x7e"),
        (127, b"\x7e\x00\x7f"),
        (65535, b"\x7e\xff\xff"),
        (65536, b"\x7f\x00\x00\x00\x00\x00\x01\x00\x00"),
        (70000, b"\x7f" + (70000).to_bytes(8, "big")),
    ],
)
def test_frame_length_encoding(n: int, length_bytes: bytes) -> None:
    payload = bytes(i % 251 for i in range(n))
    out = frame(payload)
    # FIN set, RSV clear, text opcode.
    assert out[0] == 0x81
    # The mask bit (high bit of byte 1) is clear: server frames are never masked.
    assert out[1] & 0x80 == 0
    assert out[1 : 1 + len(length_bytes)] == length_bytes
    assert out[1 + len(length_bytes) :] == payload
    assert len(out) == 1 + len(length_bytes) + n


@pytest.mark.parametrize("opcode", [OP_TEXT, OP_CLOSE])
def test_frame_opcode(opcode: int) -> None:
    out = frame(b"abc", opcode=opcode)
    assert out[0] & 0x0F == opcode
    assert out[0] & 0x80 == 0x80
    assert out[0] & 0x70 == 0


def test_opcodes_are_the_ones_a_websocket_library_reads() -> None:
    # Checked against wsproto's parser, not against our own literals.
    from wsproto.frame_protocol import Opcode

    assert (OP_TEXT, OP_CLOSE) == (Opcode.TEXT, Opcode.CLOSE)


@pytest.mark.parametrize("n", [0, 10, 300, 70000])
def test_compressed_sets_rsv1_only(n: int) -> None:
    plain = frame(b"x" * n)
    comp = frame(b"x" * n, compressed=True)
    assert comp[0] == 0xC1  # FIN | RSV1 | text
    assert comp[0] & 0x30 == 0  # RSV2, RSV3 clear
    assert comp[1:] == plain[1:]


# -- deflate --------------------------------------------------------------------------


def test_deflate_roundtrips_and_strips_the_tail() -> None:
    payload = orjson.dumps(make_tick(1))
    out = deflate(payload, 15)
    assert not out.endswith(TAIL)
    assert len(out) < len(payload)
    assert inflate(out) == payload


def test_deflate_is_stateless() -> None:
    # No context takeover: the same payload compresses to the same bytes every time,
    # so every client can be sent the same cached frame.
    payload = orjson.dumps(make_tick(2))
    first = deflate(payload, 15)
    assert deflate(payload, 15) == first
    # A second message decompresses alone, with a fresh decompressor.
    other = orjson.dumps(make_tick(3))
    assert inflate(deflate(other, 15)) == other


def test_deflate_messages_decompress_through_one_stream() -> None:
    # A client that keeps its context (RFC 7692 default) must still decode them.
    payloads = [orjson.dumps(make_tick(t)) for t in range(3)]
    d = zlib.decompressobj(-15)
    for p in payloads:
        assert d.decompress(deflate(p, 15) + TAIL) == p


def far_repeats() -> bytes:
    """JSON whose only redundancy is repeats 300 B .. 24 KB back (beyond small windows)."""
    rng = random.Random(7)
    parts = []
    for distance in (300, 700, 1500, 3000, 6000, 12000, 24000):
        block = rng.randbytes(distance // 2).hex()
        parts.append(block + block)
    return orjson.dumps({"type": "tick", "t": 0, "ts": 1.0, "s": {"blob": "".join(parts)}})


@pytest.mark.parametrize("wbits", range(9, 16))
def test_deflate_honours_wbits(wbits: int) -> None:
    # A compressor that ignored wbits would reference repeats further back than
    # 2**wbits bytes, which a decompressor with that window rejects.
    payload = far_repeats()
    out = deflate(payload, wbits)
    assert not out.endswith(TAIL)
    assert inflate(out, wbits) == payload


def test_deflate_window_size_changes_the_output() -> None:
    payload = far_repeats()
    small, large = deflate(payload, 9), deflate(payload, 15)
    assert len(large) < len(small)
    with pytest.raises(zlib.error):
        inflate(large, 9)


def test_deflate_empty_payload() -> None:
    assert inflate(deflate(b"", 15)) == b""


# -- message_frame / tick_frame -------------------------------------------------------


def test_message_frame_uncompressed() -> None:
    payload = b'{"type":"pong","ts":1.0}'
    assert message_frame(payload, 0) == frame(payload)


def test_message_frame_compressed() -> None:
    payload = orjson.dumps(make_tick(6))
    out = message_frame(payload, 15)
    b0, _, body = parse_frame(out)
    assert b0 == 0xC1
    assert inflate(body) == payload


def test_tick_frame_is_cached() -> None:
    tick = EncodedTick.from_dict(make_tick(7))
    for fields in (None, ("s",), ("s", "agents")):
        for wbits in (0, 15, 10):
            first = tick_frame(tick, fields, wbits)
            assert tick_frame(tick, fields, wbits) is first


def test_tick_frame_uncompressed_carries_the_view() -> None:
    tick = EncodedTick.from_dict(make_tick(8))
    b0, _, body = parse_frame(tick_frame(tick, None, 0))
    assert b0 == 0x81
    assert body == tick.raw
    b0, _, body = parse_frame(tick_frame(tick, ("s",), 0))
    assert b0 == 0x81
    assert body == tick.view(("s",))


def test_tick_frame_compressed_differs_from_uncompressed() -> None:
    tick = EncodedTick.from_dict(make_tick(9))
    plain = tick_frame(tick, None, 0)
    comp = tick_frame(tick, None, 15)
    assert plain != comp
    b0, _, body = parse_frame(comp)
    assert b0 == 0xC1
    assert inflate(body) == tick.raw


def test_tick_frame_cache_is_keyed_by_fields_and_wbits() -> None:
    tick = EncodedTick.from_dict(make_tick(10))
    a = tick_frame(tick, ("s",), 15)
    b = tick_frame(tick, ("agents",), 15)
    c = tick_frame(tick, ("s",), 9)
    assert inflate(parse_frame(a)[2]) == tick.view(("s",))
    assert inflate(parse_frame(b)[2]) == tick.view(("agents",))
    assert inflate(parse_frame(c)[2], 9) == tick.view(("s",))
    assert a != b


def test_tick_frame_same_across_ticks_with_same_content() -> None:
    # Encode-once: a frame is a pure function of the tick's bytes.
    one = EncodedTick.from_dict(make_tick(11))
    two = EncodedTick.from_dict(make_tick(11))
    assert tick_frame(one, None, 15) == tick_frame(two, None, 15)


# -- close_frame ----------------------------------------------------------------------


def test_close_frame_code_and_reason() -> None:
    reason = "slow consumer; resume with from_t=1234"
    b0, b1, body = parse_frame(close_frame(4008, reason))
    assert b0 == 0x88  # FIN | close
    assert b1 & 0x80 == 0
    assert struct.unpack("!H", body[:2]) == (4008,)
    assert body[2:].decode() == reason


def test_close_frame_without_reason() -> None:
    out = close_frame(1001)
    assert out == b"\x88\x02\x03\xe9"


def test_close_frame_truncates_long_reason() -> None:
    out = close_frame(1011, "x" * 500)
    b0, b1, body = parse_frame(out)
    assert b0 == 0x88
    assert b1 == 125  # control frames carry at most 125 bytes (RFC 6455 §5.5)
    assert len(body) == 125
    assert struct.unpack("!H", body[:2]) == (1011,)
    assert body[2:] == b"x" * 123


def test_close_frame_reason_of_exactly_123_bytes_is_kept() -> None:
    _, _, body = parse_frame(close_frame(1000, "y" * 123))
    assert body[2:] == b"y" * 123


def test_close_frame_truncated_reason_is_valid_utf8() -> None:
    # RFC 6455 §5.5.1: the reason MUST be UTF-8; a receiver fails the connection
    # on invalid UTF-8 (§8.1). Truncation must not cut a character in half.
    reason = "é" * 100  # 200 bytes; a cut at byte 123 splits a 2-byte character
    _, _, body = parse_frame(close_frame(4008, reason))
    assert len(body) <= 125
    text = body[2:].decode("utf-8")
    assert reason.startswith(text)


@pytest.mark.parametrize("n", [2, 3, 100])
@pytest.mark.parametrize("wbits", [0, 15])
def test_a_batch_frame_is_the_batch_message_framed(n: int, wbits: int) -> None:
    views = [orjson.dumps({"type": "tick", "t": t, "s": {"x": "y" * t}}) for t in range(n)]
    data, size = batch_frame(views, wbits)
    payload = batch_message(views)
    assert size == len(payload)
    if wbits:
        assert data == message_frame(payload, wbits)
    else:
        assert data == frame(payload)
