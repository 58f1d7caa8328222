"""The built-in simulator as a source: ``Market.step`` on a timer, into the producer.

Owns nothing but its loop. The market's randomness is a function of the seed and
``t``, so each step is seeded with :attr:`Producer.next_t`, the ``t``
:meth:`Producer.produce` then gives that tick: nothing yields between the two,
and with ``source=sim`` the simulator is the only caller of ``produce``. On a
restart the market resumes from the newest stored tick (``History.latest``).
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
