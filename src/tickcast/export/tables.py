"""The flat tables of ``/export``: stored ticks to Arrow record batches (plain Python).

Tables (``docs/export.md``):

* ``ticks``: one row per tick: ``t``, ``ts``, then one column per member of ``s``;
* ``agents``, ``actions``, ``matches``: one row per element of that list, ``t`` and
  ``ts`` of its tick first, then one column per member of the element.

How a batch is read (measured in ``bench/export.py``; why in the module's commit):
each stored line is cut down to ``{"t":T,"ts":X,"v":<the table's section>}`` with
byte searches, then the whole batch goes through Arrow's C++ JSON reader in one
call. The stored JSON is orjson's (no whitespace) with the keys in the order
``type, t, ts, s, agents, actions, matches``, and a ``"`` inside a string is
escaped, so ``,"agents":`` can only be a key. It is the top-level key unless an
earlier value holds a nested key of that name; then the cut leaves unbalanced
brackets (a strict prefix or suffix of a JSON value), the reader rejects the
batch, and the batch is built from whole parses instead. Any batch Arrow's reader
refuses (that, a member that is a number in one row and a string in another, an
element that is not an object) is built by plain Python: slower, same rules.

Columns (invariants of every batch handed out):

* types come from the data: integer (int64), float (double), string, boolean; a
  member holding objects or lists keeps Arrow's nested type; a member whose values
  have different JSON types becomes a string column (the JSON text of non-strings);
* a member a row lacks (or holds ``null``) is null; an element that is not an
  object is one row with its value in a ``value`` column;
* a member named ``t`` or ``ts`` is renamed ``<section>.t`` (e.g. ``s.ts``);
* one export has one schema (:func:`unify` over probes of the range, then
  :func:`conform` for each batch); a batch that needs a column or a type the
  schema lacks raises :class:`SchemaDriftError`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from tickcast.errors import TickcastError
from tickcast.export.params import TABLES, TableName
from tickcast.tick import EncodedTick

__all__ = [
    "TABLES",
    "Flattener",
    "SchemaDriftError",
    "TableName",
    "base_schema",
    "conform",
    "to_text",
    "unify",
]


_HEAD = b'{"type":"tick",'
_SECTIONS = ("s", "agents", "actions", "matches")
_MARKERS = tuple(b',"%s":' % name.encode() for name in _SECTIONS)
_T = pa.field("t", pa.int64())
_TS = pa.field("ts", pa.float64())


class SchemaDriftError(TickcastError):
    """A batch holds a column or a type the export's schema (fixed at its start) lacks."""


def base_schema() -> pa.Schema:
    """The columns every table has: ``t`` (int64) and ``ts`` (double)."""
    return pa.schema([_T, _TS])


