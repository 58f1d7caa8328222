"""Blocking wrappers: run the async core in a worker thread (an anyio blocking portal).

One core, two faces: ``Client.stream()`` and ``Client.history()`` drive the same
async generators as ``astream()``, in a trio event loop on a thread of their own.
A thread hop costs tens of microseconds, so it is paid once per server message (a
batch of up to ``batch`` ticks), not once per tick.

Ctrl-C (KeyboardInterrupt in the calling thread) cancels what the portal is doing,
closes the connection and re-raises; so does closing the iterator early.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Iterator
from concurrent.futures import Future
from typing import TypeVar

from anyio.from_thread import BlockingPortal, start_blocking_portal

__all__ = ["iterate_blocking"]

T = TypeVar("T")

BACKEND = "trio"  # the house event loop; the caller's thread never sees it


def iterate_blocking(open_batches: Callable[[], AsyncGenerator[list[T], None]]) -> Iterator[T]:
    """Iterate, from synchronous code, over what the async generator yields, flattened.

    ``open_batches`` is called in the portal's thread, so the generator belongs to that
    event loop from the start.
    """
    with start_blocking_portal(BACKEND) as portal:
        batches = portal.call(_make, open_batches)
        pending: Future[list[T] | None] | None = None
        try:
            while True:
                pending = portal.start_task_soon(_next, batches)
                batch = pending.result()  # KeyboardInterrupt lands here, if anywhere
                pending = None
                if batch is None:
                    return
                yield from batch
        finally:
            _close(portal, batches, pending)


async def _make(
    open_batches: Callable[[], AsyncGenerator[list[T], None]],
) -> AsyncGenerator[list[T], None]:
    return open_batches()


async def _next(batches: AsyncGenerator[list[T], None]) -> list[T] | None:
    try:
        return await anext(batches)
    except StopAsyncIteration:
        return None


def _close(
    portal: BlockingPortal,
    batches: AsyncGenerator[list[T], None],
    pending: Future[list[T] | None] | None,
) -> None:
    """Finish the generator: cancel a read in flight, or close it where it waits."""
    if pending is not None and pending.cancel():
        # The read was interrupted (Ctrl-C): cancelling it ends the generator, and the
        # portal waits for that (its connection closed) before the thread goes.
        return
    portal.call(batches.aclose)
