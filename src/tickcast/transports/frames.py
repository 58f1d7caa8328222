"""WebSocket frames serialised once per tick (plain Python, no I/O).

Server-to-client frames are never masked (RFC 6455 §5.1), so without compression
every client subscribed to the same field set gets byte-identical frames, and with
permessage-deflate *without server context takeover* (RFC 7692 §7.1.1.1) each
message is compressed on its own, so the compressed frame is shared too. One tick
therefore costs one ``orjson.dumps``, at most one ``deflate`` per field set and
window size, and per client one socket write of cached bytes.
"""

from __future__ import annotations

import struct
import zlib

from tickcast.tick import EncodedTick, Fields

__all__ = [
    "OP_CLOSE",
    "OP_TEXT",
    "close_frame",
    "deflate",
    "frame",
    "message_frame",
    "tick_frame",
]

OP_TEXT = 0x1
OP_CLOSE = 0x8

_TAIL = b"\x00\x00\xff\xff"


def frame(payload: bytes, *, opcode: int = OP_TEXT, compressed: bool = False) -> bytes:
    """One final, unmasked frame carrying ``payload``."""
    b0 = 0x80 | opcode | (0x40 if compressed else 0)
    n = len(payload)
    if n < 126:
        head = bytes((b0, n))
    elif n < 65536:
        head = struct.pack("!BBH", b0, 126, n)
    else:
        head = struct.pack("!BBQ", b0, 127, n)
    return head + payload


def deflate(payload: bytes, wbits: int) -> bytes:
    """Compress one message on its own (no context takeover), trailer stripped."""
    comp = zlib.compressobj(6, zlib.DEFLATED, -wbits)
    data = comp.compress(payload) + comp.flush(zlib.Z_SYNC_FLUSH)
    return data[:-4] if data.endswith(_TAIL) else data


def message_frame(payload: bytes, wbits: int) -> bytes:
    """A text frame for ``payload``, deflated when ``wbits`` is not 0."""
    if wbits:
        return frame(deflate(payload, wbits), compressed=True)
    return frame(payload)


def tick_frame(tick: EncodedTick, fields: Fields, wbits: int) -> bytes:
    """The frame of ``tick``'s ``fields`` view; ``wbits`` 0 means uncompressed. Cached."""
    frames = tick._frames
    if frames is None:
        frames = tick._frames = {}
    key = (fields, wbits)
    out = frames.get(key)
    if out is None:
        out = frames[key] = message_frame(tick.view(fields), wbits)
    return out


def close_frame(code: int, reason: str = "") -> bytes:
    """A close frame with ``code`` and a reason truncated to fit 125 bytes."""
    text = reason.encode()[:123].decode("utf-8", "ignore").encode()  # whole characters only
    body = struct.pack("!H", code) + text
    return frame(body, opcode=OP_CLOSE)
