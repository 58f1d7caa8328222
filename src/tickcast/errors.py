"""The tickcast exception tree.

::

    TickcastError
    ├── ConfigError            a setting is unknown or has a bad value (names it)
    ├── StoreError             the segment store refused an operation
    │   └── CorruptRecordError a record failed its checksum / framing check
    └── ProtocolError          a client broke the stream protocol (carries a close code)
"""

from __future__ import annotations

from pathlib import Path

import orjson

__all__ = [
    "ConfigError",
    "CorruptRecordError",
    "ProtocolError",
    "StoreError",
    "TickcastError",
    "error_body",
]


class TickcastError(Exception):
    """Root of every tickcast error."""


class ConfigError(TickcastError):
    """A setting is unknown or has a bad value; the message names the setting."""


class ProtocolError(TickcastError):
    """A WebSocket client broke the protocol.

    Attributes:
        code: the WebSocket close code to send (e.g. 1009 for a message too big).
    """

    def __init__(self, detail: str, *, code: int) -> None:
        super().__init__(detail)
        self.code = code


class StoreError(TickcastError):
    """The segment store refused an operation (wrong ``t``, closed store, I/O failure)."""


class CorruptRecordError(StoreError):
    """A stored record failed its length, framing or checksum check.

    The record is never returned; the store also lists the report in
    ``SegmentStore.corruption`` (for ``/health``).

    Attributes:
        path: the file holding the damage (the ``.jsonl`` data file or the ``.idx``).
        offset: byte offset of the damaged record or index entry in ``path``.
        t: the sequence number of the record, when known.
        reason: what failed, e.g. ``"crc32 mismatch"``.
    """

    def __init__(self, path: Path, offset: int, t: int | None, reason: str) -> None:
        super().__init__(path, offset, t, reason)
        self.path = path
        self.offset = offset
        self.t = t
        self.reason = reason

    def __str__(self) -> str:
        which = "record" if self.t is None else f"record t={self.t}"
        return f"corrupt {which} in {self.path} at byte {self.offset}: {self.reason}"


def error_body(error: str, detail: str) -> bytes:
    """The JSON body of every HTTP error: ``{"error": ..., "detail": ...}``."""
    return orjson.dumps({"error": error, "detail": detail})
