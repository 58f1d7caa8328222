"""Blocking wrappers: run the async core in a worker thread (an anyio blocking portal).

One core, two faces: ``Client.stream()`` and ``Client.history()`` drive the same
async generators as ``astream()``, in a trio event loop on a thread of their own.
A thread hop costs tens of microseconds, so it is paid once per server message (a
batch of up to ``batch`` ticks), not once per tick.

Ctrl-C (KeyboardInterrupt in the calling thread) cancels what the portal is doing,
closes the connection and re-raises; so does closing the iterator early. A stream
the script still holds when it ends (Ctrl-C in the loop body, with the iterator
kept in a variable) is closed at exit by an ``atexit`` hook: left to the
interpreter's final clean-up, its close would wait for the portal's thread,
which is no longer running by then, and the script would hang until a second
Ctrl-C (and print a second traceback).
"""

from __future__ import annotations

import atexit
import weakref
from collections.abc import AsyncGenerator, Callable, Generator, Iterator
from typing import Any, Generic, TypeVar

import anyio
from anyio.from_thread import start_blocking_portal

__all__ = ["iterate_blocking"]

T = TypeVar("T")

BACKEND = "trio"  # the house event loop; the caller's thread never sees it

_OPEN: weakref.WeakSet[Generator[Any, None, None]] = weakref.WeakSet()  # streams not closed


@atexit.register
def _close_open_streams() -> None:
    """Close the streams a script left open, while their portals still run (see above)."""
    for stream in list(_OPEN):
        stream.close()


def iterate_blocking(open_batches: Callable[[], AsyncGenerator[list[T], None]]) -> Iterator[T]:
    """Iterate, from synchronous code, over what the async generator yields, flattened.

    ``open_batches`` is called in the portal's thread, so the generator belongs to that
    event loop from the start. The iterator is closed at interpreter exit if the
    caller has not closed it.
    """
    stream = _iterate(open_batches)
    _OPEN.add(stream)
    return stream


def _iterate(open_batches: Callable[[], AsyncGenerator[list[T], None]]) -> Generator[T, None, None]:
    """The generator behind :func:`iterate_blocking`: one portal (thread) per iteration.

    The portal lives exactly as long as this generator: entering starts the thread,
    and leaving (exhausted, closed, or an exception from the caller's side) closes
    the async generator in it, then stops the thread.
    """
    with start_blocking_portal(BACKEND) as portal:
        reader = portal.call(_Reader.open, open_batches)
        try:
            while True:
                # KeyboardInterrupt lands in one of these two calls, if anywhere; a read
                # may then be in flight even though we never got its future.
                pending = portal.start_task_soon(reader.next)
                batch = pending.result()
                if batch is None:
                    return
                yield from batch
        finally:
            portal.call(reader.close)


class _Reader(Generic[T]):
    """The generator, and the one read that may be in flight on it."""

    def __init__(self, batches: AsyncGenerator[list[T], None]) -> None:
        self._batches = batches
        self._reading: anyio.CancelScope | None = None
        self._idle = anyio.Event()
        self._idle.set()
        self._closing = False

    @classmethod
    async def open(cls, open_batches: Callable[[], AsyncGenerator[list[T], None]]) -> _Reader[T]:
        """Create the async generator inside the portal's event loop, where it will run."""
        return cls(open_batches())

    async def next(self) -> list[T] | None:
        """The next batch, or None at the end (exhausted, or cancelled by :meth:`close`).

        Each read runs in a cancel scope of its own, so :meth:`close` can stop it
        without cancelling the portal; ``_idle`` tells close when it has unwound.
        """
        if self._closing:  # a read scheduled before a Ctrl-C, run after close() began
            return None
        self._idle = anyio.Event()
        try:
            with anyio.CancelScope() as self._reading:
                return await anext(self._batches)
        except StopAsyncIteration:
            return None
        finally:
            self._reading = None
            self._idle.set()
        return None  # cancelled by close()

    async def close(self) -> None:
        """Cancel a read in flight and wait for it to unwind, then close the generator
        (an async generator cannot be closed while a read is running in it).

        No read starts once this has begun; one that started while this waited (a
        read scheduled just before, run at this wait's checkpoint) is cancelled too.
        """
        self._closing = True
        while self._reading is not None or not self._idle.is_set():
            if self._reading is not None:
                self._reading.cancel()
            await self._idle.wait()
        await self._batches.aclose()
