"""Admitting a ``/ws/stream`` connection, the same for every transport.

Before the upgrade: parse the query (400), find the client address (the socket
peer, or ``X-Forwarded-For`` from a trusted proxy), take a connection slot (429).
A transport calls :func:`admit` once, answers a :class:`Refusal` with its status
and JSON body, and otherwise upgrades and hands the slot to its session, which
gives it back when it ends.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from tickcast.errors import error_body
from tickcast.fanout.limits import Limits
from tickcast.transports.params import BadParam, StreamParams, parse_stream_params

__all__ = ["Admission", "Refusal", "admit"]


@dataclass(frozen=True, slots=True)
class Admission:
    """An admitted connection: its parameters, and the address whose slot it holds."""

    params: StreamParams
    ip: str


class Refusal(Exception):
    """The connection is refused before the upgrade with ``status`` and a JSON body."""

    def __init__(self, status: int, error: str, detail: str) -> None:
        super().__init__(f"{status} {error}: {detail}")
        self.status = status
        self.error = error
        self.detail = detail

    def body(self) -> bytes:
        return error_body(self.error, self.detail)


def admit(
    limits: Limits,
    query: Mapping[str, str],
    *,
    peer: str,
    forwarded_for: str | None,
    unavailable: str | None = None,
) -> Admission:
    """Validate the query and take a connection slot for the client.

    ``unavailable`` is why the service cannot stream yet (an edge that has not
    reached its stream), or None.

    Raises:
        Refusal: 503 while unavailable, 400 for a bad parameter (nothing taken),
            429 over a limit.
    """
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
