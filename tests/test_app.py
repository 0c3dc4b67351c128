"""The Gradio app: handlers called directly, then the real server through ``gradio_client``.

The app is imported once per session with a tiny random open_clip backbone, two listed checkpoints
(a class-agnostic CRoFT head and a class-tied Tip-Adapter head, chosen by their display names
``croft`` and ``tip``) and a small class limit, all set through the environment variables the app
reads (``CROFT_BACKBONE``, ``CROFT_CHECKPOINTS``, ``CROFT_MAX_CLASSES``); the trust policy is the
default one (no local paths). The tiny benchmark is registered as ``tiny``. Handlers get files as
Gradio passes uploads: FileData dicts of files in Gradio's upload folder.
``tests/test_browser.py`` reuses the ``server`` and ``image_files`` fixtures; ``tests/test_security.py``
attacks a separately started default app.
"""

from __future__ import annotations

import importlib
import functools
import json
import os
import shutil
import struct
import sys
import threading
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import gradio as gr
import numpy as np
import PIL.Image
import plotly.io
import pytest

from croft_core.data.benchmarks import register_benchmark
from croft_core.heads.checkpoint import CroftModel, HeadConfig
from croft_core.clip.prompts import SINGLE_TEMPLATE
from datagen import TINY_ID_CLASSES, tiny_benchmark
from croft_app.ui import app as ui

REPO = Path(__file__).resolve().parents[1]
MAX_CLASSES = 50
CROFT_THRESHOLD = 2.0


# ---------------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------------

# test_browser.py imports these fixtures, which makes pytest register them a second time: these
# memos keep one set of files and one server for both files.
_LIVE_FILES: dict[str, dict[str, str]] = {}
_LIVE: dict[str, object] = {}

def _png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


@pytest.fixture(scope="session")
def app_files(tiny_spec, tmp_path_factory):
    """Checkpoints and the tiny benchmark JSON the app is configured with (made once)."""
    if "files" in _LIVE_FILES:
        return _LIVE_FILES["files"]
    root = tmp_path_factory.mktemp("app")
    common = dict(embed_dim=16, backbone=tiny_spec, classnames=TINY_ID_CLASSES, templates=SINGLE_TEMPLATE)
    croft = CroftModel(HeadConfig(head="croft", method="croft", threshold=CROFT_THRESHOLD,
                                  id_scores=tuple(np.linspace(1.5, 4.0, 40).round(3)), **common))
    tip = CroftModel(HeadConfig(head="tip_adapter", method="tip_adapter", num_classes=3, cache_size=6,
                                **common))
    bench = tiny_benchmark(root / "data")
    register_benchmark("tiny", lambda: bench, overwrite=True)
    _LIVE_FILES["files"] = {"croft": str(croft.save(root / "croft")), "tip": str(tip.save(root / "tip")),
                            "benchmark": str(bench.to_json(root / "tiny.json"))}
    return _LIVE_FILES["files"]


def up(path: str | None) -> dict | None:
    """A file argument as Gradio passes an upload (FileData with its ``meta``)."""
    return None if path is None else {"path": path, "meta": {"_type": "gradio.FileData"}}



