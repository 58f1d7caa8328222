#!/usr/bin/env python3
"""The per-client cost of one live tick, in-process: ``Hub.publish`` against the floor.

``bench/fanout.py`` measures whole servers; this isolates the fan-out loop so a change
to the hot path can be judged in seconds and with little noise. It builds a real
service (``Producer.open`` on a temporary directory), N real :class:`RawSession`
objects marked live in the hub, and times, alternating round by round:

- ``floor``: ``for sock in socks: sock.send(frame)`` with the frame built once per tick
  (what ``bench/peer_floor.py`` does);
- ``hub``: ``service.publish(tick)``, i.e. ``Hub.publish`` -> ``RawSession.deliver``
  for every client.

Each on two kinds of socket:

- ``tcp``: real loopback TCP connections, read and discarded by a child process
  pinned to the other CPU (``--drainer-cpu``), so ``send`` costs what it costs in
  production (the kernel's loopback delivery runs in the sender's ``send``);
- ``null``: a stand-in whose ``send`` is the builtin ``len`` (takes everything, costs
  ~nothing): what is left is pure Python overhead per client.

CPU is ``time.process_time()`` around each publish (user + system of this process),
divided by the messages sent; ticks are paced (``--gap-ms``) so the drainer keeps up
and no send is short (short sends are counted and reported). Output: µs per message
for each, the ratio hub / floor, and hub - floor (µs per client per tick).

    .venv/bin/python bench/publish.py --clients 1000 --ticks 200 --rounds 5

``--baseline REF`` runs the same measurement on ``src/`` at git ``REF`` too (extracted
to a temporary directory, put first on ``PYTHONPATH``), alternating the two versions
``--versions`` times, and prints after / before: the commit-message figures.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import trio
from wsproto import ConnectionType, WSConnection

from tickcast.config import Config
from tickcast.producer import Producer
from tickcast.sources.simulator import Market
from tickcast.tick import EncodedTick
from tickcast.transports.frames import tick_frame
from tickcast.transports.params import StreamParams
from tickcast.transports.raw import RawSession

__all__ = ["main"]

HOST = "127.0.0.1"
RECV_BYTES = 1 << 20


def drain(port: int, n: int) -> None:
    """The child: connect ``n`` sockets, then read and discard until every one closes."""
    sel = selectors.DefaultSelector()
    socks = [socket.create_connection((HOST, port)) for _ in range(n)]
    sys.stdout.write("connected\n")
    sys.stdout.flush()
    buf = bytearray(RECV_BYTES)
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    open_ = n
    while open_:
        for key, _ in sel.select():
            sock: socket.socket = key.fileobj  # type: ignore[assignment]
            try:
                got = sock.recv_into(buf)
            except BlockingIOError:
                continue
            except OSError:
                got = 0
            if not got:
                sel.unregister(sock)
                sock.close()
                open_ -= 1


@contextlib.contextmanager
def tcp_sockets(n: int, drainer_cpu: int | None) -> Iterator[list[socket.socket]]:
    """``n`` accepted loopback sockets whose peers a child process reads and discards."""
    listener = socket.create_server((HOST, 0), backlog=n)
    port = listener.getsockname()[1]
    cmd = [sys.executable, __file__, "--drain", str(port), str(n)]
    pin = (lambda: os.sched_setaffinity(0, {drainer_cpu})) if drainer_cpu is not None else None
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, preexec_fn=pin)
    socks = []
    try:
        for _ in range(n):
            sock, _ = listener.accept()
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            socks.append(sock)
        assert child.stdout is not None
        child.stdout.readline()
        yield socks
    finally:
        for sock in socks:
            sock.close()
        listener.close()
        child.wait(timeout=10)


class NullSocket:
    """A socket stand-in: ``send(data)`` is ``len(data)``, in C. Hashable, like a
    socket; its ``send`` is a distinct callable per socket, as bound methods are."""

    __slots__ = ("send",)

    def __init__(self) -> None:
        self.send = functools.partial(len)


def null_sockets(n: int) -> list[Any]:
    return [NullSocket() for _ in range(n)]


def make_ticks(count: int, agents: int) -> list[EncodedTick]:
    market = Market(agents=agents, seed=1)
    now = time.time()
    return [EncodedTick.from_dict(market.step(t, now)) for t in range(count)]


def _beats(service: Any) -> dict[str, Any]:
    """RawSession's ``beats`` argument, for the sources that have it (--baseline)."""
    try:
        from tickcast.transports.heartbeats import Heartbeats
    except ImportError:
        return {}
    return {"beats": Heartbeats(service.config.heartbeat_s, lambda: b"{}")}


