"""``GET /export``: any range of history as a file (NDJSON, CSV, Arrow, Parquet).

``tables`` flattens stored ticks into Arrow record batches, ``formats`` encodes
them, ``params`` reads the query; ``stream`` (trio) drives a whole export in
bounded batches. ``docs/export.md`` is the user's guide.
"""

__all__: list[str] = []
