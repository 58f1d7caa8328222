"""The one door to coredis: how scale-out opens Redis clients and which errors it retries.

Pinned: coredis 6.9.0 (``pyproject.toml``), tested against Debian's Redis 7.0.
coredis 6 runs natively on trio (it is anyio-based); a client is used as
``async with`` and owns a nursery, so errors leaving that block arrive wrapped in
an exception group: callers catch :data:`REDIS_ERRORS` with ``except*``.

Facts this module is shaped by (measured with coredis 6.9.0):

* A pool slot leaks each time a blocking command's connection dies, so a
  long-lived client eventually hangs: callers open a fresh client per
  connection cycle (:func:`open_client` is cheap).
* The pool silently replaces a dead connection, so a client may be talking to a
  *restarted* Redis without ever raising: the appender checks the stream's state
  in the same atomic step as every append instead of trusting the connection.
* ``stream_timeout`` bounds every reply, ``XREAD BLOCK`` included: callers pass
  one above their block time.
* coredis' own retries are turned off: the callers' backoff loops decide.
* A connection that fails to connect (Redis down) never closes the six anyio
  memory streams its ``__init__`` made (``BaseConnection.run`` only closes them
  once connected), so every refused attempt leaks them and warns
  ``ResourceWarning: Unclosed MemoryObject...Stream`` at garbage collection. The
  connection classes below close them when ``run`` ends. This touches coredis
  internals (``_BUFFERS``); ``tests/test_scaleout_layout.py`` checks their shape.
"""

from __future__ import annotations

from typing import Any

import anyio
import coredis
from coredis.connection import BaseConnection, TCPConnection, UnixDomainSocketConnection
from coredis.exceptions import RedisError
from coredis.retry import NoRetryPolicy

from tickcast.config import redacted

__all__ = ["CONNECT_TIMEOUT_S", "REDIS_ERRORS", "open_client", "redacted"]


# Seconds to establish a connection. A Redis on the same network answers in
# milliseconds; a black-holed address (firewall drop) would otherwise hang a cycle for
# the OS's TCP timeout (minutes) before the backoff loop could report it.
CONNECT_TIMEOUT_S = 5.0

REDIS_ERRORS: tuple[type[Exception], ...] = (RedisError, TimeoutError, OSError)
"""What a connection cycle ends on: Redis down, restarting (LOADING), refusing, slow."""


_BUFFERS = (  # BaseConnection's memory streams (coredis 6.9.0)
    "_push_message_buffer_in",
    "_push_message_buffer_out",
    "_streamed_message_buffer_in",
    "_streamed_message_buffer_out",
    "_write_buffer_in",
    "_write_buffer_out",
)


def _close_buffers(connection: BaseConnection) -> None:
    """Close the connection's memory streams (the leak the module docstring describes)."""
    for name in _BUFFERS:
        getattr(connection, name).close()  # idempotent


class _TCPConnection(TCPConnection):
    """coredis' TCP connection, closing its buffers however ``run`` ends."""

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            await super().run(task_status=task_status)
        finally:
            _close_buffers(self)


class _UnixConnection(UnixDomainSocketConnection):
    """coredis' Unix-socket connection (``unix://`` URLs), closing its buffers likewise."""

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        try:
            await super().run(task_status=task_status)
        finally:
            _close_buffers(self)


# coredis' connection class -> ours. A class not listed (a future coredis transport) is
# used as it is: it may leak, but it works.
_CLOSING: dict[type[Any], type[BaseConnection]] = {
    TCPConnection: _TCPConnection,
    UnixDomainSocketConnection: _UnixConnection,
}


def open_client(url: str, *, stream_timeout_s: float, name: str) -> coredis.Redis[bytes]:
    """A new client for ``url`` (``redis://host:port/db``), to be entered with ``async with``.

    Args:
        url: the Redis URL (the ``redis_url`` setting).
        stream_timeout_s: the longest any reply may take (above any ``XREAD BLOCK``).
        name: the ``CLIENT SETNAME`` shown by ``CLIENT LIST`` (e.g. ``tickcast-appender``).

    Nothing is sent before the client is entered; an unreachable Redis then raises
    one of :data:`REDIS_ERRORS`, which the callers' backoff loops handle.
    """
    client = coredis.Redis.from_url(
        url,
        retry_policy=NoRetryPolicy(),
        stream_timeout=stream_timeout_s,
        connect_timeout=CONNECT_TIMEOUT_S,
        client_name=name,
    )
    pool = client.connection_pool
    pool.connection_class = _CLOSING.get(pool.connection_class, pool.connection_class)
    return client
