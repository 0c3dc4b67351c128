"""Fine-tuning from an upload to a usable model, on the embedded backbone (issue 13).

A zip of 10 shape classes (rendered by the embedded world, 20 photo images per class) goes through
what ``/finetune`` does: the zip is checked and extracted, 16 shots per class are drawn with a
seeded held-out validation part, features are extracted, CRoFT trains (200 steps), the threshold is
calibrated, and the model is wrapped as a classifier and classifies one image. Measured twice in one
process: with a cold feature cache, then with the features cached (the same upload again); once
with the upload default (4 augmented views per training image) and once with plain views (the
embedded world's small centred shapes do not survive random crops, see croft_core.data.benchmarks.shapes).

    python bench/finetune.py            # targets: <= 60 s cold, <= 15 s cached, on 2 cores
    BENCH_DEVICE=cuda python bench/finetune.py
    BENCH_BROWSER=1 python bench/finetune.py   # the browser path (issue 23), see below

Prints both times and the validation accuracy.

With ``BENCH_BROWSER=1`` it serves the app (the embedded backbone) on 127.0.0.1 and trains on the
same zip through the Train tab in headless Chromium (Playwright, the system ``chromium``) and
through ``/finetune`` (``gradio_client``), features cached for both (one warm-up run first), and
prints the browser / API ratio (target <= 1.5x) and the time from a click to the first visible
progress for Train, the Lab and "Classify all" (target <= 1 s). ``BENCH_WARM_PAGE=1`` first clicks
an example (its plot loads plotly.js, as for a visitor who classified before training). Before the
runs it times the first screen on new pages with and without the app's idle preload of plotly.js
(turned off in the page by ``window.__croftPlotly = 'off'``).

It also prints the bytes of each live update of the Train tab's run as Gradio streams it (after its
own diff against the previous update), and, for the same updates in the same run, what an update
that re-sent the whole curves would have been (the curves of the ``/finetune`` run's history up to
that update's epoch): the curves are drawn once, then only new points are sent (issue 23).
"""

from __future__ import annotations

import io
import logging
import json
import os
import re
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from croft_core.clip.backbones import load_backbone  # noqa: E402
from croft_app.service.finetune import FinetuneRequest, finetune  # noqa: E402
from croft_app.service.classifier import OpenSetClassifier  # noqa: E402
from croft_core.data.synth.world import ID_CLASSES, render  # noqa: E402
from croft_app.service.uploads import extract_zip  # noqa: E402
from croft_app.service.userdata import upload_data  # noqa: E402

SHOTS, PER_CLASS, STEPS = 16, 20, 200


def make_upload(path: Path) -> Path:
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w") as zf:
        for c in ID_CLASSES:
            for i in range(PER_CLASS):
                buf = io.BytesIO()
                render(c, "photo", rng, size=64).save(buf, "PNG")
                zf.writestr(f"my-shapes/{c}/{i}.png", buf.getvalue())
    return path


def upload_to_model(backbone, upload: Path, work: Path, cache: Path, augment: bool) -> tuple[float, float]:
    t0 = time.perf_counter()
    images = extract_zip(upload, work)
    data = upload_data(images, "my-shapes", shots=SHOTS, seed=1, max_images=2000, max_classes=100)
    data.augment = augment
    result = finetune(backbone, data, FinetuneRequest(steps=STEPS), cache_dir=cache)
    classifier = OpenSetClassifier(backbone, result.model, name=result.name)
    classifier.classify([data.val.image(0)], list(data.classnames), None)
    images.cleanup()
    return time.perf_counter() - t0, result.results["val_accuracy"]


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    device = os.environ.get("BENCH_DEVICE", "cpu")  # BENCH_DEVICE=cuda on a GPU machine
    backbone = load_backbone("embedded", device=device)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        upload = make_upload(tmp / "my-shapes.zip")
        print(f"upload -> usable model, {SHOTS}-shot x {len(ID_CLASSES)} classes, CRoFT, {STEPS} steps, "
              f"{torch.get_num_threads()} threads, device {device}")
        for augment, what in ((True, "4 augmented views (the upload default)"),
                              (False, "plain views (as the shapes benchmark trains)")):
            cache = tmp / f"cache-{augment}"
            cold, acc = upload_to_model(backbone, upload, tmp / f"a{augment}", cache, augment)
            warm, acc2 = upload_to_model(backbone, upload, tmp / f"b{augment}", cache, augment)
            print(f"  {what}:")
            print(f"    with feature extraction: {cold:6.1f} s (target <= 60 s)  val accuracy {acc:.3f}")
            print(f"    features cached:         {warm:6.1f} s (target <= 15 s)  val accuracy {acc2:.3f}")