@pytest.fixture(scope="session")
def app(tiny_spec, app_files):
    """The ``app`` module, imported once with the tiny backbone (its constants read the env)."""
    env = {"CROFT_BACKBONE": tiny_spec, "CROFT_CHECKPOINTS": f"{app_files['croft']},{app_files['tip']}",
           "CROFT_MAX_CLASSES": str(MAX_CLASSES), "CROFT_CONCURRENCY": "4"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    try:
        module = importlib.import_module("app")
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    assert module.RESOURCES.backbone.spec == tiny_spec, "app was imported before this fixture ran"
    return module


@pytest.fixture(scope="session")
def handlers(app):
    return ui.Handlers(app.RESOURCES)


@pytest.fixture(scope="session")
def image_files():
    """Good, odd and bad image files, by name, in Gradio's upload folder (as uploads are)."""
    from gradio.utils import get_upload_folder

    from croft_core.data.synth.world import render

    if "images" in _LIVE_FILES:
        yield _LIVE_FILES["images"]
        return
    d = Path(get_upload_folder()) / f"croft-test-{uuid.uuid4().hex}"
    d.mkdir(parents=True)
    render("circle", "photo", np.random.default_rng(0), size=64).save(d / "circle.png")
    PIL.Image.open(d / "circle.png").convert("L").save(d / "gray.png")
    PIL.Image.open(d / "circle.png").convert("RGBA").save(d / "rgba.png")
    PIL.Image.open(d / "circle.png").convert("CMYK").save(d / "cmyk.jpg")
    PIL.Image.fromarray((np.arange(32 * 32).reshape(32, 32) * 60).astype(np.uint16)).save(d / "gray16.png")
    PIL.Image.new("RGB", (1, 1), (200, 30, 30)).save(d / "one.png")
    (d / "text.png").write_text("not an image at all")
    data = (d / "circle.png").read_bytes()
    (d / "cut.png").write_bytes(data[: len(data) // 2])
    (d / "bomb.png").write_bytes(_png_header_only(100_000, 100_000))
    _LIVE_FILES["images"] = {p.stem: str(p) for p in d.iterdir()}
    yield _LIVE_FILES["images"]
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def server(app):
    """The app's own ``demo`` served on 127.0.0.1 (a free port) for the whole session."""
    if not _LIVE:
        ui.launch(app.demo, app.RESOURCES, prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
        _LIVE.update(url=app.demo.local_url, users=0)
    _LIVE["users"] += 1
    yield _LIVE["url"]
    _LIVE["users"] -= 1
    if not _LIVE["users"]:
        app.demo.server.force_exit = True  # idle keep-alive connections would delay shutdown 5 s
        app.demo.close()
        _LIVE.clear()


@pytest.fixture(scope="session")
def client(server):
    from gradio_client import Client

    client = Client(server, verbose=False)
    yield client
    client.close()


# ---------------------------------------------------------------------------------------------
# handlers
# ---------------------------------------------------------------------------------------------

VOCAB = "circle, square, triangle"


def ready(handlers):
    """Wait until the background encoding of the negative-label lexicon has finished."""
    rules = handlers.r.negatives
    if rules._thread is not None:
        rules._thread.join(300)
    assert rules.status.ready, rules.status.describe()
    return handlers


def test_classify_returns_the_contract_json(handlers, image_files):
    out = ready(handlers).classify(up(image_files["circle"]), VOCAB, "zero-shot", None)
    assert {"label", "accepted", "score", "threshold", "probabilities", "predicted_class", "notes",
            "warnings", "model", "threshold_source", "rule", "reason", "nearest_negative", "neg_score"} <= set(out)
    # no calibration for this vocabulary: the negative-label rule decides, with no energy threshold
    assert out["rule"] == "negative labels" and out["threshold"] is None and 0 <= out["neg_score"] <= 1
    assert out["accepted"] == (out["neg_score"] >= out["neg_threshold"])
    assert out["label"] == (out["predicted_class"] if out["accepted"] else "unknown")
    assert out["nearest_negative"] and (out["accepted"] or out["nearest_negative"] in out["reason"])
    assert list(out["probabilities"]) and sum(out["probabilities"].values()) <= 1 + 1e-6
    json.dumps(out)  # JSON-serialisable
    rejected = handlers.classify(up(image_files["circle"]), VOCAB, "zero-shot", "1e9")
    assert rejected["label"] == "unknown" and not rejected["accepted"] and rejected["threshold"] == 1e9
    assert rejected["rule"] == "user threshold" and "below your threshold" in rejected["reason"]
    assert rejected["predicted_class"] == out["predicted_class"]
    assert handlers.classify(up(image_files["circle"]), VOCAB, "zero-shot", "  ")["threshold"] is None


@pytest.mark.parametrize("name", ["gray", "rgba", "cmyk", "gray16", "one"])
def test_odd_images_are_converted(handlers, image_files, name):
    assert handlers.classify(up(image_files[name]), VOCAB, "zero-shot", 0.0)["label"] in TINY_ID_CLASSES


@pytest.mark.parametrize("image, vocabulary, model, threshold, message", [
    (None, VOCAB, "zero-shot", None, "No image: upload an image"),
    ("text", VOCAB, "zero-shot", None, "'text.png' is not an image file"),
    ("cut", VOCAB, "zero-shot", None, "truncated or corrupt"),
    ("bomb", VOCAB, "zero-shot", None, "decompression bomb"),
    ("circle", "circle", "zero-shot", None, "Enter at least two class names"),
    ("circle", "", "zero-shot", None, "Enter at least two class names"),
    ("circle", ",".join(f"class {i}" for i in range(MAX_CLASSES + 1)), "zero-shot", None,
     f"{MAX_CLASSES + 1} classes, more than the maximum of {MAX_CLASSES}"),
    ("circle", "cifar100", "zero-shot", None, "more than the maximum"),
    ("circle", "cat, " + "x" * 300, "zero-shot", None, "at most 200 characters"),
    ("circle", VOCAB, "zero-shot", "abc", "threshold must be a finite number"),
    ("circle", VOCAB, "zero-shot", "inf", "threshold must be a finite number"),
    ("circle", VOCAB, "zero-shot", "nan", "threshold must be a finite number"),
    ("circle", VOCAB, "no/such-model", None, "model 'no/such-model' cannot be checked on the Hub"),
    ("circle", VOCAB, "/no/such/folder", None, "Local paths are not accepted"),
    ("circle", VOCAB, "no-such-model", None, r"Unknown model 'no-such-model'; choose one of \['zero-shot', "
                                             r"'croft', 'tip'\]"),
    ("circle", VOCAB, ["zero-shot"], None, "model must be text"),
    ("circle", ["a", "b"], "zero-shot", None, "the vocabulary must be text"),
    ("circle", VOCAB, "zero-shot", 10**400, "threshold must be a finite number"),
    ("circle", "cat, dog", "tip", None, "tied to its 3 training classes"),
])
def test_bad_inputs_raise_gr_error(handlers, image_files, image, vocabulary, model, threshold, message):
    with pytest.raises(gr.Error, match=message):
        handlers.classify(up(image_files.get(image)), vocabulary, model, threshold)


def test_pixel_limit_comes_from_the_environment(handlers, image_files, monkeypatch):
    monkeypatch.setenv("CROFT_MAX_PIXELS", "100")
    with pytest.raises(gr.Error, match="64x64 = 4,096 pixels, over the limit of 100"):
        handlers.classify(up(image_files["circle"]), VOCAB, "zero-shot", None)
    monkeypatch.delenv("CROFT_MAX_PIXELS")
    assert handlers.classify(up(image_files["circle"]), VOCAB, "zero-shot", None)["label"]


def test_non_ascii_and_checkpoint_vocabularies(handlers, image_files, app_files):
    out = handlers.classify(up(image_files["circle"]), "café, 猫, Straße", "zero-shot", None)
    assert set(out["probabilities"]) == {"café", "猫", "Straße"}
    own = ready(handlers).classify(up(image_files["circle"]), "triangle\nsquare\ncircle", "croft", None)
    # its own classes: the calibrated threshold passes, but a calibrated accept needs the negative
    # labels' consent (issue 19), and this random tiny model's negatives reject the image
    assert own["score"] >= CROFT_THRESHOLD and own["neg_score"] < own["neg_threshold"]
    assert (own["label"], own["accepted"], own["rule"]) == ("unknown", False, "negative labels")
    other = handlers.classify(up(image_files["circle"]), "cat, dog, circle, cat", "croft", None)
    # a checkpoint's energy threshold is never carried to another vocabulary (issue 10)
    assert other["threshold"] is None and other["rule"] == "negative labels"
    assert any("adapters are class-agnostic" in n for n in other["notes"])
    assert any("duplicate" in n for n in other["notes"])
    assert handlers.classify(up(image_files["circle"]), "circle, square, triangle", "tip", 0.0)


def test_explain_shows_why(handlers, image_files, app_files):
    result = handlers.classify(up(image_files["circle"]), VOCAB, "croft", "1e6")
    text, probabilities, plot = handlers.explain(result, VOCAB, "croft")
    assert text.startswith("## unknown") and "below your threshold 1000000.00" in text
    assert "**Decided by:** your energy threshold" in text
    assert probabilities == result["probabilities"]
    assert plot.type == "plotly"
    fig = plotly.io.from_json(plot.plot)
    names = [t.name for t in fig.data]
    assert names[0].startswith("your classes") and names[1:] == [
        "threshold: 1000000.00", f"this image: {result['score']:.2f}"]
    assert "◀ unknown" in {a.text for a in fig.layout.annotations}  # the wide region is labelled
    assert handlers.explain(None, VOCAB, "zero-shot") == ("", {}, None)


def test_fast_plot_json_is_the_same_figure():
    from croft_core.runs.figures import energy_histogram, energy_histogram_json

    groups = {"ID": np.random.default_rng(0).normal(10, 1, 200), "other": [7.0, 8.0, float("nan")],
              "empty": []}
    slow = energy_histogram(groups, score=9.0, threshold=8.5, title="t")
    fast = plotly.io.from_json(energy_histogram_json(groups, score=9.0, threshold=8.5, title="t"))
    assert fast.to_plotly_json()["layout"] == slow.to_plotly_json()["layout"]  # lines, template...
    assert [t.name for t in fast.data] == [t.name for t in slow.data] == ["ID", "other"]
    for a, b in zip(fast.data, slow.data):
        assert np.allclose(a.x, b.x) and a.xbins == b.xbins and a.histnorm == b.histnorm
    assert json.loads(energy_histogram_json({}, score=1.0))["data"] == []


def test_embedded_world_backbones_calibrate_and_warn(app, tiny_spec, image_files):
    world = ui.Handlers(ui.load_resources(ui.AppSettings(backbone=tiny_spec), [], embedded_world=True))
    out = ready(world).classify(image_files["circle"], "shapes", "zero-shot", None)
    assert out["rule"] == "negative labels" and out["accepted"] == (out["neg_score"] >= out["neg_threshold"])
    assert world.classify(image_files["circle"], "shapes", "zero-shot", "-1e9")["accepted"]
    warned = world.classify(image_files["circle"], "circle, golden retriever", "zero-shot", None)
    assert "never saw the word(s) 'golden', 'retriever'" in warned["warnings"][0]
    text = world.explain(warned, "circle, golden retriever", "zero-shot")[0]
    assert "⚠️" in text and "<details>" in text


def test_batch_and_compare(handlers, image_files, app_files):
    files = [up(image_files[n]) for n in ("circle", "gray", "text")]
    gallery, rows, fig = handlers.classify_batch(files, VOCAB, "zero-shot", None)
    assert [Path(p).name for p, _ in gallery] == ["circle.png", "gray.png"]
    assert [r[0] for r in rows[:2]] == ["circle.png", "gray.png"] and rows[0][3] in TINY_ID_CLASSES
    assert rows[2][:2] == ["text.png", "error"] and "not an image" in rows[2][-1]
    assert all(isinstance(r[2], bool) for r in rows[:2])  # the accepted column
    names = [t["name"] for t in json.loads(fig.plot)["data"]]
    assert names[-2].startswith("circle.png (") and names[-1].startswith("gray.png (")
    with pytest.raises(gr.Error, match="None of the files is a usable image"):
        handlers.classify_batch([up(image_files["text"])], VOCAB, "zero-shot", None)
    with pytest.raises(gr.Error, match="No images"):
        handlers.classify_batch(None, VOCAB, "zero-shot", None)
    md_a, probs_a, md_b, probs_b, fig, rule = handlers.compare(up(image_files["circle"]), VOCAB, "zero-shot",
                                                               "croft")
    assert md_a.startswith("### A: zero-shot") and md_b.startswith("### B: croft") and probs_a and probs_b
    bars = json.loads(fig.plot)["data"][0]
    assert bars["y"] == ["A: zero-shot", "B: croft"] and len(bars["x"]) == 2  # both on one plot
    assert rule.startswith("**Rule: the same for both models**, the negative labels")


def test_compare_decides_both_models_by_the_same_rule_unless_asked(handlers, image_files, monkeypatch):
    """croft has a calibrated energy threshold for VOCAB (its own classes) and zero-shot has not:
    Classify's automatic rule gives them different kinds of rule; Compare gives both the same one
    by default, the visitor's energy threshold when asked, and each model's own only when chosen,
    then says the verdicts are not comparable."""
    from collections import OrderedDict
    from dataclasses import replace

    from croft_app.service.decision import RULE_AUTOMATIC, RULE_NEGATIVES, RULE_USER
    from croft_core.ood.negatives import NegativeLabels

    rules = handlers.r.negatives  # the tiny random model's word-list scores are ~1e-6: let them accept,
    monkeypatch.setattr(rules, "_memo", OrderedDict())  # so that croft's calibrated energy decides
    monkeypatch.setattr(rules, "_fit", lambda *a, **k: replace(NegativeLabels.fit(*a, **k), threshold=1e-9))
    image = up(image_files["circle"])
    own = [handlers.classify(image, VOCAB, m, None)["rule"] for m in ("zero-shot", "croft")]
    assert own == ["negative labels", "energy (calibrated)"]  # what Compare used to put side by side
    *_, default = handlers.compare(image, VOCAB, "zero-shot", "croft")
    *_, negatives = handlers.compare(image, VOCAB, "zero-shot", "croft", None, RULE_NEGATIVES)
    assert default == negatives and "not directly comparable" not in default
    *_, typed = handlers.compare(image, VOCAB, "zero-shot", "croft", "-1e9", RULE_USER)
    assert typed.startswith("**Rule: the same for both models**, your energy threshold -1000000000.0")
    *_, each = handlers.compare(image, VOCAB, "zero-shot", "croft", None, RULE_AUTOMATIC)
    assert each.startswith("**Rule: each model's own** (A: zero-shot: negative labels; B: croft: energy "
                           "(calibrated))") and "not directly comparable" in each
    with pytest.raises(gr.Error, match="needs a threshold"):
        handlers.compare(image, VOCAB, "zero-shot", "croft", "", RULE_USER)
    with pytest.raises(gr.Error, match="unknown rule"):
        handlers.compare(image, VOCAB, "zero-shot", "croft", None, "whichever")


def test_evaluate_and_its_downloads(handlers, app_files):
    results, state = handlers.evaluate("tiny", "zero-shot", 1)
    assert results["backbone"] == "local-dir:tiny_clip0" and results["model"] == "zero-shot"
    text = json.dumps(results)
    assert str(REPO) not in text and "/tmp" not in text and str(Path.home()) + "/" not in text
    assert {"benchmark", "backbone", "method", "seed", "id", "covariate", "semantic", "full_spectrum",
            "threshold"} <= set(results)
    assert results["method"] == "zeroshot" and results["seed"] == 1 and results["id"]["n"] > 0
    table, hist, roc, path, rule = handlers.explain_evaluation(state)
    assert list(table["set"][:2]) == ["ID", "covariate (mean)"] and set(table["kind"][:4]) == {"summary"}
    assert table.iloc[0, 3] == round(100 * results["id"]["accuracy"], 1)  # in %
    assert [t.name for t in hist.data] == ["ID: photo", "covariate: sketch", "semantic: all 1 unseen set(s)",
                                           "threshold"]
    assert roc.data[0].name.startswith("unseen-shapes (AUROC")
    assert json.loads(Path(path).read_text()) == results
    assert rule.startswith("**Rule:** the model's energy threshold") and "95%" in rule
    other = handlers.evaluate("tiny", "croft", 1)[1]
    two, hist2, roc2, _, rule2 = handlers.explain_evaluation(state, other)
    # issue 21: by default both models' dashed thresholds are the same kind of rule, named under the table
    assert rule2.startswith("**Rule: the same for both models**") and "not directly comparable" not in rule2
    assert "AUROC and FPR95 do not depend on it" in rule2
    lines = [float(t.x[0]) for t in hist2.data if t.name == "threshold"]
    assert lines == [results["threshold"]["value"], other["results"]["threshold"]["value"]]
    assert list(two.columns[3::3]) == ["zero-shot: accuracy %", "croft: accuracy %"]
    # a row per model with three pooled groups each; a colour per model in the ROC, a dash per kind
    assert [(t.yaxis, t.name) for t in hist2.data] == [(y, g) for y in ("y", "y2")
                                                       for g in ("known", "new styles", "unseen shapes", "threshold")]
    assert [(t.legendgroup, t.name.split(" (")[0]) for t in roc2.data] == [
        (m, k) for m in ("zero-shot", "croft") for k in ("vs known", "vs known + new styles")] + [(None, "chance")]
    croft, _ = handlers.evaluate("tiny", "croft", "2")
    assert croft["method"] == "croft" and croft["seed"] == 2
    with pytest.raises(gr.Error, match="Unknown benchmark 'nope'"):
        handlers.evaluate("nope", "zero-shot", 1)
    handlers._lab.acquire()  # an evaluation is running: the next one is refused at once
    try:
        with pytest.raises(gr.Error, match="The Lab is busy with another evaluation"):
            handlers.evaluate("tiny", "zero-shot", 1)
    finally:
        handlers._lab.release()
    with pytest.raises(gr.Error, match="seed must be a whole number"):
        handlers.evaluate("tiny", "zero-shot", 1.5)


def test_file_path_accepts_only_uploads(app, handlers, image_files, app_files, tmp_path):
    root = handlers.r.upload_root
    circle = image_files["circle"]
    assert ui.file_path(None, root) is None and ui.file_path(up(circle), root) == circle
    assert ui.file_path({"image": up(circle)}, root) == circle  # a gallery item
    outside = str(tmp_path / "x.png")
    (tmp_path / "x.png").write_bytes(Path(circle).read_bytes())
    (Path(circle).parent / "link.png").symlink_to(outside)
    for payload in ({"path": circle}, up(outside), up("/no/such/file.png"), outside,
                    up(str(Path(circle).parent / "link.png")), up(app_files["croft"] + "/config.json")):
        with pytest.raises(ValueError, match="not an upload of this session") as err:
            ui.file_path(payload, root)
        assert "/" not in str(err.value)
    for handler in (lambda f: handlers.classify(f, VOCAB, "zero-shot", None),
                    lambda f: handlers.compare(f, VOCAB, "zero-shot", "croft"),
                    lambda f: handlers.classify_batch([f], VOCAB, "zero-shot", None)):
        with pytest.raises(gr.Error, match="not an upload of this session"):
            handler({"path": circle})  # no Gradio meta: never reached the upload check


def test_explain_checks_the_result_it_is_sent(handlers):
    for bad in ({"score": "x"}, {"score": 1.0, "threshold": None, "probabilities": {"a": "b"}},
                [1, 2], {"score": float("nan")}):
        with pytest.raises(gr.Error, match="not a /classify result"):
            handlers.explain(bad, VOCAB, "zero-shot")


# ---------------------------------------------------------------------------------------------
# the real server, through gradio_client
# ---------------------------------------------------------------------------------------------

def test_api_exposes_exactly_the_three_named_endpoints(client):
    api = client.view_api(print_info=False, return_format="dict")
    assert set(api["named_endpoints"]) == {"/classify", "/evaluate", "/finetune"} and not api["unnamed_endpoints"]
    names = {e: [p["parameter_name"] for p in api["named_endpoints"][e]["parameters"]]
             for e in api["named_endpoints"]}
    assert names == {"/classify": ["image", "vocabulary", "model", "threshold"],
                     "/evaluate": ["benchmark", "model", "seed"],
                     "/finetune": ["data", "method", "shots", "seed", "steps"]}


def test_api_bad_inputs_fail_clearly_and_the_server_keeps_serving(client, image_files, app_files):
    from gradio_client import handle_file
    from gradio_client.exceptions import AppError

    def good():
        out = client.predict(handle_file(image_files["circle"]), VOCAB, "zero-shot", None,
                             api_name="/classify")
        assert out["predicted_class"] in TINY_ID_CLASSES and out["label"] in (*TINY_ID_CLASSES, "unknown")
        return out

    first = good()
    bad = [
        ((None, VOCAB, "zero-shot", None), "No image"),
        ((handle_file(image_files["text"]), VOCAB, "zero-shot", None), "is not an image file"),
        ((handle_file(image_files["cut"]), VOCAB, "zero-shot", None), "truncated or corrupt"),
        ((handle_file(image_files["bomb"]), VOCAB, "zero-shot", None), "decompression bomb"),
        ((handle_file(image_files["circle"]), "circle", "zero-shot", None), "at least two class names"),
        ((handle_file(image_files["circle"]), "cifar100", "zero-shot", None), "more than the maximum"),
        ((handle_file(image_files["circle"]), "a, " + "b" * 250, "zero-shot", None), "at most 200"),
        ((handle_file(image_files["circle"]), VOCAB, "zero-shot", "twelve"), "finite number"),
        ((handle_file(image_files["circle"]), VOCAB, "zero-shot", "-inf"), "finite number"),
        ((handle_file(image_files["circle"]), VOCAB, "no/such-model", None), "cannot be checked on the Hub"),
        ((handle_file(image_files["circle"]), VOCAB, "nothing", None), "Unknown model 'nothing'"),
        ((handle_file(image_files["circle"]), VOCAB, app_files["croft"], None), "Local paths are not"),
    ]
    for args, message in bad:
        with pytest.raises(AppError, match=message):
            client.predict(*args, api_name="/classify")
        assert good()["score"] == pytest.approx(first["score"], abs=1e-5)
    for name in ("gray", "rgba", "cmyk", "gray16", "one"):
        assert client.predict(handle_file(image_files[name]), VOCAB, "zero-shot", 0.0,
                              api_name="/classify")["predicted_class"] in TINY_ID_CLASSES
    numeric = client.predict(handle_file(image_files["circle"]), VOCAB, "croft", 1e9,
                             api_name="/classify")
    assert numeric["label"] == "unknown" and numeric["threshold"] == 1e9


def test_api_20_concurrent_classify_calls(client, image_files):
    from gradio_client import handle_file

    def call(i: int) -> dict:
        return client.predict(handle_file(image_files["circle"]), VOCAB, "zero-shot",
                              "1e9" if i % 2 else "-1e9", api_name="/classify")

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(call, range(20)))
    assert [r["label"] == "unknown" for r in results] == [bool(i % 2) for i in range(20)]
    assert len({(r["predicted_class"], round(r["neg_score"] or 0, 5)) for r in results}) == 1
    assert len({round(r["score"], 5) for r in results}) == 1


def test_api_evaluate(client, app_files):
    from gradio_client.exceptions import AppError

    results = client.predict("tiny", "zero-shot", 1, api_name="/evaluate")
    assert results["benchmark"] == "tiny" and results["method"] == "zeroshot"
    assert 0 <= results["semantic"][0]["scores"]["energy"]["auroc"] <= 1
    with pytest.raises(AppError, match="Unknown benchmark"):
        client.predict("no-such-benchmark", "zero-shot", 1, api_name="/evaluate")
    with pytest.raises(AppError, match="seed must be a whole number"):
        client.predict("tiny", "zero-shot", "one", api_name="/evaluate")
    again = client.predict("tiny", "croft", 1, api_name="/evaluate")
    assert again["method"] == "croft"


def test_lab_jobs_are_stopped_at_their_time_limit(app, handlers, monkeypatch):
    import dataclasses

    settings = dataclasses.replace(handlers.r.settings, lab_time_limit=1)
    capped = ui.Handlers(dataclasses.replace(handlers.r, settings=settings))

    def forever(*args):
        while True:
            sum(range(1000))

    monkeypatch.setattr(capped, "_run_benchmark", forever)
    with pytest.raises(gr.Error, match=r"ran longer than 1 s and was stopped"):
        capped.evaluate("tiny", "zero-shot", 1)
    assert capped._lab.acquire(blocking=False)  # the Lab is free again
    capped._lab.release()


SLOW_HOST_WORK = {"tiny": (12, 6), "shapes": (1990, 20)}  # (images, prompts) a Lab job encodes


def _slow_lab(resources, limit: int = 300):
    """The resources with a Lab planner for a ViT-B/16 on two CPU cores (0.42 s per image, injected)."""
    import dataclasses

    from croft_app.service.labcost import LabPlanner, LabWork, Throughput

    planner = LabPlanner(limit, Throughput(image_seconds=0.42, text_seconds=0.02),
                         count=lambda name: LabWork(*SLOW_HOST_WORK[name]))
    return dataclasses.replace(resources, lab=planner)


def _lab_menu(demo) -> tuple[list, "gr.Markdown"]:
    blocks = {getattr(b, "elem_id", None): b for b in demo.blocks.values()}
    return [value for _, value in blocks["lab-benchmark"].choices], blocks["lab-limits"]


def test_lab_on_a_slow_host_offers_only_what_fits_and_says_why(app, handlers, monkeypatch):
    monkeypatch.setattr(ui, "BENCHMARKS", ("tiny", "shapes"))
    demo = ui.build_demo(_slow_lab(handlers.r))
    offered, note = _lab_menu(demo)
    assert offered == ["tiny"]  # 5 s fits in 80% of 5 min; 14 min does not
    assert note.visible and "'shapes' would take ~14 min on this host" in note.value
    assert "the Lab's limit is 5 min" in note.value


def test_lab_evaluate_refuses_a_job_over_the_limit_before_it_starts(app, handlers, monkeypatch):
    import time

    slow = ui.Handlers(_slow_lab(handlers.r))
    slow.r.lab.offer(["shapes"])  # as the Lab tab does at start-up on a slow host: counted ahead
    started = []
    monkeypatch.setattr(slow, "_run_benchmark", lambda *args: started.append(args))
    t0 = time.perf_counter()
    with pytest.raises(gr.Error, match=r"'shapes' would take ~14 min on this host \(1,990 images\); "
                                       r"the Lab's limit is 5 min"):
        slow.evaluate("shapes", "zero-shot", 1)
    assert started == [] and time.perf_counter() - t0 < 5  # refused at once, nothing started
    assert slow._lab.acquire(blocking=False)  # the Lab is free for the next job
    slow._lab.release()


def test_lab_evaluate_counts_a_new_benchmark_and_refuses_it_before_encoding(app, handlers, monkeypatch):
    import croft_core.runs.pipeline as pipeline

    slow = ui.Handlers(_slow_lab(handlers.r))

    def no_encoding(*args, **kwargs):
        raise AssertionError("the job started encoding")

    monkeypatch.setattr(pipeline, "evaluate_checkpoint", no_encoding)
    with pytest.raises(gr.Error, match=r"'shapes' would take ~14 min"):
        slow.evaluate("shapes", "zero-shot", 1)  # not counted ahead: counted at the job's first stage


def test_lab_jobs_that_fit_run_on_a_slow_host(app, handlers):
    results, _ = ui.Handlers(_slow_lab(handlers.r)).evaluate("tiny", "zero-shot", 1)
    assert results["benchmark"] == "tiny"


def test_lab_on_the_default_app_offers_everything(app, handlers):
    lab = app.RESOURCES.lab
    assert lab is not None and lab.wait_for_plan(120)  # measured in the background after start-up
    assert lab.throughput.image_seconds > 0 and lab.limit == app.RESOURCES.settings.lab_time_limit
    offered, _ = _lab_menu(app.demo)
    assert offered == list(ui.BENCHMARKS)
    menu, note = _refreshed_lab_menu(app.demo)
    assert menu["choices"] == list(ui.BENCHMARKS) and not note["visible"]  # the page's load: nothing refused
    assert "value" not in _refreshed_lab_menu(app.demo, "tiny")[0]  # what the visitor typed is left alone
    # a page that shows the plan already is not rewritten (a visitor may be typing in the menu)
    shown = (tuple(ui.BENCHMARKS), "")
    assert _refreshed_lab_menu(app.demo, "tiny", shown) == (gr.skip(), gr.skip())
    assert lab.check("tiny").fits  # the tiny model on the tiny benchmark: nothing refused


def _refreshed_lab_menu(demo, current=None, shown=None):
    """What the page's load event (and the Lab tab's opening) sets the benchmark menu and its note to
    (from a page showing ``shown``: none by default, so that both are sent)."""
    (event,) = [f for f in demo.fns.values() if any(getattr(c, "elem_id", None) == "lab-limits" for c in f.outputs)]
    targets = {(demo.blocks[t[0]] if t[0] in demo.blocks else demo, t[1]) for t in event.targets}
    assert (demo, "load") in targets and any(name == "select" for _, name in targets), targets
    menu, note, _ = event.fn(current, shown)
    return menu, note


def test_start_up_serves_the_first_page_without_waiting_for_the_lab_measurement(app, tiny_spec, monkeypatch):
    """The measurement runs in the background: with a stand-in measurement blocked on an Event, the
    app is built and serves its page; meanwhile /evaluate refuses (after its bounded wait) with a
    clear message and starts nothing; once the measurement arrives, its plan applies."""
    import httpx

    from croft_app.service.labcost import Throughput

    release, entered = threading.Event(), threading.Event()

    def blocked(backbone):  # 1000 s per image: nothing fits once it has answered
        entered.set()
        release.wait(20)
        return Throughput(image_seconds=1000.0, text_seconds=0.0)

    monkeypatch.setattr(ui, "measure_throughput", blocked)
    monkeypatch.setattr(ui, "BENCHMARKS", ("tiny",))
    demo, resources = ui.create_app(ui.AppSettings(backbone=tiny_spec))
    try:
        assert entered.wait(20) and resources.lab.measuring  # built while the measurement is blocked
        ui.launch(demo, resources, prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
        page = httpx.get(demo.local_url, timeout=30)
        assert page.status_code == 200 and "CRoFT Lab" in page.text and resources.lab.measuring
        menu, note = _refreshed_lab_menu(demo)
        assert menu["choices"] == ["tiny"] and "Still measuring" in note["value"]
        h = ui.Handlers(resources)
        resources.lab.wait = 0.2
        started = []
        monkeypatch.setattr(h, "_run_benchmark", lambda *args: started.append(args))
        with pytest.raises(gr.Error, match=r"still measuring how long runs take on this host .* try again"):
            h.evaluate("tiny", "zero-shot", 1)
        assert started == [] and h._lab.acquire(blocking=False)  # nothing ran; the Lab is free
        h._lab.release()
        release.set()
        assert resources.lab.wait_for_plan(20)
        monkeypatch.delattr(h, "_run_benchmark")  # the real job: counted, then refused before encoding
        with pytest.raises(gr.Error, match=r"'tiny' would take ~.* on this host"):  # the plan applies
            h.evaluate("tiny", "zero-shot", 1)
        menu, note = _refreshed_lab_menu(demo, "tiny")
        assert menu["choices"] == [] and menu["value"] is None and "'tiny' would take" in note["value"]
    finally:
        release.set()
        if getattr(demo, "server", None) is not None:
            demo.server.force_exit = True
        demo.close()


@pytest.mark.slow
def test_lab_with_the_embedded_model_refuses_nothing():
    """The default app's backbone, measured on this host, fits every Lab benchmark in the default
    limit (the shapes benchmarks are rendered to be counted: about a minute the first time)."""
    from croft_app.service.labcost import LabPlanner, measure_throughput
    from croft_core.clip.backbones import load_backbone

    planner = LabPlanner(ui.AppSettings().lab_time_limit, measure_throughput(load_backbone("embedded")))
    assert planner.offer(("shapes", "shapes_dg")) == (["shapes", "shapes_dg"], [])
    for name in ("shapes", "shapes_dg"):
        estimate = planner.check(name)
        assert estimate.fits and estimate.work.images > 1000


def test_server_limits_are_set(app, server):
    assert app.demo._queue.max_size == 32 and app.demo.max_file_size == 10 * 2**20
    assert app.demo.state_session_capacity == 300 and app.demo.delete_cache == (3600, 3600)
    # the body limit first, then new sessions paced (NewSessionPacing; tests/test_session_pacing.py)
    wired = {m.cls.__name__: m.kwargs for m in app.demo.app.user_middleware}
    assert [name for name in wired if name in ("BodyLimit", "NewSessionPacing")] == ["BodyLimit", "NewSessionPacing"]
    pacing = wired["NewSessionPacing"]
    assert pacing["per_second"] == 4 and pacing["known"]("no such session") is False


def test_the_queue_builds_no_event_analytics(app, server, client, image_files, monkeypatch):
    # before: after every event Gradio rebuilt a pandas summary of its last 10,000 events for its
    # /monitoring dashboard -- 4-19 ms of GIL each, a fifth of the server's busy time in a Train flood
    import httpx
    from gradio.queueing import Queue
    from gradio_client import handle_file

    built, original = [], Queue._get_df
    monkeypatch.setattr(Queue, "_get_df", staticmethod(lambda records: built.append(len(records)) or original(records)))
    client.predict(handle_file(image_files["circle"]), VOCAB, "zero-shot", None, api_name="/classify")
    assert built == [] and len(app.demo._queue.event_analytics) <= 1
    assert httpx.get(server + "monitoring", timeout=30).status_code == 403  # the dashboard is off


def test_train_jobs_run_in_a_child_process_unless_turned_off(app, tiny_spec):
    # issue 25: a job in a thread shared the server's GIL and cores with every visitor's request
    from dataclasses import replace

    from croft_app.service.trainproc import TrainingProcess
    from croft_app.ui.app import _trainer

    assert isinstance(_trainer(app.RESOURCES), TrainingProcess) and _trainer(app.RESOURCES).spec == tiny_spec
    off = replace(app.RESOURCES, settings=replace(app.RESOURCES.settings, train_process=False))
    assert _trainer(off) is None
    assert ui.AppSettings.from_env({"CROFT_TRAIN_PROCESS": "0"}).train_process is False


def test_session_models_memory_limit_comes_from_the_settings(app, tiny_spec):
    # the bytes all visitors' trained models may hold together (CROFT_SESSION_MODELS_MB)
    resources = ui.load_resources(ui.AppSettings(backbone=tiny_spec, session_models_bytes=5 * 2**20), [])
    assert resources.registry.sessions.max_bytes == 5 * 2**20
    assert app.RESOURCES.registry.sessions.max_bytes == app.RESOURCES.settings.session_models_bytes == 128 * 2**20


def test_request_bodies_are_bounded_and_no_route_skips_the_queue(app, server, client):
    # before (issue 25): no body limit -- 20 sessions that each sent a 20 MB vocabulary held
    # +436 MB after the requests, Gradio keeping every session's last inputs -- and
    # POST /gradio_api/run/<name> ran any handler outside the queue when SPACE_ID was unset
    import httpx

    assert app.demo.api_open is False
    body = {"data": [None, "a, b", "zero-shot", ""], "session_hash": "x"}
    assert httpx.post(server + "gradio_api/run/classify", json=body, timeout=30).status_code == 404
    big = {"data": [None, "x, " * 600_000, "zero-shot", ""], "fn_index": 0, "session_hash": "y"}
    answer = httpx.post(server + "gradio_api/queue/join", json=big, timeout=30)
    assert answer.status_code == 413 and "CROFT_MAX_BODY_SIZE" in answer.text

    def chunks():  # no Content-Length: counted while read, cut off past the limit
        yield b'{"data": ["'
        for _ in range(40):
            yield b"x" * 65536
        yield b'"]}'

    chunked = httpx.post(server + "gradio_api/queue/join", content=chunks(), timeout=30,
                         headers={"content-type": "application/json"})
    assert chunked.status_code == 413
    vocabulary = ", ".join(f"class {k}" for k in range(3000))  # 32 kB, sent with no image: refused
    with pytest.raises(Exception, match="No image"):
        client.predict(None, vocabulary, "zero-shot", "", api_name="/classify")
    kept = app.demo.state_holder.session_data[client.session_hash].config_values
    assert not any(vocabulary in json.dumps(c, default=str) for c in kept.values())


def test_resources_are_loaded_once(app, handlers):
    assert handlers.r is app.RESOURCES
    registry = app.RESOURCES.registry
    assert registry.get("zero-shot") is registry.get("zero-shot")


# ---------------------------------------------------------------------------------------------
# events of the built page (run as Gradio runs them: a request of one session, special arguments)
# ---------------------------------------------------------------------------------------------

def _event(demo, block_fn, inputs: list, session: str):
    """Call one event of ``demo`` the way the server does, for a browser tab ``session``."""
    import asyncio

    from gradio.state_holder import SessionState

    out = asyncio.run(demo.call_function(block_fn, list(inputs), requests=gr.Request(session_hash=session),
                                         state=SessionState(demo)))
    prediction = out["prediction"]
    return list(prediction) if len(block_fn.outputs) > 1 else [prediction]


def _model_menus(demo) -> list:
    """Every model menu of the page (the dropdowns that offer zero-shot)."""
    return [b for b in demo.blocks.values() if isinstance(b, gr.Dropdown)
            and "zero-shot" in [c[1] if isinstance(c, (tuple, list)) else c for c in b.choices]]


def test_a_trained_model_is_listed_in_every_model_menu(app):
    """After Train, every model menu offers the session's new model (by its display name), and the
    Classify, Compare B and Lab menus select it; other sessions never see it."""
    demo, registry = app.demo, app.RESOURCES.registry
    name = registry.add("menu-tab", "CRoFT · shapes · 2-shot", object())
    events = [f for f in demo.fns.values() if any(getattr(c, "label", None) == "new model" for c in f.inputs)]
    updates = {}
    for block_fn in events:
        updates.update(zip((o._id for o in block_fn.outputs), _event(demo, block_fn, [name], "menu-tab")))
    menus = _model_menus(demo)
    assert len(menus) == 5  # Classify; Compare A and B; Lab model and "compare with"
    for menu in menus:
        assert menu._id in updates, f"menu {menu.label!r} is not updated"
        choices = [c[1] if isinstance(c, (tuple, list)) else c for c in updates[menu._id]["choices"]]
        assert name in choices and "zero-shot" in choices, (menu.label, choices)
        labels = [c[0] if isinstance(c, (tuple, list)) else c for c in updates[menu._id]["choices"]]
        assert name in labels  # shown by its display name
    picked = {m.label for m in menus if updates[m._id].get("value") == name}
    assert picked == {"model", "model B"}  # Classify and Lab ("model"), Compare B; A stays zero-shot
    assert sum(updates[m._id].get("value") == name for m in menus) == 3
    lab_other = next(m for m in menus if m.label == "compare with")
    assert "(none)" in [c[1] if isinstance(c, (tuple, list)) else c for c in updates[lab_other._id]["choices"]]
    for block_fn in events:  # another visitor's tab: their menus never list this model
        for update in _event(demo, block_fn, [name], "another-tab"):
            assert name not in [c[1] if isinstance(c, (tuple, list)) else c for c in update.get("choices", [])]


def _failure_of(demo, block_fn):
    """The ``.failure`` event that follows ``block_fn``."""
    (follow,) = [f for f in demo.fns.values() if f.trigger_only_on_failure and f.trigger_after == block_fn._id]
    return follow


def _shown(markdown: str) -> str:
    """What a Markdown panel shows of plain text (entities and backslash escapes undone)."""
    import html
    import re

    return html.unescape(re.sub(r"\\(.)", r"\1", markdown))


@pytest.mark.parametrize("image, vocabulary, model, message", [
    ("cut", VOCAB, "zero-shot", "truncated or corrupt"),
    ("text", VOCAB, "zero-shot", "is not an image file"),
    ("circle", "", "zero-shot", "Enter at least two class names"),
    ("circle", VOCAB, "<b>no *such* model", "Unknown model"),
])
def test_a_failed_classify_shows_its_reason_in_the_verdict_panel(app, image_files, image, vocabulary, model,
                                                                 message):
    """The verdict panel says why (the toast's own text, which fades), once, without server paths."""
    demo, session = app.demo, f"failing-{uuid.uuid4().hex}"
    events = [f for f in demo.fns.values() if getattr(f.fn, "__name__", "") == "classify"]
    assert len(events) == 2  # the Classify button (/classify) and a click on an example
    for block_fn in events:
        with pytest.raises(gr.Error, match=message) as caught:
            _event(demo, block_fn, [up(image_files[image]), vocabulary, model, None], session)
        follow = _failure_of(demo, block_fn)
        assert [o.elem_id for o in follow.outputs] == ["decision"]
        (text,) = _event(demo, follow, [], session)
        assert text.startswith("### No result\n\n") and caught.value.message in _shown(text), text
        assert str(Path(image_files["circle"]).parent) not in text and "/tmp" not in text
        assert "<b>" not in text and "**" not in text.split("\n\n", 1)[1]  # shown as text, not as markup
        again = _event(demo, follow, [], session)[0]  # read once: a later failure never shows a stale reason
        assert message not in again and "the message at the top of the page" in again


def test_failed_compare_and_train_show_their_reason(app, image_files):
    demo, session = app.demo, f"failing-{uuid.uuid4().hex}"
    compares = [f for f in demo.fns.values() if getattr(f.fn, "__name__", "") == "compare"]
    assert len(compares) == 2  # the Compare button and a click on an example
    for block_fn in compares:
        with pytest.raises(gr.Error, match="Enter at least two class names"):
            _event(demo, block_fn, [up(image_files["circle"]), "circle", "zero-shot", "croft", None,
                                    "negative labels"], session)
        follow = _failure_of(demo, block_fn)
        assert [o.elem_id for o in follow.outputs] == ["card-a"]
        (text,) = _event(demo, follow, [], session)
        assert text.startswith("### No result") and "Enter at least two class names" in _shown(text)

    (train,) = [f for f in demo.fns.values() if getattr(f.fn, "__name__", "") == "train_stream"]
    with pytest.raises(gr.Error, match="Unknown benchmark 'nope'"):
        list(train.fn("benchmark", "nope", None, None, "", "", "croft", 4, 1, None, None, None, 10,
                      request=gr.Request(session_hash=session)))
    follow = _failure_of(demo, train)
    assert [o.label for o in follow.outputs] == [None] and follow.outputs[0] is train.outputs[0]  # status
    (text,) = _event(demo, follow, [], session)
    assert text.startswith("### Training failed") and "Unknown benchmark 'nope'" in _shown(text)


def test_the_preset_menu_follows_the_class_list():
    from croft_app.ui.common import preset_of, preset_text

    assert preset_of(preset_text("shapes"))["value"] == "shapes"
    assert preset_of("shapes")["value"] == "shapes"  # the preset's name typed in the box
    assert preset_of("circle, square")["value"] is None  # edited by hand: the stale preset is cleared
    assert preset_of("")["value"] is None


def test_a_failure_reason_survives_a_gpu_worker_process(app):
    """On ZeroGPU a ``@gpu`` handler runs in a worker process: what the inner ``user_errors`` keeps
    there is lost, so every GPU handler is wrapped once more outside, in the server process."""
    import functools

    import croft_app.ui.common
    from croft_app.ui.common import last_error, user_errors

    def worker(fn):  # a stand-in for spaces.GPU: the worker's memory is gone when it returns
        @functools.wraps(fn)
        def run(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            finally:
                croft_app.ui.common._errors.clear()
        return run

    def handler(vocabulary, request: gr.Request = None):
        raise ValueError(f"Enter at least two class names; got {vocabulary!r}")

    request = gr.Request(session_hash=f"zerogpu-{uuid.uuid4().hex}")
    for wrapped, kept in ((worker(user_errors(handler)), False), (user_errors(worker(user_errors(handler))), True)):
        with pytest.raises(gr.Error, match="at least two"):
            wrapped("circle", request=request)
        assert (last_error("handler", request) is not None) == kept

    def layers(fn):  # how many user_errors wrappers a handler has, outermost first
        count = 0
        while fn is not None:
            count += getattr(getattr(fn, "__code__", None), "co_qualname", "").startswith("user_errors.")
            fn = getattr(fn, "__wrapped__", None)
        return count

    for name in ("classify", "classify_batch", "compare", "evaluate"):
        assert layers(getattr(ui.Handlers, name)) == 2, name


def test_a_failure_shows_one_badge_not_one_per_output(app):
    """Gradio marks every output of a failed event "Error"; the multi-output events show their
    progress (and that badge) on the one panel that then says why (Compare's card A, the batch
    gallery), so a failed Compare is not four red boxes (screenshots compare_error_*)."""
    multi = {"compare": "card-a", "classify_batch": "batch-gallery"}
    seen = {}
    for block_fn in app.demo.fns.values():
        name = getattr(block_fn.fn, "__name__", "")
        if name in multi:
            seen.setdefault(name, []).append([c.elem_id for c in block_fn.show_progress_on or []])
    assert seen == {"compare": [["card-a"], ["card-a"]], "classify_batch": [["batch-gallery"]]}


def _entries(monkeypatch, modules, users=()) -> list[tuple[str, str, str]]:
    """Wrap every function and method of ``modules`` (and the names ``users`` imported from them)
    so that each call from another project file is recorded as ``(caller file, module file, name)``
    (frames of installed packages, such as torch's decorators, are looked through)."""
    import inspect as _inspect

    calls: list[tuple[str, str, str]] = []

    def caller_file(depth: int = 2) -> str | None:
        frame = sys._getframe(depth)
        while frame is not None:
            path = Path(frame.f_code.co_filename)
            if REPO in path.parents and ".venv" not in path.parts:
                return str(path.relative_to(REPO))
            frame = frame.f_back
        return None

    def wrap(fn, where: str, name: str):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            there = caller_file()
            if there is not None and there != where:
                calls.append((there, where, name))
            return fn(*args, **kwargs)
        return wrapper

    for module in modules:
        where = str(Path(module.__file__).relative_to(REPO))
        for name, value in list(vars(module).items()):
            if _inspect.isfunction(value) and value.__module__ == module.__name__:
                wrapped = wrap(value, where, name)
                for holder in (module, *users):
                    if getattr(holder, name, None) is value:
                        monkeypatch.setattr(holder, name, wrapped)
            elif _inspect.isclass(value) and value.__module__ == module.__name__:
                for attr, member in vars(value).items():
                    if _inspect.isfunction(member) and not attr.startswith("__"):
                        monkeypatch.setattr(value, attr, wrap(member, where, f"{name}.{attr}"))
    return calls


def test_a_classification_flows_down_once(handlers, image_files, monkeypatch):
    """One /classify: the classifier is entered once (decision -> run), the decision once (the
    handler -> decide_batch), and nothing lower calls back up into the decision or the handler."""
    from croft_app.service import classifier, decision

    handlers.classify(up(image_files["circle"]), VOCAB, "croft", None)  # warm the caches, as the app does
    calls = _entries(monkeypatch, [classifier, decision], users=[ui])
    handlers.classify(up(image_files["circle"]), VOCAB, "croft", None)
    into = lambda name: [(a, f) for a, b, f in calls if b.endswith(name)]  # noqa: E731
    assert into("service/classifier.py") == [("croft_app/service/decision.py", "OpenSetClassifier.run")], calls
    assert into("service/decision.py") == [("croft_app/ui/app.py", "decide_batch")], calls


def test_a_threshold_carried_from_classify_brings_its_rule_to_compare():
    """Typed in Classify: Compare decides both models by it; emptied (Classify back to automatic):
    Compare goes back to its default rule, never left on the energy rule with an empty box."""
    from croft_app.service.decision import RULE_NEGATIVES, RULE_USER
    from croft_app.ui.common import COMPARE_RULES, _carried_threshold

    assert COMPARE_RULES[0][1] == RULE_NEGATIVES  # the default: the same kind of rule for both models
    box, rule = _carried_threshold("8.5")
    assert (box["value"], box["visible"], rule["value"]) == ("8.5", True, RULE_USER)
    box, rule = _carried_threshold("  ")
    assert (box["value"], box["visible"], rule["value"]) == ("", False, RULE_NEGATIVES)
