"""The environment the suite runs in is the locked one (constraints.txt, make lock)."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib

from conftest import ROOT


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0].lower().replace("_", "-")


def _locked() -> dict[str, str]:
    out = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, ver = line.partition("==")
            out[_name(name)] = ver
    return out


def test_every_declared_dependency_is_locked() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        declared += extra
    locked = _locked()
    missing = sorted({_name(r) for r in declared} - set(locked))
    assert not missing, f"declared but not in constraints.txt (run make lock): {missing}"


def _frozen() -> dict[str, str]:
    """Every package in this venv (pip and setuptools included), as ``pip freeze`` says."""
    frozen = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--all", "--exclude-editable"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    out = {}
    for line in frozen.splitlines():
        name, sep, ver = line.partition("==")
        assert sep, f"not installed from a release, so not lockable: {line}"
        out[_name(name)] = ver
    return out


def test_installed_versions_match_the_lock() -> None:
    # The whole venv, not only what pyproject.toml names: a dependency's dependency
    # missing from the lock would float to whatever is newest on the next install.
    locked = _locked()
    differ = [
        f"{name} {ver} installed, {locked.get(name, 'not')} locked"
        for name, ver in sorted(_frozen().items())
        if locked.get(name) != ver
    ]
    assert not differ, "the venv is not the locked one (make lock):\n" + "\n".join(differ)


def test_pip_and_the_build_backend_are_pinned() -> None:
    locked = _locked()
    assert {"pip", "setuptools"} <= set(locked)
    build = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]
    assert build["requires"] == [f"setuptools=={locked['setuptools']}"]
    makefile = (ROOT / "Makefile").read_text()
    assert "pip install --quiet --upgrade -c $(LOCK) pip setuptools" in makefile