def _first_progress(page, click: str, where: str) -> float:
    """Seconds from clicking ``click`` to a visible progress bar or status text over ``where``."""
    page.locator(click).click()
    t0 = time.perf_counter()
    page.wait_for_function("sel => { const el = document.querySelector(sel); return !!el && ("
                           "!!el.querySelector('.progress-text, .progress-level, .eta-bar, .meta-text') || "
                           "/Starting|Checking|Encoding|Training/.test(el.innerText)); }",
                           arg=where, timeout=60_000, polling=20)
    return time.perf_counter() - t0


LONG_TASKS_JS = """() => { window.__longTasks = []; new PerformanceObserver(list => window.__longTasks.push(
    ...list.getEntries().map(e => e.duration))).observe({type: 'longtask'}); }"""


def _browser_train(page, upload: Path, wait_for_tab: bool) -> tuple[float, float, float]:
    """The Train tab on the zip: (seconds to the first progress, seconds to "is ready", seconds from
    opening the tab to its empty curves drawn, i.e. plotly.js loaded); the page's long tasks (the main
    thread blocked over 50 ms) during the run are kept in ``window.__longTasks``. ``wait_for_tab``:
    click Train once the tab's curves are drawn, else as soon as the form is filled."""
    t0 = time.perf_counter()
    page.get_by_role("tab", name="Train").click()
    page.get_by_label("zip of class folders").check()
    page.locator("#train-zip input[type=file]").set_input_files(str(upload))
    page.locator("#train-zip", has_text=upload.name).wait_for(timeout=60_000)
    page.get_by_text("Advanced").click()
    page.get_by_label("steps").fill(str(STEPS))
    drawn = page.locator("#train-loss .js-plotly-plot")
    if wait_for_tab:
        drawn.wait_for(timeout=120_000)
    tab = time.perf_counter() - t0 if drawn.count() else float("nan")  # nan: not drawn at the click
    page.evaluate(LONG_TASKS_JS)
    t0 = time.perf_counter()
    first = _first_progress(page, "#train-run", "#train-status")
    page.locator("#train-status").get_by_text("is ready").wait_for(timeout=600_000)
    return first, time.perf_counter() - t0, tab


def _record_train_updates() -> list[tuple[str, int]]:
    """(status, bytes) of each streamed update of the Train tab's run, as Gradio sends it (the
    output data after its diff against the previous update, as JSON)."""
    from gradio.blocks import Blocks

    sizes, original = [], Blocks.handle_streaming_diffs

    def recording(self, block_fn, data, session_hash, run, final, simple_format=False):
        status = data[0] if data and isinstance(data[0], str) else ""
        out = original(self, block_fn, data, session_hash, run, final, simple_format)
        if getattr(block_fn.fn, "__name__", "") == "train_stream" and not final:
            sizes.append((status, len(json.dumps(out, default=str))))
        return out

    Blocks.handle_streaming_diffs = recording
    return sizes


def _record_run_seconds() -> list[float]:
    """Server seconds of each training run (TrainHandlers.run_events, from its call to its result)."""
    from croft_app.ui.train import TrainHandlers

    seconds, original = [], TrainHandlers.run_events

    def timed(self, *args, **kwargs):
        t0 = time.perf_counter()
        for event in original(self, *args, **kwargs):
            if event["stage"] == "done":
                seconds.append(time.perf_counter() - t0)
            yield event

    TrainHandlers.run_events = timed
    return seconds


