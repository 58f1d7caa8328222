"""Open-file descriptors: the limit at start-up, and a connection refused when they run out.

Every connection costs the process one descriptor, and so do segment files,
sockets to Redis, and trio's own. The kernel caps them per process
(``RLIMIT_NOFILE``); a shell's default soft limit is often 1024, far below the
default ``max_connections`` of 10 000. Two things follow, and this module does
both:

* At start-up, :func:`raise_open_files_limit` raises the soft limit to the hard
  one (any process may), and if that is still below ``max_connections`` plus
  :data:`MARGIN`, logs once how many connections it allows.
* When ``accept()`` fails with ``EMFILE`` / ``ENFILE`` anyway, the connection
  would wait in the kernel's backlog, unanswered, until a descriptor is freed.
  A :class:`Reserve` keeps :data:`SPARES` spare descriptors open for that moment:
  the accept loop gives one up, accepts the waiting connection into its slot,
  answers it ``503`` JSON (:data:`REFUSAL`) and closes it, then takes the spare
  back. So a client over the limit gets an answer it can act on (retry later,
  or elsewhere) instead of a hang.

Invariants: the reserve holds at most :data:`SPARES` descriptors; each is given
up only to accept the one connection refused with it, and is taken back when
that connection is closed. A refusal lasts until the client closes, at most
:data:`REFUSE_DRAIN_S`, so the reserve answers at least ``SPARES /
REFUSE_DRAIN_S`` connections a second even when none of them reads. Plain
``os`` / ``resource`` / ``socket`` calls and trio's waits: no Quart or Hypercorn.
"""

from __future__ import annotations

import logging
import math
import os
import resource
import socket
import time

import trio

from tickcast.errors import error_body

__all__ = ["MARGIN", "REFUSAL", "Reserve", "raise_open_files_limit"]

log = logging.getLogger("tickcast.server")

MARGIN = 64  # descriptors kept for what is not a client: files, Redis, trio, threads
SPARES = 4  # descriptors held in reserve: refusals under way at once
REFUSE_DRAIN_S = 0.5  # how long a refused connection may take to read its answer
LOG_EVERY_S = 1.0  # the descriptor shortage is logged at most once per this

_DETAIL = "the server has no file descriptor left for a new connection; retry later"
_BODY = error_body("unavailable", _DETAIL)
REFUSAL = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"content-type: application/json\r\n"
    b"content-length: %d\r\n"
    b"retry-after: 1\r\n"
    b"connection: close\r\n\r\n" % len(_BODY)
) + _BODY
"""The whole answer to a connection accepted with the reserve (an HTTP request or a
WebSocket upgrade alike)."""


def raise_open_files_limit(max_connections: int) -> int:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit; return the soft limit now.

    Logs a warning, once, if the limit is below ``max_connections`` + :data:`MARGIN`,
    naming how many connections it allows. Never lowers a limit.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, max_connections + MARGIN)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as exc:  # e.g. macOS caps at OPEN_MAX
            log.warning("cannot raise the open-files limit from %d to %d: %s", soft, target, exc)
    if soft < max_connections + MARGIN:
        log.warning(
            "the open-files limit (%d, hard limit %s) allows about %d connections, "
            "fewer than max_connections (%d): raise it (ulimit -n, LimitNOFILE=) "
            "or lower max_connections",
            soft,
            "unlimited" if hard == resource.RLIM_INFINITY else hard,
            max(0, soft - MARGIN),
            max_connections,
        )
    return soft


def _open_spare() -> int | None:
    """One spare descriptor (``/dev/null``, read-only), or None when none is left.

    ``/dev/null`` because opening it costs nothing and holds no resource but the
    descriptor itself; ``O_CLOEXEC`` so that a child process never inherits it.
    """
    try:
        return os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None


class Reserve:
    """Spare descriptors, each given up to accept and refuse a connection when there is none.

    Use from the accept loop (one task): on ``EMFILE``/``ENFILE``, call
    :meth:`refuse_one`; it returns at once, the refusal runs in ``nursery``.
    """

    def __init__(self) -> None:
        """Open the spares now, at start-up, while descriptors are plentiful."""
        self._fds: list[int] = []
        self._refill()
        self._next_log = -math.inf
        self._unlogged = 0
        self.refused = 0  # connections answered 503 for want of a descriptor

    def _refill(self) -> None:
        """Take spares back up to :data:`SPARES` (as many as the process can open)."""
        while len(self._fds) < SPARES and (fd := _open_spare()) is not None:
            self._fds.append(fd)

    def close(self) -> None:
        """Give the spare descriptors back to the process for good."""
        while self._fds:
            os.close(self._fds.pop())

    def shortage(self, exc: OSError) -> None:
        """Log that ``accept`` failed for want of a resource, at most once per second."""
        now = time.monotonic()
        if now < self._next_log:
            self._unlogged += 1
            return
        more = f" ({self._unlogged} more since the last report)" if self._unlogged else ""
        log.error(
            "accept failed: %s; %d connections answered 503 so far%s",
            exc.strerror or exc,
            self.refused,
            more,
        )
        self._next_log = now + LOG_EVERY_S
        self._unlogged = 0

    def refuse_one(self, lsock: socket.socket, nursery: trio.Nursery) -> bool:
        """Accept one waiting connection with the spare descriptor and answer it 503.

        Returns False when there is no spare to give up (:data:`SPARES` refusals
        are under way) or nothing was waiting; the caller then waits a little
        before accepting again. The answer is written and the socket closed in a
        task of ``nursery``, which takes the spare back.
        """
        if not self._fds:
            self._refill()  # descriptors freed elsewhere since
            if not self._fds:
                return False
        os.close(self._fds.pop())
        try:
            conn, _ = lsock.accept()
        except OSError:  # nothing waiting, another thread took the slot, or it vanished:
            self._refill()  # the accept loop's next accept() classifies it
            return False
        self.refused += 1
        nursery.start_soon(self._answer, conn)
        return True

    async def _answer(self, conn: socket.socket) -> None:
        """Write :data:`REFUSAL`, let the client read it, close, take the spare back."""
        try:
            conn.setblocking(False)
            try:
                conn.send(REFUSAL)  # ~200 bytes: fits an empty send buffer whole
                conn.shutdown(socket.SHUT_WR)
                # Read what the client sent until it closes: closing with unread
                # data would send an RST, which can discard our answer unread.
                with trio.move_on_after(REFUSE_DRAIN_S):
                    while True:
                        await trio.lowlevel.wait_readable(conn)
                        try:
                            if not conn.recv(65536):
                                break
                        except BlockingIOError:
                            continue
            except OSError:
                pass  # the client went away: nothing to answer
        finally:
            conn.close()
            self._refill()
