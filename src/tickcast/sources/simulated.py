"""The built-in simulator as a source: ``Market.step`` on a timer, into the producer.

Owns nothing but its loop. The market's randomness is a function of the seed and
``t``, so each step is seeded with :attr:`Producer.next_t`, the ``t``
:meth:`Producer.produce` then gives that tick: nothing yields between the two,
and with ``source=sim`` the simulator is the only caller of ``produce``. On a
restart the market resumes from the newest stored tick (``History.latest``).

Why seed each step by ``t``: a step is then a function of the seed, ``t`` and the
market state (docs/architecture.md, "The path of one tick"), not of how many steps
this process has taken, so a restart does not replay the randomness of t = 0. The
seed is logged at start, so an unseeded run can be repeated with ``--seed``.
"""

from __future__ import annotations

import logging
import secrets
import time

import orjson
import trio

from tickcast.errors import StoreError
from tickcast.producer import Producer
from tickcast.sources.metronome import Metronome
from tickcast.sources.simulator import Market

__all__ = ["run_simulator"]

log = logging.getLogger("tickcast.source")


def _market(producer: Producer) -> Market:
    """A fresh market, or one resumed from the newest tick in the producer's history.

    Resuming reads the agents' state back from that tick's JSON (``Market.resume``),
    so a restart continues the simulation instead of starting a new one.
    """
    config = producer.service.config
    seed = config.seed if config.seed is not None else secrets.randbits(32)
    last = producer.log.latest()
    if last is None:
        log.info("simulator: new market, seed %d, %d agents", seed, config.agents)
        return Market(agents=config.agents, seed=seed)
    log.info("simulator: resuming after t=%d, seed %d", last.t, seed)
    return Market.resume(orjson.loads(last.raw), agents=config.agents, seed=seed)


async def run_simulator(
    producer: Producer, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Produce ticks at ``config.rate`` per second until cancelled.

    Ticks are scheduled on a fixed grid (:class:`Metronome`), so the rate does not
    drift with the cost of a step; after a stall (e.g. the writer applying
    backpressure) it does not burst to catch up. A failure is recorded on the
    service (``/health`` 503), not raised, so history stays readable.

    Backpressure: ``produce`` waits when the segment writer's queue is full, and the
    metronome then skips the beats it missed, so a slow disk lowers the rate
    instead of growing a queue. Cancellation (the service shutting down) stops the
    loop at either await and propagates: only ``Exception`` is caught, never
    ``Cancelled``.
    """
    service = producer.service
    market = _market(producer)
    task_status.started()
    try:
        with Metronome(1.0 / service.config.rate) as metronome:
            while True:
                await producer.produce(market.step(producer.next_t, time.time()))
                await metronome.wait()
    except StoreError as exc:
        service.fail("simulator", f"stopped: {exc}")
    except Exception as exc:
        service.fail("simulator", f"{type(exc).__name__}: {exc}")
        log.exception("simulator crashed")
