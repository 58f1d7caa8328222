"""Follow a tickcast feed and never miss a tick (see docs/protocol.md, "A client recipe").

Usage::

    python docs/examples/resume_client.py ws://127.0.0.1:8000 [from_t]

Prints ``t`` and ``price_norm`` of every tick. Survives server restarts (close 1001,
refused connections), slow-consumer closes (4008), history resets (a new epoch)
and retention gaps (``truncated``). Needs ``trio`` and ``trio-websocket``.
"""

from __future__ import annotations

import contextlib
import json
import random
import re
import sys

import trio
from trio_websocket import ConnectionClosed, ConnectionRejected, HandshakeError, open_websocket_url

BATCH = 100  # catch-up and replay arrive up to 100 ticks per message
MAX_MESSAGE = 16 * 2**20  # a batch can be much larger than one tick: raise the 1 MiB default


def note(text: str) -> None:
    """Connection events go to stderr; ticks go to stdout."""
    print(f"# {text}", file=sys.stderr, flush=True)


class Follower:
    """Tracks the position in the stream; one instance lives across reconnections."""

    def __init__(self, url: str, from_t: int | None = None) -> None:
        self.url = url.rstrip("/")
        self.epoch: str | None = None
        self.next_t = from_t  # the t we expect next; None: start at the latest tick
        self.backoff = 0.5

    def on_tick(self, tick: dict) -> None:
        """Your application goes here."""
        print(f"t={tick['t']} price_norm={tick['s']['price_norm']}", flush=True)

    def _take(self, tick: dict) -> None:
        t = tick["t"]
        if self.next_t is not None and t != self.next_t:
            raise RuntimeError(f"expected t={self.next_t}, got t={t}")  # never happens
        self.next_t = t + 1
        self.on_tick(tick)

    async def run(self) -> None:
        while True:
            try:
                await self._connect_once()
            except ConnectionClosed as exc:
                code, reason = exc.reason.code, exc.reason.reason or ""
                if code == 4008:
                    # Slow consumer: the reason names exactly our next_t. Resume at once.
                    m = re.search(r"from_t=(\d+)", reason)
                    self.next_t = int(m.group(1)) if m else self.next_t
                    note(f"closed 4008 ({reason}); resuming")
                    continue
                # 1001: the server is shutting down (restart). 1006: the connection broke.
                note(f"closed {code} {reason!r}; reconnecting")
            except ConnectionRejected as exc:
                if exc.status_code != 429:  # 400: our query is wrong; retrying will not help
                    raise
                note(f"refused: {exc.body!r}; backing off")
            except (HandshakeError, OSError) as exc:
                note(f"server unreachable ({exc.__cause__ or exc!r}); backing off")
            except trio.TooSlowError:
                note("no message for 2 heartbeats; reconnecting")
            await trio.sleep(self.backoff * random.uniform(0.5, 1.5))
            self.backoff = min(self.backoff * 2, 10.0)

    async def _connect_once(self) -> None:
        query = f"?fields=s&batch={BATCH}"
        if self.next_t is not None:
            query += f"&from_t={self.next_t}"
        async with open_websocket_url(
            f"{self.url}/ws/stream{query}", max_message_size=MAX_MESSAGE
        ) as ws:
            hello = json.loads(await ws.get_message())
            assert hello["type"] == "hello", hello
            if self.epoch is not None and hello["epoch"] != self.epoch:
                # The history was reset (data directory wiped): our t means nothing there.
                note(f"new epoch {hello['epoch']}: starting over")
                self.epoch, self.next_t = hello["epoch"], None
                return  # reconnect without from_t
            self.epoch = hello["epoch"]
            if hello.get("truncated"):
                lost = (self.next_t, hello["oldest_t"] - 1)
                note(f"ticks {lost[0]}..{lost[1]} were deleted by retention")
                self.next_t = hello["oldest_t"]
            note(f"connected, from_t={self.next_t}, latest_t={hello['latest_t']}")
            self.backoff = 0.5
            silence = 2 * hello["heartbeat_s"] + 5  # heartbeats prove the link is alive
            while True:
                with trio.fail_after(silence):
                    msg = json.loads(await ws.get_message())
                kind = msg["type"]
                if kind == "tick":
                    self._take(msg)
                elif kind == "batch":
                    for tick in msg["ticks"]:
                        self._take(tick)
                elif kind == "error":
                    note(f"server says: {msg}")
                # heartbeat, pong: nothing to do


def main() -> None:
    url = sys.argv[1] if len(sys.argv) > 1 else "ws://127.0.0.1:8000"
    from_t = int(sys.argv[2]) if len(sys.argv) > 2 else None
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(Follower(url, from_t).run)


if __name__ == "__main__":
    main()
