"""CRoFT Lab — the Gradio app: open-set CLIP classification that says "unknown", with energy plots.

CRoFT (Zhu et al., ICML 2024, arXiv 2405.16417) fine-tunes class-agnostic adapters on a frozen CLIP
and rejects images of unseen classes with the energy score ``S(x) = logsumexp_k(tau * cos)``. This
file is only the user interface: every decision is made in :mod:`croft_core`
(:mod:`croft_core.predict`, :mod:`croft_core.images`, :mod:`croft_core.pipeline`,
:mod:`croft_core.viz`).

Tabs: **Classify** (one image or several, a vocabulary, a model, a threshold), **Compare** (zero-shot
vs a fine-tuned checkpoint on the same image) and **Lab** (a benchmark evaluation).

Public API (``gradio_client``)::

    from gradio_client import Client, handle_file
    client = Client("http://127.0.0.1:7860/")
    client.predict(handle_file("img.png"), "circle, square", "zero-shot", None, api_name="/classify")
    client.predict("shapes", "zero-shot", 1, api_name="/evaluate")

Configuration is by environment variable only (:class:`croft_core.settings.AppSettings`,
docs/APP.md, docs/SECURITY.md): ``CROFT_BACKBONE`` (default ``embedded``), ``CROFT_CHECKPOINTS``
(comma-separated checkpoint folders / Hub ids, shown by display name), the trust policy
(``CROFT_ALLOW_LOCAL_PATHS``, ``CROFT_ALLOW_HUB_MODELS``), limits, and Gradio's own
``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT``. Safe to host in public with the defaults.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import gradio as gr
import numpy as np
import torch
from gradio.components.plot import PlotData

from croft_core.backbones import DEFAULT_CACHE_DIR, Backbone, load_backbone
from gradio import utils as gradio_utils

from croft_core import present
from croft_core.benchmarks import BENCHMARKS as REGISTERED_BENCHMARKS
from croft_core.images import ImageError, load_image
from croft_core.limits import JobTimeout, deadline, prune_lru, return_freed_memory
from croft_core.predict import ZERO_SHOT
from croft_core.prompts import get_vocabulary, list_vocabularies
from croft_core.registry import ClassifierRegistry
from croft_core.security import (NOT_AN_UPLOAD, AccessRefused, check_benchmark, check_benchmark_file,
                                 confine, display_spec, scrub_paths)
from croft_core.settings import AppSettings
from croft_core.synth import EMBEDDED_CHECKPOINT
from croft_core.vocabulary import resolve_vocabulary

logger = logging.getLogger("croft.app")

# ---------------------------------------------------------------------------------------------
# Settings (environment variables only: argv belongs to croft_core/cli.py)
# ---------------------------------------------------------------------------------------------

SETTINGS = AppSettings.from_env()
return_freed_memory()  # large image buffers go back to the OS when freed (glibc)
# with the embedded backbone and no configured checkpoints, offer the shipped CRoFT checkpoint
SHIPPED = (str(EMBEDDED_CHECKPOINT),) if SETTINGS.backbone == "embedded" and EMBEDDED_CHECKPOINT.is_dir() else ()
CHECKPOINTS = SETTINGS.checkpoints or SHIPPED
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOP_K = 5
MAX_BATCH = 64  # images per "Classify all"
BENCHMARKS = ("shapes",)  # offered in the Lab; any registered name can be typed

try:  # Hugging Face ZeroGPU: run inference on a GPU slice; elsewhere a no-op
    import spaces

    gpu = spaces.GPU  # AttributeError: the repo's own spaces/ folder, seen as a namespace package
except (ImportError, AttributeError):
    def gpu(fn: Callable | None = None, **_: Any) -> Callable:
        """No-op stand-in for ``spaces.GPU`` (usable bare or with arguments)."""
        return fn if fn is not None else (lambda f: f)


# ---------------------------------------------------------------------------------------------
# Resources: loaded once per process
# ---------------------------------------------------------------------------------------------

@dataclass
class Resources:
    """Everything loaded once: the backbone, the models by name, the example images, the settings."""

    backbone: Backbone
    registry: ClassifierRegistry
    examples: list[list[Any]] = field(default_factory=list)
    default_vocabulary: str = ""
    default_model: str = ZERO_SHOT
    settings: AppSettings = field(default_factory=AppSettings)
    cache_dir: Path = DEFAULT_CACHE_DIR
    upload_root: Path = field(default_factory=lambda: Path(gradio_utils.get_upload_folder()))


def load_resources(settings: AppSettings = SETTINGS, checkpoints: Sequence[str] = CHECKPOINTS, *,
                   embedded_world: bool | None = None, device: str = DEVICE,
                   cache_dir: Path = DEFAULT_CACHE_DIR, default_model: str | None = None) -> Resources:
    """Load the backbone and prepare the models, examples and the default vocabulary's cache.

    Args:
        settings: backbone, limits and the trust policy (:class:`AppSettings`).
        checkpoints: checkpoint folders / Hub ids offered in the model menus (by display name).
        embedded_world: the backbone knows the shapes world (``None``: auto-detect ``embedded``).
        device: where the backbone runs.
        cache_dir: text / feature caches and the rendered examples.
        default_model: the model selected at start (default: the first checkpoint, else zero-shot).
    """
    backbone = load_backbone(settings.backbone, device=device)
    registry = ClassifierRegistry(backbone, checkpoints, policy=settings.policy,
                                  max_checkpoint_bytes=settings.max_checkpoint_bytes,
                                  max_classes=settings.max_classes, embedded_world=embedded_world,
                                  cache_dir=Path(cache_dir) / "app-text",
                                  text_cache_bytes=settings.text_cache_bytes)
    preset = "shapes" if registry.embedded_world else "cifar10"
    examples = [[str(p), "shapes", ZERO_SHOT]
                for p in present.render_examples(Path(cache_dir) / "app-examples")]
    default_model = default_model or (registry.checkpoints[0] if registry.checkpoints else ZERO_SHOT)
    for name in dict.fromkeys([ZERO_SHOT, default_model]):  # warm the caches of the first request
        try:
            classifier = registry.get(name)
            classes, _, _ = classifier.prepare_vocabulary(get_vocabulary(preset))
            classifier.reference(classes)
        except ValueError as err:
            logger.warning("could not prepare model %s: %s", name, err)
            default_model = ZERO_SHOT
    return Resources(backbone, registry, examples, ", ".join(get_vocabulary(preset)), default_model,
                     settings, Path(cache_dir))


# ---------------------------------------------------------------------------------------------
# Handlers: typed, inference mode, every input error a gr.Error without paths or tracebacks
# ---------------------------------------------------------------------------------------------

def user_errors(fn: Callable) -> Callable:
    """Library ``ValueError``s (bad image, vocabulary, threshold, model...) -> ``gr.Error`` with any
    server path shortened; anything else -> a generic ``gr.Error`` (the traceback goes to the log)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except gr.Error:
            raise
        except ValueError as err:
            raise gr.Error(scrub_paths(str(err)), print_exception=False) from None
        except Exception:
            logger.exception("unexpected error in %s", fn.__name__)
            raise gr.Error("The server could not handle this request (the error was logged); check "
                           "the inputs and try again.", print_exception=False) from None
    return wrapper


