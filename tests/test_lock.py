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


def test_installed_versions_match_the_lock() -> None:
    frozen = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--exclude-editable"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    locked = _locked()
    differ = []
    for line in frozen.splitlines():
        name, sep, ver = line.partition("==")
        if sep and _name(name) in locked and locked[_name(name)] != ver:
            differ.append(f"{name} {ver} installed, {locked[_name(name)]} locked")
    assert not differ, "the venv is not the locked one:\n" + "\n".join(differ)
