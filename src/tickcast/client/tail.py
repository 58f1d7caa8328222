"""``tickcast tail``: the stream as JSON lines on stdout, built on :class:`Client`.

One tick per line, flushed as it arrives, so ``tickcast tail URL | jq .s.price_norm``
is live. Connection events (reconnects, gaps carried over) are logged to stderr.
Ctrl-C ends it with status 0 and no traceback; so does the reader going away
(``| head``: a broken pipe).

Why a separate module from the command line: ``cli.py`` parses arguments for every
command, this runs one of them; and it is the smallest complete use of
:class:`Client`, worth reading as an example.
"""

from __future__ import annotations

import os
import sys
from typing import BinaryIO

import orjson

from .api import Client
from .settings import OnGap

__all__ = ["run_tail"]


def run_tail(
    url: str,
    *,
    from_t: int | None = None,
    from_ts: float | None = None,
    fields: str | None = None,
    token: str | None = None,
    on_gap: OnGap = "raise",
    out: BinaryIO | None = None,
) -> int:
    """Print every tick from ``from_t`` (or the first with ``ts >= from_ts``) on to
    ``out`` (stdout) until interrupted.

    Returns:
        The exit status: 0 after Ctrl-C or a closed pipe.

    Raises:
        ClientError: the stream cannot go on (see ``Client.stream``).
        ValueError: a bad URL or option.
    """
    # Bytes straight to the buffer: orjson produces bytes, and the text layer would only
    # decode them to encode them again.
    sink = out if out is not None else sys.stdout.buffer
    client = Client(url, fields=fields, token=token, on_gap=on_gap)
    try:
        for tick in client.stream(from_t, from_ts=from_ts):
            # Flushed per tick, for pipes: a consumer sees each tick when it arrives,
            # not when an 8 KiB buffer fills (seconds later at 10 ticks/s with fields=s).
            sink.write(orjson.dumps(tick) + b"\n")
            sink.flush()
    except KeyboardInterrupt:
        return 0
    except BrokenPipeError:
        if out is None:
            # Python flushes stdout again at exit, and would complain about the pipe.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        return 0
    return 0  # the stream never ends by itself; for completeness