def file_path(payload: Any, upload_root: str | os.PathLike) -> str | None:
    """The local path of an uploaded file, which must lie in Gradio's upload folder.

    Gradio passes a file as a path or a FileData dict (``{"path", "meta": {"_type":
    "gradio.FileData"}}``, or a gallery item ``{"image": FileData}``). Gradio checks that a FileData
    *with* ``meta`` was uploaded; a dict without it is passed through unchecked, so it is refused
    here, and every path is confined to the upload folder (one message, whether it exists or not).
    """
    if payload is None or payload == "":
        return None
    if isinstance(payload, dict) and isinstance(payload.get("image"), dict):  # gallery item
        payload = payload["image"]
    if isinstance(payload, dict):
        meta = payload.get("meta")
        if not isinstance(meta, dict) or meta.get("_type") != "gradio.FileData":
            raise AccessRefused(NOT_AN_UPLOAD)
        payload = payload.get("path")
    if not isinstance(payload, str) or not payload:
        raise AccessRefused("cannot read the uploaded file; upload an image file")
    return str(confine(payload, upload_root))


class Handlers:
    """The event handlers of the app, bound to loaded :class:`Resources` (tests call them directly)."""

    def __init__(self, resources: Resources):
        self.r = resources
        # One Lab job at a time. Another request is refused at once instead of waiting: queued
        # evaluations would hold the shared queue's slots (one client could fill it).
        self._lab = threading.Lock()

    # -- Classify --------------------------------------------------------------------------
    def _vocabulary(self, vocabulary: Any) -> tuple[list[str], list[str]]:
        return resolve_vocabulary(vocabulary, self.r.settings.max_classes)

    def _path(self, payload: Any) -> str | None:
        return file_path(payload, self.r.upload_root)

    def _reference_groups(self, classifier, classes: Sequence[str]) -> tuple[dict[str, Any], Any]:
        ref = classifier.reference(classifier.prepare_vocabulary(classes)[0])
        return ({} if ref.scores is None else {f"ID reference ({ref.source})": ref.scores}), ref

    @gpu
    @user_errors
    @torch.inference_mode()
    def classify(self, image: Any, vocabulary: str, model: str, threshold: Any) -> dict[str, Any]:
        """Classify one image against a vocabulary; reject it as "unknown" below the threshold.

        Returns a JSON object: label ("unknown" when rejected), accepted, score (energy; higher = more
        in-distribution), threshold, probabilities (top 5), predicted_class, threshold_source,
        model, notes and warnings.
        """
        path = self._path(image)
        if path is None:
            raise gr.Error("No image: upload an image (PNG, JPEG, WebP, ...) first.",
                           print_exception=False)
        classifier = self.r.registry.get(model)
        classes, notes = self._vocabulary(vocabulary)
        threshold = present.parse_threshold(threshold)
        (prediction,) = classifier.classify([load_image(path)], classes, threshold, top_k=TOP_K)
        out = prediction.to_dict()
        out["notes"] = notes + out["notes"]
        return present.without_paths({"model": classifier.name, **out})

    @user_errors
    @torch.inference_mode()
    def explain(self, result: dict[str, Any] | None, vocabulary: str, model: str) -> tuple[str, dict, Any]:
        """Decision text, top-k probabilities and the energy plot of a ``/classify`` result.

        The plot is plotly JSON built without plotly's validation (``energy_histogram_json``,
        ~1 ms instead of ~35 ms), handed to ``gr.Plot`` as ready ``PlotData``.
        """
        from croft_core.viz import energy_histogram_json

        if not result:
            return "", {}, None
        result = present.check_result(result)  # it comes back from the browser
        classifier = self.r.registry.get(model)
        groups, _ = self._reference_groups(classifier, self._vocabulary(vocabulary)[0])
        plot = energy_histogram_json(groups, score=result["score"], threshold=result["threshold"],
                                     title=f"Why: this image's energy vs the ID reference — "
                                           f"{result['label']}")
        return (present.decision_markdown(result), result["probabilities"],
                PlotData(type="plotly", plot=plot))

    def classify_example(self, image: Any, vocabulary: str, model: str) -> tuple[dict, str, dict, Any]:
        """``classify`` + ``explain`` in one call, with the calibrated threshold (cached examples)."""
        result = self.classify(image, vocabulary, model, None)
        return (result, *self.explain(result, vocabulary, model))

    @gpu
    @user_errors
    @torch.inference_mode()
    def classify_batch(self, files: Any, vocabulary: str, model: str,
                       threshold: Any) -> tuple[list[tuple[str, str]], list[list[Any]], Any]:
        """Several images: a captioned gallery, a table, and all energies against the reference."""
        from croft_core.viz import energy_histogram

        if files is not None and not isinstance(files, list):
            raise gr.Error("Upload one or more image files.", print_exception=False)
        if len(files or []) > MAX_BATCH:
            raise gr.Error(f"{len(files)} images is more than {MAX_BATCH} at once; classify fewer.",
                           print_exception=False)
        paths = [p for p in (self._path(f) for f in (files or [])) if p]
        if not paths:
            raise gr.Error("No images: upload one or more image files first.", print_exception=False)
        classifier = self.r.registry.get(model)
        classes, _ = self._vocabulary(vocabulary)
        threshold = present.parse_threshold(threshold)
        good, predictions, errors = [], [], []
        for p in paths:  # one image in memory at a time
            try:
                image = load_image(p)
            except ImageError as err:
                errors.append((Path(p).name, str(err)))
                continue
            predictions += classifier.classify([image], classes, threshold, top_k=TOP_K)
            good.append(p)
        if not predictions:
            raise gr.Error("None of the files is a usable image: " + "; ".join(e for _, e in errors),
                           print_exception=False)
        groups, ref = self._reference_groups(classifier, classes)
        groups["your images"] = np.array([p.score for p in predictions])
        fig = energy_histogram(groups, threshold=predictions[0].threshold,
                               title=f"Energies of your images ({ref.note})")
        gallery = [(p, present.caption(pred)) for p, pred in zip(good, predictions)]
        return gallery, present.batch_rows([Path(p).name for p in good], predictions, errors), fig

    # -- Compare ---------------------------------------------------------------------------
    @gpu
    @user_errors
    @torch.inference_mode()
    def compare(self, image: Any, vocabulary: str, model_a: str,
                model_b: str) -> tuple[str, dict, str, dict, Any]:
        """The same image through two models: both verdicts and both energy distributions."""
        from croft_core.viz import energy_comparison

        path = self._path(image)
        if path is None:
            raise gr.Error("No image: upload an image first.", print_exception=False)
        classifiers = [self.r.registry.get(name) for name in (model_a, model_b)]
        classes, notes = self._vocabulary(vocabulary)
        img = load_image(path)
        out, panels = [], {}
        for classifier in classifiers:
            pred = classifier.classify([img], classes, None, top_k=TOP_K)[0]
            p = {"model": classifier.name, **pred.to_dict()}
            p["notes"] = notes + p["notes"]
            _, ref = self._reference_groups(classifier, classes)
            panels[f"{classifier.name} ({pred.label})"] = {
                "reference": ref.scores, "score": pred.score, "threshold": pred.threshold}
            out += [present.decision_markdown(p), pred.probabilities]
        return (*out, energy_comparison(panels))

    # -- Lab -------------------------------------------------------------------------------
    @gpu(duration=600)
    @user_errors
    @torch.inference_mode()
    def evaluate(self, benchmark: str, model: str, seed: Any,
                 progress: gr.Progress = gr.Progress(track_tqdm=True)) -> tuple[dict[str, Any], dict]:
        """Evaluate a model on a registered benchmark (such as "shapes") and return the results JSON:
        ID and covariate accuracy, semantic-shift detection (AUROC, FPR95, AUPR) per score,
        full-spectrum detection and the deployment threshold."""
        name = check_benchmark(benchmark or "shapes", REGISTERED_BENCHMARKS, self.r.settings.policy)
        seed = present.parse_seed(seed)
        classifier = self.r.registry.get(model)
        limit = self.r.settings.lab_time_limit
        if not self._lab.acquire(blocking=False):
            raise gr.Error("The Lab is busy with another evaluation (one runs at a time); try again "
                           "when it has finished.", print_exception=False)
        progress(0.0, desc=f"preparing benchmark {name!r} (the shapes dataset renders on first use, "
                           f"about a minute)")
        try:
            with deadline(limit):
                results, energies = self._run_benchmark(name, classifier, seed, progress)
        except JobTimeout:
            raise gr.Error(f"The evaluation ran longer than {limit} s (CROFT_LAB_TIME_LIMIT) and was "
                           f"stopped.", print_exception=False) from None
        finally:
            self._lab.release()
        results = present.without_paths(present.json_safe(
            {**results, "backbone": display_spec(self.r.backbone.spec), "model": classifier.name}))
        energies = {k: np.asarray(v, dtype=np.float64) for k, v in energies.items()}
        return results, {"results": results, "energies": energies}

    def _run_benchmark(self, name: str, classifier, seed: int, progress: gr.Progress) -> tuple[dict, dict]:
        from croft_core.benchmarks import get_benchmark
        from croft_core.evaluate import zeroshot_model
        from croft_core.pipeline import evaluate_checkpoint

        if name not in REGISTERED_BENCHMARKS:  # a JSON path: only with CROFT_ALLOW_LOCAL_PATHS=1
            check_benchmark_file(name)
        try:
            bench = get_benchmark(name, seed=seed)
            head = zeroshot_model(self.r.backbone, bench) if classifier.is_zero_shot else classifier.model
            progress(0.1, desc="encoding images (cached after the first run)")
            return evaluate_checkpoint(self.r.backbone, bench, head, seed=seed, knn=False,
                                       cache_dir=self.r.cache_dir)
        except (FileNotFoundError, KeyError, OSError, RuntimeError) as err:
            raise ValueError(f"Evaluation of {name!r} failed: {err}") from err

    @user_errors
    def explain_evaluation(self, state: dict | None) -> tuple[Any, Any, Any, str | None]:
        """Results table, energy histograms, ROC curves and the results JSON file to download.

        Reads the server-side state of :meth:`evaluate` only (never a browser-sent JSON).
        """
        import pandas as pd
        from croft_core.viz import energy_histogram, roc_curves

        if not isinstance(state, dict) or "results" not in state:
            return None, None, None, None
        results, energies = state["results"], state["energies"]
        table = pd.DataFrame(present.results_table(results), columns=present.TABLE_HEADERS)
        hist = energy_histogram(present.energy_groups(energies),
                                threshold=results.get("threshold", {}).get("value"),
                                title=f"Energy: ID / covariate / semantic — {results.get('method')}")
        sets = present.roc_sets(energies)
        roc = roc_curves(*sets, title="ROC: ID vs each unseen set (energy)") if sets else None
        root = self.r.cache_dir / "app-results"
        path = present.write_results(results, root / uuid.uuid4().hex)
        prune_lru(root, self.r.settings.results_cache_bytes)
        return table, hist, roc, str(path)