class Flattener:
    """Turns batches of stored ticks into record batches of one table.

    Stateless apart from its table: safe to call from a worker thread.
    """

    def __init__(self, table: TableName) -> None:
        if table not in TABLES:
            raise ValueError(f"unknown table {table!r}")
        self.table = table
        self._section = 0 if table == "ticks" else _SECTIONS.index(table)
        self._prefix = "s" if table == "ticks" else table
        start = _MARKERS[self._section]
        end = _MARKERS[self._section + 1] if self._section + 1 < len(_MARKERS) else None
        self._start = start
        self._end = end

    # -- cutting ------------------------------------------------------------------------

    def cut(self, raws: Sequence[bytes]) -> bytes:
        """``{"t":T,"ts":X,"v":<section>}`` lines for stored ticks, joined by newlines.

        Cut at the first top-level-looking key after ``s``, without proving it is
        top-level: a wrong cut (a nested key of the same name earlier in the line)
        always leaves unbalanced brackets, so Arrow's reader rejects the batch and
        :meth:`flatten` builds it from whole parses instead. A line that does not
        start as a stored tick does is parsed whole at once.
        """
        start, end, head, first = self._start, self._end, _HEAD, self._section == 0
        skip, h = len(start), len(head)
        s_marker = _MARKERS[0]
        parts: list[bytes] = []
        add = parts.extend
        for raw in raws:
            i_s = raw.find(s_marker)
            a = i_s if first else raw.find(start, i_s)
            b = (len(raw) - 1) if end is None else raw.find(end, a)
            if i_s > 0 and a > 0 and b > a and raw.startswith(head):
                add((b"{", raw[h:i_s], b',"v":', raw[a + skip : b], b"}\n"))
            else:
                add((self._whole(raw), b"\n"))
        return b"".join(parts)

    def _whole(self, raw: bytes) -> bytes:
        obj = orjson.loads(raw)
        name = _SECTIONS[self._section]
        value = obj.get(name) if isinstance(obj, dict) else None
        return orjson.dumps({"t": obj["t"], "ts": obj["ts"], "v": value})

    # -- flattening ---------------------------------------------------------------------

    def flatten(self, ticks: Sequence[EncodedTick]) -> pa.RecordBatch:
        """The table's rows for ``ticks`` (consecutive, in ``t`` order), types inferred."""
        if not ticks:
            return pa.RecordBatch.from_pylist([], schema=base_schema())
        raws = [tick.raw for tick in ticks]
        try:
            return self._fast(self.cut(raws))
        except (pa.ArrowInvalid, pa.ArrowTypeError, _Unusual):
            return self._exact(b"\n".join([self._whole(raw) for raw in raws]))

    def _fast(self, lines: bytes) -> pa.RecordBatch:
        read = pa_json.ReadOptions(use_threads=False, block_size=len(lines) + 1)
        table = pa_json.read_json(pa.py_buffer(lines), read_options=read).combine_chunks()
        t = table.column("t").chunk(0) if table.num_rows else pa.array([], pa.int64())
        ts = table.column("ts").chunk(0) if table.num_rows else pa.array([], pa.float64())
        if not pa.types.is_integer(t.type) or not pa.types.is_floating(ts.type):
            if not (pa.types.is_integer(ts.type) and pa.types.is_integer(t.type)):
                raise _Unusual
            ts = ts.cast(pa.float64())
        t = t.cast(pa.int64())
        names, arrays = ["t", "ts"], [t, ts]
        if "v" not in table.column_names:
            raise _Unusual
        v = table.column("v").chunk(0)
        if self._section == 0:
            if pa.types.is_null(v.type):
                return pa.record_batch(arrays, names=names)
            if not pa.types.is_struct(v.type):
                raise _Unusual
            members: pa.StructArray = v
        else:
            if pa.types.is_null(v.type):
                return pa.record_batch(
                    [pa.array([], pa.int64()), pa.array([], pa.float64())], names=names
                )
            if not pa.types.is_list(v.type):
                raise _Unusual
            parents = pc.list_parent_indices(v)
            flat = pc.list_flatten(v)
            arrays = [t.take(parents), ts.take(parents)]
            if pa.types.is_null(flat.type):  # every list empty (or all elements null)
                if flat.null_count != len(flat):
                    raise _Unusual
                if len(flat):  # [null, ...]: not objects
                    raise _Unusual
                return pa.record_batch(arrays, names=names)
            if not pa.types.is_struct(flat.type):
                raise _Unusual  # elements that are not objects
            if flat.null_count:
                raise _Unusual  # a null element: a row with value=null (exact path)
            members = flat
        for i, field in enumerate(members.type):
            names.append(self._name(field.name))
            arrays.append(_own_nulls(members, i))
        return pa.record_batch(arrays, names=names)

    def _exact(self, lines: bytes) -> pa.RecordBatch:
        """The same rows built in plain Python, for batches Arrow's reader refuses."""
        columns: dict[str, list[Any]] = {"t": [], "ts": []}
        rows = 0
        for line in lines.split(b"\n"):  # lines from _whole(): exact
            obj = orjson.loads(line)
            t, ts, value = obj["t"], obj["ts"], obj.get("v")
            if self._section == 0:
                elements: Iterable[Any] = [value] if value is not None else [{}]
            else:
                elements = value if isinstance(value, list) else []
            for element in elements:
                member = element if isinstance(element, dict) else {"value": element}
                columns["t"].append(t)
                columns["ts"].append(ts)
                for key, item in member.items():
                    name = self._name(key)
                    column = columns.get(name)
                    if column is None:
                        column = columns[name] = [None] * rows
                    column.append(item)
                rows += 1
                for column in columns.values():
                    if len(column) < rows:
                        column.append(None)
        names = list(columns)
        arrays = [pa.array(columns["t"], pa.int64()), pa.array(columns["ts"], pa.float64())]
        arrays += [_infer(columns[name]) for name in names[2:]]
        return pa.record_batch(arrays, names=names)

    def _name(self, member: str) -> str:
        return f"{self._prefix}.{member}" if member in ("t", "ts") else member


