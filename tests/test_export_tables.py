"""The flat tables of /export, synchronously (tickcast.export.tables is plain Python)."""

from __future__ import annotations

from typing import Any

import orjson
import pyarrow as pa
import pytest

from tickcast.export.tables import Flattener, SchemaDriftError, conform, unify
from tickcast.tick import EncodedTick


def tick(t: int, **content: Any) -> EncodedTick:
    body = {"type": "tick", "t": t, "ts": 100.0 + t}
    body |= {"s": {}, "agents": [], "actions": [], "matches": []} | content
    return EncodedTick.from_dict(body)


def rows(table: str, ticks: list[EncodedTick]) -> list[dict[str, Any]]:
    return Flattener(table).flatten(ticks).to_pylist()  # type: ignore[arg-type]


def test_keys_named_like_the_sections_inside_values_do_not_mislead_the_cut() -> None:
    # Each of these puts a nested key with a section's name before the real one.
    ticks = [
        tick(0, s={"x": 1, "agents": 2}, agents=[{"id": 0}]),
        tick(1, agents=[{"id": 1, "actions": [9]}], actions=[{"id": 5}]),
        tick(2, actions=[{"id": 2, "deep": {"k": 1, "matches": 3}}], matches=[{"a": 1}]),
        tick(3, s={"q": {"z": 0, "s": 1}}, agents=[{"id": 3}]),
    ]
    assert rows("ticks", ticks)[0] == {"t": 0, "ts": 100.0, "x": 1, "agents": 2, "q": None}
    assert [r["id"] for r in rows("agents", ticks)] == [0, 1, 3]
    assert [r["id"] for r in rows("actions", ticks)] == [5, 2]
    assert rows("matches", ticks) == [{"t": 2, "ts": 102.0, "a": 1}]


def test_the_same_rows_from_the_fast_and_the_exact_path() -> None:
    ticks = [tick(t, s={"p": t / 3}, agents=[{"id": k, "e": k * 0.5} for k in range(t % 4)])
             for t in range(50)]  # fmt: skip
    flattener = Flattener("agents")
    fast = flattener.flatten(ticks)
    exact = flattener._exact(b"\n".join(flattener._whole(t.raw) for t in ticks))
    assert fast.to_pylist() == exact.to_pylist()
    assert fast.num_rows == sum(t % 4 for t in range(50))


def test_types_come_from_the_data() -> None:
    ticks = [
        tick(0, s={"i": 1, "f": 1.5, "b": True, "x": "a", "mixed": 1}),
        tick(1, s={"i": 2, "f": 2, "mixed": "two", "nested": {"k": [1]}}),
    ]
    batch = Flattener("ticks").flatten(ticks)
    types = {field.name: str(field.type) for field in batch.schema}
    assert types["t"] == "int64" and types["ts"] == "double"
    assert types["i"] == "int64" and types["f"] == "double" and types["b"] == "bool"
    assert types["x"] == "string" and types["mixed"] == "string"
    assert batch.column("mixed").to_pylist() == ["1", "two"]
    assert batch.column("b").to_pylist() == [True, None]


def test_odd_elements_and_reserved_names() -> None:
    ticks = [tick(0, agents=[1, {"id": 2, "t": 9}, None]), tick(1, s={"ts": 5})]
    assert rows("agents", ticks) == [
        {"t": 0, "ts": 100.0, "value": 1, "id": None, "agents.t": None},
        {"t": 0, "ts": 100.0, "value": None, "id": 2, "agents.t": 9},
        {"t": 0, "ts": 100.0, "value": None, "id": None, "agents.t": None},
    ]
    assert rows("ticks", ticks)[1] == {"t": 1, "ts": 101.0, "s.ts": 5}


def test_one_schema_per_export() -> None:
    first = Flattener("ticks").flatten([tick(0, s={"a": 1, "b": "x"})])
    later = Flattener("ticks").flatten([tick(1, s={"a": 2.5, "c": None})])
    schema = unify([first.schema, later.schema])
    assert [(f.name, str(f.type)) for f in schema] == [
        ("t", "int64"), ("ts", "double"), ("a", "double"), ("b", "string"), ("c", "null"),
    ]  # fmt: skip
    assert conform(first, schema).to_pylist() == [
        {"t": 0, "ts": 100.0, "a": 1.0, "b": "x", "c": None}
    ]
    drifted = Flattener("ticks").flatten([tick(2, s={"new": 1})])
    with pytest.raises(SchemaDriftError, match="'new'"):
        conform(drifted, schema)
    wider = pa.record_batch([pa.array([3]), pa.array([1.0]), pa.array(["x"])], ["t", "ts", "a"])
    with pytest.raises(SchemaDriftError, match="'a'"):
        conform(wider, schema)


def test_whole_parse_when_the_line_is_not_a_stored_tick() -> None:
    raw = orjson.dumps({"t": 4, "type": "tick", "ts": 1.0, "s": {"p": 1}})  # other key order
    batch = Flattener("ticks").flatten([EncodedTick(4, 1.0, raw)])
    assert batch.to_pylist() == [{"t": 4, "ts": 1.0, "p": 1}]


def test_a_type_change_mid_range_is_cast_only_when_the_value_fits_exactly() -> None:
    # The types of an export come from its samples; a later batch's own types are
    # cast to them only where no value changes, else the export aborts (drift).
    flattener = Flattener("agents")

    def conformed(sample: Any, later: Any) -> list[Any]:
        schema = unify([flattener.flatten([tick(0, agents=[{"n": sample}])]).schema])
        batch = conform(flattener.flatten([tick(1, agents=[{"n": later}])]), schema)
        return batch.column("n").to_pylist()

    assert conformed(2, 3.0) == [3]
    assert conformed(True, None) == [None]  # a member a row lacks is null, whatever the type
    assert conformed(2.5, 3) == [3.0]
    drifts = [(2, 2.5), (2, "x"), (2, {"k": 1}), (2.5, 2**53 + 1)]
    drifts += [(2, True), (2.5, False), (True, 1), (False, 0.0)]  # a boolean is no number
    for sample, later in drifts:
        with pytest.raises(SchemaDriftError, match="'n'"):
            conformed(sample, later)