def _update_bytes(sizes: list[tuple[str, int]], history: list[dict]) -> str:
    """The live updates' bytes now, and what whole curves up to each update's epoch would weigh."""
    import gradio as gr

    from croft_app.ui.train import _curves

    def whole(epoch: int) -> int:
        plots = [gr.Plot().postprocess(f).model_dump() for f in _curves(history[:epoch])]
        return len(json.dumps(plots))

    live = [(int(m[1]), n) for text, n in sizes if (m := re.search(r"epoch (\d+) of", text))]
    if len(live) < 2:
        return f"  live updates: {len(live)} (too few to compare)"
    later = [n for _, n in live[1:]]  # the first update draws the curves (a few points)
    before = [whole(e) for e, _ in live[1:]]
    return (f"  live updates of the Train tab's run: {len(live)}; bytes each after the first: mean "
            f"{np.mean(later):.0f}, max {max(later)} (first {live[0][1]}, last {later[-1]}); whole curves "
            f"at the same epochs (as before): mean {np.mean(before):.0f}, max {max(before)} (last "
            f"{before[-1]}); ratio whole / new points {np.mean(before) / np.mean(later):.1f}x (mean), "
            f"{before[-1] / later[-1]:.1f}x (last update)")


def _fresh_page(browser, url: str):
    """A new page of the app (plotly.js not loaded yet), or warm with BENCH_WARM_PAGE=1."""
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.goto(url)
    page.locator("#classify").wait_for(timeout=120_000)
    if os.environ.get("BENCH_WARM_PAGE"):  # a visitor who clicked an example first: plotly.js loaded
        page.locator("#examples .thumbnail-item").first.click()
        page.locator("#score-plot .js-plotly-plot").wait_for(timeout=120_000)
    return page


def _first_screen(browser, url: str, preload: bool) -> tuple[float, float, float, float]:
    """A new page: (seconds to the first screen, i.e. ``#classify`` shown; then, 1 s later, seconds
    from a click on the Compare tab to its examples shown, and from a click on Classify's first
    example to its plot drawn; the longest main-thread block in the 8 s after the first screen).
    ``preload=False`` turns the app's idle preload of plotly.js off."""
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.add_init_script(LONG_TASKS_JS.replace("() => {", "(() => {", 1) + ")();"
                         + ("" if preload else "window.__croftPlotly = 'off';"))
    t0 = time.perf_counter()
    page.goto(url)
    page.locator("#classify").wait_for(timeout=120_000)
    shown = time.perf_counter()
    page.wait_for_timeout(1000)
    t1 = time.perf_counter()
    page.get_by_role("tab", name="Compare").click()
    page.locator("#compare-examples").wait_for(timeout=60_000)
    compare = time.perf_counter() - t1
    page.get_by_role("tab", name="Classify").click()
    t1 = time.perf_counter()
    page.locator("#examples .thumbnail-item").first.click()
    page.locator("#score-plot .js-plotly-plot").wait_for(timeout=120_000)
    example = time.perf_counter() - t1
    page.wait_for_timeout(max(0.0, 8 - (time.perf_counter() - shown)) * 1000)
    longest = max(page.evaluate("() => window.__longTasks"), default=0) / 1000
    page.close()
    return shown - t0, compare, example, longest


