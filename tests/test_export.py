"""``GET /export`` on a real server: every format and table against the JSON of
``/incremental``, the range headers, truncation, 400s, the read token, an aborted
response on a corrupt record (and the CLI's exit), a client that leaves mid-stream,
memory, and an ingest source's own members."""

from __future__ import annotations

import io
import socket
import struct
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.ipc as pa_ipc
import pyarrow.parquet as pq
import pytest
import trio

from conftest import Running, Transport, make_config, running
from redis_server import RedisServer
from test_corruption import flip_byte_of_record
from test_edge import edge_config, running_edge, wait_edge_at
from tickcast.client import Client, ExportAbortedError, RefusedError
from tickcast.client import progress as progress_module
from tickcast.export import stream
from tickcast.export.formats import FORMATS
from tickcast.export.tables import TABLES
from tickcast.sources.simulator import Market
from tickcast.storage import SegmentStore
from tickcast.web.export import exports_of

HISTORY = 3000  # ticks on disk before the server starts; the last RING of them in memory
RING = 500
TOKEN = "r3ad"
PYTHON = sys.executable


def simulated(n: int, *, agents: int = 20) -> list[bytes]:
    market = Market(agents=agents, seed=11)
    return [orjson.dumps(market.step(t, 1_700_000_000.0 + t / 10)) for t in range(n)]


def fill(data_dir: Path, raws: list[bytes]) -> None:
    """Write ``raws`` (ticks 0..n-1) into a fresh segment store, as a producer would."""
    with SegmentStore.open(data_dir, segment_bytes=1 << 20) as store:
        for i in range(0, len(raws), 500):
            store.append([(i + k, raw) for k, raw in enumerate(raws[i : i + 500])])


def served(
    tmp_path: Path, raws: list[bytes], transport: Transport = "raw", **overrides: Any
) -> Any:
    """A server over ``raws`` already stored; no source producing (ingest, nothing posted).

    ``transport`` "asgi": under a stock Hypercorn instead of ``tickcast serve``'s listener.
    """
    fill(tmp_path / "segments", raws)
    options = {"source": "ingest", "ingest_token": "in", "ring_size": RING, **overrides}
    config = make_config(tmp_path, **options)
    return running(config, transport)


@pytest.fixture(scope="module")
def sim_raws() -> list[bytes]:
    return simulated(HISTORY)


@pytest.fixture
async def srv(tmp_path: Path, sim_raws: list[bytes]) -> AsyncIterator[Running]:
    async with served(tmp_path, sim_raws) as server:
        yield server


async def get(url: str, **kwargs: Any) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.get(url, **kwargs)


async def incremental(srv: Running, from_t: int, to_t: int) -> list[dict[str, Any]]:
    """Ticks from_t..to_t (inclusive) through /incremental, parsed."""
    out: list[dict[str, Any]] = []
    t = from_t
    while t <= to_t:
        page = (await get(srv.url(f"/incremental?from_t={t}&limit={to_t - t + 1}"))).json()
        out += page["data"]
        t = page["next_t"]
    return out


def expected_rows(ticks: list[dict[str, Any]], table: str) -> list[dict[str, Any]]:
    rows = []
    for tick in ticks:
        head = {"t": tick["t"], "ts": tick["ts"]}
        if table == "ticks":
            rows.append({**head, **tick["s"]})
        else:
            rows += [{**head, **element} for element in tick[table]]
    return rows


def read_table(fmt: str, body: bytes) -> pa.Table:
    if fmt == "arrow":
        return pa_ipc.open_stream(body).read_all()
    if fmt == "parquet":
        return pq.read_table(pa.BufferReader(body))
    assert fmt == "csv"
    return pa_csv.read_csv(pa.BufferReader(body))


