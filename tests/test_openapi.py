"""``/openapi.json`` is complete and true (docs/api.md): schemathesis, all checks, finds nothing.

schemathesis runs as its command line (as ``docs/api.md`` tells people to run it)
against a server on port 0, bounded by ``--max-examples`` and a fixed seed; any
finding fails the test and prints schemathesis's report. No hook filters what it
generates or what it reports: every request the document calls valid is fuzzed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import trio

from conftest import Running, make_config, running
from tickcast.web.app import create_app

SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
MAX_EXAMPLES = 50
SEED = 20261202
INGEST_TOKEN = "t0ken"


async def schemathesis(srv: Running, tmp_path: Path, *args: str) -> None:
    """Run ``schemathesis run --checks all`` on ``srv``; fail with its report on any finding."""
    env = {k: v for k, v in os.environ.items() if k != "SCHEMATHESIS_HOOKS"}
    cmd = [
        str(SCHEMATHESIS),
        "run",
        srv.url("/openapi.json"),
        "--checks=all",
        f"--max-examples={MAX_EXAMPLES}",
        f"--seed={SEED}",
        "--generation-database=none",
        "--request-timeout=5",
        "--no-color",
        *args,
    ]
    with trio.fail_after(120):
        done = await trio.run_process(
            cmd, cwd=tmp_path, env=env, check=False, capture_stdout=True, stderr=subprocess.STDOUT
        )
    report = done.stdout.decode(errors="replace")
    assert done.returncode == 0, report
    assert "No issues found" in report, report


async def test_schemathesis_finds_nothing(tmp_path: Path) -> None:
    # Small pages: /incremental answers up to 1000 ticks per call, each one validated.
    async with running(make_config(tmp_path, agents=2, rate=20.0)) as srv:
        await srv.wait_for_t(5)
        await schemathesis(srv, tmp_path, "--exclude-path=/ingest")


async def test_schemathesis_finds_nothing_on_ingest(tmp_path: Path) -> None:
    # POST /ingest on a server that takes it: with the token (schemathesis also tries
    # without it and with a wrong one), fuzzed bodies are appended or refused with 400.
    config = make_config(tmp_path, agents=2, source="ingest", ingest_token=INGEST_TOKEN)
    async with running(config) as srv:
        await schemathesis(
            srv,
            tmp_path,
            "--include-path=/ingest",
            f"--header=Authorization: Bearer {INGEST_TOKEN}",
        )


# -- what the run relies on, checked directly -------------------------------------------


def test_every_route_is_documented() -> None:
    app = create_app()
    spec = app.extensions["QUART_SCHEMA"].openapi_provider.schema()
    documented = {(path, method.upper()) for path, item in spec["paths"].items() for method in item}
    routed = set()
    for rule in app.url_map.iter_rules():
        if rule.websocket or rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:[^:>]*:)?([^>]+)>", r"{\1}", rule.rule)
        routed |= {(path, m) for m in rule.methods or () if m not in ("HEAD", "OPTIONS")}
    assert routed == documented
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            assert "500" in operation["responses"], (path, method)
            for status, response in operation["responses"].items():
                assert response["description"], (path, method, status)


def test_query_constraints_are_documented() -> None:
    spec = create_app().extensions["QUART_SCHEMA"].openapi_provider.schema()
    params = {p["name"]: p for p in spec["paths"]["/incremental"]["get"]["parameters"]}
    assert params["from_t"]["schema"]["minimum"] == 0
    assert params["from_ts"]["schema"] == {"type": "number", "minimum": 0}
    assert params["to_t"]["schema"] == {"type": "integer", "minimum": 0}
    assert params["to_ts"]["schema"] == {"type": "number", "minimum": 0}
    assert params["limit"]["schema"]["minimum"] == 1
    assert "10000" in params["limit"]["description"]
    pattern = params["fields"]["schema"]["pattern"]
    for good in ["s", "s,agents", "matches,s,s", "s,agents,actions,matches"]:
        assert re.search(pattern, good), good
    for bad in ["", "s,", ",s", "s,,agents", "foo", "S"]:
        assert not re.search(pattern, bad), bad
    security = spec["paths"]["/incremental"]["get"]["security"]
    assert {} in security and {"readQuery": []} in security
    assert spec["components"]["securitySchemes"]["readQuery"] == {
        "type": "apiKey",
        "in": "query",
        "name": "token",
        "description": spec["components"]["securitySchemes"]["readQuery"]["description"],
    }


def test_the_document_is_the_same_in_every_process() -> None:
    # A set's order depends on the process's hash seed: a list built from one (the
    # /docs/static/{name} enum was) made /openapi.json differ from run to run.
    code = (
        "import trio\n"
        "from tickcast.web.app import create_app\n"
        "async def main():\n"
        "    response = await create_app().test_client().get('/openapi.json')\n"
        "    print((await response.get_data()).decode())\n"
        "trio.run(main)\n"
    )
    documents = set()
    for seed in ("1", "2", "3", "4"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
        )
        documents.add(out.stdout)
    assert len(documents) == 1
