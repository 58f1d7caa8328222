"""The front door's accept loop: it owns the listening socket and hides no error.

As trio's ``serve_listeners``: an ``accept()`` error that does not mean "that
connection went away" or "a resource ran out" says the listener is broken, and
is raised (the server stops) instead of ending or spinning the loop silently.
"""

from __future__ import annotations

import errno
import socket

import pytest
import trio

from tickcast.errors import ConfigError, leaves
from tickcast.web.descriptors import Reserve
from tickcast.web.frontdoor import _accept_loop, listen


async def test_an_unknown_accept_error_is_raised_and_the_socket_closed() -> None:
    lsock = listen("127.0.0.1", 0)
    reserve = Reserve()
    accepted: list[str] = []
    took_one = trio.Event()

    async def handler(conn: socket.socket, peer: str) -> None:
        accepted.append(peer)
        conn.close()
        took_one.set()

    try:
        with trio.fail_after(10), pytest.raises(BaseExceptionGroup) as caught:
            async with trio.open_nursery() as nursery:
                port = await nursery.start(_accept_loop, lsock, handler, reserve, nursery)
                with socket.create_connection(("127.0.0.1", port)):
                    await took_one.wait()
                # A listening socket shut down for reading: accept() fails with EINVAL.
                lsock.shutdown(socket.SHUT_RD)
                await trio.sleep_forever()
    finally:
        reserve.close()
    (error,) = leaves(caught.value)
    assert isinstance(error, OSError) and error.errno == errno.EINVAL
    assert accepted == ["127.0.0.1"]
    assert lsock.fileno() == -1  # closed by the loop, the one place that closes it


def test_a_busy_port_names_the_settings() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ConfigError, match=f"'host', 'port': cannot listen on 127.0.0.1:{port}"):
            listen("127.0.0.1", port)