def normal(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows with every member (missing = None), for comparing with a table's rows."""
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    return [{name: row.get(name) for name in names} for row in rows]


# -- every format and table against the JSON ----------------------------------------------


@pytest.mark.parametrize("table", TABLES)
@pytest.mark.parametrize("fmt", [f for f in FORMATS if f != "ndjson"])
async def test_tables_hold_the_same_values_as_the_json(srv: Running, fmt: str, table: str) -> None:
    # 2000..2700 crosses from the segment files into the ring (the last 500 ticks).
    r = await get(srv.url(f"/export?from_t=2000&to_t=2700&format={fmt}&table={table}"))
    assert r.status_code == 200, r.text
    assert r.headers["x-tickcast-from-t"] == "2000"
    assert r.headers["x-tickcast-to-t"] == "2700"
    assert r.headers["x-tickcast-epoch"] == srv.service.history.epoch
    assert "x-tickcast-truncated" not in r.headers
    got = read_table(fmt, r.content)
    want = expected_rows(await incremental(srv, 2000, 2700), table)
    assert got.num_rows == len(want) > 0
    assert got.column_names == list(normal(want)[0])
    assert got.to_pylist() == normal(want)
    if fmt != "csv":
        assert pa.types.is_int64(got.schema.field("t").type)
        assert pa.types.is_float64(got.schema.field("ts").type)


async def test_ndjson_is_the_stored_lines(srv: Running, sim_raws: list[bytes]) -> None:
    r = await get(srv.url("/export?from_t=2400&to_t=2600"))  # the default format
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/x-ndjson"
    assert r.content == b"".join(raw + b"\n" for raw in sim_raws[2400:2601])
    fields = await get(srv.url("/export?from_t=10&to_t=19&format=ndjson&fields=s"))
    lines = [orjson.loads(line) for line in fields.content.splitlines()]
    assert [sorted(tick) for tick in lines] == [["s", "t", "ts", "type"]] * 10
    page = (await get(srv.url("/incremental?from_t=10&limit=10&fields=s"))).json()
    assert lines == page["data"]


async def test_defaults_are_the_whole_history_as_ticks(srv: Running) -> None:
    r = await get(srv.url("/export?format=arrow"))
    assert (r.headers["x-tickcast-from-t"], r.headers["x-tickcast-to-t"]) == ("0", "2999")
    table = read_table("arrow", r.content)
    assert table.column("t").to_pylist() == list(range(HISTORY))
    assert table.column_names[:2] == ["t", "ts"]


async def test_head_gives_the_range_without_exporting(srv: Running) -> None:
    async with httpx.AsyncClient() as client:
        r = await client.head(srv.url("/export?from_t=100&format=parquet&table=agents"))
    assert r.status_code == 200
    assert (r.headers["x-tickcast-from-t"], r.headers["x-tickcast-to-t"]) == ("100", "2999")
    assert r.headers["content-type"] == "application/vnd.apache.parquet"
    assert exports_of(srv.service).statistics().started == 0


async def test_a_range_by_time(srv: Running) -> None:
    # ts = 1_700_000_000 + t / 10: ts 1_700_000_010 is t=100.
    r = await get(srv.url("/export?from_ts=1700000010&to_ts=1700000020.05&format=csv"))
    assert (r.headers["x-tickcast-from-t"], r.headers["x-tickcast-to-t"]) == ("100", "200")
    assert read_table("csv", r.content).num_rows == 101
    both = await get(srv.url("/export?from_t=150&from_ts=1700000010&to_t=180&to_ts=1700000020"))
    assert (both.headers["x-tickcast-from-t"], both.headers["x-tickcast-to-t"]) == ("150", "180")


async def test_an_empty_range_is_an_empty_file(srv: Running) -> None:
    r = await get(srv.url("/export?from_t=5000&format=parquet&table=agents"))
    assert r.status_code == 200
    assert (r.headers["x-tickcast-from-t"], r.headers["x-tickcast-to-t"]) == ("5000", "4999")
    table = read_table("parquet", r.content)
    assert table.num_rows == 0
    assert table.column_names == ["t", "ts"]


async def test_a_range_past_retention_starts_at_oldest_t(
    tmp_path: Path, sim_raws: list[bytes]
) -> None:
    data = tmp_path / "segments"
    with SegmentStore.open(data, segment_bytes=200_000, retain_bytes=1_000_000) as store:
        for i in range(0, HISTORY, 100):
            store.append([(i + k, raw) for k, raw in enumerate(sim_raws[i : i + 100])])
        store.enforce_retention()
        oldest = store.oldest_t
    assert oldest is not None and oldest > 0
    config = make_config(tmp_path, source="ingest", ingest_token="in", ring_size=RING)
    async with running(config) as srv:
        for fmt in FORMATS:
            r = await get(srv.url(f"/export?from_t=0&to_t={oldest + 9}&format={fmt}"))
            assert r.headers["x-tickcast-truncated"] == "true"
            assert r.headers["x-tickcast-from-t"] == str(oldest)
            ts = (
                [orjson.loads(line)["t"] for line in r.content.splitlines()]
                if fmt == "ndjson"
                else read_table(fmt, r.content).column("t").to_pylist()
            )
            assert ts == list(range(oldest, oldest + 10))
        r = await get(srv.url(f"/export?from_t={oldest}&to_t={oldest}"))
        assert "x-tickcast-truncated" not in r.headers


async def export_cli(srv: Running, *args: str, out: Path) -> subprocess.CompletedProcess[bytes]:
    """``tickcast export URL ARGS -o OUT`` run to its end; its status, stdout and stderr."""
    cmd = [PYTHON, "-m", "tickcast.cli", "export", srv.url(""), *args, "-o", str(out)]
    return await trio.run_process(cmd, check=False, capture_stdout=True, capture_stderr=True)


# -- refusals -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "param"),
    [
        ("from_t=-1", "from_t"),
        ("from_t=x", "from_t"),
        ("to_t=1.5", "to_t"),
        ("from_ts=nan", "from_ts"),
        ("format=xlsx", "format"),
        ("table=orders", "table"),
        ("fields=s,bogus", "fields"),
        ("form=csv", "form"),
    ],
)
async def test_bad_parameters_are_a_json_400(srv: Running, query: str, param: str) -> None:
    r = await get(srv.url(f"/export?{query}"))
    assert r.status_code == 400
    assert r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["error"] == "bad_request"
    assert body["detail"].startswith(f"{param}:")


