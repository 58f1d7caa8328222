"""A real ``redis-server`` for the scale-out tests (no mocks, no fakeredis).

``make pytest`` installs Debian's ``redis-server`` when it is missing. Without it,
a test that asks for Redis fails (never skips) and says how to get it.

Fixtures:
    redis_server: Redis on a free port in a tmp dir, no persistence
        (``--save "" --appendonly no``), killed at teardown.
    make_redis: a factory, ``make_redis(appendonly=True)`` for AOF tests.

A :class:`RedisServer` can be killed with SIGKILL and restarted on the same port
and directory, as a crash and a supervisor's restart would.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trio

__all__ = ["RedisServer", "make_redis", "redis_server"]

READY_TIMEOUT_S = 20.0  # a slow, busy machine; Redis itself starts in ~20 ms
MISSING = (
    "redis-server is not on PATH: the scale-out tests need a real Redis. "
    "`make pytest` installs Debian's package (or: apt-get install redis-server)."
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ping(port: int) -> bool:
    """True once Redis answers PING with PONG (not an error such as -LOADING)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One ``redis-server`` process on ``127.0.0.1:port``, data in ``dir``."""

    def __init__(self, binary: str, directory: Path, *, appendonly: bool) -> None:
        self.binary = binary
        self.dir = directory
        self.appendonly = appendonly
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log(self) -> Path:
        return self.dir / "redis.log"

    def start(self) -> None:
        """Start on ``port`` and wait until it answers PING (blocking: fixture setup)."""
        assert self.proc is None, "already running"
        self.dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.dir),
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--logfile",
            str(self.log),
            "--daemonize",
            "no",
        ]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
        self.starts += 1
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not _ping(self.port):
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.proc = None
                raise RuntimeError(f"redis-server exited with {code}: {self._log_tail()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"redis-server not ready in {READY_TIMEOUT_S}s")
            time.sleep(0.01)

    def kill(self) -> None:
        """SIGKILL (no shutdown, no final AOF rewrite), and reap it."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self.proc = None

    async def restart(self) -> None:
        """Kill if running, start again on the same port and directory.

        Waits for readiness in a worker thread, so the test's tasks keep running.
        """
        self.kill()
        await trio.to_thread.run_sync(self.start)

    def _log_tail(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"


@pytest.fixture
def make_redis(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """``make_redis(appendonly=False)``: start a Redis; all are killed at teardown."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail(MISSING, pytrace=False)
    servers: list[RedisServer] = []

    def make(*, appendonly: bool = False) -> RedisServer:
        directory = tmp_path / f"redis-{len(servers)}"
        for _attempt in range(3):  # the free port may be taken before Redis binds it
            server = RedisServer(binary, directory, appendonly=appendonly)
            servers.append(server)
            try:
                server.start()
                return server
            except RuntimeError as exc:
                error = exc
        raise error

    try:
        yield make
    finally:
        for server in servers:
            server.kill()


@pytest.fixture
def redis_server(make_redis: Callable[..., RedisServer]) -> RedisServer:
    """A Redis without persistence, on a free port, in a tmp dir."""
    return make_redis()