# ---------------------------------------------------------------------------------------------
# Layout: one function per tab, then the events
# ---------------------------------------------------------------------------------------------

@contextlib.contextmanager
def examples_cache(resources: Resources) -> Iterator[None]:
    """Point Gradio's example cache at a folder keyed on the backbone and this file.

    Gradio names the cache folder after the component id only, so outputs cached with another
    backbone (or an older app) would be served as they are. ``gr.Examples`` reads
    ``GRADIO_EXAMPLES_CACHE`` in its constructor; it is set for that moment and restored after.
    """
    key = hashlib.sha1(f"{resources.backbone.cache_id}|".encode() + Path(__file__).read_bytes())
    previous = os.environ.get("GRADIO_EXAMPLES_CACHE")
    base = Path(previous) if previous else resources.cache_dir / "app-examples-cache"
    os.environ["GRADIO_EXAMPLES_CACHE"] = str(base / key.hexdigest()[:12])
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("GRADIO_EXAMPLES_CACHE", None)
        else:
            os.environ["GRADIO_EXAMPLES_CACHE"] = previous


def _preset_text(preset: str | None) -> Any:
    if not preset or preset not in list_vocabularies():
        return gr.update()
    classes = get_vocabulary(preset)
    return ", ".join(classes) if len(classes) <= 100 else preset