async def test_the_read_token(tmp_path: Path, sim_raws: list[bytes]) -> None:
    async with served(tmp_path, sim_raws[:100], read_token=TOKEN) as srv:
        refused = await get(srv.url("/export?format=csv"))
        assert refused.status_code == 401
        assert refused.json()["error"] == "unauthorized"
        wrong = await get(srv.url("/export"), headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        bearer = await get(srv.url("/export"), headers={"Authorization": f"Bearer {TOKEN}"})
        assert bearer.status_code == 200
        assert len(bearer.content.splitlines()) == 100
        query = await get(srv.url(f"/export?token={TOKEN}&format=arrow"))
        assert read_table("arrow", query.content).num_rows == 100
        with pytest.raises(RefusedError) as refused:
            await Client(srv.url(""), token="nope").atable(0, 10)
        assert refused.value.status == 401
        table = await Client(srv.url(""), token=TOKEN).atable(0, 10)
        assert table.num_rows == 10


# -- failures mid-stream --------------------------------------------------------------------


async def read_until_it_breaks(url: str) -> tuple[httpx.Response, bytes]:
    """Stream ``url``; returns the response and what arrived before the transfer broke."""
    got = bytearray()
    async with httpx.AsyncClient(timeout=30) as client, client.stream("GET", url) as response:
        with pytest.raises(httpx.RemoteProtocolError):
            async for chunk in response.aiter_raw():
                got += chunk
    return response, bytes(got)


def unprobed_t() -> int:
    """A t on disk that the column samples of an export of the whole history skip:
    damage there is found mid-stream, not before the response starts."""
    rng = stream.ExportRange(0, HISTORY - 1, "")
    probed = {
        t for start in stream.probe_starts(rng) for t in range(start, start + stream.PROBE_TICKS)
    }
    return next(t for t in range(1200, HISTORY - RING) if t not in probed)


@pytest.mark.parametrize("fmt", FORMATS)
async def test_a_corrupt_record_mid_range_aborts_the_response(
    srv: Running, fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stream, "BATCH_TICKS", 200)  # several batches before the damage
    monkeypatch.setattr(stream, "FIRST_BATCH_TICKS", 200)
    bad = unprobed_t()
    await trio.to_thread.run_sync(srv.producer.log.store.sync)
    flip_byte_of_record(srv.config.data_dir, bad)
    url = srv.url(f"/export?from_t=0&format={fmt}&table=agents")
    response, body = await read_until_it_breaks(url)
    assert response.status_code == 200
    assert len(body) > 0  # data left before the damaged record was reached
    exports = exports_of(srv.service).statistics()
    assert (exports.failed, exports.completed) == (1, 0)
    if fmt == "ndjson":
        assert body.count(b"\n") <= bad  # nothing at or past the damaged record
    # The CLI says so, exits non-zero and leaves no partial file.
    out = srv.config.data_dir.parent / f"out.{fmt}"
    cli = await export_cli(
        srv,
        "--from-t",
        "0",
        "--to-t",
        str(HISTORY - 1),
        "--table",
        "agents",
        "--format",
        fmt,
        out=out,
    )
    assert cli.returncode != 0
    message = cli.stderr.decode().strip().splitlines()[-1]
    assert message.startswith("tickcast: error:"), cli.stderr
    assert "incomplete" in message or "aborted" in message, message
    assert not out.exists()


async def test_a_member_that_appears_between_the_samples_aborts_the_export(
    tmp_path: Path, sim_raws: list[bytes]
) -> None:
    raws = list(sim_raws)
    odd = unprobed_t()
    raws[odd] = raws[odd].replace(b'"s":{', b'"s":{"surprise":1,', 1)
    async with served(tmp_path, raws) as srv:
        response, _ = await read_until_it_breaks(srv.url("/export?format=arrow"))
        assert response.status_code == 200
        assert exports_of(srv.service).statistics().failed == 1
        # Exported on its own, the member is a column like any other.
        alone = await get(srv.url(f"/export?format=arrow&from_t={odd}&to_t={odd}"))
        assert read_table("arrow", alone.content).column("surprise").to_pylist() == [1]


async def test_an_abort_under_a_stock_hypercorn_too(
    tmp_path: Path, sim_raws: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stream, "BATCH_TICKS", 200)
    monkeypatch.setattr(stream, "FIRST_BATCH_TICKS", 200)
    async with served(tmp_path, sim_raws, "asgi") as srv:
        flip_byte_of_record(srv.config.data_dir, 1000)
        response, body = await read_until_it_breaks(srv.url("/export?from_t=0&to_t=1999"))
        assert response.status_code == 200
        assert body.count(b"\n") == 1000  # the lines before the damaged record, then the reset


async def test_a_corrupt_record_in_a_sample_is_a_json_500(srv: Running) -> None:
    await trio.to_thread.run_sync(srv.producer.log.store.sync)
    flip_byte_of_record(srv.config.data_dir, 0)
    r = await get(srv.url("/export?from_t=0&to_t=1000&format=parquet"))
    assert r.status_code == 500
    assert r.json()["error"] == "corrupt_record"


# -- the Python client and the command line ------------------------------------------------


async def test_client_table_is_the_range_as_a_pyarrow_table(srv: Running) -> None:
    client = Client(srv.url(""))
    agents = await client.atable(2000, 2700, table="agents")  # to_t exclusive: 2000..2699
    want = expected_rows(await incremental(srv, 2000, 2699), "agents")
    assert agents.to_pylist() == normal(want)
    frame = agents.to_pandas()
    assert list(frame.columns) == ["t", "ts", "id", "experience"]
    assert frame.t.min() == 2000 and frame.t.max() == 2699
    blocking = await trio.to_thread.run_sync(lambda: client.table(0, 10))
    assert blocking.column("t").to_pylist() == list(range(10))
    empty = await client.atable(5, 5)
    assert empty.num_rows == 0
    with pytest.raises(ValueError, match="table"):
        await client.atable(0, 10, table="orders")  # type: ignore[arg-type]


async def test_client_table_draws_a_progress_line_when_asked(
    srv: Running, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(progress_module, "PROGRESS_EVERY_S", 0.0)  # every batch: a line
    monkeypatch.setattr(stream, "BATCH_TICKS", 100)
    out = io.StringIO()
    table = await Client(srv.url("")).atable(2000, 2700, table="agents", progress=out)
    lines = out.getvalue().split("\r")
    assert table.column("t").to_pylist()[-1] == 2699
    assert any(" ticks/s " in line and "/700 ticks (" in line for line in lines), lines
    assert lines[-1].rstrip() == "700 ticks, 14,000 rows of agents"
    capsys.readouterr()
    await Client(srv.url("")).atable(2000, 2100)  # by default: nothing drawn
    assert capsys.readouterr().err == ""
    await Client(srv.url("")).atable(2000, 2100, progress=True)  # True: on stderr
    assert capsys.readouterr().err.rstrip().endswith("100 ticks, 100 rows of ticks")


async def test_client_table_raises_when_the_export_breaks_off(
    srv: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stream, "BATCH_TICKS", 100)
    monkeypatch.setattr(stream, "FIRST_BATCH_TICKS", 100)
    await trio.to_thread.run_sync(srv.producer.log.store.sync)
    flip_byte_of_record(srv.config.data_dir, unprobed_t())
    with pytest.raises(ExportAbortedError):
        await Client(srv.url("")).atable(0, HISTORY)


async def test_the_cli_writes_the_file_with_a_progress_line(srv: Running, tmp_path: Path) -> None:
    for fmt, suffix in [("parquet", "parquet"), ("arrow", "arrows"), ("csv", "csv")]:
        out = tmp_path / f"agents.{suffix}"
        cli = await export_cli(
            srv, "--from-t", "2000", "--to-t", "2700", "--table", "agents", out=out
        )
        assert cli.returncode == 0, cli.stderr
        err = cli.stderr.decode()
        assert "ticks 2000..2700 (701)" in err
        assert "ticks/s" in err
        want = expected_rows(await incremental(srv, 2000, 2700), "agents")
        assert read_table(fmt, out.read_bytes()).to_pylist() == normal(want)
        assert not out.with_name(out.name + ".part").exists()
    out = tmp_path / "ticks.ndjson"
    cli = await export_cli(srv, "--to-t", "99", out=out)
    assert cli.returncode == 0, cli.stderr
    assert len(out.read_bytes().splitlines()) == 100


# -- a client that leaves, and memory -----------------------------------------------------


def big_ticks(n: int, size: int) -> list[bytes]:
    """``n`` synthetic ticks of about ``size`` bytes (the shape of a simulated one)."""
    agents = max(1, (size - 200) // 60)
    body = orjson.dumps(
        {
            "s": {"price_norm": 0.5, "volatility": 0.01, "liquidity": 1.0, "imbalance": 0.0},
            "agents": [{"id": i, "experience": 0.123456, "cash": 1000.5} for i in range(agents)],
            "actions": [{"id": 0, "side": "buy", "price": 50000.0, "size": 1.0}],
            "matches": [{"a": 0, "b": 1, "prob": 0.5}],
        }
    )[1:]
    return [b'{"type":"tick","t":%d,"ts":%.6f,' % (t, 1.7e9 + t / 10) + body for t in range(n)]


async def test_a_client_leaving_mid_stream_ends_the_export(
    tmp_path: Path, transport: Transport
) -> None:
    # ~24 MB of history: more than the socket buffers can take while the client stalls.
    async with served(tmp_path, big_ticks(3000, 8000), transport) as srv:
        exports = exports_of(srv.service)
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            client = trio.SocketStream(trio.socket.from_stdlib_socket(sock.dup()))
        async with client:
            await client.socket.connect(("127.0.0.1", srv.port))
            await client.send_all(
                b"GET /export?table=agents&format=csv HTTP/1.1\r\nHost: x\r\n\r\n"
            )
            with trio.fail_after(30):
                head = await client.receive_some(4096)
                assert head.startswith(b"HTTP/1.1 200")
                while exports.statistics().running == 0:
                    await exports.wait_changed()
            client.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # The connection is reset: the export's task ends, with no thread left encoding.
        with trio.fail_after(30):
            while exports.statistics().running:
                await exports.wait_changed()
        st = exports.statistics()
        assert (st.cancelled, st.completed, st.failed) == (1, 0, 0)
        assert st.ticks < 3000


def peak_rss_reset() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (Linux)


def peak_rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@pytest.mark.parametrize("fmt", ["ndjson", "parquet"])
async def test_memory_stays_bounded_whatever_the_range(
    tmp_path: Path, fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Memory follows the batch, not the range: with 1 MB batches, a 70 MB range
    # (12 000 ticks, 1.5 million agents rows) grows this process by a fraction of it.
    monkeypatch.setattr(stream, "BATCH_BYTES", 1 << 20)
    raws = big_ticks(12_000, 8000)
    total = sum(map(len, raws))
    async with served(tmp_path, raws, ring_size=100) as srv:
        del raws
        warm_up = await get(srv.url(f"/export?format={fmt}&table=agents&to_t=10"))
        assert warm_up.status_code == 200  # pyarrow's libraries are loaded: not the export's
        peak_rss_reset()
        before = peak_rss_bytes()
        received = 0
        url = srv.url(f"/export?format={fmt}&table=agents")
        async with httpx.AsyncClient(timeout=60) as client, client.stream("GET", url) as r:
            async for chunk in r.aiter_raw():
                received += len(chunk)
        growth = peak_rss_bytes() - before
        assert exports_of(srv.service).statistics().completed == 2
        # Server and client share this process.
        print(f"peak RSS growth {growth / 2**20:.1f} MB for {total / 2**20:.1f} MB of ticks")
        assert growth < total / 2, (growth, total)
        assert received > 0


# -- an ingest source's own members --------------------------------------------------------


async def test_an_ingest_sources_own_members_become_columns(tmp_path: Path) -> None:
    config = make_config(tmp_path, source="ingest", ingest_token="in")
    posted = [
        {
            "ts": 1_700_000_000.0 + i,
            "s": {"price_norm": 0.5, "regime": "calm" if i % 2 else "busy", "n": i}
            | ({"alert": True} if i == 3 else {}),
            "agents": [{"id": k, "wealth": 10 * k, "mood": "ok"} for k in range(i % 3)],
            "actions": [],
            "matches": [{"a": 1, "b": 2, "prob": 0.5, "venue": {"name": "x"}}] if i == 2 else [],
        }
        for i in range(6)
    ]
    async with running(config) as srv:
        r = await get_post(srv.url("/ingest"), posted)
        assert r.status_code == 200, r.text
        ticks = read_table(
            "arrow", (await get(srv.url("/export?format=arrow&table=ticks"))).content
        )
        assert ticks.column_names == ["t", "ts", "price_norm", "regime", "n", "alert"]
        assert str(ticks.schema.field("n").type) == "int64"
        assert str(ticks.schema.field("alert").type) == "bool"
        assert ticks.column("alert").to_pylist() == [None, None, None, True, None, None]
        agents = read_table(
            "parquet", (await get(srv.url("/export?format=parquet&table=agents"))).content
        )
        assert agents.column_names == ["t", "ts", "id", "wealth", "mood"]
        assert agents.column("t").to_pylist() == [1, 2, 2, 4, 5, 5]
        matches = await get(srv.url("/export?format=csv&table=matches"))
        rows = read_table("csv", matches.content).to_pylist()
        assert rows == [
            {"t": 2, "ts": 1_700_000_002.0, "a": 1, "b": 2, "prob": 0.5, "venue": '{"name":"x"}'}
        ]


async def get_post(url: str, body: Any) -> httpx.Response:
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.post(
            url, content=orjson.dumps(body), headers={"Authorization": "Bearer in"}
        )


# -- on an edge -----------------------------------------------------------------------------


async def test_an_edge_exports_what_it_holds_and_older_ticks_from_history_url(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    config = make_config(tmp_path, redis_url=redis_server.url, rate=400.0)
    async with running(config) as prod:
        await prod.wait_for_t(600)
        with_history = edge_config(tmp_path, redis_server, ring_size=100, history_url=prod.url(""))
        alone = edge_config(tmp_path, redis_server, ring_size=100)
        async with running_edge(with_history) as edge, running_edge(alone) as bare:
            await wait_edge_at(edge, 600)
            await wait_edge_at(bare, 600)
            for query in ["from_t=0&to_t=550", "from_t=10&to_t=590&format=arrow&table=agents"]:
                here = await get(edge.url(f"/export?{query}"))
                there = await get(prod.url(f"/export?{query}"))
                assert here.status_code == there.status_code == 200
                assert here.content == there.content  # the same bytes, ring and history_url
                assert here.headers["x-tickcast-epoch"] == there.headers["x-tickcast-epoch"]
            cut = await get(bare.url("/export?from_t=0&to_t=600"))
            assert cut.headers["x-tickcast-truncated"] == "true"
            oldest = int(cut.headers["x-tickcast-from-t"])  # the edge's own oldest_t, then
            assert oldest > 0
            lines = [orjson.loads(line)["t"] for line in cut.content.splitlines()]
            assert lines == list(range(oldest, 601))


# -- what serving carries ------------------------------------------------------------------


@pytest.mark.parametrize("module", ["tickcast.server", "tickcast.asgi", "tickcast.client"])
def test_serving_and_the_client_import_no_pyarrow_until_an_export(module: str) -> None:
    # pyarrow is ~70 MB of RSS: a server that never exports, and a client that only
    # streams, must not carry it (the route and Client.table() import it on first use).
    code = f"import sys, {module}; print('pyarrow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr
