"""The tickcast exception tree.

::

    TickcastError
    ├── ConfigError            a setting is unknown or has a bad value (names it)
    ├── StoreError             the segment store refused an operation
    │   └── CorruptRecordError a record failed its checksum / framing check
    └── ClientError            tickcast.client cannot go on (raised to the client's caller)
        ├── RefusedError       the server refused a request for good (HTTP 400, 401, 404...)
        ├── StreamClosedError  the server closed the stream with a code a retry cannot fix
        ├── BadMessageError    the server sent something the client cannot follow
        ├── NoProgressError    the server keeps answering without moving the stream on
        ├── ExportAbortedError an export (Client.table, tickcast export) broke off mid-way
        └── GapError           resuming would skip ticks (unless on_gap="continue")
            ├── TruncatedError     retention deleted ticks the client still needed
            └── EpochChangedError  the history was reset: a new epoch
"""

from __future__ import annotations

from pathlib import Path

import orjson

__all__ = [
    "BadMessageError",
    "ClientError",
    "ConfigError",
    "CorruptRecordError",
    "EpochChangedError",
    "ExportAbortedError",
    "GapError",
    "NoProgressError",
    "RefusedError",
    "StoreError",
    "StreamClosedError",
    "TickcastError",
    "TruncatedError",
    "error_body",
    "leaves",
]


class TickcastError(Exception):
    """Root of every tickcast error."""


class ConfigError(TickcastError):
    """A setting is unknown or has a bad value; the message names the setting."""


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


# -- the client (tickcast.client) ------------------------------------------------------


class ClientError(TickcastError):
    """``tickcast.client`` cannot go on; raised out of ``stream()`` / ``history()``.

    Everything a retry can fix (a dropped connection, a restart, 429, 503, a 4008)
    is retried inside the client and never raised.
    """


class RefusedError(ClientError):
    """The server refused a request, and asking again would get the same answer.

    Attributes:
        status: the HTTP status (400 a bad query, 401 a missing or wrong read token,
            404 not a tickcast URL, 500 a corrupt record in ``/incremental``...).
        detail: the server's JSON ``detail`` (or the start of the body).
    """

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"refused with HTTP {status}: {detail}")
        self.status = status
        self.detail = detail


class StreamClosedError(ClientError):
    """The server closed the stream with a code that reconnecting cannot fix.

    1011 (``history unreadable``: a corrupt record, or a server bug), 1002, 1003,
    1007, 1009, 1010. Codes a reconnect does fix (1001, 1006, 4008, 4009...) are
    handled inside the client.

    Attributes:
        code: the WebSocket close code.
        reason: the close reason the server gave.
    """

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"stream closed with {code} {reason!r}")
        self.code = code
        self.reason = reason


class BadMessageError(ClientError):
    """The server sent what the client cannot follow: not a JSON object, or a ``t``
    that does not continue the stream (a server bug; never silently skipped)."""


class NoProgressError(ClientError):
    """The server keeps answering but the stream cannot move: ``attempts`` times in a
    row it closed with 4008 (or gave an empty ``/incremental`` page) at the same
    ``next_t`` without a tick in between.

    Typically a scale-out edge that cannot fill a hole: its ``history_url`` refuses
    its ``history_token`` or cannot be reached, and its ``/health`` says so. Retrying
    later, or on another server, may work; retrying at once would only spin.

    Attributes:
        next_t: the ``t`` the client could not get.
        attempts: how many answers in a row made no progress.
        detail: the server's last word (the close reason, or the page).
    """

    def __init__(self, *, next_t: int | None, attempts: int, detail: str) -> None:
        super().__init__(
            f"no progress at t={next_t}: {attempts} answers in a row without a tick "
            f"(last: {detail}); the server cannot serve this range now"
        )
        self.next_t = next_t
        self.attempts = attempts
        self.detail = detail


class ExportAbortedError(ClientError):
    """An export broke off before its end: the server stopped it (a corrupt record; its
    log says which) or the connection failed. Nothing of what arrived is handed out."""


class GapError(ClientError):
    """Resuming would skip ticks. Raised only with ``on_gap="raise"`` (the default).

    Attributes:
        next_t: the ``t`` the client wanted next (the last ``t`` it yielded + 1).
    """

    def __init__(self, message: str, *, next_t: int | None) -> None:
        super().__init__(message)
        self.next_t = next_t


class TruncatedError(GapError):
    """Retention deleted ticks ``next_t .. oldest_t - 1``; the server starts at ``oldest_t``.

    With a start by time (``from_ts``) and no tick received yet, ``next_t`` is None:
    the ticks before ``oldest_t`` are gone, and some of them may have matched.

    Attributes:
        oldest_t: the oldest ``t`` the server still has.
    """

    def __init__(self, *, next_t: int | None, oldest_t: int) -> None:
        if next_t is None:
            what = f"ticks before oldest_t={oldest_t} were deleted by retention"
            message = f"{what}; some may have been at or after the from_ts asked for"
        else:
            message = f"ticks {next_t}..{oldest_t - 1} were deleted by retention"
            message += f" (oldest_t={oldest_t})"
        super().__init__(message, next_t=next_t)
        self.oldest_t = oldest_t


class EpochChangedError(GapError):
    """The history was reset (a new ``epoch``): ``t`` numbers there mean other ticks.

    Attributes:
        old: the epoch the client was following.
        new: the epoch the server now serves.
    """

    def __init__(self, *, old: str, new: str, next_t: int | None) -> None:
        super().__init__(
            f"the history was reset: epoch {old} became {new} (wanted t={next_t})",
            next_t=next_t,
        )
        self.old = old
        self.new = new


def error_body(error: str, detail: str) -> bytes:
    """The JSON body of every HTTP error: ``{"error": ..., "detail": ...}``."""
    return orjson.dumps({"error": error, "detail": detail})


def leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions in ``exc``, exception groups (from nurseries) flattened.

    A start-up error raised inside the server's nurseries reaches the top wrapped
    in groups; the command line reports each leaf on its own line.
    """
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]