class Run:
    """One service, its sessions over ``socks``, and the two loops to time."""

    def __init__(self, producer: Producer, socks: list[Any]) -> None:
        self.service = producer.service
        self.socks = socks
        self.sessions = []
        for sock in socks:
            session = RawSession(
                self.service,
                StreamParams(),
                ip="bench",
                sock=sock,
                ws=WSConnection(ConnectionType.SERVER),
                wbits=0,
                **_beats(self.service),
            )
            protocol = getattr(session, "protocol", None)
            if protocol is not None:  # a StreamProtocol: greeted, caught up, so LIVE
                protocol.greeted()
                protocol.catch_up_from(None)
            else:  # a source from before tickcast.protocol (--baseline)
                session.live = True
            self.service.hub.add(session)
            self.sessions.append(session)
        self.short = 0

    def floor(self, tick: EncodedTick) -> None:
        frame = tick_frame(tick, None, 0)
        n = len(frame)
        short = 0
        for sock in self.socks:
            if sock.send(frame) != n:
                short += 1
        self.short += short

    def hub(self, tick: EncodedTick) -> None:
        self.service.publish(tick)

    def settle(self) -> None:
        """Between ticks (untimed): flush what a session queued, reset the floor's fault."""
        for session in self.sessions:
            while session._out:
                self.short += 1
                time.sleep(0.001)
                session._send_pending()
            if not session.live:
                raise SystemExit("a session fell behind: raise --gap-ms")


def time_ticks(
    publish: Callable[[EncodedTick], None],
    ticks: list[EncodedTick],
    settle: Callable[[], None],
    gap_s: float,
) -> float:
    """CPU seconds spent in ``publish`` over ``ticks`` (paced by ``gap_s``)."""
    total = 0.0
    for tick in ticks:
        c0 = time.process_time()
        publish(tick)
        total += time.process_time() - c0
        settle()
        time.sleep(gap_s)
    return total


async def bench(args: argparse.Namespace, kind: str, socks: list[Any]) -> dict[str, list[float]]:
    with tempfile.TemporaryDirectory() as tmp:
        config = replace(Config(), data_dir=Path(tmp), fsync="never", heartbeat_s=3600.0)
        producer = await Producer.open(config)
        run = Run(producer, socks)
        per_msg: dict[str, list[float]] = {"floor": [], "hub": []}
        next_t = {"floor": 0, "hub": 0}  # the hub sees consecutive ticks, as in production
        for round_ in range(args.rounds):
            for name in ("floor", "hub") if round_ % 2 == 0 else ("hub", "floor"):
                t = next_t[name]
                ticks = make_ticks(args.ticks, args.agents)
                ticks = [EncodedTick(t + i, x.ts, x.raw) for i, x in enumerate(ticks)]
                next_t[name] += len(ticks)
                fn = run.floor if name == "floor" else run.hub
                gap = args.gap_ms / 1000.0 if kind == "tcp" else 0.0
                cpu = time_ticks(fn, ticks, run.settle if kind == "tcp" else _nothing, gap)
                per_msg[name].append(cpu / (len(ticks) * len(socks)) * 1e6)
        if run.short:
            print(f"  note: {run.short} short sends / waits for the drainer", file=sys.stderr)
        return per_msg


def _nothing() -> None:
    pass


