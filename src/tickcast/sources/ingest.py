"""The ingest source: an external simulation POSTs ticks. Plain Python.

The README's "Serving an external simulation" shows it from the user's side.

The route is ``app.py``'s ``POST /ingest``, with ``Authorization: Bearer
<ingest_token>`` and a JSON body that is one tick's content or a list of them:
``{"s":{...},"agents":[...],"actions":[...],"matches":[...]}`` (``ts`` optional).
The server assigns ``t`` (so numbering stays gap-free across restarts) and ``ts``
when absent (:meth:`Producer.produce <tickcast.producer.Producer.produce>`),
then the tick takes the same path as a simulated one. Only with ``--source
ingest``. This module checks what was posted, before any of it is numbered.
"""

from __future__ import annotations

from typing import Any

import orjson

from tickcast.tick import OPTIONAL_KEYS

__all__ = ["MAX_INGEST_BYTES", "tick_content"]

MAX_INGEST_BYTES = 16 * 2**20


def tick_content(content: Any) -> dict[str, Any]:
    """One tick's checked content from what was posted: ``s, agents, actions, matches``
    and ``ts`` when given (a float). ``Producer.produce`` numbers it.

    Raises:
        ValueError: the content is not an object with the four tick keys.
    """
    if not isinstance(content, dict):
        raise ValueError("each tick must be a JSON object")
    missing = [k for k in OPTIONAL_KEYS if k not in content]
    if missing:
        raise ValueError(f"tick content lacks {','.join(missing)}")
    if not isinstance(content["s"], dict):
        raise ValueError("'s' must be an object")
    for key in ("agents", "actions", "matches"):
        if not isinstance(content[key], list):
            raise ValueError(f"{key!r} must be a list")
    tick: dict[str, Any] = {key: content[key] for key in OPTIONAL_KEYS}
    if "ts" in content:
        ts = content["ts"]
        if isinstance(ts, bool) or not isinstance(ts, int | float):
            raise ValueError("'ts' must be a number")
        tick["ts"] = float(ts)
    # What JSON parsed may still not encode: orjson reads 1024 levels of nesting but
    # writes only 254. Found by fuzzing /ingest (it was a 500); one extra encode per
    # ingested tick, which is not the hot path.
    try:
        orjson.dumps(tick)
    except orjson.JSONEncodeError as exc:
        raise ValueError(f"tick content cannot be stored: {exc}") from None
    return tick