PRIVATE = dict(api_visibility="private")  # every event except /classify and /evaluate


def _model_menu(resources: Resources, label: str, value: str) -> gr.Dropdown:
    return gr.Dropdown(label=label, value=value, choices=resources.registry.names(),
                       allow_custom_value=True,
                       info="zero-shot, a listed checkpoint, or type a Hub id (ORG/NAME)")


def classify_tab(resources: Resources, h: Handlers) -> None:
    """One image (or several) against a vocabulary; the public ``/classify`` endpoint."""
    with gr.Row():
        with gr.Column():
            image = gr.Image(label="image", type="filepath", sources=["upload", "clipboard"], height=280)
            preset = gr.Dropdown(label="preset", choices=list_vocabularies(), value=None,
                                 info="fills the vocabulary")
            vocabulary = gr.Textbox(label="vocabulary", value=resources.default_vocabulary, lines=3,
                                    elem_id="vocabulary",
                                    info="a preset name, or class names, one per line or comma-separated")
            model = _model_menu(resources, "model", resources.default_model)
            # a Textbox, not gr.Number: Gradio's Number widget turns "empty" into 0, and empty must
            # mean "the calibrated threshold"
            threshold = gr.Textbox(label="threshold", value="", max_lines=1,
                                   placeholder="calibrated (95% ID TPR)",
                                   info="energy threshold (a number); empty = calibrated at 95% ID TPR")
            button = gr.Button("Classify", variant="primary", elem_id="classify")
        with gr.Column():
            decision = gr.Markdown(elem_id="decision")
            probabilities = gr.Label(label="probabilities", num_top_classes=TOP_K)
            plot = gr.Plot(label="energy")
            result = gr.JSON(label="result")
    with examples_cache(resources):
        gr.Examples(resources.examples, inputs=[image, vocabulary, model],
                    outputs=[result, decision, probabilities, plot], fn=h.classify_example,
                    example_labels=[e[2] for e in present.EXAMPLES], cache_examples=True,
                    cache_mode="lazy", **PRIVATE)
    with gr.Accordion("Several images", open=False):
        images = gr.File(label="images", file_count="multiple", file_types=["image"])
        batch_button = gr.Button("Classify all")
        gallery = gr.Gallery(label="results", columns=4, height="auto")
        batch_table = gr.Dataframe(label="batch results", headers=present.BATCH_HEADERS)
        batch_plot = gr.Plot(label="energies of your images")

    preset.change(_preset_text, preset, vocabulary, queue=False, **PRIVATE)
    button.click(h.classify, [image, vocabulary, model, threshold], result, api_name="classify",
                 preprocess=False, concurrency_id="infer").success(
        h.explain, [result, vocabulary, model], [decision, probabilities, plot],
        concurrency_id="infer", **PRIVATE)
    batch_button.click(h.classify_batch, [images, vocabulary, model, threshold],
                       [gallery, batch_table, batch_plot], preprocess=False, concurrency_id="infer",
                       **PRIVATE)


