"""CRoFT Lab — the Gradio app: open-set CLIP classification that says "unknown", with energy plots.

CRoFT (Zhu et al., ICML 2024, arXiv 2405.16417) fine-tunes class-agnostic adapters on a frozen CLIP
and rejects images of unseen classes with the energy score ``S(x) = logsumexp_k(tau * cos)``. This
file holds the resources and the handlers; every decision is made in :mod:`croft_core`
(:mod:`croft_app.service.decision`: which rule says "unknown" and why; :mod:`croft_app.service.explain`: the words
and tables; :mod:`croft_core.runs.figures`: the plots); the layout is in ``croft_app.ui.common.py`` and the Train
tab in ``croft_app.ui.train.py``.

Tabs: **Classify** (one image or several, a vocabulary, a model, a threshold), **Compare** (two
models on the same image), **Lab** (a benchmark evaluation, one model or two) and **Train**
(fine-tune, then use the model at once in this session).

Public API (``gradio_client``)::

    from gradio_client import Client, handle_file
    client = Client("http://127.0.0.1:7860/")
    client.predict(handle_file("img.png"), "circle, square", "zero-shot", None, api_name="/classify")
    client.predict("shapes", "zero-shot", 1, api_name="/evaluate")
    client.predict("shapes", "croft", 4, 1, 50, api_name="/finetune")  # -> {"model", "history", "results"}

Configuration is by environment variable only (:class:`croft_app.service.settings.AppSettings`,
docs/APP.md, docs/SECURITY.md): ``CROFT_BACKBONE`` (default ``embedded``), ``CROFT_CHECKPOINTS``
(comma-separated checkpoint folders / Hub ids, shown by display name), the trust policy
(``CROFT_ALLOW_LOCAL_PATHS``, ``CROFT_ALLOW_HUB_MODELS``), limits, and Gradio's own
``GRADIO_SERVER_NAME`` / ``GRADIO_SERVER_PORT``. Safe to host in public with the defaults.
"""

from __future__ import annotations

# first: on ZeroGPU, ``spaces`` must be imported before anything touches torch / CUDA
from croft_app.ui.zerogpu import GPU as gpu  # isort: skip
from croft_app.ui.zerogpu import ZERO_GPU, classify_seconds, lab_seconds  # isort: skip

import contextlib
import functools
import json
import logging
import os
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import gradio as gr
import numpy as np
import torch
from gradio.components.plot import PlotData

from croft_core.clip.backbones import DEFAULT_CACHE_DIR, Backbone, load_backbone
from gradio import utils as gradio_utils

from croft_app.service import explain as explain_text
from croft_app.service import present
from croft_core.data.benchmarks import BENCHMARKS as REGISTERED_BENCHMARKS
from croft_core.data.images import ImageError, load_image
from croft_core.errors import CroftError
from croft_app.service.labcost import LabPlanner, measure_throughput
from croft_app.service.trainproc import TrainingProcess
from croft_app.service.limits import (BodyLimit, JobTimeout, NewSessionPacing, deadline, prune_lru,
                                      return_freed_memory)
from croft_app.service.classifier import ZERO_SHOT
from croft_core.clip.prompts import get_vocabulary, list_vocabularies
from croft_app.service.decision import (RULE_AUTOMATIC, RULE_NEGATIVES, Decisions, NegativeRules, classify_open,
                                       decide_batch, plot_reference, rule_statement)
from croft_app.service.models import ClassifierRegistry
from croft_app.service.sessions import SessionModels, SessionRegistry
from croft_app.service.security import check_benchmark, check_benchmark_file, display_spec, file_path
from croft_app.service.settings import AppSettings
from croft_core.data.synth import EMBEDDED_CHECKPOINT
from croft_app.service.vocabulary import resolve_vocabulary
from croft_app.service.showcase import (FINE_TUNED, answered_examples, context_line, heldout_numbers,
                                        render_classes, render_showcase)
from croft_core.runs.figures import margin_comparison_json, score_plot_json
from croft_app.ui.api import refuse_plain_string
from croft_app.ui.common import Ticker, user_errors

logger = logging.getLogger("croft.app")

# ---------------------------------------------------------------------------------------------
# Settings (environment variables only: argv belongs to croft_core/cli.py)
# ---------------------------------------------------------------------------------------------

TOP_K = 5
MAX_BATCH = 64  # images per "Classify all"
BENCHMARKS = ("shapes",)  # offered in the Lab; any registered name can be typed

