"""Start and stop a server under test: tickcast, the reference peer or the floor.

Shared by ``loadtest/run`` and ``bench/fanout.py``; standard library only.

A target runs as a subprocess on 127.0.0.1 at a free port, in its own
temporary data directory, optionally pinned to one CPU, with its output in a
log file. It is ready when ``GET /health`` answers 200. Stopping sends SIGTERM,
then SIGKILL after ``STOP_GRACE_S``; the data directory is removed afterwards.
Only the process started here (and its own children) is ever signalled.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "FLOOR_SCRIPT",
    "PEER_SCRIPT",
    "ROOT",
    "TARGETS",
    "VENV_BIN",
    "RunningTarget",
    "TargetError",
    "free_port",
    "pin_current_process",
    "running_target",
    "start_target",
    "stop_target",
]

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(os.environ.get("VIRTUAL_ENV", ROOT / ".venv")) / "bin"
PEER_SCRIPT = ROOT / "bench" / "peer_websockets.py"
FLOOR_SCRIPT = ROOT / "bench" / "peer_floor.py"
# floor: a bare send loop (bench/peer_floor.py), what every other figure is a ratio to;
# base: tickcast from the source tree in $BENCH_BASE_SRC (bench/fanout.py --baseline
# REF extracts one), for before/after figures from one run; base-asgi: the same tree
# under a stock Hypercorn, as tickcast-asgi
TARGETS = ("tickcast", "peer", "floor", "base", "tickcast-asgi", "base-asgi")
BASE_SRC_ENV = "BENCH_BASE_SRC"  # not TICKCAST_*: tickcast refuses unknown ones
HOST = "127.0.0.1"

# Timeouts
READY_TIMEOUT_S = 30.0
STOP_GRACE_S = 5.0


class TargetError(RuntimeError):
    """The target did not start, or died; the message ends with its log tail."""


@dataclass
class RunningTarget:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    workdir: Path
    log_path: Path
    command: list[str]
    health: dict[str, Any] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def http_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{HOST}:{self.port}/ws/stream"

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _python() -> str:
    venv_python = VENV_BIN / "python"
    return str(venv_python) if venv_python.exists() else sys.executable


def _tickcast() -> str:
    venv_tickcast = VENV_BIN / "tickcast"
    if venv_tickcast.exists():
        return str(venv_tickcast)
    found = shutil.which("tickcast")
    if found is None:
        raise TargetError(f"tickcast is not installed ({venv_tickcast} missing)")
    return found


def build_command(
    name: str,
    *,
    port: int,
    data_dir: Path,
    rate: float,
    agents: int | None,
    compression: bool,
    max_clients: int,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The command line that starts target ``name`` (see the README for tickcast's flags)."""
    rate_arg = f"{rate:g}"
    if name in ("tickcast", "base"):
        if name == "tickcast":
            cmd = [_tickcast(), "serve"]
        else:  # the same command, from another source tree (see _env)
            if not os.environ.get(BASE_SRC_ENV):
                raise TargetError(f"target base: ${BASE_SRC_ENV} is not set")
            cmd = [_python(), "-c", "import sys, tickcast.cli; sys.exit(tickcast.cli.main())"]
            cmd += ["serve"]
        cmd += ["--host", HOST, "--port", str(port)]
        cmd += ["--data-dir", str(data_dir), "--rate", rate_arg]
        # Every benchmark client comes from 127.0.0.1: lift the per-IP limit (default 100).
        cmd += ["--max-connections-per-ip", str(max_clients)]
    elif name in ("tickcast-asgi", "base-asgi"):  # base-asgi: from another tree (_env)
        if name == "base-asgi" and not os.environ.get(BASE_SRC_ENV):
            raise TargetError(f"target base-asgi: ${BASE_SRC_ENV} is not set")
        # The same service under a stock Hypercorn: /ws/stream is the portable Quart
        # route (a memory channel and a sender task per connection, await
        # websocket.send), i.e. the straightforward Quart-Trio fan-out. Settings go in
        # TICKCAST_* variables; Hypercorn negotiates deflate itself (clients here do
        # not offer it unless --compression).
        settings = {
            "DATA_DIR": str(data_dir),
            "RATE": rate_arg,
            "MAX_CONNECTIONS_PER_IP": str(max_clients),
        }
        if agents is not None:
            settings["AGENTS"] = str(agents)
        cmd = ["env", *(f"TICKCAST_{k}={v}" for k, v in settings.items())]
        cmd += [_python(), "-m", "hypercorn", "--worker-class", "trio"]
        cmd += ["--bind", f"{HOST}:{port}", "--graceful-timeout", "1", "tickcast.asgi:app"]
        return [*cmd, *extra_args]
    elif name in ("peer", "floor"):
        script = PEER_SCRIPT if name == "peer" else FLOOR_SCRIPT
        cmd = [_python(), str(script), "--host", HOST, "--port", str(port)]
        cmd += ["--rate", rate_arg]
    else:
        raise ValueError(f"unknown target {name!r}; expected one of {', '.join(TARGETS)}")
    if agents is not None:
        cmd += ["--agents", str(agents)]
    if not compression:
        cmd.append("--no-compression")
    return [*cmd, *extra_args]


