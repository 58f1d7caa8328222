"""The publisher: how an external simulation feeds a ``tickcast serve --source ingest``.

Standard library only (plus orjson), synchronous, so it drops into any simulation
loop without an event loop::

    from tickcast.publisher import Publisher

    pub = Publisher("http://127.0.0.1:8000", token="s3cret")
    t = pub.publish({"s": {...}, "agents": [...], "actions": [...], "matches": [...]})

or, without touching the simulation's code, pipe its JSON lines::

    my_simulation | tickcast publish --url http://127.0.0.1:8000 --token s3cret

The server assigns ``t`` (consecutive, never reused) and ``ts`` when absent.

Why synchronous and stdlib-only: the simulations that feed tickcast are usually
plain loops (often numpy), and adding an event loop or an HTTP library to them for
one POST per tick would be the larger cost. Each call blocks its caller until the
server answered, which is after the ticks were written and published: a returned
``t`` is one that clients can already read.

Failure behaviour: nothing is retried. A request that timed out or lost its
connection may still have been accepted, and a retry would publish the same
content again under new ``t`` values; whether to retry is the caller's decision.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from typing import IO, Any

import orjson

from tickcast.errors import TickcastError

__all__ = ["PublishError", "Publisher", "publish_lines"]


class PublishError(TickcastError):
    """The server refused a publish (or could not be reached).

    Attributes:
        status: the HTTP status, or 0 when the server could not be reached.
        detail: the server's JSON ``detail`` (or the transport error).
    """

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"publish failed ({status or 'no response'}): {detail}")
        self.status = status
        self.detail = detail


class Publisher:
    """Posts ticks to ``POST /ingest`` with a bearer token.

    Args:
        url: the server's base URL (``http://host:port``, with any path prefix).
        token: the server's ``ingest_token`` (not the read token).
        timeout_s: per request: how long to wait for the connection and the answer.
    """

    def __init__(self, url: str, *, token: str, timeout_s: float = 10.0) -> None:
        self.endpoint = url.rstrip("/") + "/ingest"
        self._headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self._timeout_s = timeout_s

    def publish(self, content: Mapping[str, Any]) -> int:
        """Publish one tick's content; returns the ``t`` the server gave it.

        Raises:
            PublishError: a refusal (400 bad content, 401 token, 409 not an ingest
                server) or a transport failure.
        """
        return self.publish_many([content])[0]

    def publish_many(self, contents: Sequence[Mapping[str, Any]]) -> range:
        """Publish several ticks in one request; returns the range of their ``t``.

        One request for the lot: every item is checked by the server before any is
        numbered, so a bad item refuses the whole list and publishes nothing. Under
        16 MiB of JSON per request (413 beyond).

        The range is ``first_t`` and the count the server answered: exactly this
        request's ticks, also with other publishers posting at the same time (the
        server numbers a list as one block: docs/architecture.md, "The ingest endpoint").

        Raises:
            PublishError: as :meth:`publish`, or 413 for a body that is too large.
        """
        body = orjson.dumps(list(contents))
        request = urllib.request.Request(self.endpoint, data=body, headers=self._headers)
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as response:
                reply = orjson.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise PublishError(exc.code, _detail(exc.read())) from None
        except (urllib.error.URLError, OSError) as exc:
            raise PublishError(0, str(exc)) from None
        first = int(reply["first_t"])
        return range(first, first + int(reply["accepted"]))


def _detail(body: bytes) -> str:
    """The ``detail`` of a JSON error body, or the start of a body that is not one.

    A proxy in front of the server may answer with HTML; its first 200 bytes are
    more useful in the error than a decoding failure.
    """
    try:
        return str(orjson.loads(body).get("detail", body[:200]))
    except (orjson.JSONDecodeError, AttributeError):
        return body[:200].decode(errors="replace")


def publish_lines(publisher: Publisher, lines: Iterable[bytes | str], *, batch: int = 100) -> int:
    """Publish JSON lines (one tick's content each), ``batch`` per request.

    Blank lines are skipped. Returns how many ticks were published.

    Raises:
        PublishError: as :meth:`Publisher.publish_many`; earlier batches stay published.
        ValueError: a line is not JSON (with its line number).
    """
    pending: list[Any] = []
    count = 0
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            pending.append(orjson.loads(line))
        except orjson.JSONDecodeError:
            raise ValueError(f"line {number} is not JSON") from None
        if len(pending) >= batch:
            count += len(publisher.publish_many(pending))
            pending.clear()
    if pending:
        count += len(publisher.publish_many(pending))
    return count


def run_publish(url: str, token: str, stream: IO[bytes], *, batch: int) -> int:
    """``tickcast publish``: the lines of ``stream`` to ``url``; returns the count."""
    return publish_lines(Publisher(url, token=token), stream, batch=batch)
