"""The Classify tab in a real browser: Debian's Chromium driven by Playwright.

Playwright cannot download its own browser here, so it launches the system ``chromium`` binary
(``apt-get install chromium``; ``.ci/run`` installs it). A missing browser or Playwright is a test
*failure* with the fix in the message, never a skip: CI must run this test.

Reuses the ``app``, ``server`` and ``image_files`` fixtures of ``tests/test_app.py``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import urlparse

import gradio as gr
import pytest

from test_app import app, app_files, image_files, server  # noqa: F401 (fixtures)
from croft_app.ui import app as ui

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


SHOTS = Path(os.environ.get("CROFT_SHOTS", "")) if os.environ.get("CROFT_SHOTS") else None


def _shot(page, tmp_path, name: str) -> Path:
    """A full-page screenshot in ``tmp_path`` (and in ``$CROFT_SHOTS`` when set, to look at)."""
    path = tmp_path / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    if SHOTS is not None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"browser_{name}.png"), full_page=True)
    return path


def _open(browser, server, width: int, outside: list, errors: list):
    host = urlparse(server).hostname
    page = browser.new_page(viewport={"width": width, "height": 1200})
    page.on("request", lambda r: None if urlparse(r.url).hostname in (host, None)
            or r.url.startswith(("data:", "blob:")) else outside.append(r.url))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server, wait_until="domcontentloaded")
    page.locator("#classify").wait_for(timeout=60_000)
    return page


def _playwright():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed: pip install -r requirements-test.txt "
                    "(do not run `playwright install`; the system Chromium is used)")
    return sync_playwright()


@contextlib.contextmanager
def _chromium_pages(server) -> Iterator[Callable[[int], Any]]:
    """The system Chromium, headless; yields ``open_page(width)``. On a clean exit every page is
    left for about:blank (its heartbeat stream closes, so the server can stop at once), and the
    pages must not have contacted another host (the app works offline) or logged a console error."""
    outside, errors, pages = [], [], []

    def open_page(width: int):
        pages.append(_open(browser, server, width, outside, errors))
        return pages[-1]

    with _playwright() as p:
        browser = p.chromium.launch(executable_path=_chromium(), args=CHROMIUM_ARGS, headless=True)
        try:
            yield open_page
            for page in pages:
                page.goto("about:blank")
        finally:
            browser.close()
    assert not outside, f"the page contacted other hosts (the app must work offline): {outside}"
    assert not errors, f"console errors: {errors}"


def _type(box, text: str, attempts: int = 3) -> None:
    """Type into a box that has just appeared, and check the text stayed.

    A box inside an accordion opened a moment ago can still be mounting: text filled in then was
    lost in one of ~14 runs (the screenshot showed the empty box and the default verdict)."""
    box.wait_for(state="visible", timeout=30_000)
    for _ in range(attempts):
        box.fill(text)
        box.page.wait_for_timeout(500)  # let a late mount wipe it now rather than after Classify
        if box.input_value() == text:
            return
    raise AssertionError(f"the box did not keep {text!r} after {attempts} tries")


def test_classify_in_chromium(server, image_files, tmp_path):
    """Example click -> verdict; a typed threshold; an error clears the old verdict and says why
    in its place; Compare."""
    with _chromium_pages(server) as open_page:
        page = open_page(1300)
        page.locator("#examples .thumbnail-item").nth(1).click()  # the unseen shape (fixed examples here)
        page.locator("#decision h2").wait_for(timeout=60_000)
        assert "Decided by:" in page.locator("#decision").inner_text()
        page.locator("#score-plot .js-plotly-plot").wait_for(timeout=30_000)
        assert page.locator("#image img").count() == 1  # the example went into the image box
        _shot(page, tmp_path, "example")

        before = page.locator("#image img").get_attribute("src")
        page.locator("input[type=file]").first.set_input_files(image_files["circle"])
        page.wait_for_function(  # the upload has finished: the image box shows the new file
            "src => { const i = document.querySelector('#image img'); return i && i.src && i.src !== src; }",
            arg=before, timeout=30_000)
        page.locator("#vocabulary textarea").fill("circle\nsquare\ntriangle")
        page.get_by_text("threshold (optional)").click()
        box = page.locator("#threshold input, #threshold textarea").first
        assert not box.is_visible()  # issue 23 (5): the box belongs to the energy rule, hidden until chosen
        page.get_by_label("my energy threshold").check()
        page.wait_for_function("() => { const b = document.querySelector('#threshold input, #threshold textarea');"
                               " return b && b.value !== ''; }", timeout=10_000)
        suggested = float(box.input_value())  # a value on the energy's own scale, not blank
        assert "score" in page.locator("#threshold").inner_text() and suggested == suggested
        _both_widths(page, "energy_rule")
        _type(box, "1000000")
        page.locator("#classify").click()
        try:
            page.locator("#decision h2", has_text="unknown").wait_for(timeout=90_000)
        finally:
            _shot(page, tmp_path, "user_threshold")
        assert "below your threshold" in page.locator("#decision").inner_text()
        page.locator("#score-plot .js-plotly-plot").wait_for(timeout=30_000)
        assert "energy" in page.locator("#score-plot .xtitle").text_content()  # the plot: that rule's score
        page.get_by_label("automatic").check()  # back: the box goes, and its value with it
        box.wait_for(state="hidden", timeout=10_000)
        page.locator("#decision", has_text="inputs changed").wait_for(timeout=10_000)

        page.locator("#vocabulary textarea").fill("circl")  # one class: an error
        page.locator("#vocabulary textarea").press_sequentially("e")  # typed: fill() fires no .input
        page.locator("#classify").click()
        reason = "Enter at least two class names"
        page.locator(".toast-wrap").get_by_text(reason).first.wait_for(timeout=30_000)  # the toast
        page.locator("#decision h3", has_text="No result").wait_for(timeout=10_000)
        assert reason in page.locator("#decision").inner_text()  # and the panel says why: it stays
        assert page.locator("#decision h2").count() == 0  # the stale verdict is gone
        assert page.locator("#score-plot .js-plotly-plot").count() == 0
        assert page.locator("#preset input").input_value() == ""  # not the stale preset's name
        _shot(page, tmp_path, "error")

        page.locator("#vocabulary textarea").fill("circle, square, triangle")
        page.get_by_role("tab", name="Compare").click()
        page.locator("#compare").click()  # the Classify image was carried over
        page.locator("#card-b h3").wait_for(timeout=60_000)
        assert page.locator("#card-a h3").inner_text().startswith("A: zero-shot")
        page.locator("#compare-plot .js-plotly-plot").wait_for(timeout=30_000)
        page.locator("#compare-rule", has_text="Rule: the same for both models").wait_for(timeout=10_000)
        assert page.locator("#compare-threshold").count() == 0 or not page.locator("#compare-threshold").is_visible()
        _shot(page, tmp_path, "compare")


def test_lab_and_a_400px_page_in_chromium(server, tmp_path):
    """A two-model Lab run (table in %), and the Classify page at 400 px wide (a verdict, an error)."""
    with _chromium_pages(server) as open_page:
        page = open_page(1300)
        page.get_by_role("tab", name="Lab").click()
        for label, value in (("benchmark", "tiny"), ("compare with", "croft")):
            box = page.get_by_label(label)
            box.fill(value)
            box.press("Enter")
        page.locator("#lab-run").click()
        try:
            page.locator("#lab-table").get_by_text("covariate (mean)").wait_for(timeout=120_000)
            # the plots arrive with the table but plotly draws them a moment later: wait for both
            for plot in ("#lab-hist", "#lab-roc"):
                page.locator(f"{plot} .js-plotly-plot").wait_for(timeout=30_000)
            page.locator("#lab-hist").scroll_into_view_if_needed()
        finally:
            _shot(page, tmp_path, "lab")
        assert page.locator("#lab-table").get_by_text("croft: accuracy %").count() >= 1
        rule = page.locator("#lab-rule").inner_text()  # issue 21: the dashed thresholds' rule, named
        assert "the same for both models" in rule and "do not depend on it" in rule, rule
        for plot in ("#lab-hist", "#lab-roc"):
            assert page.locator(f"{plot} .js-plotly-plot").count() == 1, f"{plot} was not drawn"
        # two models: a histogram row each (not one overlaid crowd), and the ROC legend names both
        assert page.locator("#lab-hist .cartesianlayer .subplot").count() == 2
        assert page.locator("#lab-hist .legend .traces").count() == 4  # known, new styles, unseen, threshold
        legend = page.locator("#lab-roc .legend").text_content()  # SVG: no inner_text
        assert "zero-shot" in legend and "croft" in legend and "AUROC" in legend, legend
        page.goto("about:blank")

        narrow = open_page(400)
        narrow.locator("#examples .thumbnail-item").first.click()
        narrow.locator("#decision h2").wait_for(timeout=60_000)
        narrow.locator("#score-plot .js-plotly-plot").wait_for(timeout=30_000)
        width = narrow.evaluate("document.documentElement.scrollWidth")
        assert width <= 420, f"the page scrolls sideways at 400 px ({width} px wide)"
        _shot(narrow, tmp_path, "classify_400px")

        narrow.locator("#vocabulary textarea").fill("")  # an empty vocabulary: an error
        narrow.locator("#classify").click()
        narrow.locator("#decision h3", has_text="No result").wait_for(timeout=30_000)
        assert "Enter at least two class names" in narrow.locator("#decision").inner_text()
        assert narrow.locator("#decision h2").count() == 0
        width = narrow.evaluate("document.documentElement.scrollWidth")
        assert width <= 420, f"the error scrolls the page sideways at 400 px ({width} px wide)"
        narrow.locator("#decision").scroll_into_view_if_needed()
        _shot(narrow, tmp_path, "error_400px")


PLOTLY_CHUNKS = "() => performance.getEntriesByType('resource').filter(e => e.name.includes('/PlotlyPlot-')).length"


def test_train_curves_are_ready_before_the_train_tab_opens(server):
    """plotly.js loads in the page's idle time after the first screen (the Train tab is not opened),
    and is the very module the Train tab's curves then use: fetched once, the curves drawn at once."""
    with _chromium_pages(server) as open_page:
        page = open_page(1300)
        page.wait_for_function("() => !!window.Plotly", timeout=60_000)  # the Train tab never opened
        assert page.evaluate(PLOTLY_CHUNKS) == 1
        page.get_by_role("tab", name="Train").click()
        page.locator("#train-loss .js-plotly-plot").wait_for(timeout=5_000)
        assert page.evaluate(PLOTLY_CHUNKS) == 1  # Gradio's own import found it loaded