# The CPUs this process may use before it pins itself (its children may use them too).
_CPUS: frozenset[int] = (
    frozenset(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else frozenset()
)


def _usable_cpu(cpu: int | None) -> int | None:
    return cpu if cpu is not None and cpu in _CPUS else None


def pin_current_process(cpu: int | None) -> bool:
    """Pin this process to ``cpu`` if that CPU is available; True when pinned."""
    usable = _usable_cpu(cpu)
    if usable is None:
        return False
    os.sched_setaffinity(0, {usable})
    return True


def _get_json(url: str, timeout_s: float) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, {}


def start_target(
    name: str,
    *,
    rate: float,
    agents: int | None = None,
    compression: bool = True,
    max_clients: int = 100,
    cpu: int | None = None,
    extra_args: Sequence[str] = (),
    ready_timeout_s: float = READY_TIMEOUT_S,
    port: int | None = None,
) -> RunningTarget:
    """Start target ``name`` on ``port`` (None: a free one) and wait until ``/health``
    answers 200.

    Raises:
        TargetError: the process exited or was not ready within ``ready_timeout_s``
            (it is stopped before raising).
    """
    workdir = Path(tempfile.mkdtemp(prefix=f"tickcast-{name}-"))
    data_dir = workdir / "segments"
    data_dir.mkdir()
    log_path = workdir / "server.log"
    port = free_port() if port is None else port
    cmd = build_command(
        name,
        port=port,
        data_dir=data_dir,
        rate=rate,
        agents=agents,
        compression=compression,
        max_clients=max_clients,
        extra_args=extra_args,
    )
    pinned = _usable_cpu(cpu)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    base_src = env.pop(BASE_SRC_ENV, None)
    if name in ("base", "base-asgi"):  # ahead of the editable install's path entry
        env["PYTHONPATH"] = base_src or ""
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(
            cmd,
            cwd=workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C on the driver does not hit the server directly
            preexec_fn=(lambda: os.sched_setaffinity(0, {pinned})) if pinned is not None else None,
        )
    target = RunningTarget(name, port, proc, workdir, log_path, cmd)
    deadline = time.monotonic() + ready_timeout_s
    try:
        while True:
            if proc.poll() is not None:
                raise TargetError(
                    f"{name} exited with {proc.returncode} before it was ready\n"
                    f"$ {' '.join(cmd)}\n{target.log_tail()}"
                )
            with contextlib.suppress(OSError, ValueError):
                status, body = _get_json(f"{target.http_url}/health", timeout_s=1.0)
                if status == 200:
                    target.health = body
                    return target
            if time.monotonic() > deadline:
                raise TargetError(
                    f"{name} not ready after {ready_timeout_s:g} s\n"
                    f"$ {' '.join(cmd)}\n{target.log_tail()}"
                )
            time.sleep(0.1)
    except BaseException:
        stop_target(target)
        raise


def _children(pid: int) -> list[Any]:
    """Children of ``pid`` as psutil processes (which guard against pid reuse)."""
    try:
        import psutil  # optional: only to reap a server that forked workers
    except ImportError:
        return []
    try:
        return list(psutil.Process(pid).children(recursive=True))
    except psutil.Error:
        return []


def stop_target(target: RunningTarget, *, keep_workdir: bool = False) -> int | None:
    """SIGTERM, then SIGKILL after ``STOP_GRACE_S``; returns the exit code (None if killed)."""
    proc = target.proc
    children = _children(proc.pid)
    returncode: int | None = proc.poll()
    if returncode is None:
        proc.send_signal(signal.SIGTERM)
        try:
            returncode = proc.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            returncode = None
    for child in children:
        with contextlib.suppress(Exception):  # psutil.Error: already gone
            child.kill()
    if not keep_workdir:
        shutil.rmtree(target.workdir, ignore_errors=True)
    return returncode


@contextlib.contextmanager
def running_target(name: str, **kwargs: Any) -> Iterator[RunningTarget]:
    target = start_target(name, **kwargs)
    try:
        yield target
    finally:
        stop_target(target)