def compare_tab(resources: Resources, h: Handlers) -> None:
    """Zero-shot vs a checkpoint on the same image, side by side."""
    with gr.Row():
        with gr.Column():
            image = gr.Image(label="image", type="filepath", height=240)
            vocabulary = gr.Textbox(label="vocabulary", value=resources.default_vocabulary, lines=2)
            with gr.Row():
                model_a = _model_menu(resources, "model A", ZERO_SHOT)
                model_b = _model_menu(resources, "model B", resources.registry.names()[-1])
            button = gr.Button("Compare", variant="primary")
        with gr.Column():
            with gr.Row():
                with gr.Column():
                    decision_a = gr.Markdown()
                    probs_a = gr.Label(label="model A probabilities", num_top_classes=TOP_K)
                with gr.Column():
                    decision_b = gr.Markdown()
                    probs_b = gr.Label(label="model B probabilities", num_top_classes=TOP_K)
    plot = gr.Plot(label="energy distributions")
    button.click(h.compare, [image, vocabulary, model_a, model_b],
                 [decision_a, probs_a, decision_b, probs_b, plot], preprocess=False,
                 concurrency_id="infer", **PRIVATE)


def lab_tab(resources: Resources, h: Handlers) -> None:
    """A benchmark evaluation; the public ``/evaluate`` endpoint (one at a time)."""
    with gr.Row():
        benchmark = gr.Dropdown(label="benchmark", choices=list(BENCHMARKS), value="shapes",
                                allow_custom_value=True, info="a registered benchmark")
        model = _model_menu(resources, "model", resources.default_model)
        seed = gr.Number(label="seed", value=1, precision=0)
    button = gr.Button("Run evaluation", variant="primary")
    results = gr.JSON(label="results")
    state = gr.State()  # results and energies, kept on the server
    table = gr.Dataframe(label="results table", headers=present.TABLE_HEADERS)
    with gr.Row():
        hist = gr.Plot(label="energy distributions")
        roc = gr.Plot(label="ROC curves")
    download = gr.File(label="results JSON")
    # two slots: one evaluation runs, the second slot refuses others at once (see Handlers.evaluate)
    button.click(h.evaluate, [benchmark, model, seed], [results, state], api_name="evaluate",
                 concurrency_limit=2, concurrency_id="lab", preprocess=False).success(
        h.explain_evaluation, state, [table, hist, roc, download], **PRIVATE)