def test_train_preload_names_gradios_plotly_chunk():
    from croft_app.ui.train import preload_plotly_head

    head = preload_plotly_head()
    chunk = re.search(r'"(PlotlyPlot-[\w-]+\.js)"', head)
    assert chunk, head
    assert (Path(gr.__file__).parent / "templates" / "frontend" / "assets" / chunk.group(1)).is_file()


@pytest.mark.slow
def test_train_tab_in_chromium(server, tmp_path):
    """Train on a benchmark in quick settings; the new model is then selected in Classify's menu,
    and listed when the menu is opened (and in Compare's menus)."""
    with _chromium_pages(server) as open_page:
        page = open_page(1300)
        page.get_by_role("tab", name="Train").click()
        page.get_by_text("Advanced").click()
        page.get_by_label("steps").fill("20")
        page.get_by_label("shots").fill("2")
        page.get_by_role("button", name="Train", exact=True).click()
        try:
            page.get_by_text("is ready").first.wait_for(timeout=300_000)
        finally:
            _shot(page, tmp_path, "train")
        name = page.get_by_label("new model").input_value()
        assert name.startswith("CRoFT"), name
        # the curves reach the run's last epoch: its last points come with the result, not a redraw
        page.wait_for_function("""() => { const s = window.__croftCurves;
            const gd = document.querySelector('#train-loss .js-plotly-plot');
            const x = gd && gd.data && gd.data[0] ? gd.data[0].x : [];
            return !!s && s.loss.length > 1 && x.length > 1 && x[x.length - 1] === s.loss[s.loss.length - 1][0]; }""",
                               timeout=15_000)
        page.get_by_role("tab", name="Classify").click()
        menu = page.get_by_label("model", exact=True).first  # Classify's model menu
        assert menu.input_value() == name  # the new model is selected, ready to classify with
        _shot(page, tmp_path, "train_then_classify")
        menu.click()  # the opened list offers it too (not only the box's text)
        listed = page.get_by_role("listbox").get_by_role("option")
        try:
            listed.first.wait_for(timeout=10_000)
            options = [o.get_attribute("aria-label") for o in listed.all()]
        finally:
            _shot(page, tmp_path, "train_classify_menu_open")
        assert name in options and "zero-shot" in options, options
        page.keyboard.press("Escape")
        page.get_by_role("tab", name="Compare").click()
        page.get_by_label("model A", exact=True).click()
        listed.first.wait_for(timeout=10_000)
        assert name in [o.get_attribute("aria-label") for o in listed.all()]  # listed, not selected
        page.keyboard.press("Escape")
        assert page.get_by_label("model A", exact=True).input_value() == "zero-shot"
        assert page.get_by_label("model B", exact=True).input_value() == name


