"""``/docs`` in a real browser (Debian's Chromium driven by Playwright), offline.

Swagger UI must load from the server alone (docs/api.md: no CDN): every request the
page makes to anything but the server is refused and recorded, and the test fails
if there was one. Then it does what a person does: open ``GET /incremental``,
"Try it out", "Execute", and read a 200 with ticks in ``data``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Route, sync_playwright

from conftest import tickcast_process
from test_dashboard import CHROMIUM, FLAGS


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield browser
        browser.close()


def test_docs_page_works_offline_and_tries_incremental(browser: Browser, tmp_path: Path) -> None:
    with tickcast_process(tmp_path, "--agents", "2") as srv:
        origin = srv.url("/")
        outside: list[str] = []
        errors: list[str] = []

        def only_the_server(route: Route) -> None:
            if route.request.url.startswith(origin):
                route.continue_()
            else:
                outside.append(route.request.url)
                route.abort()

        page = browser.new_page()
        page.route("**/*", only_the_server)
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.goto(srv.url("/docs"))
        op = page.locator("#operations-default-get_incremental")
        op.wait_for(timeout=15000)
        assert "tickcast" in page.locator(".info .title").inner_text()
        op.locator(".opblock-summary").click()
        op.locator(".try-out__btn").click()
        op.locator("input[placeholder='limit']").fill("3")
        op.locator(".execute").click()
        status = op.locator(".live-responses-table .response .response-col_status")
        status.wait_for(timeout=15000)
        assert status.inner_text().strip() == "200"
        body = op.locator(".live-responses-table .response-col_description pre").first.inner_text()
        assert '"data"' in body
        assert '"count": 3' in body
        page.close()
    assert outside == []
    assert errors == []
