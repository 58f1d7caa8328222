"""``tickcast tail``: the stream as JSON lines on stdout, built on :class:`Client`.

One tick per line, flushed as it arrives, so ``tickcast tail URL | jq .s.price_norm``
is live. With ``--speed`` or a range end (``--to-t``, ``--to-ts``) it is a replay
(``Client.replay``): paced by the ticks' ``ts`` (``--speed max``, the default with a
range end alone: as fast as the pipe reads), ending with status 0 after the last
tick of the range. Connection events (reconnects, gaps carried over) are logged to stderr.
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
from .replay import Speed, parse_speed
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
    to_t: int | None = None,
    to_ts: float | None = None,
    speed: str | None = None,
    out: BinaryIO | None = None,
) -> int:
    """Print every tick from ``from_t`` (or the first with ``ts >= from_ts``) on to
    ``out`` (stdout) until interrupted, or until ``to_t``/``to_ts`` (inclusive).

    ``speed`` (``"10"``, ``"0.5"``, ``"max"``) or a range end makes it a replay; with
    a range end and no ``speed``, at ``"max"``. Neither: the stream, as ever.

    Returns:
        The exit status: 0 after the end of the range, Ctrl-C or a closed pipe.

    Raises:
        ClientError: the stream cannot go on (see ``Client.stream``).
        ValueError: a bad URL or option.
    """
    # Bytes straight to the buffer: orjson produces bytes, and the text layer would only
    # decode them to encode them again.
    sink = out if out is not None else sys.stdout.buffer
    client = Client(url, fields=fields, token=token, on_gap=on_gap)
    if speed is None and to_t is None and to_ts is None:
        ticks = client.stream(from_t, from_ts=from_ts)
    else:
        pace: Speed = "max" if speed is None else parse_speed(speed)
        ticks = client.replay(from_t, from_ts=from_ts, to_t=to_t, to_ts=to_ts, speed=pace)
    try:
        for tick in ticks:
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
    return 0  # the end of a replay's range (a stream never ends by itself)