def report(kind: str, per_msg: dict[str, list[float]], label: str = "") -> None:
    floor, hub = statistics.median(per_msg["floor"]), statistics.median(per_msg["hub"])
    spread = max(per_msg["hub"]) - min(per_msg["hub"])
    print(
        f"{label}{kind:>5}: floor {floor:6.3f} µs/msg  hub {hub:6.3f} µs/msg (±{spread / 2:.3f})"
        f"  hub/floor x{hub / floor:.2f}  hub-floor {hub - floor:+.3f} µs per client per tick"
    )


def compare(args: argparse.Namespace, argv: list[str]) -> int:
    """Alternate this tree and ``src/`` at ``args.baseline``; print both and after/before."""
    child = [a for a in argv if not a.startswith("--baseline")]
    if args.baseline in child:
        child.remove(args.baseline)
    results: dict[str, dict[str, dict[str, list[float]]]] = {"before": {}, "after": {}}
    with tempfile.TemporaryDirectory(prefix="tickcast-base-") as tmp:
        root = Path(__file__).resolve().parent.parent
        archive = subprocess.run(
            ["git", "-C", str(root), "archive", args.baseline, "src"],
            check=True,
            capture_output=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", tmp], input=archive, check=True)
        for _ in range(args.versions):
            for version in ("before", "after"):
                env = dict(os.environ)
                if version == "before":
                    env["PYTHONPATH"] = str(Path(tmp) / "src")
                out = subprocess.run(
                    [sys.executable, __file__, *child, "--json-line"],
                    env=env,
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout
                for kind, per_msg in json.loads(out.splitlines()[-1]).items():
                    mine = results[version].setdefault(kind, {"floor": [], "hub": []})
                    for name in ("floor", "hub"):
                        mine[name] += per_msg[name]
    print(f"before = src/ at {args.baseline}, after = this tree; {args.versions} alternations")
    for kind in results["after"]:
        before, after = results["before"][kind], results["after"][kind]
        report(kind, before, "before ")
        report(kind, after, " after ")
        b_hub, a_hub = statistics.median(before["hub"]), statistics.median(after["hub"])
        b_ratio = b_hub / statistics.median(before["floor"])
        a_ratio = a_hub / statistics.median(after["floor"])
        print(
            f"after/before {kind:>5}: hub µs/msg x{a_hub / b_hub:.2f}; "
            f"hub/floor x{b_ratio:.2f} -> x{a_ratio:.2f}"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--ticks", type=int, default=100, help="ticks per round and loop")
    parser.add_argument("--rounds", type=int, default=5, help="floor/hub alternations")
    parser.add_argument("--agents", type=int, default=40, help="tick size (tickcast default)")
    parser.add_argument("--gap-ms", type=float, default=30.0, help="pause between tcp ticks")
    parser.add_argument("--kinds", default="null,tcp", help="null, tcp or both")
    parser.add_argument("--cpu", type=int, default=0, help="pin this process (-1: no pinning)")
    parser.add_argument("--drainer-cpu", type=int, default=1, help="-1: no pinning")
    parser.add_argument("--baseline", metavar="REF", help="also measure src/ at this git ref")
    parser.add_argument("--versions", type=int, default=3, help="alternations with --baseline")
    parser.add_argument("--drain", nargs=2, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--json-line", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.drain:
        drain(*args.drain)
        return 0
    if args.baseline:
        return compare(args, sys.argv[1:] if argv is None else argv)
    if args.cpu >= 0:
        os.sched_setaffinity(0, {args.cpu})
    if not args.json_line:
        print(f"clients={args.clients} ticks={args.ticks} rounds={args.rounds}", end=" ")
        print(f"agents={args.agents}")
    results = {}
    for kind in args.kinds.split(","):
        if kind == "null":
            result = trio.run(bench, args, kind, null_sockets(args.clients))
        else:
            drainer = None if args.drainer_cpu < 0 else args.drainer_cpu
            with tcp_sockets(args.clients, drainer) as socks:
                result = trio.run(bench, args, kind, socks)
        results[kind] = result
        if not args.json_line:
            report(kind, result)
    if args.json_line:
        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
