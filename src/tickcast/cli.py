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
        "duplicates across reconnects (tickcast.client). Connection events go to stderr.",
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tickcast`` console script; returns the exit status."""
    args = vars(build_parser().parse_args(argv))
    command = args.pop("command")
    if command == "publish":
        return _publish(args)
    if command == "tail":
        return _tail(args)
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
        )
    except (TickcastError, ValueError) as exc:
        print(f"tickcast: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
