"""The ``tickcast`` command line: ``serve``, ``edge``, ``publish``, ``tail``.

What it owns: parsing (every setting is a flag and a ``TICKCAST_*`` variable,
``config.py``), logging to stderr, and turning what stops a command into one
line and an exit status. No traceback for an error the user can fix:

* ``0``: stopped by SIGINT or SIGTERM, cleanly.
* ``2``: a bad setting, before anything starts, or a port that cannot be bound
  (``tickcast: error: setting 'rate': ...``, ``... cannot listen on ...``).
* ``1``: any other ``TickcastError`` at start-up or while serving (the data
  directory locked by another process, an unreadable store).

Errors raised inside the server's nurseries reach here wrapped in exception
groups; each is printed on its own ``tickcast: error:`` line. Anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

import trio

from tickcast import __version__
from tickcast.config import add_arguments, describe, from_sources
from tickcast.errors import ConfigError, TickcastError, leaves

__all__ = ["main"]

PUBLISH_URL = "http://127.0.0.1:8000"  # tickcast publish without --url: the serve default


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tickcast", description="A live data feed for a running market simulation."
    )
    parser.add_argument("--version", action="version", version=f"tickcast {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="run the service",
        description="Run tickcast: source, segment writer, hub, HTTP and WebSocket on one port. "
        "Every setting is a flag and an environment variable TICKCAST_<NAME>.",
    )
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    add_arguments(serve)
    edge = commands.add_parser(
        "edge",
        help="run a scale-out edge (needs --redis-url)",
        description="Run a stateless edge (docs/scale-out.md): no source, no segment files; "
        "it reads the producer's ticks from the Redis stream and serves /ws/stream, "
        "/incremental, /health, /metrics and / to its own clients. Source and storage "
        "settings are ignored.",
    )
    edge.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    add_arguments(edge)
    publish = commands.add_parser(
        "publish",
        help="feed a --source ingest server from JSON lines on stdin",
        description="Read one tick's content per line on stdin "
        '({"s":{...},"agents":[...],"actions":[...],"matches":[...]}) and POST it to '
        "a tickcast started with --source ingest. The server assigns t (and ts if absent).",
    )
    publish.add_argument(
        "--url",
        default=None,
        help=f"the server's base URL [default: {PUBLISH_URL}, with a note on stderr]",
    )
    publish.add_argument(
        "--token",
        default=os.environ.get("TICKCAST_INGEST_TOKEN"),
        help="bearer token [default: $TICKCAST_INGEST_TOKEN]",
    )
    publish.add_argument(
        "--batch",
        type=int,
        default=1,
        help="ticks per request (1 for a live pipe; larger to bulk-load a file) [default: 1]",
    )
    tail = commands.add_parser(
        "tail",
        help="print the stream as JSON lines on stdout (for jq)",
        description="Follow a tickcast stream and print one tick per line, without gaps or "
        "duplicates across reconnects (tickcast.client). Connection events go to stderr. "
        "With --speed or --to-t/--to-ts it replays a stretch of history paced by the "
        "ticks' own ts, and exits 0 after the last tick of the range (docs/client.md).",
    )
    tail.add_argument("url", help="the server's base URL, e.g. http://127.0.0.1:8000")
    start = tail.add_mutually_exclusive_group()
    start.add_argument(
        "--from-t", type=int, default=None, help="start at this t [default: the latest tick]"
    )
    start.add_argument(
        "--from-ts",
        type=float,
        default=None,
        help="start at the first tick whose ts (unix seconds) is >= this",
    )
    end = tail.add_mutually_exclusive_group()
    end.add_argument(
        "--to-t", type=int, default=None, help="replay up to this t, inclusive, then exit"
    )
    end.add_argument(
        "--to-ts",
        type=float,
        default=None,
        help="replay up to the last tick whose ts (unix seconds) is <= this, then exit",
    )
    tail.add_argument(
        "--speed",
        default=None,
        help="replay at this multiple of the production pace (0.1..1000), or 'max' "
        "[default: no pacing; 'max' with --to-t/--to-ts]",
    )
    tail.add_argument("--fields", default=None, help="comma list of s,agents,actions,matches")
    tail.add_argument(
        "--token",
        default=os.environ.get("TICKCAST_READ_TOKEN"),
        help="read token [default: $TICKCAST_READ_TOKEN]",
    )
    tail.add_argument(
        "--on-gap",
        choices=["raise", "continue"],
        default="raise",
        help="when ticks are lost to retention or a history reset: stop with an error, "
        "or carry on [default: raise]",
    )
    _add_export(commands)
    return parser


def _add_export(commands: Any) -> None:
    export = commands.add_parser(
        "export",
        help="write a range of history to a file (Parquet, Arrow, CSV or NDJSON)",
        description="Download ticks FROM..TO (both inclusive) of a tickcast server's history "
        "into a file, with a progress line on stderr. A failure exits non-zero and leaves no "
        "file. See docs/export.md.",
    )
    export.add_argument("url", help="the server's base URL, e.g. http://127.0.0.1:8000")
    export.add_argument(
        "--from-t", type=int, default=None, help="the first t [default: the oldest kept]"
    )
    export.add_argument(
        "--to-t", type=int, default=None, help="the last t, inclusive [default: the latest]"
    )
    export.add_argument(
        "--table",
        choices=["ticks", "agents", "actions", "matches"],
        default="ticks",
        help="the flat table to write (not for ndjson) [default: ticks]",
    )
    export.add_argument(
        "--format",
        choices=["parquet", "arrow", "csv", "ndjson"],
        default=None,
        help="[default: from the file's extension, else parquet]",
    )
    export.add_argument(
        "--token",
        default=os.environ.get("TICKCAST_READ_TOKEN"),
        help="read token [default: $TICKCAST_READ_TOKEN]",
    )
    export.add_argument("-o", "--output", required=True, help="the file to write")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tickcast`` console script; returns the exit status."""
    args = vars(build_parser().parse_args(argv))
    command = args.pop("command")
    if command == "publish":
        return _publish(args)
    if command == "tail":
        return _tail(args)
    if command == "export":
        return _export(args)
    level = args.pop("log_level")
    logging.basicConfig(
        level=getattr(logging, level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        config = from_sources(args)
    except ConfigError as exc:
        print(f"tickcast: error: {exc}", file=sys.stderr)
        return 2
    if command == "edge" and config.redis_url is None:
        print("tickcast: error: setting 'redis_url': required by tickcast edge", file=sys.stderr)
        return 2
    logging.getLogger("tickcast").info("settings: %s", " ".join(describe(config)))
    from tickcast.server import serve_edge_until_signal, serve_until_signal

    failure: BaseException | None = None
    try:
        trio.run(serve_edge_until_signal if command == "edge" else serve_until_signal, config)
    except* TickcastError as group:  # a busy port, a data directory in use by another process
        failure = group
    if failure is None:
        return 0
    errors = leaves(failure)
    for error in errors:  # one line each (they may come out of the server's nurseries)
        print(f"tickcast: error: {error}", file=sys.stderr)
    return 2 if all(isinstance(error, ConfigError) for error in errors) else 1


def _publish(args: dict[str, object]) -> int:
    from tickcast.publisher import run_publish

    token, batch = args["token"], args["batch"]
    if not token:
        print("tickcast: error: --token (or TICKCAST_INGEST_TOKEN) is required", file=sys.stderr)
        return 2
    if not isinstance(batch, int) or batch < 1:
        print("tickcast: error: --batch must be >= 1", file=sys.stderr)
        return 2
    url = args["url"]
    if url is None:
        url = PUBLISH_URL
        print(f"tickcast publish: posting to {url} (no --url given)", file=sys.stderr)
    try:
        count = run_publish(str(url), str(token), sys.stdin.buffer, batch=batch)
    except (TickcastError, ValueError) as exc:
        print(f"tickcast: error: {exc}", file=sys.stderr)
        return 1
    print(f"published {count} ticks", file=sys.stderr)
    return 0


def _tail(args: dict[str, Any]) -> int:
    from .client.tail import run_tail

    logging.basicConfig(level=logging.WARNING, format="tickcast tail: %(message)s")
    try:
        return run_tail(
            args["url"],
            from_t=args["from_t"],
            from_ts=args["from_ts"],
            fields=args["fields"],
            token=args["token"],
            on_gap=args["on_gap"],
            to_t=args["to_t"],
            to_ts=args["to_ts"],
            speed=args["speed"],
        )
    except (TickcastError, ValueError) as exc:
        print(f"tickcast: error: {exc}", file=sys.stderr)
        return 1


_EXTENSIONS = {".parquet": "parquet", ".arrow": "arrow", ".arrows": "arrow", ".csv": "csv"}
_EXTENSIONS |= {".ndjson": "ndjson", ".jsonl": "ndjson"}


def _export(args: dict[str, Any]) -> int:
    from pathlib import Path

    from .client.download import run_export

    out = Path(args["output"])
    fmt = args["format"] or _EXTENSIONS.get(out.suffix.lower(), "parquet")
    try:
        run_export(
            args["url"],
            out,
            from_t=args["from_t"],
            to_t=args["to_t"],
            table=args["table"],
            fmt=fmt,
            token=args["token"],
            progress=sys.stderr,
        )
    except KeyboardInterrupt:
        print("tickcast: interrupted; no file written", file=sys.stderr)
        return 130
    except (TickcastError, ValueError, OSError) as exc:
        print(f"tickcast: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
