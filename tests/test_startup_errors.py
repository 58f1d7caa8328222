"""A tickcast that cannot start says why in one line and exits non-zero.

The real commands, as subprocesses: ``tickcast serve`` on a busy port, and
``hypercorn ... tickcast.asgi:app`` with a bad ``TICKCAST_`` variable or the wrong
worker class. Each must print exactly one ``tickcast: error:`` line and no
traceback. Hypercorn 0.18's parent process exits 0 whatever its worker's status
(``hypercorn/run.py`` re-reads the codes of workers it already reaped), so the
exit status is checked with ``--workers 0`` (the worker is the process); with
the default worker process the one line is checked.
"""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest

from conftest import PYTHON, ROOT


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TICKCAST_")}
    env.update(extra)
    return env


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("tickcast: error:")]


def test_a_busy_port_is_one_line_and_exit_2(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        cmd = [PYTHON, "-m", "tickcast.cli", "serve", "--log-level", "warning"]
        cmd += ["--port", str(port), "--data-dir", str(tmp_path / "d")]
        result = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            env=clean_env(),
            timeout=60,
            check=False,
        )
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [
        f"tickcast: error: settings 'host', 'port': cannot listen on 127.0.0.1:{port}: "
        "Address already in use"
    ]


def hypercorn(
    tmp_path: Path, *, workers: str | None, worker_class: str = "trio", **env: str
) -> subprocess.CompletedProcess[str]:
    cmd = [PYTHON, "-m", "hypercorn", "--worker-class", worker_class, "--bind", "127.0.0.1:0"]
    if workers is not None:
        cmd += ["--workers", workers]
    return subprocess.run(
        [*cmd, "tickcast.asgi:app"],
        capture_output=True,
        text=True,
        env=clean_env(TICKCAST_DATA_DIR=str(tmp_path / "d"), **env),
        cwd=ROOT,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("workers", ["0", None])
def test_hypercorn_with_an_unknown_variable(tmp_path: Path, workers: str | None) -> None:
    result = hypercorn(tmp_path, workers=workers, TICKCAST_RATEE="3")
    assert "Traceback" not in result.stderr, result.stderr
    (line,) = error_lines(result.stderr)
    assert line.startswith("tickcast: error: unknown setting TICKCAST_RATEE (known: ")
    if workers == "0":
        assert result.returncode == 2
    assert not (tmp_path / "d").exists()  # nothing was started


@pytest.mark.parametrize("workers", ["0", None])
def test_hypercorn_with_a_worker_class_other_than_trio(tmp_path: Path, workers: str | None) -> None:
    result = hypercorn(tmp_path, workers=workers, worker_class="asyncio")
    assert "Traceback" not in result.stderr, result.stderr
    assert error_lines(result.stderr) == [
        "tickcast: error: tickcast.asgi:app runs only on Hypercorn's trio worker: "
        "start it with hypercorn --worker-class trio tickcast.asgi:app"
    ]
    if workers == "0":
        assert result.returncode == 2


def test_hypercorn_with_a_locked_data_directory(tmp_path: Path) -> None:
    # A data directory in use by another process: a store error, status 1.
    from tickcast.storage.store import SegmentStore

    store = SegmentStore.open(tmp_path / "d")
    try:
        result = hypercorn(tmp_path, workers="0")
    finally:
        store.close()
    assert "Traceback" not in result.stderr, result.stderr
    (line,) = error_lines(result.stderr)
    assert str(tmp_path / "d") in line
    assert result.returncode == 1