LAB_IMAGES = 4000  # images a Lab evaluation of "shapes" encodes: 2,880 test + 960 validation (+ margin)
LAB_GPU_SECONDS = lab_seconds(LAB_IMAGES)  # the ZeroGPU duration of one evaluation


def _classes(vocabulary: Any) -> int:
    """How many classes a vocabulary field names (for the GPU duration; bad input: the cap)."""
    try:
        return len(resolve_vocabulary(vocabulary)[0])
    except (TypeError, ValueError):
        return 0


def _classify_duration(self, image: Any, vocabulary: Any, *_: Any, **__: Any) -> int:
    return classify_seconds(1, _classes(vocabulary))


def _batch_duration(self, files: Any, vocabulary: Any, *_: Any, **__: Any) -> int:
    images = len(files) if isinstance(files, list) else 1
    return classify_seconds(min(images, MAX_BATCH), _classes(vocabulary))


def _compare_duration(self, image: Any, vocabulary: Any, *_: Any, **__: Any) -> int:
    return classify_seconds(2, 2 * _classes(vocabulary))


# ---------------------------------------------------------------------------------------------
# Resources: loaded once per process
# ---------------------------------------------------------------------------------------------

@dataclass
class Resources:
    """Everything loaded once: the backbone, the models by name, the example images, the settings."""

    backbone: Backbone
    registry: SessionRegistry  # the listed models, and each session's fine-tuned ones
    negatives: NegativeRules | None = None
    examples: list[tuple[str, str]] = field(default_factory=list)  # (image, caption with the real answer)
    classes: list[tuple[str, str]] = field(default_factory=list)  # (thumbnail, ID class) of the first screen
    default_vocabulary: str = ""
    default_model: str = ZERO_SHOT
    settings: AppSettings = field(default_factory=AppSettings)
    cache_dir: Path = DEFAULT_CACHE_DIR
    upload_root: Path = field(default_factory=lambda: Path(gradio_utils.get_upload_folder()))
    showcase: list = field(default_factory=list)  # the Example of each entry of ``examples``
    compared: tuple[str, ...] = (ZERO_SHOT,)  # the models the captions answer for; Compare's default A, B
    context: str = ""  # the line under the examples: held-out-style accuracy, from the checkpoint folder
    lab: LabPlanner | None = None  # what a Lab job costs here, against the limit (None: not estimated)


def default_checkpoints(settings: AppSettings) -> tuple[str, ...]:
    """The operator's checkpoints; with the embedded backbone and none configured, the shipped one."""
    if settings.checkpoints:
        return tuple(settings.checkpoints)
    shipped = settings.backbone == "embedded" and EMBEDDED_CHECKPOINT.is_dir()
    return (str(EMBEDDED_CHECKPOINT),) if shipped else ()


SHIPPED_LEXICON = "shipped/lexicon-embeddings.safetensors"  # in a Space bundle, next to app.py (spaces/deploy.py)


def shipped_lexicon() -> Path:
    """The lexicon embeddings shipped with the app: ``CROFT_LEXICON_EMBEDDINGS`` (e.g. on a Space's
    persistent storage, ``/data/...``), else the bundle's :data:`SHIPPED_LEXICON`."""
    configured = os.environ.get("CROFT_LEXICON_EMBEDDINGS", "").strip()
    return Path(configured) if configured else Path(__file__).resolve().parents[2] / SHIPPED_LEXICON


