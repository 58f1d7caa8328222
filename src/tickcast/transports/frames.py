"""WebSocket frames serialised once per tick (plain Python, no I/O).

Server-to-client frames are never masked (RFC 6455 §5.1), so without compression
every client subscribed to the same field set gets byte-identical frames, and with
permessage-deflate *without server context takeover* (RFC 7692 §7.1.1.1) each
message is compressed on its own, so the compressed frame is shared too. One tick
therefore costs one ``orjson.dumps``, at most one ``deflate`` per field set and
window size, and per client one socket write of cached bytes.

Used by the raw transport only (``transports/raw.py`` and the shared heartbeat
frames of ``transports/heartbeats.py``); the ASGI transport lets Hypercorn's wsproto
frame its messages.

What is deliberately absent: client-to-server frames are parsed by wsproto, never
here, and nothing here fragments a message (every frame is final, FIN set), so a
client sees each server message as one frame.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence

from tickcast.tick import BATCH_HEAD, BATCH_TAIL, EncodedTick, Fields, batch_message

__all__ = [
    "OP_CLOSE",
    "OP_TEXT",
    "batch_frame",
    "close_frame",
    "deflate",
    "frame",
    "message_frame",
    "tick_frame",
]

# Opcodes (RFC 6455 §5.2): the server only ever sends text and close frames this way.
OP_TEXT = 0x1
OP_CLOSE = 0x8

# The end of a sync flush: every compressed message ends with it and RFC 7692 §7.2.1
# says to strip it (the receiver appends it back before inflating).
_TAIL = b"\x00\x00\xff\xff"


def _head(n: int, b0: int) -> bytes:
    """The frame header for a payload of ``n`` bytes (the shortest length encoding)."""
    if n < 126:
        return bytes((b0, n))
    if n < 65536:
        return struct.pack("!BBH", b0, 126, n)
    return struct.pack("!BBQ", b0, 127, n)


def batch_frame(views: Sequence[bytes], wbits: int) -> tuple[bytes, int]:
    """The frame of a ``batch`` message of ``views`` (tick JSON), and its payload size.

    Uncompressed, the frame is built in one copy of the views (header, the batch's
    opening, the views with commas between, its closing: one ``join``), not the three
    that joining the message and then framing it would take: a catch-up or a replay
    at full speed moves every byte of history through here.
    """
    if wbits:
        payload = batch_message(views)
        return message_frame(payload, wbits), len(payload)
    n = len(BATCH_HEAD) + sum(map(len, views)) + len(views) - 1 + len(BATCH_TAIL)
    parts = [b","] * (2 * len(views) + 1)
    parts[0] = _head(n, 0x80 | OP_TEXT) + BATCH_HEAD
    parts[1::2] = views
    parts[-1] = BATCH_TAIL
    return b"".join(parts), n


def frame(payload: bytes, *, opcode: int = OP_TEXT, compressed: bool = False) -> bytes:
    """One final, unmasked frame carrying ``payload``.

    The length takes the shortest of the three encodings of RFC 6455 §5.2 (7-bit,
    16-bit, 64-bit), as the RFC requires.

    Args:
        payload: the bytes sent, already compressed when ``compressed`` is true.
        opcode: ``OP_TEXT`` or ``OP_CLOSE``.
        compressed: sets RSV1, which marks a permessage-deflate message (RFC 7692).
    """
    b0 = 0x80 | opcode | (0x40 if compressed else 0)
    return _head(len(payload), b0) + payload


def deflate(payload: bytes, wbits: int) -> bytes:
    """Compress one message on its own (no context takeover), trailer stripped.

    A fresh compressor per message is what makes the output the same for every
    client: no state carries over from earlier messages. ``wbits`` is the window
    the client agreed to (``server_max_window_bits``); a raw deflate stream
    (negative ``wbits``) carries no zlib header, as RFC 7692 wants.
    """
    comp = zlib.compressobj(6, zlib.DEFLATED, -wbits)
    data = comp.compress(payload) + comp.flush(zlib.Z_SYNC_FLUSH)
    return data[:-4] if data.endswith(_TAIL) else data


def message_frame(payload: bytes, wbits: int) -> bytes:
    """A text frame for ``payload``, deflated when ``wbits`` is not 0."""
    if wbits:
        return frame(deflate(payload, wbits), compressed=True)
    return frame(payload)


def tick_frame(tick: EncodedTick, fields: Fields, wbits: int) -> bytes:
    """The frame of ``tick``'s ``fields`` view; ``wbits`` 0 means uncompressed. Cached.

    The cache lives on the tick (one dict per tick, keyed by field set and window),
    so the first client of a kind pays the encoding and the rest get the same bytes.
    The ring drops these caches once a tick falls ``CACHE_TICKS`` behind the newest
    (``storage/ring.py``), which bounds the memory they take.
    """
    frames = tick._frames
    if frames is None:
        frames = tick._frames = {}
    key = (fields, wbits)
    out = frames.get(key)
    if out is None:
        out = frames[key] = message_frame(tick.view(fields), wbits)
    return out


def close_frame(code: int, reason: str = "") -> bytes:
    """A close frame with ``code`` and a reason truncated to fit 125 bytes.

    A control frame's payload is at most 125 bytes (RFC 6455 §5.5), two of them the
    code; the reason is cut at 123 bytes without splitting a UTF-8 character, since
    a client must fail a close reason that is not valid UTF-8 (§5.5.1).
    """
    text = reason.encode()[:123].decode("utf-8", "ignore").encode()  # whole characters only
    body = struct.pack("!H", code) + text
    return frame(body, opcode=OP_CLOSE)