def build_demo(resources: Resources) -> gr.Blocks:
    """The Blocks app over loaded resources (tests build one on a tiny backbone)."""
    h = Handlers(resources)
    age = resources.settings.delete_cache_after
    with gr.Blocks(title="CRoFT Lab: open-set CLIP classification", delete_cache=(age, age)) as demo:
        gr.Markdown(
            f"# CRoFT Lab — CLIP that says *unknown*\n"
            f"Classify images against any vocabulary with a frozen CLIP "
            f"(`{display_spec(resources.backbone.spec)}`) "
            f"and [CRoFT](https://arxiv.org/abs/2405.16417) adapters (ICML 2024). An image whose "
            f"energy score `S(x) = logsumexp(τ·cos)` falls below the threshold (95% of ID reference "
            f"images score above it) is rejected as **unknown**; the plot shows why.")
        with gr.Tab("Classify"):
            classify_tab(resources, h)
        with gr.Tab("Compare"):
            compare_tab(resources, h)
        with gr.Tab("Lab"):
            lab_tab(resources, h)
    demo.queue(default_concurrency_limit=resources.settings.concurrency,
               max_size=resources.settings.queue_size)
    return demo


def launch(app: gr.Blocks | None = None, **kwargs: Any) -> Any:
    """``demo.launch`` with the upload size limit and the session capacity; tests pass the address."""
    app = demo if app is None else app
    settings = RESOURCES.settings
    return app.launch(max_file_size=settings.max_file_size,
                      state_session_capacity=settings.session_capacity, **kwargs)


RESOURCES = load_resources(default_model=None if SETTINGS.checkpoints else ZERO_SHOT)  # shipped one: not the default
demo = build_demo(RESOURCES)

if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    launch()