class _Unusual(Exception):
    """The fast path cannot express this batch; build it exactly."""


def _own_nulls(struct: pa.StructArray, i: int) -> pa.Array:
    """Field ``i`` of ``struct`` with the struct's own nulls applied (a null ``s``)."""
    return struct.field(i) if struct.null_count == 0 else pc.struct_field(struct, [i])


def _infer(values: list[Any]) -> pa.Array:
    """A column from Python values: Arrow's inference, else the values as text."""
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return pa.array(
            [v if v is None or isinstance(v, str) else orjson.dumps(v).decode() for v in values],
            pa.string(),
        )


def to_text(array: pa.Array) -> pa.Array:
    """A nested (struct, list) column as JSON text, for formats that hold only scalars."""
    if not _nested(array.type):
        return array
    return pa.array(
        [None if v is None else orjson.dumps(v).decode() for v in array.to_pylist()], pa.string()
    )


def _nested(type_: pa.DataType) -> bool:
    return bool(pa.types.is_nested(type_))


# -- one schema per export -------------------------------------------------------------


def _merge(a: pa.DataType, b: pa.DataType) -> pa.DataType:
    if a == b:
        return a
    if pa.types.is_null(a):
        return b
    if pa.types.is_null(b):
        return a
    numeric = (pa.types.is_integer, pa.types.is_floating)
    if any(f(a) for f in numeric) and any(f(b) for f in numeric):
        both_int = pa.types.is_integer(a) and pa.types.is_integer(b)
        return pa.int64() if both_int else pa.float64()
    if _nested(a) and _nested(b):
        try:
            merged = pa.unify_schemas(
                [pa.schema([("x", a)]), pa.schema([("x", b)])], promote_options="permissive"
            )
            return merged.field("x").type
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            pass
    return pa.string()


def unify(schemas: Iterable[pa.Schema]) -> pa.Schema:
    """One schema for batches of these schemas: columns in order of first appearance,
    types merged (int + float: float; anything else that differs: string)."""
    types: dict[str, pa.DataType] = {"t": pa.int64(), "ts": pa.float64()}
    for schema in schemas:
        for field in schema:
            known = types.get(field.name)
            types[field.name] = field.type if known is None else _merge(known, field.type)
    return pa.schema([pa.field(name, type_) for name, type_ in types.items()])


def conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """``batch`` with exactly ``schema``'s columns and types (missing ones null).

    Raises:
        SchemaDriftError: ``batch`` holds a non-null column ``schema`` lacks, or a
            value its type cannot hold.
    """
    if batch.schema == schema:
        return batch
    names = set(schema.names)
    for name in batch.schema.names:
        if name not in names and batch.column(name).null_count != batch.num_rows:
            raise SchemaDriftError(f"member {name!r} is not among this export's columns")
    arrays = []
    for field in schema:
        if field.name not in batch.schema.names:
            arrays.append(pa.nulls(batch.num_rows, field.type))
            continue
        column = batch.column(field.name)
        if column.type == field.type:
            arrays.append(column)
            continue
        if pa.types.is_string(field.type) and _nested(column.type):
            arrays.append(to_text(column))
            continue
        mixed = pa.types.is_boolean(field.type) != pa.types.is_boolean(column.type)
        if mixed and not (pa.types.is_string(field.type) or pa.types.is_null(column.type)):
            # Arrow casts true to 1 and 2 to true: a boolean is no number, nor the reverse.
            raise SchemaDriftError(
                f"column {field.name!r} is {field.type} in this export, got {column.type}"
            )
        try:
            arrays.append(column.cast(field.type, safe=True))
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            raise SchemaDriftError(
                f"column {field.name!r} is {field.type} in this export, got {column.type}"
            ) from None
    return pa.record_batch(arrays, schema=schema)