# ---------------------------------------------------------------------------------------------
# Issue 23: what a visitor tripped over (each test failed on the code before the fix)
# ---------------------------------------------------------------------------------------------

SHOTS_23 = Path("/tmp/shots-23")


def _both_widths(page, name: str) -> None:
    """Screenshots of the current state at 1400 and 400 px (to look at), in /tmp/shots-23."""
    SHOTS_23.mkdir(parents=True, exist_ok=True)
    for width in (1400, 400):
        page.set_viewport_size({"width": width, "height": 1100})
        page.wait_for_timeout(300)
        page.screenshot(path=str(SHOTS_23 / f"{name}_{width}.png"), full_page=True)
    page.set_viewport_size({"width": 1400, "height": 1100})


def _progress_text(page, where: str) -> str:
    """The progress text Gradio draws over the element ``where`` ('' while none is shown)."""
    return page.evaluate("""sel => { const el = document.querySelector(sel); if (!el) return '';
        const wrap = el.querySelector('.wrap:not(.hide), .progress-text, .progress-level');
        return wrap ? wrap.innerText : ''; }""", where)


def test_lab_progress_shows_on_the_table_from_the_first_second_and_moves(server, monkeypatch):
    """Issue 23 (1): the Lab's progress (a stage name and a moving time) appears on the results
    table, where the visitor looks, within about a second; not inside the closed JSON accordion."""
    slow = ui.Handlers._run_benchmark

    def slowed(self, name, classifier, seed, tick):
        tick.stage(0.0, 0.5, "rendering the test images")
        time.sleep(4)  # a stage that reports nothing itself, like rendering a benchmark
        return slow(self, name, classifier, seed, tick)

    monkeypatch.setattr(ui.Handlers, "_run_benchmark", slowed)
    with _chromium_pages(server) as open_page:
        page = open_page(1400)
        page.get_by_role("tab", name="Lab").click()
        box = page.get_by_label("benchmark")
        box.fill("tiny")
        box.press("Enter")
        page.locator("#lab-run").click()
        started = time.monotonic()
        page.wait_for_function("() => (document.querySelector('#lab-table')?.innerText || '')"
                               ".includes('rendering the test images')", timeout=10_000, polling=50)
        first = time.monotonic() - started
        stage = re.compile(r"rendering the test images — (\d+) s")  # the stage's own clock (not Gradio's)
        before = stage.search(page.locator("#lab-table").inner_text())
        page.wait_for_timeout(1600)
        after = stage.search(page.locator("#lab-table").inner_text())
        _both_widths(page, "lab_progress")
        assert before and after and int(after[1]) > int(before[1]), f"the stage did not move: {before}, {after}"
        assert first < 3, f"the first progress appeared {first:.1f} s after the click"
        page.locator("#lab-table").get_by_text("covariate (mean)").wait_for(timeout=120_000)
        _both_widths(page, "lab_results")
        page.set_viewport_size({"width": 400, "height": 1100})
        page.wait_for_timeout(300)
        header = page.locator("#lab-table th").nth(1).bounding_box()  # it was ~600 px tall at 400 px
        assert header["height"] < 120, f"the Lab table's header is {header['height']:.0f} px tall at 400 px"


