"""The Quart app's lifespan runs under tickcast serve and under stock Hypercorn alike."""

from __future__ import annotations

import pytest
import trio
import trio.lowlevel
from quart_trio import QuartTrio

from tickcast.errors import TickcastError
from tickcast.web.app import create_app
from tickcast.web.lifespan import app_lifespan


async def test_hooks_run_and_app_nursery_exists_then_shutdown_hooks_run() -> None:
    app = create_app()
    seen: list[str] = []

    @app.before_serving
    async def started() -> None:
        seen.append("startup")

    @app.after_serving
    async def stopped() -> None:
        seen.append("shutdown")

    with trio.fail_after(10):
        async with app_lifespan(app):
            assert seen == ["startup"]
            assert isinstance(app.nursery, trio.Nursery)
    assert seen == ["startup", "shutdown"]


async def test_shutdown_hooks_run_when_the_block_is_cancelled() -> None:
    app = create_app()
    seen: list[str] = []

    @app.after_serving
    async def stopped() -> None:
        await trio.lowlevel.checkpoint()  # a hook that awaits still completes under cancellation
        seen.append("shutdown")

    with trio.fail_after(10), trio.CancelScope() as scope:
        async with app_lifespan(app):
            scope.cancel()
            await trio.sleep_forever()
    assert seen == ["shutdown"]


async def test_a_failing_startup_hook_is_an_error() -> None:
    app = QuartTrio("broken")

    @app.before_serving
    async def broken() -> None:
        raise RuntimeError("no database")

    with trio.fail_after(10), pytest.raises(TickcastError, match="no database"):
        async with app_lifespan(app):
            pass
