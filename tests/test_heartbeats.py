"""The raw transport's heartbeat timer (transports/heartbeats.py), on trio's virtual clock.

End to end (a real server, both transports) is ``test_server.py::test_heartbeat``;
here the timing contract is checked exactly: every session gets a beat at most
``period`` after the previous one (the first: after it was added), early by less
than ``slack``; sessions due close together share one wake-up and one encoded
message; an ended session is dropped.
"""

from __future__ import annotations

import gc
import itertools
import weakref

import trio
import trio.testing

from tickcast.transports.heartbeats import Beat, Heartbeats


class Session:
    def __init__(self, name: str) -> None:
        self.name = name
        self.added_at = 0.0
        self.beats: list[tuple[float, bytes]] = []
        self.ended = False
        self.shared: list[Beat] = []

    def beat(self, beat: Beat) -> bool:
        if self.ended:
            return False
        self.beats.append((trio.current_time(), beat.payload))
        self.shared.append(beat)
        return True


def gaps(session: Session) -> list[float]:
    times = [session.added_at] + [at for at, _ in session.beats]
    return [b - a for a, b in itertools.pairwise(times)]


async def run_for(seconds: float, beats: Heartbeats, sessions: list[tuple[float, Session]]) -> None:
    """Add each session at its time, let the timer run ``seconds`` in all."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(beats.run)
        start = trio.current_time()
        for at, session in sessions:
            await trio.sleep_until(start + at)
            session.added_at = trio.current_time()
            beats.add(session)
        await trio.sleep_until(start + seconds)
        nursery.cancel_scope.cancel()


def test_gaps_are_at_most_one_period_and_early_by_less_than_slack() -> None:
    messages: list[float] = []

    def message() -> bytes:
        messages.append(trio.current_time())
        return b"beat %d" % len(messages)

    beats = Heartbeats(30.0, message)
    assert beats.slack == 1.0
    # 300 sessions joining over 30 s, i.e. one due every 0.1 s.
    sessions = [(k * 0.1, Session(f"s{k}")) for k in range(300)]

    async def main() -> None:
        await run_for(200.0, beats, sessions)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))

    for _, session in sessions:
        assert len(session.beats) >= 5
        for gap in gaps(session):
            assert beats.period - beats.slack <= gap <= beats.period + 1e-9, (session.name, gap)
    # Dues 0.1 s apart share wake-ups: about one message per slack, not one per session.
    beaten = sum(len(s.beats) for _, s in sessions)
    assert len(messages) <= 200 / beats.slack + 1
    assert beaten >= 5 * len(messages)
    # Every session beaten in one wake-up got the same message.
    by_time: dict[float, set[bytes]] = {}
    for _, session in sessions:
        for at, payload in session.beats:
            by_time.setdefault(at, set()).add(payload)
    assert all(len(payloads) == 1 for payloads in by_time.values())
    # ... as one shared Beat (whose frame is then built once per window).
    shared: dict[float, set[int]] = {}
    for _, session in sessions:
        for (at, _), beat in zip(session.beats, session.shared, strict=True):
            shared.setdefault(at, set()).add(id(beat))
    assert all(len(ids) == 1 for ids in shared.values())


def test_a_beat_frames_its_message_once_per_window() -> None:
    beat = Beat(b'{"type":"heartbeat","latest_t":1,"ts":2.0}')
    plain, deflated = beat.frame(0), beat.frame(15)
    assert plain.endswith(beat.payload) and plain[0] == 0x81
    assert deflated[0] == 0xC1  # FIN, RSV1 (compressed), text
    assert beat.frame(0) is plain and beat.frame(15) is deflated


def test_a_short_period_has_a_proportional_slack() -> None:
    beats = Heartbeats(0.2, lambda: b"b")
    assert beats.slack == 0.2 * 0.1
    session = Session("s")

    async def main() -> None:
        await run_for(2.0, beats, [(0.05, session)])

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert len(session.beats) >= 9
    assert all(0.18 - 1e-9 <= gap <= 0.2 + 1e-9 for gap in gaps(session))


def test_an_ended_session_is_dropped_and_the_timer_sleeps_until_a_new_one() -> None:
    messages: list[float] = []

    def message() -> bytes:
        messages.append(trio.current_time())
        return b"b"

    beats = Heartbeats(1.0, message)
    first, second = Session("first"), Session("second")

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(beats.run)
            first.added_at = trio.current_time()
            beats.add(first)
            await trio.sleep(2.5)
            assert len(first.beats) == 2
            first.ended = True
            await trio.sleep(1.0)  # its next due: beat() says it ended
            assert len(beats) == 0
            idle_since = len(messages)
            await trio.sleep(100.0)  # nothing to beat: no wake-up at all
            assert len(messages) == idle_since
            second.added_at = trio.current_time()
            beats.add(second)
            await trio.sleep(1.5)
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert len(first.beats) == 2
    assert len(second.beats) == 1
    assert 0.9 <= gaps(second)[0] <= 1.0


def test_the_timer_does_not_keep_a_closed_session_alive() -> None:
    # A client reconnecting in a loop must not pile up sessions for heartbeat_s.
    beats = Heartbeats(30.0, lambda: b"b")
    kept = Session("kept")
    refs: list[weakref.ref[Session]] = []

    def connect_and_close() -> None:
        gone = Session("gone")
        beats.add(gone)
        refs.append(weakref.ref(gone))

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(beats.run)
            beats.add(kept)
            connect_and_close()
            gc.collect()
            assert refs[0]() is None  # freed at once, not when its beat is due
            assert len(beats) == 2
            await trio.sleep(31.0)
            nursery.cancel_scope.cancel()

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert len(kept.beats) == 1
    assert len(beats) == 1  # the dead entry was dropped at its due time