def _upload_image(page, path: str) -> None:
    before = page.locator("#image img").get_attribute("src") if page.locator("#image img").count() else ""
    page.locator("#image input[type=file]").set_input_files(path)
    page.wait_for_function(
        "src => { const i = document.querySelector('#image img'); return i && i.src && i.src !== src; }",
        arg=before, timeout=30_000)


def _choose(page, label: str, option: str, nth: int = 0) -> None:
    menu = page.get_by_label(label, exact=True).nth(nth)
    menu.click()
    page.get_by_role("listbox").get_by_role("option", name=option, exact=True).click()


def test_stale_verdicts_go_and_a_model_brings_its_classes(server, app, image_files):
    """Issue 23 (4, 6): a new upload or a typed vocabulary clears the previous verdict (it said
    "circle 87%" beside a new image or "cat, dog, car"); choosing a trained model fills the
    vocabulary with its own classes; Compare has the preset menu."""
    croft = next(n for n in app.RESOURCES.registry.names() if n not in ("zero-shot", app.RESOURCES.default_model))
    with _chromium_pages(server) as open_page:
        page = open_page(1400)
        page.locator("#examples .thumbnail-item").first.click()
        page.locator("#decision h2").wait_for(timeout=60_000)
        _upload_image(page, image_files["circle"])
        page.locator("#decision", has_text="inputs changed").wait_for(timeout=15_000)
        assert page.locator("#decision h2").count() == 0 and page.locator("#score-plot .js-plotly-plot").count() == 0
        _both_widths(page, "stale_after_upload")

        page.locator("#classify").click()
        page.locator("#decision h2").wait_for(timeout=60_000)
        page.locator("#vocabulary textarea").press_sequentially(", dog")
        page.locator("#decision", has_text="inputs changed").wait_for(timeout=15_000)
        assert page.locator("#decision h2").count() == 0

        page.locator("#vocabulary textarea").fill("cat, dog, car")
        _choose(page, "model", croft)
        page.wait_for_function("() => document.querySelector('#vocabulary textarea').value === "
                               "'circle, square, triangle'", timeout=10_000)
        _both_widths(page, "model_fills_vocabulary")

        page.get_by_role("tab", name="Compare").click()
        page.locator("#compare-preset").wait_for(timeout=10_000)
        _choose(page, "preset", "shapes", nth=1)
        page.wait_for_function("() => document.querySelector('#compare-vocabulary textarea').value"
                               ".startsWith('circle, square')", timeout=10_000)
        _both_widths(page, "compare_preset")