def browser_main() -> None:
    """The Train tab in Chromium vs ``/finetune`` on the same server, and click-to-progress times.

    ``BENCH_REPEAT`` rounds (default 3), each a ``/finetune`` run then the same run on a new page,
    so that both sides see the same load (the machine is shared); the median ratio is the result."""
    from gradio_client import Client, handle_file
    from playwright.sync_api import sync_playwright

    from croft_app.ui.app import create_app, launch

    sizes, server = _record_train_updates(), _record_run_seconds()
    demo, resources = create_app()
    launch(demo, resources, prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    url, rounds = demo.local_url, []
    with tempfile.TemporaryDirectory() as tmp:
        upload = make_upload(Path(tmp) / "my-shapes.zip")
        client = Client(url, verbose=False)
        client.predict(handle_file(str(upload)), "croft", SHOTS, 1, STEPS, api_name="/finetune")  # warm-up
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", headless=True,
                                        args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            screens = [(preload, *_first_screen(browser, url, preload))
                       for preload in [False, True] * int(os.environ.get("BENCH_REPEAT", "3"))]
            for wait_for_tab in [False, True] * int(os.environ.get("BENCH_REPEAT", "3")):
                t0 = time.perf_counter()
                history = client.predict(handle_file(str(upload)), "croft", SHOTS, 1, STEPS,
                                         api_name="/finetune")["history"]
                api = time.perf_counter() - t0
                del sizes[:]  # the bytes of the last round's updates
                page = _fresh_page(browser, url)
                train_first, ui, tab = _browser_train(page, upload, wait_for_tab)
                rounds.append((wait_for_tab, api, ui, tab, page.evaluate("() => window.__longTasks")))
            page.get_by_role("tab", name="Classify").click()
            page.locator("input[type=file][multiple]").first.set_input_files(_images(Path(tmp)))
            batch_first = _first_progress(page, "#classify-all", "#batch-gallery")
            page.get_by_role("tab", name="Lab").click()
            lab_first = _first_progress(page, "#lab-run", "#lab-table")
            page.locator("#lab-table").get_by_text("covariate (mean)").wait_for(timeout=600_000)
            browser.close()
    print(f"Train tab in Chromium (a new page each time{', warm' if os.environ.get('BENCH_WARM_PAGE') else ''}) "
          f"vs /finetune, {SHOTS}-shot x {len(ID_CLASSES)} classes, {STEPS} steps, features cached, "
          f"{len(rounds)} rounds (the machine is shared: both sides measured in the same rounds):")
    for waited, api, ui, tab, blocked in rounds:
        print(f"  /finetune {api:5.1f} s   Train tab {ui:5.1f} s   ratio {ui / api:.2f}x  "
              f"({'clicked once the tab drew its curves' if waited else 'clicked as soon as the form was filled'}, "
              f"{tab:.1f} s after opening it);  the page's main thread in the run: {len(blocked)} long tasks, "
              f"{sum(blocked) / 1000:.2f} s, longest {max(blocked, default=0) / 1000:.2f} s")
    for waited, what in ((False, "as soon as the form is filled"), (True, "once the tab drew its curves")):
        ratios = [ui / api for w, api, ui, _, _ in rounds if w == waited]
        print(f"  median ratio, clicked {what}: {np.median(ratios):.2f}x (target <= 1.5x)")
    for preload in (False, True):
        shown, compare, example, longest = (np.median([r[i] for r in screens if r[0] == preload]) for i in (1, 2, 3, 4))
        print(f"  first screen (new page, medians), plotly.js {'preloaded in idle time' if preload else 'not preloaded'}: "
              f"shown after {shown:.2f} s; 1 s later a Compare-tab click answered in {compare:.2f} s, then "
              f"an example's plot drawn {example:.2f} s after its click; longest main-thread block in the 8 s "
              f"after the first screen {longest:.2f} s")
    print(f"  server seconds of the runs (warm-up, then /finetune and Train tab in turn): "
          f"{', '.join(f'{t:.1f}' for t in server)}")
    print(f"  click -> first visible progress: Train {train_first:.2f} s, Classify all {batch_first:.2f} s, "
          f"Lab {lab_first:.2f} s (target <= 1 s)")
    print(_update_bytes(sizes, history))
    demo.close()


def _images(folder: Path) -> list[str]:
    rng = np.random.default_rng(1)
    paths = []
    for i, c in enumerate(ID_CLASSES[:8]):
        path = folder / f"{c}-{i}.png"
        render(c, "photo", rng, size=64).save(path)
        paths.append(str(path))
    return paths


if __name__ == "__main__":
    if os.environ.get("BENCH_BROWSER"):
        logging.basicConfig(level=logging.WARNING)
        torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
        browser_main()
    else:
        main()