def lab_planner(backbone: Backbone, settings: AppSettings, negatives: NegativeRules) -> LabPlanner:
    """The Lab's cost estimates, with the backbone's speed still to measure: ``create_app`` starts
    that in the background once the app is built (``LabPlanner.start``), so no page waits for it.
    On ZeroGPU nothing is measured (no GPU is attached at start-up); its per-call GPU budget
    (:func:`lab_seconds`) bounds the Lab instead."""
    def pending_words() -> int:  # a job mines negatives itself until the app's lexicon is in memory
        status = negatives.status
        return 0 if status.ready else status.total

    measure = None if ZERO_GPU else functools.partial(measure_throughput, backbone)
    return LabPlanner(settings.lab_time_limit, measure=measure, pending_words=pending_words)


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def load_resources(settings: AppSettings | None = None, checkpoints: Sequence[str] | None = None, *,
                   embedded_world: bool | None = None, device: str | None = None,
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
    settings = AppSettings.from_env() if settings is None else settings
    checkpoints = default_checkpoints(settings) if checkpoints is None else checkpoints
    backbone = load_backbone(settings.backbone, device=device or default_device())
    registry = SessionRegistry(ClassifierRegistry(
        backbone, checkpoints, policy=settings.policy, max_checkpoint_bytes=settings.max_checkpoint_bytes,
        max_classes=settings.max_classes, embedded_world=embedded_world,
        cache_dir=Path(cache_dir) / "app-text", text_cache_bytes=settings.text_cache_bytes),
        SessionModels(max_bytes=settings.session_models_bytes))
    negatives = NegativeRules(backbone, Path(cache_dir) / "app-text", shipped=shipped_lexicon())
    negatives.start()  # a real CLIP's ~20k-word lexicon encodes in the background
    preset = "shapes" if registry.embedded_world else "cifar10"
    # in Gradio's upload folder: an example put into the image box is then an upload like any other
    folder = Path(gradio_utils.get_upload_folder()) / "croft-examples"
    default_model = default_model or (registry.checkpoints[0] if registry.checkpoints else ZERO_SHOT)
    # the captions and Compare show zero-shot beside a checkpoint: the default one, else the first listed
    other = default_model if default_model != ZERO_SHOT else next(iter(registry.checkpoints), ZERO_SHOT)
    compared = tuple(dict.fromkeys([ZERO_SHOT, other]))
    for name in dict.fromkeys([*compared, default_model]):  # warm the caches of the first request
        try:
            classifier = registry.get(name)
            classes, _, _ = classifier.prepare_vocabulary(get_vocabulary(preset))
            classifier.reference(classes)
        except ValueError as err:
            logger.warning("could not prepare model %s: %s", name, err)
            default_model = ZERO_SHOT if name == default_model else default_model
            compared = tuple(m for m in compared if m != name)
    # another backbone (a real CLIP, a test's tiny one) answers the fixed examples; no pair is scanned for
    shown = _answered_examples(registry, negatives, compared, folder, pair=registry.embedded_world)
    return Resources(backbone, registry, negatives, [(str(p), c) for _, p, c in shown], render_classes(folder),
                     ", ".join(get_vocabulary(preset)), default_model, settings, Path(cache_dir),
                     showcase=[e for e, _, _ in shown], compared=compared,
                     context=_context(registry, compared), lab=lab_planner(backbone, settings, negatives))


def _short_name(registry, model: str) -> str:
    """How a caption names a model: zero-shot; "CRoFT" for a CRoFT head; else "fine-tuned"."""
    if model == ZERO_SHOT:
        return ZERO_SHOT
    return "CRoFT" if registry.get(model).model.config.method == "croft" else FINE_TUNED


def _context(registry, compared: Sequence[str]) -> str:
    """The line under the examples: the compared checkpoint's and zero-shot's accuracy on its held-out
    style, read from the checkpoint folder (its card's metrics and ``zeroshot.json``); empty without."""
    entry = registry.listed.get(compared[-1]) if len(compared) > 1 else None
    if entry is None or entry.kind != "folder":
        return ""
    try:
        numbers = heldout_numbers(entry.source)
    except ValueError as err:
        logger.warning("held-out numbers of %s: %s", entry.name, err)
        return ""
    return context_line(numbers, _short_name(registry, entry.name)) if numbers else ""


def _answered_examples(registry, negatives: NegativeRules, models: Sequence[str], folder: Path,
                       pair: bool = True) -> list:
    """The showcase (test images picked by a rule) captioned with each model's real answer."""
    def answer(model: str, images: list, vocabulary: str) -> list:
        classes = resolve_vocabulary(vocabulary)[0]
        return classify_open(registry.get(model), negatives, images, classes, None)

    try:
        return answered_examples(answer, list(models), folder, pair=pair,
                                 short={m: _short_name(registry, m) for m in models})
    except ValueError as err:
        logger.warning("examples: %s", err)
        return []


# ---------------------------------------------------------------------------------------------
# Handlers: typed, inference mode, every input error a gr.Error without paths or tracebacks
# ---------------------------------------------------------------------------------------------

def _session(request: gr.Request | None) -> str | None:
    """The caller's session (a browser tab, or one gradio_client.Client): its own models live there."""
    return getattr(request, "session_hash", None)


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
        refuse_plain_string(payload)  # a path string sent instead of handle_file(...)
        return file_path(payload, self.r.upload_root)

    def _model(self, name: Any, request: gr.Request | None):
        return self.r.registry.get(name, _session(request))

    def _decide(self, classifier, images: list, classes: Sequence[str], notes: list[str],
                threshold: Any, rule: str = RULE_AUTOMATIC) -> Decisions:
        """One pass down: classifier, then the open-set rule; results ready for the caller."""
        decided = decide_batch(classifier, self.r.negatives, images, classes, threshold, top_k=TOP_K, rule=rule)
        results = [present.without_paths({"model": classifier.name, **out, "notes": notes + out["notes"]})
                   for out in decided.results]
        return Decisions(results, decided.reference)

    @user_errors  # again outside: on ZeroGPU the inner one runs in the GPU worker process
    @gpu(duration=_classify_duration)
    @user_errors
    @torch.inference_mode()
    def classify(self, image: Any, vocabulary: str, model: str, threshold: Any,
                 request: gr.Request = None) -> dict[str, Any]:
        """Classify one image against a vocabulary; say "unknown" when it fits none of the classes.

        Returns a JSON object: label ("unknown" when rejected), accepted, score (energy; higher = more
        in-distribution), threshold (the energy threshold that decided, or null), probabilities
        (top 5), predicted_class, threshold_source, rule ("negative labels", "energy (calibrated)",
        "user threshold", or "none" while no open-set rule is available), reason (in words),
        nearest_negative, neg_score, neg_threshold, model, notes and warnings.
        """
        path = self._path(image)
        if path is None:
            raise gr.Error("No image: upload an image (PNG, JPEG, WebP, ...) first.",
                           print_exception=False)
        classifier = self._model(model, request)
        classes, notes = self._vocabulary(vocabulary)
        return self._decide(classifier, [load_image(path)], classes, notes, threshold).results[0]

    @user_errors
    @torch.inference_mode()
    def explain(self, result: dict[str, Any] | None, vocabulary: str, model: str,
                request: gr.Request = None) -> tuple[str, dict, Any]:
        """The verdict in words, the top-k probabilities and the score plot of a ``/classify`` result.

        The plot is plotly JSON built without plotly's validation (``score_plot_json``, about a
        millisecond), handed to ``gr.Plot`` as ready ``PlotData``.
        """
        if not result:
            return "", {}, None
        result = present.check_result(result)  # it comes back from the browser
        classifier = self._model(model, request)
        reference = plot_reference(classifier, self.r.negatives, self._vocabulary(vocabulary)[0])
        _, plot = _plot(result, reference, f"Why {_short(result['label'], 24)}?")
        return (explain_text.verdict_markdown(result), result["probabilities"],
                PlotData(type="plotly", plot=plot))

    def model_classes(self, model: str, request: gr.Request = None) -> Any:
        """A trained model's own classes, for the vocabulary box once it is chosen (zero-shot, or a
        model that cannot be loaded: the box is left as it is; Classify then says why)."""
        try:
            classifier = self._model(model, request)
            classes = () if classifier.is_zero_shot else classifier.training_classes
        except (ValueError, CroftError, OSError):  # only a convenience: Classify reports the error
            return gr.update()
        return ", ".join(classes) if classes else gr.update()

    def threshold_box(self, rule: str, vocabulary: str, model: str, request: gr.Request = None) -> dict:
        """The threshold box of the chosen rule: hidden and empty for the automatic rule; for the
        energy rule, shown with a threshold calibrated on these very classes (the checkpoint's own,
        or the rendered reference's) and their reference range, so that a visitor does not type 0.1
        on a scale around 9; empty when no reference of these classes exists."""
        from croft_app.ui.common import ENERGY

        if rule != ENERGY:
            return gr.update(visible=False, value="")
        try:
            classifier = self._model(model, request)
            ref = classifier.reference(classifier.prepare_vocabulary(self._vocabulary(vocabulary)[0])[0])
        except (ValueError, CroftError):
            return gr.update(visible=True, info="an energy score; images below it are 'unknown'")
        # only a reference of these very classes suggests a value (a checkpoint's scores on its
        # training classes are on another scale once the vocabulary differs: decision.py's policy)
        own = ref.source in ("checkpoint", "rendered") and ref.scores is not None and len(ref.scores)
        span = f" (your classes' reference images score {min(ref.scores):.1f} to {max(ref.scores):.1f})" if own else ""
        return gr.update(visible=True, value="" if ref.threshold is None else f"{ref.threshold:.2f}",
                         info=f"an energy score{span}; images below it are 'unknown'")

    def pick_example(self, evt: gr.SelectData) -> tuple[str, str]:
        """A showcase thumbnail was clicked: its image and vocabulary go into the inputs."""
        index = int(evt.index) if isinstance(evt.index, int) else 0
        if not 0 <= index < len(self.r.examples):
            raise gr.Error("Unknown example; click one of the thumbnails.", print_exception=False)
        example = self.r.showcase[index]
        vocab = example.vocabulary
        text = ", ".join(get_vocabulary(vocab)) if vocab in list_vocabularies() else vocab
        (path,) = render_showcase(Path(self.r.examples[index][0]).parent, [example])  # re-rendered if cleaned
        return str(path), text

    @user_errors
    @gpu(duration=_batch_duration)
    @user_errors
    @torch.inference_mode()
    def classify_batch(self, files: Any, vocabulary: str, model: str, threshold: Any,
                       progress: gr.Progress = gr.Progress(),
                       request: gr.Request = None) -> tuple[list[tuple[str, str]], list[list[Any]], Any]:
        """Several images: a captioned gallery, a table, and every score against the reference."""
        if files is not None and not isinstance(files, list):
            raise gr.Error("Upload one or more image files.", print_exception=False)
        if len(files or []) > MAX_BATCH:
            raise gr.Error(f"{len(files)} images is more than {MAX_BATCH} at once; classify fewer.",
                           print_exception=False)
        paths = [p for p in (self._path(f) for f in (files or [])) if p]
        if not paths:
            raise gr.Error("No images: upload one or more image files first.", print_exception=False)
        classifier = self._model(model, request)
        classes, notes = self._vocabulary(vocabulary)
        good, decided, rows = [], [], []
        for i, p in enumerate(paths):  # one image in memory at a time
            progress((i, len(paths)), desc=f"classifying image {i + 1} of {len(paths)}", unit="images")
            try:
                image = load_image(p)
            except ImageError as err:
                rows.append([Path(p).name, "error", None, None, None, None, None, str(err)])
                continue
            decided.append(self._decide(classifier, [image], classes, notes, threshold))
            good.append(p)
        if not decided:
            raise gr.Error("None of the files is a usable image: " + "; ".join(r[-1] for r in rows),
                           print_exception=False)
        results = [d.results[0] for d in decided]
        rows = [explain_text.batch_row(Path(p).name, r) for p, r in zip(good, results)] + rows
        extra = {f"{Path(p).name} ({r['label']})": _rule_score(r) for p, r in zip(good[1:], results[1:])}
        _, plot = _plot(results[0], decided[0].reference, "Your images vs the reference", extra)
        gallery = [(p, f"{explain_text.caption(r)} · {Path(p).name}") for p, r in zip(good, results)]  # verdict first
        first = json.dumps(f"{_short(Path(good[0]).name, 24)} ({results[0]['label']}): ")[1:-1]
        return gallery, rows, PlotData(type="plotly", plot=plot.replace('"this image: ', f'"{first}', 1))

    # -- Compare ---------------------------------------------------------------------------
    @user_errors
    @gpu(duration=_compare_duration)
    @user_errors
    @torch.inference_mode()
    def compare(self, image: Any, vocabulary: str, model_a: str, model_b: str, threshold: Any = None,
                rule: str = RULE_NEGATIVES, request: gr.Request = None) -> tuple[str, dict, str, dict, Any, str]:
        """The same image through two models, decided by the same kind of rule (``rule``, one of
        :data:`~croft_app.service.decision.SHARED_RULES`): a verdict card each, both margins on one
        plot, and the sentence that names the rule."""
        path = self._path(image)
        if path is None:
            raise gr.Error("No image: upload an image first (or pick an example).", print_exception=False)
        classifiers = [self._model(name, request) for name in (model_a, model_b)]
        classes, notes = self._vocabulary(vocabulary)
        img = load_image(path)
        out, rows, results = [], [], []
        for tag, classifier in zip("AB", classifiers):
            decided = self._decide(classifier, [img], classes, notes, threshold, rule or RULE_NEGATIVES)
            result = decided.results[0]
            results.append(result)
            inputs = _plot(result, decided.reference, "")[0]
            rows.append({"name": f"{tag}: {classifier.name}", "margin": explain_text.margin(inputs),
                         "label": result["label"]})
            out += [f"### {tag}: {classifier.name}\n\n" + explain_text.verdict_markdown(result).replace(
                "## ", "#### ", 1), result["probabilities"]]
        statement = rule_statement(rule or RULE_NEGATIVES, results, [f"{t}: {c.name}" for t, c in zip("AB", classifiers)])
        return (*out, PlotData(type="plotly", plot=margin_comparison_json(rows)), statement)

    # -- Lab -------------------------------------------------------------------------------
    @user_errors
    @gpu(duration=LAB_GPU_SECONDS)
    @user_errors
    @torch.inference_mode()
    def evaluate(self, benchmark: str, model: str, seed: Any,
                 progress: gr.Progress = gr.Progress(track_tqdm=True),
                 request: gr.Request = None) -> tuple[dict[str, Any], dict]:
        """Evaluate a model on a registered benchmark (such as "shapes") and return the results JSON:
        ID and covariate accuracy, semantic-shift detection (AUROC, FPR95, AUPR) per score,
        full-spectrum detection and the deployment threshold."""
        name = check_benchmark(benchmark or "shapes", REGISTERED_BENCHMARKS, self.r.settings.policy)
        seed = present.parse_seed(seed)
        classifier = self._model(model, request)
        if self.r.lab is not None:  # a job known not to finish in time is refused before it starts, and
            self.r.lab.check(name, known_only=True)  # none runs before the host's cost is measured
        limit = self.r.settings.lab_time_limit
        if not self._lab.acquire(blocking=False):
            raise gr.Error("The Lab is busy with another evaluation (one runs at a time); try again "
                           "when it has finished.", print_exception=False)
        try:
            with deadline(limit), Ticker(progress, f"{classifier.name}: ") as tick:
                results, energies = self._run_benchmark(name, classifier, seed, tick)
        except JobTimeout:
            raise gr.Error(f"The evaluation ran longer than {limit} s and was stopped.",
                           print_exception=False) from None
        finally:
            self._lab.release()
        results = present.json_safe({**results, "backbone": display_spec(self.r.backbone.spec),
                                     "model": classifier.name})
        energies = {k: np.asarray(v, dtype=np.float64) for k, v in energies.items()}
        return results, {"results": results, "energies": energies}

    def evaluate_other(self, benchmark: str, model: str, seed: Any, compare_with: str,
                       progress: gr.Progress = gr.Progress(track_tqdm=True),
                       request: gr.Request = None) -> dict | None:
        """The Lab's second model (a comparison in the same run); None when none is chosen."""
        if not compare_with or compare_with == NO_COMPARISON or compare_with == model:
            return None
        return self.evaluate(benchmark, compare_with, seed, progress, request)[1]

    def _run_benchmark(self, name: str, classifier, seed: int, tick) -> tuple[dict, dict]:
        from croft_core.data.benchmarks import get_benchmark
        from croft_core.runs.evaluate import zeroshot_model
        from croft_core.runs.pipeline import evaluate_checkpoint

        if name not in REGISTERED_BENCHMARKS:  # a JSON path: only with CROFT_ALLOW_LOCAL_PATHS=1
            check_benchmark_file(name)
        try:
            tick.stage(0.0, 0.5, f"rendering the {name!r} images (first run only, about a minute)")
            if self.r.lab is not None:  # counted once (rendered first, as the job needs): refused before encoding
                self.r.lab.check(name)
            bench = get_benchmark(name, seed=seed)
            head = zeroshot_model(self.r.backbone, bench) if classifier.is_zero_shot else classifier.model
            tick.stage(0.5, 0.95, "encoding images and scoring them (cached after the first run)")
            return evaluate_checkpoint(self.r.backbone, bench, head, seed=seed, knn=False,
                                       cache_dir=self.r.cache_dir)
        except (FileNotFoundError, KeyError, OSError, RuntimeError) as err:
            raise ValueError(f"Evaluation of {name!r} failed: {err}") from err

    @user_errors
    def explain_evaluation(self, state: dict | None, other: dict | None = None) -> tuple[Any, Any, Any, str | None, str]:
        """Results table (in %, summary rows first, one column group per model), score
        distributions, ROC curves, the results JSON file to download and the sentence under the
        table naming each model's threshold rule (:func:`explain_text.lab_rules`).

        Reads the server-side states of :meth:`evaluate` only (never a browser-sent JSON).
        """
        import pandas as pd
        from croft_core.runs.figures import lab_histograms, lab_roc

        if not isinstance(state, dict) or "results" not in state:
            return None, None, None, None, ""
        runs = [s for s in (state, other) if isinstance(s, dict) and "results" in s]
        models = [s["results"].get("model", f"model {i + 1}") for i, s in enumerate(runs)]
        rules = explain_text.lab_rules({m: s["results"] for m, s in zip(models, runs)})  # lines and sentence
        table = pd.DataFrame(explain_text.lab_rows({m: s["results"] for m, s in zip(models, runs)}),
                             columns=explain_text.lab_headers(models))
        results, one = state["results"], len(runs) == 1
        energies = {m: s["energies"] for m, s in zip(models, runs)}
        # a row per model; one model shows each style, two show three pooled groups each (detail: the table)
        hist = lab_histograms({m: present.energy_groups(e) if one else explain_text.pooled_groups(e)
                               for m, e in energies.items()},
                              {m: r["threshold"] for m, r in rules.items()})
        curves = {m: c for m, e in energies.items() if (c := _roc_curves(e, per_set=one))}
        roc = lab_roc(curves) if curves else None
        root = Path(self.r.upload_root) / "croft-results"  # Gradio serves files from its own folder only
        path = present.write_results(results if len(runs) == 1 else {**results, "compared_with": runs[1]["results"]},
                                     root / uuid.uuid4().hex)
        prune_lru(root, self.r.settings.results_cache_bytes)
        return table, hist, roc, str(path), explain_text.lab_rule_statement(rules)


NO_COMPARISON = "(none)"


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _roc_curves(energies: dict, per_set: bool) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The Lab's ROC curves of one model: known vs each unseen set (``per_set``), or known vs all
    unseen sets and known + new styles vs all unseen sets (the table's "full spectrum")."""
    sets = present.roc_sets(energies)
    if sets is None:
        return {}
    known, unseen = sets
    if per_set:
        return {name: (known, scores) for name, scores in unseen.items()}
    pooled = np.concatenate(list(unseen.values()))
    curves = {"vs known": (known, pooled)}
    styles = explain_text.pooled_groups(energies).get("new styles")
    if styles is not None:
        curves["vs known + new styles"] = (np.concatenate([known, styles]), pooled)
    return curves


def _plot(result: dict, reference, title: str, extra: dict | None = None) -> tuple[explain_text.PlotInputs, str]:
    """The score plot of a result: a pure function of the result and its reference."""
    name = {"rendered": "your classes, rendered photos of these classes",
            "checkpoint": "your classes, the checkpoint's validation images",
            "none": "the checkpoint's training classes (another vocabulary)"}.get(reference.source, "")
    name = name if reference.energies is not None else ""
    inputs = explain_text.plot_inputs(result, reference, name)
    return inputs, score_plot_json(inputs.reference, inputs.score, inputs.threshold, log_x=inputs.log_x,
                                   xaxis=inputs.xaxis, title=title, extra_scores=extra)


def _rule_score(result: dict) -> float:
    return result["neg_score"] if result.get("rule") == "negative labels" else result["score"]


# ---------------------------------------------------------------------------------------------
# The app: the first screen, then one tab each (layout in croft_app.ui.common.py)
# ---------------------------------------------------------------------------------------------

CSS = """
#known-classes .caption-label {white-space: normal;}
#decision h2 {margin-bottom: 0.2em;}
/* example and verdict captions under their thumbnails, not over them (they covered most of the
   picture and were cut on a phone) */
#examples .thumbnail-item, #compare-examples .thumbnail-item, #batch-gallery .thumbnail-item {
  aspect-ratio: auto; height: auto; display: flex; flex-direction: column;}
#examples .thumbnail-item img, #compare-examples .thumbnail-item img, #batch-gallery .thumbnail-item img {
  height: 96px; flex: none; object-fit: contain;}
#examples .caption-label, #compare-examples .caption-label, #batch-gallery .caption-label {
  position: static; max-width: 100%; white-space: normal; border: none; border-radius: 0;
  font-size: 12px; line-height: 1.25; background: none;}
/* an example's caption: its title, then one line per model */
#examples .caption-label, #compare-examples .caption-label {white-space: pre-line; text-align: left;}
/* table headers stay whole words: the table scrolls sideways inside its box instead */
#batch-table th, #lab-table th {min-width: 7em; word-break: normal; overflow-wrap: normal;}
#lab-table th {min-width: 11em;}
#lab-table th:first-child, #batch-table th:first-child {min-width: 9em;}
"""


def build_demo(resources: Resources) -> gr.Blocks:
    """The Blocks app over loaded resources (tests build one on a tiny backbone)."""
    from croft_app.ui.api import document_api
    from croft_app.ui.train import TrainHandlers, train_tab
    from croft_app.ui.common import compare_tab, classify_tab, intro, lab_tab

    h = Handlers(resources)
    age = resources.settings.delete_cache_after
    with gr.Blocks(title="CRoFT Lab: an image classifier that can say unknown", delete_cache=(age, age)) as demo:
        intro(resources)
        with gr.Tab("Classify"):
            shared = classify_tab(resources, h)
        with gr.Tab("Compare"):
            compare_a, compare_b = compare_tab(resources, h, shared)
        with gr.Tab("Lab") as lab_page:
            # the menu applies the Lab's plan (measured in the background) at each page load and tab opening
            lab_model, lab_other = lab_tab(resources, h, BENCHMARKS, NO_COMPARISON,
                                           refresh_on=[demo.load, lab_page.select])
        with gr.Tab("Train"):
            train = TrainHandlers(resources.backbone, resources.registry, cache_dir=resources.cache_dir,
                                  upload_root=resources.upload_root, trainer=_trainer(resources))
            # every model menu lists a newly trained model; Classify, Compare B and the Lab select it
            train_tab(train, model_menus=[shared["model"], compare_b, lab_model],
                      listing_menus=[compare_a, lab_other])
        document_api(demo, resources.examples[0][0] if resources.examples else None)  # the API page
    # api_open=False: POST /gradio_api/run/<name> may not skip the queue (Gradio opens it whenever
    # SPACE_ID is unset, i.e. on every self-hosted server); every queued event goes through the queue
    with _no_event_analytics():
        demo.queue(default_concurrency_limit=resources.settings.concurrency,
                   max_size=resources.settings.queue_size, api_open=False)
    return demo


# Gradio's queue rebuilds a pandas summary of its last 10,000 events after every event, for the
# /monitoring dashboard (turned off in :func:`launch`): 4-19 ms of GIL per event on a free core,
# measured, and about a fifth of the server's busy time in a warm Train flood (docs/SECURITY.md). The
# queue reads these two variables when it is created; an operator who sets them keeps their values.
EVENT_ANALYTICS_OFF = {"GRADIO_ANALYTICS_CACHE_FREQUENCY": str(2**62), "GRADIO_ANALYTICS_MAX_EVENTS": "1"}


@contextlib.contextmanager
def _no_event_analytics() -> Iterator[None]:
    """Set :data:`EVENT_ANALYTICS_OFF` (where unset) while the queue is created, then restore."""
    added = {k: v for k, v in EVENT_ANALYTICS_OFF.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def _trainer(resources: Resources) -> TrainingProcess | None:
    """The child process that runs Train jobs, for a CPU backbone outside ZeroGPU (where the job
    needs this process's GPU, or ``spaces.GPU`` runs it in a process of its own)."""
    backbone = resources.backbone
    if not resources.settings.train_process or ZERO_GPU or backbone.device.type != "cpu":
        return None
    return TrainingProcess(backbone.spec)


def bound_kept_inputs(max_bytes: int) -> None:
    """Gradio keeps every session's last input values (for deep links) until the session is
    evicted; a value larger than ``max_bytes`` (as text) is kept as ``None`` instead, so what a
    visitor sends does not outlive the request. Installed once per process, on Gradio's
    ``SessionState`` (the app has no deep links)."""
    from gradio.state_holder import SessionState

    original = getattr(SessionState._update_value_in_config, "__wrapped__", SessionState._update_value_in_config)

    def update_value_in_config(self, key: int, value: Any) -> None:
        if value is not None and len(value if isinstance(value, str) else json.dumps(value, default=str)) > max_bytes:
            value = None
        original(self, key, value)

    update_value_in_config.__wrapped__ = original
    SessionState._update_value_in_config = update_value_in_config


def create_app(settings: AppSettings | None = None) -> tuple[gr.Blocks, Resources]:
    """The app as ``python app.py`` serves it, configured from the environment by default."""
    return_freed_memory()  # large image buffers go back to the OS when freed (glibc)
    settings = AppSettings.from_env() if settings is None else settings
    # the shipped CRoFT checkpoint is listed but not the default; an operator's first checkpoint is
    resources = load_resources(settings, default_model=None if settings.checkpoints else ZERO_SHOT)
    demo = build_demo(resources)
    if resources.lab is not None:  # measured in the background: the first page does not wait for it
        resources.lab.start(BENCHMARKS)
    return demo, resources


def launch(app: gr.Blocks, resources: Resources, **kwargs: Any) -> Any:
    """``app.launch`` with the upload and request-body size limits, the session capacity, the
    bound on kept inputs and plotly.js preloaded in the page's idle time; tests pass the address."""
    from starlette.middleware import Middleware

    from croft_app.ui.train import preload_plotly_head

    settings = resources.settings
    bound_kept_inputs(settings.max_kept_input)
    body_limit = Middleware(BodyLimit, max_bytes=settings.max_body_size, exempt=("/gradio_api/upload",))
    pacing = Middleware(NewSessionPacing, known=lambda session: session in app.state_holder,
                        per_second=settings.new_sessions_per_s)
    return app.launch(max_file_size=settings.max_file_size, css=CSS, head=preload_plotly_head(),
                      state_session_capacity=settings.session_capacity, enable_monitoring=False,
                      app_kwargs={"middleware": [body_limit, pacing]}, **kwargs)