LONG_TASKS_JS = """() => { window.__longTasks = []; new PerformanceObserver(list => window.__longTasks.push(
    ...list.getEntries().map(e => e.duration))).observe({type: 'longtask'}); }"""  # main thread blocked > 50 ms


def _last_drawn_epoch(page) -> float:
    """The last epoch on the live loss curve (0 before it is drawn)."""
    return page.evaluate("""() => { const gd = document.querySelector('#train-loss .js-plotly-plot');
        const x = gd && gd.data && gd.data[0] ? gd.data[0].x : []; return x.length ? x[x.length - 1] : 0; }""")


def _train(page, steps: int) -> None:
    page.get_by_label("steps").fill(str(steps))
    page.get_by_role("button", name="Train", exact=True).click()


SHOWS_FILE = "([box, name]) => (document.querySelector(box)?.textContent || '').replace(/\\s+/g, '').includes(name)"


def _upload(page, box: str, path: Path, attempts: int = 3) -> None:
    """Put ``path`` into the file component ``box`` and wait until the component lists it, on the
    conditions in between rather than one wall bound: the browser sends the upload (if none leaves
    the page within 10 s, the file is set again: a guard, not seen to be needed), the server
    answers it (as long as a loaded server takes), then the component lists the file (client-side
    only: seconds).

    The listed name is split in two elements ("three-shapes" and ".zip", whitespace between in
    the text), so the former check, ``has_text="three-shapes.zip"``, never matches the listing
    (it still failed 30 s after the server's answer) and passed only if it caught the moment of the
    upload itself, when the name is shown whole: a loaded machine could let that moment pass
    unseen (issue 23's flake, "zip name not shown within 30 s"). The listing is matched instead,
    whitespace ignored."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    def is_upload(request) -> bool:
        return "/gradio_api/upload" in request.url and request.method == "POST"

    for _ in range(attempts):
        try:
            with page.expect_request(is_upload, timeout=10_000) as sent:
                page.locator(f"{box} input[type=file]").set_input_files(str(path))
        except PlaywrightTimeout:
            continue  # no upload left the page: the input was replaced; set the file again
        response = sent.value.response()  # waits for the server's answer
        assert response is not None and response.ok, f"the upload was refused: {response and response.status}"
        page.wait_for_function(SHOWS_FILE, arg=[box, path.name], timeout=10_000)
        return
    raise AssertionError(f"no upload was sent after {attempts} tries to set {path.name} in {box}")


@pytest.mark.slow
def test_train_uses_the_shown_source_says_what_it_trained_on_and_stops(server, tmp_path):
    """Issue 23 (2, 3, 4, 6): only the chosen source's inputs are shown and used; the summary says
    what the run trained on, warns about a tiny validation set, and names the model by the shots
    it had (2 per class, not the 16 asked for); the new model fills Classify's vocabulary; a failed
    run leaves none of the previous run's outputs; a long run keeps the page responsive, Stop acts
    within seconds, and the final status is the last word."""
    from test_finetune import make_zip

    upload = make_zip(tmp_path / "three-shapes.zip", per_class=3)
    with _chromium_pages(server) as open_page:
        page = open_page(1400)
        page.get_by_role("tab", name="Train").click()
        assert page.locator("#train-benchmark").is_visible() and not page.locator("#train-zip").is_visible()
        page.get_by_label("zip of class folders").check()
        page.locator("#train-zip").wait_for(state="visible", timeout=10_000)
        assert not page.locator("#train-benchmark").is_visible() and not page.locator("#train-hub").is_visible()
        _upload(page, "#train-zip", upload)
        page.get_by_text("Advanced").click()
        _train(page, 20)
        status = page.locator("#train-status")
        status.get_by_text("is ready").wait_for(timeout=180_000)
        text = status.inner_text()
        _both_widths(page, "train_done")
        assert "three-shapes" in text and "3 classes" in text and "2 training images per class" in text, text
        assert "Careful" in text, text
        name = page.get_by_label("new model").input_value()
        assert "2-shot" in name and "16-shot" not in name, name
        page.get_by_role("tab", name="Classify").click()
        page.wait_for_function("() => document.querySelector('#vocabulary textarea').value === "
                               "'circle, square, triangle'", timeout=10_000)
        page.get_by_role("tab", name="Train").click()

        page.get_by_label("Hub dataset").first.check()  # a failed run: nothing of the last one stays
        page.locator("#train-hub textarea, #train-hub input").first.fill("org/no-such-dataset")
        _train(page, 20)
        status.get_by_text("Training failed").wait_for(timeout=60_000)
        assert page.get_by_label("new model").input_value() == ""
        assert page.locator("#train-loss .js-plotly-plot").count() == 0
        _both_widths(page, "train_failed")

        page.get_by_label("zip of class folders").check()
        page.evaluate(LONG_TASKS_JS)
        _train(page, 3000)  # a long run: the page must stay responsive and Stop must act at once
        status.get_by_text("epoch").wait_for(timeout=120_000)
        first = _last_drawn_epoch(page)
        page.wait_for_timeout(3000)
        shown = int(re.search(r"epoch (\d+) of", status.inner_text())[1])
        page.wait_for_timeout(300)
        drawn = _last_drawn_epoch(page)
        # the live curves grow by the new points only (sent with each status, appended here)
        assert first < drawn and drawn >= shown, (first, drawn, shown)
        t0 = time.monotonic()
        page.get_by_role("button", name="Stop").click()
        status.get_by_text("stopped early").wait_for(timeout=20_000)
        stopped_after = time.monotonic() - t0
        page.wait_for_timeout(2000)
        final = status.inner_text()
        _both_widths(page, "train_stopped")
        # the page's own main thread, not wall time (the server trains on the same cores): no task
        # blocked it for a second (redrawing the whole curves did, up to 1.6 s at a time)
        blocked = page.evaluate("() => window.__longTasks")
        assert max(blocked, default=0) < 1000, f"the page was blocked for {max(blocked) / 1000:.1f} s at once: {blocked}"
        assert stopped_after < 5, f"Stop took {stopped_after:.1f} s"
        assert "stopped early" in final and "stopping after" not in final.lower(), final


def test_layout_at_400px_and_a_non_image_png(server, image_files):
    """Issue 23 (8): example captions sit under their thumbnails (they covered them), the batch
    table's headers stay whole words (they wrapped letter by letter at 400 px), and a non-image
    renamed .png is explained in the panel without a server error (it made a 500)."""
    with _chromium_pages(server) as open_page:
        page = open_page(400)
        failures = []
        page.on("response", lambda r: failures.append(r.url) if r.status >= 500 else None)
        item = page.locator("#examples .thumbnail-item").first
        img, caption = item.locator("img").bounding_box(), item.locator(".caption-label").bounding_box()
        assert caption["y"] >= img["y"] + img["height"] - 1, (img, caption)
        page.locator("#batch-gallery").scroll_into_view_if_needed()
        page.locator("input[type=file][multiple]").first.set_input_files([image_files["circle"], image_files["gray"]])
        page.get_by_role("button", name="Classify all").click()
        page.locator("#batch-gallery .thumbnail-item").first.wait_for(timeout=60_000)
        header = page.locator("#batch-table th").first.bounding_box()
        assert header["height"] < 80, f"the table's header is {header['height']:.0f} px tall"
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 420, f"the page scrolls sideways at 400 px ({width} px wide)"
        _both_widths(page, "batch")

        page.locator("#image input[type=file]").set_input_files(image_files["text"])
        page.wait_for_timeout(1500)
        page.locator("#classify").click()
        page.locator("#decision h3", has_text="No result").wait_for(timeout=30_000)
        _both_widths(page, "non_image")
        assert not failures, f"server errors: {failures}"


_CUT_MENUS = """names => Array.from(document.querySelectorAll('.model-menu input')).filter(i => i.offsetParent)
    .flatMap(i => { const shown = i.value, cut = [];
        for (const name of [shown, ...names]) {
            i.value = name;  // the box's own text only: no event, the app does not see it
            if (i.scrollWidth > i.clientWidth) cut.push([i.getAttribute('aria-label'), name, i.scrollWidth, i.clientWidth]);
        }
        i.value = shown; return cut; })"""


def test_model_names_are_whole_in_the_menus_at_laptop_and_phone_widths(server):
    """Issue 23 (8): a long model name ("CRoFT · shapes · painting held out", or a trained model's
    "CRoFT · my-data · 16-shot") fits its menu box in Classify, Compare and the Lab at 1280x800 and
    390x844 (Compare's side-by-side menus cut it at 141 px of 197)."""
    from croft_app.service.finetune import display_name
    from croft_app.ui.common import SHIPPED_NAME

    names = [SHIPPED_NAME, display_name("croft", "three-shapes", 16)]
    with _chromium_pages(server) as open_page:
        page = open_page(1280)
        for width, height in ((1280, 800), (390, 844)):
            page.set_viewport_size({"width": width, "height": height})
            for tab in ("Classify", "Compare", "Lab"):
                page.get_by_role("tab", name=tab).click()
                page.locator(".model-menu input").locator("visible=true").first.wait_for(timeout=10_000)
                page.wait_for_timeout(300)  # the layout settles after the tab is shown
                menus = page.locator(".model-menu input").locator("visible=true")
                assert menus.count() >= 1, f"no model menu on {tab}"
                menus.last.scroll_into_view_if_needed()
                SHOTS_23.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(SHOTS_23 / f"model_menus_{tab}_{width}.png"))
                cut = page.evaluate(_CUT_MENUS, names)
                assert not cut, f"model names cut at {width} px on {tab} (menu, name, text px, box px): {cut}"
