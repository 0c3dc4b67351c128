"""The default app's first screen (issue 19), as ``python app.py`` serves it: the embedded model with
the shipped CRoFT checkpoint listed. Every example's caption is what each compared model really
answers when a visitor clicks it; the line under the examples quotes the checkpoint folder's own
results; Compare opens on the captions' pair (zero-shot vs the shipped checkpoint). The last test reads
the same things off the page in Chromium at 1280x800 (marker ``browser``)."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import gradio as gr
import pytest

from croft_app.service.classifier import ZERO_SHOT
from croft_app.service.settings import AppSettings
from croft_app.service.showcase import ZERO_SHOT_RESULTS
from croft_app.ui import app as ui
from croft_core.data.synth import EMBEDDED_CHECKPOINT

SHIPPED = "CRoFT · shapes · painting held out"
SHORT = {ZERO_SHOT: "zero-shot", SHIPPED: "CRoFT"}  # how a caption names each model
PERCENT = re.compile(r"(\d+(?:\.\d+)?)%")


@pytest.fixture(scope="module")
def default():
    """``create_app`` with the default settings (no environment), its handlers, and the lexicon ready."""
    demo, resources = ui.create_app(AppSettings())
    rules = resources.negatives
    if rules._thread is not None:
        rules._thread.join(300)
    assert rules.status.ready, rules.status.describe()
    return demo, resources, ui.Handlers(resources)


def _heldout_accuracies() -> tuple[float, float]:
    """The checkpoint's and zero-shot's painting accuracy, as the checkpoint folder records them."""
    card = json.loads((EMBEDDED_CHECKPOINT / "config.json").read_text())["metrics"]
    zero_shot = json.loads((EMBEDDED_CHECKPOINT / ZERO_SHOT_RESULTS).read_text())["metrics"]
    return card["accuracy/painting"], zero_shot["accuracy/painting"]


def test_the_captions_compare_zero_shot_with_the_shipped_checkpoint(default):
    _, resources, _ = default
    assert resources.default_model == ZERO_SHOT  # Classify opens on zero-shot ...
    assert resources.compared == (ZERO_SHOT, SHIPPED)  # ... and the captions answer for both
    assert len(resources.examples) == 5  # known photo, the held-out-style pair, unseen shape, non-shape
    titles = [caption.split("\n")[0] for _, caption in resources.examples]
    assert sum("held-out style" in t for t in titles) == 2, titles


def test_every_caption_is_what_each_model_answers_when_the_example_is_clicked(default):
    _, resources, h = default
    for index, (_, caption) in enumerate(resources.examples):
        path, vocabulary = h.pick_example(SimpleNamespace(index=index))  # the visitor's click
        title, *lines = caption.split("\n")
        assert title == resources.showcase[index].title
        assert len(lines) == len(resources.compared), caption
        for model, line in zip(resources.compared, lines):
            result = h.classify({"path": path, "meta": {"_type": "gradio.FileData"}}, vocabulary, model, None)
            name, said = line.split(": ", 1)
            assert name == SHORT[model], caption
            if result["accepted"]:
                assert said == result["label"], (caption, model, result["label"])
            else:
                assert said.startswith("unknown") and result["nearest_negative"] in said, (caption, model)
    said = [line.split(": ", 1)[1].split(" ")[0] for _, c in resources.examples[1:2] for line in c.split("\n")[1:]]
    assert len(set(said)) == 2, "the held-out-style pair's first image: the models disagree"


def test_the_context_line_quotes_the_checkpoint_folders_results(default):
    demo, resources, _ = default
    croft, zero_shot = _heldout_accuracies()
    numbers = [float(x) / 100 for x in PERCENT.findall(resources.context)]
    assert numbers == [pytest.approx(croft, abs=5e-4), pytest.approx(zero_shot, abs=5e-4)], resources.context
    assert resources.context.index("CRoFT") < resources.context.index("zero-shot")
    assert "paintings" in resources.context
    shown = [b.value for b in demo.blocks.values() if isinstance(b, gr.Markdown)
             and b.elem_id in ("examples-context", "compare-examples-context")]
    assert shown == [resources.context] * 2  # under the examples of Classify and of Compare


def test_compare_opens_on_the_captions_pair(default):
    demo, resources, _ = default
    menus = {b.label: b.value for b in demo.blocks.values() if isinstance(b, gr.Dropdown)}
    assert (menus["model A"], menus["model B"]) == resources.compared == (ZERO_SHOT, SHIPPED)


@pytest.mark.browser
def test_the_first_screen_in_chromium_shows_the_answers_whole(default, tmp_path):
    """What the visitor reads at 1280x800: the captions (each model's line, none cut off by the
    gallery's box) and the context line, on Classify and on Compare."""
    from test_browser import _chromium_pages, _shot

    demo, resources, _ = default
    ui.launch(demo, resources, prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    try:
        with _chromium_pages(demo.local_url) as open_page:
            page = open_page(1280)
            page.set_viewport_size({"width": 1280, "height": 800})
            for tab, gallery in (("Classify", "#examples"), ("Compare", "#compare-examples")):
                page.get_by_role("tab", name=tab).click()
                page.locator(f"{gallery} .caption-label").first.wait_for(timeout=30_000)
                captions = page.locator(f"{gallery} .caption-label").all_inner_texts()
                assert [c.strip() for c in captions] == [c for _, c in resources.examples], tab
                box = page.locator(gallery).bounding_box()
                for item in page.locator(f"{gallery} .thumbnail-item").all():
                    shown = item.bounding_box()
                    assert shown["y"] + shown["height"] <= box["y"] + box["height"] + 1, (tab, shown, box)
                assert page.locator(f"{gallery}-context").inner_text().strip() == resources.context
                _shot(page, tmp_path, f"first_screen_{tab.lower()}")
            page.goto("about:blank")
    finally:
        demo.server.force_exit = True
        demo.close()
