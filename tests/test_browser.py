"""The Classify tab in a real browser: Debian's Chromium driven by Playwright.

Playwright cannot download its own browser here, so it launches the system ``chromium`` binary
(``apt-get install chromium``; ``.ci/run`` installs it). A missing browser or Playwright is a test
*failure* with the fix in the message, never a skip: CI must run this test.

Reuses the ``app``, ``server`` and ``image_files`` fixtures of ``tests/test_app.py``.
"""

from __future__ import annotations

import shutil
from urllib.parse import urlparse

import pytest

from test_app import app, app_files, image_files, server  # noqa: F401 (fixtures)

pytestmark = pytest.mark.browser

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("Chromium is not installed: run `apt-get install -y chromium` (Debian; .ci/run does "
                "it). Playwright cannot download its own browser here, so the system one is used.")


def test_classify_in_chromium(server, image_files, tmp_path):
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: pip install -r requirements-test.txt "
                    "(do not run `playwright install`; the system Chromium is used)")
    host = urlparse(server).hostname
    outside: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1800})
            page.on("request", lambda r: None if urlparse(r.url).hostname in (host, None)
                    or r.url.startswith(("data:", "blob:")) else outside.append(r.url))
            # not "networkidle": Gradio keeps a heartbeat connection open
            page.goto(server, wait_until="domcontentloaded")
            page.locator("#classify").wait_for(timeout=30_000)

            page.locator("input[type=file]").first.set_input_files(image_files["circle"])
            page.locator("#vocabulary textarea").fill("circle\nsquare\ntriangle")
            page.get_by_label("threshold").fill("-1000")
            page.locator("#classify").click()
            verdict = page.locator("#decision h2")
            verdict.wait_for(timeout=30_000)
            assert verdict.inner_text().strip() in ("circle", "square", "triangle")
            assert "≥ threshold" in page.locator("#decision").inner_text()
            page.locator(".js-plotly-plot").first.wait_for(timeout=30_000)  # the energy plot
            page.screenshot(path=str(tmp_path / "classify-accepted.png"), full_page=True)

            page.get_by_label("threshold").fill("1000000")
            page.locator("#classify").click()
            page.locator("#decision h2", has_text="unknown").wait_for(timeout=30_000)
            assert "< threshold" in page.locator("#decision").inner_text()
            page.screenshot(path=str(tmp_path / "classify-unknown.png"), full_page=True)
            page.goto("about:blank")  # closes the heartbeat stream, so the server stops at once
        finally:
            browser.close()
    assert (tmp_path / "classify-accepted.png").stat().st_size > 10_000
    assert not outside, f"the page contacted other hosts (the app must work offline): {outside}"
