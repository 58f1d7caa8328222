"""Admitting a ``/ws/stream`` connection, the same for every transport.

Before the upgrade: check the read token if one is set (401), parse the query
(400), find the client address (the socket peer, or ``X-Forwarded-For`` from a
trusted proxy), take a connection slot (429). :func:`authorize` alone is the
check the HTTP routes that need the token (``/incremental``, ``/``) make.
A transport calls :func:`admit` once, answers a :class:`Refusal` with its status
and JSON body, and otherwise upgrades and hands the slot to its session, which
gives it back when it ends.

Why one module for both transports: the raw front door and the ASGI route must
refuse the same requests with the same status and body, in the same order, and
the only way to keep that true is to have one function decide.

Invariants:

* the checks run in a fixed order, cheapest and least revealing first: the token
  (401, so an unauthenticated client learns nothing else), availability (503), the
  query (400), the limits (429). Only the last takes anything, so a refusal never
  needs undoing;
* plain Python, no I/O and no await: admission cannot be cancelled half-way;
* neither a presented token nor the expected one appears in a refusal.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

from tickcast.errors import error_body
from tickcast.fanout.limits import Limits
from tickcast.transports.params import BadParam, StreamParams, parse_stream_params

__all__ = ["Admission", "Refusal", "admit", "authorize"]


@dataclass(frozen=True, slots=True)
class Admission:
    """An admitted connection: its parameters, and the address whose slot it holds."""

    params: StreamParams
    ip: str


class Refusal(Exception):
    """The connection is refused before the upgrade with ``status`` and a JSON body.

    An exception rather than a return value so that :func:`authorize` can be shared
    with the HTTP routes, which turn it into the same JSON error response.
    ``error`` is the machine-readable code (``bad_request``, ``unauthorized``,
    ``unavailable``, ``too_many_connections``), ``detail`` the sentence for people.
    """

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(f"{status} {error}: {detail}")
        self.status = status
        self.error = error
        self.detail = detail

    def body(self) -> bytes:
        """The JSON body ``{"error", "detail"}`` every HTTP error of tickcast has."""
        return error_body(self.error, self.detail)

    def headers(self) -> list[tuple[str, str]]:
        """Extra response headers: the challenge of a 401 (RFC 6750)."""
        return [("www-authenticate", 'Bearer realm="tickcast"')] if self.status == 401 else []


def authorize(
    read_token: str | None, query: Mapping[str, str], *, authorization: str | None
) -> None:
    """Check the read token: ``Authorization: Bearer <token>`` or ``?token=<token>``.

    Open when ``read_token`` is None. Compared in constant time, as SHA-256 digests
    so that not even the length leaks; the presented value never appears in the
    refusal (nor, so, in any log).

    Raises:
        Refusal: 401 when a token is required and neither form carries it.
    """
    if read_token is None:
        return
    # Both forms may be present (a browser page that also sends a header); either one
    # being right admits. A header with another scheme (Basic) counts as absent.
    presented: list[str] = []
    if authorization is not None:
        scheme, _, credentials = authorization.strip().partition(" ")
        if scheme.lower() == "bearer":
            presented.append(credentials.strip())
    if "token" in query:
        presented.append(query["token"])
    if not presented:
        detail = "a read token is required: Authorization: Bearer <token>, or ?token=<token>"
        raise Refusal(401, "unauthorized", detail)
    expected = hashlib.sha256(read_token.encode()).digest()
    ok = False
    for candidate in presented:  # every candidate compared: no early exit to time
        digest = hashlib.sha256(candidate.encode("utf-8", "replace")).digest()
        ok |= hmac.compare_digest(digest, expected)
    if not ok:
        raise Refusal(401, "unauthorized", "wrong read token")


def admit(
    limits: Limits,
    query: Mapping[str, str],
    *,
    peer: str,
    forwarded_for: str | None,
    read_token: str | None,
    authorization: str | None,
    unavailable: str | None = None,
) -> Admission:
    """Check the read token, validate the query and take a connection slot for the client.

    ``unavailable`` is why the service cannot stream yet (an edge that has not
    reached its stream), or None.

    On success the caller holds one slot in ``limits`` for ``Admission.ip`` and must
    give it back exactly once, whether or not the upgrade then succeeds (the
    sessions' ``release``).

    Raises:
        Refusal: 401 without the read token, 503 while unavailable, 400 for a bad
            parameter (nothing taken in any of these cases), 429 over a limit.
    """
    authorize(read_token, query, authorization=authorization)
    if unavailable is not None:
        raise Refusal(503, "unavailable", unavailable)
    try:
        params = parse_stream_params(query)
    except BadParam as exc:
        raise Refusal(400, "bad_request", str(exc)) from None
    ip = limits.client_ip(peer, forwarded_for)
    refusal = limits.acquire(ip)
    if refusal is not None:
        raise Refusal(429, "too_many_connections", refusal)
    return Admission(params, ip)
