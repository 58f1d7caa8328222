"""Out of file descriptors: a connection gets a 503 JSON answer, not a hang.

``tickcast serve`` runs as a subprocess under a lowered ``RLIMIT_NOFILE`` (soft and
hard, so raising the soft one at start-up cannot undo it). The test fills the
server's descriptor table with idle connections, watching ``/proc/<pid>/fd``
until it is full, then connects once more: that connection must be answered 503
with a JSON body (from the reserve descriptor), every time, while the log says
so at most once a second.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import orjson
import pytest

from conftest import PYTHON, free_port

LIMIT = 160
LAUNCH = (
    "import os, resource, sys\n"
    f"resource.setrlimit(resource.RLIMIT_NOFILE, ({LIMIT}, {LIMIT}))\n"
    "os.execv(sys.executable, [sys.executable, '-m', 'tickcast.cli', *sys.argv[1:]])\n"
)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/<pid>/fd")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def request(port: int, timeout: float = 10.0) -> tuple[bytes, bytes]:
    """GET /health on a new connection: the response's head and body."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, data
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        while len(body) < length:
            chunk = sock.recv(65536)
            assert chunk, data
            body += chunk
    return head, body


def test_over_the_limit_a_connection_is_answered_503_json(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "server.log"
    cmd = [PYTHON, "-c", LAUNCH, "serve", "--port", str(port)]
    cmd += ["--data-dir", str(tmp_path / "d"), "--rate", "20"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKCAST_")}
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        # Ready once it listens; no HTTP request before the fill, whose connection
        # could close during it and hide an accept from the count below.
        deadline = time.monotonic() + 20.0
        while "tickcast listening on" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.02)
        with ExitStack() as idle:
            # Idle connections (no request head: each holds a descriptor for 10 s)
            # until the server's table is full.
            deadline = time.monotonic() + 8.0
            while open_fds(proc.pid) < LIMIT:
                assert time.monotonic() < deadline, f"{open_fds(proc.pid)} descriptors open"
                before = open_fds(proc.pid)
                idle.enter_context(socket.create_connection(("127.0.0.1", port)))
                while open_fds(proc.pid) <= before and time.monotonic() < deadline:
                    time.sleep(0.002)  # until the server accepted it
            for _ in range(3):
                head, body = request(port, timeout=5.0)
                assert head.startswith(b"HTTP/1.1 503"), head
                assert b"content-type: application/json" in head
                assert orjson.loads(body)["error"] == "unavailable"
    finally:
        proc.terminate()
        proc.wait(10)
    text = log.read_text()
    assert f"the open-files limit ({LIMIT}, hard limit {LIMIT}) allows about" in text
    reports = [line for line in text.splitlines() if "accept failed: Too many open files" in line]
    assert 1 <= len(reports) <= 2, reports  # three refusals within a second or two
