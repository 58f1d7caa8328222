"""An Arrow IPC stream decoded as its bytes arrive (plain Python, no I/O).

pyarrow reads a stream from a file or a buffer it pulls from; an HTTP body is
pushed, chunk by chunk. :class:`StreamDecoder` takes the chunks and hands back
each record batch as soon as its last byte is in, so a download can show its
progress (the ``t`` of the last row) and a client can build its table without
holding the whole body twice.

The framing (Arrow's "encapsulated message format", stable since Arrow 1.0):
``0xFFFFFFFF``, an int32 metadata length ``m``, ``m`` bytes of flatbuffer
``Message`` metadata (whose ``bodyLength`` field says how many body bytes
follow), then the body. ``0xFFFFFFFF 0x00000000`` ends the stream.
"""

from __future__ import annotations

import struct

import pyarrow as pa
import pyarrow.ipc as pa_ipc

__all__ = ["StreamDecoder"]

_CONTINUATION = 0xFFFFFFFF
_PREFIX = struct.Struct("<Ii")
_BODY_LENGTH_FIELD = 3  # Message: version, header_type, header, bodyLength, custom_metadata


def _body_length(meta: bytes | memoryview) -> int:
    """``Message.bodyLength`` read off a flatbuffer ``Message`` table."""
    (table,) = struct.unpack_from("<I", meta, 0)
    (vtable_back,) = struct.unpack_from("<i", meta, table)
    vtable = table - vtable_back
    (vtable_size,) = struct.unpack_from("<H", meta, vtable)
    slot = 4 + 2 * _BODY_LENGTH_FIELD
    if slot + 2 > vtable_size:
        return 0
    (field,) = struct.unpack_from("<H", meta, vtable + slot)
    if field == 0:
        return 0
    (length,) = struct.unpack_from("<q", meta, table + field)
    return int(length)


class StreamDecoder:
    """Feed it an Arrow IPC stream's bytes in any pieces; get record batches out.

    Attributes:
        schema: the stream's schema, once its first message is in (else None).
        done: the end-of-stream marker was read.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self.schema: pa.Schema | None = None
        self.done = False

    def feed(self, data: bytes) -> list[pa.RecordBatch]:
        """The batches completed by ``data``.

        Raises:
            ValueError: bytes that are not an Arrow IPC stream, or bytes after its end.
        """
        if self.done:
            if data:
                raise ValueError("bytes after the end of the Arrow stream")
            return []
        self._buf += data
        out: list[pa.RecordBatch] = []
        pos = 0
        buf = self._buf
        while len(buf) - pos >= _PREFIX.size:
            marker, meta_len = _PREFIX.unpack_from(buf, pos)
            if marker != _CONTINUATION or meta_len < 0:
                raise ValueError("not an Arrow IPC stream (no continuation marker)")
            if meta_len == 0:
                self.done = True
                pos += _PREFIX.size
                if pos != len(buf):
                    raise ValueError("bytes after the end of the Arrow stream")
                break
            start = pos + _PREFIX.size
            if len(buf) < start + meta_len:
                break
            end = start + meta_len + _body_length(memoryview(buf)[start : start + meta_len])
            if len(buf) < end:
                break
            message = pa_ipc.read_message(pa.py_buffer(bytes(buf[pos:end])))
            if self.schema is None:
                self.schema = pa_ipc.read_schema(message)
            else:
                out.append(pa_ipc.read_record_batch(message, self.schema))
            pos = end
        del buf[:pos]
        return out
