"""The layout of CRoFT Lab's Classify, Compare and Lab tabs and the first screen (Gradio only).

``app.py`` loads the resources and owns the handlers; this file places components and wires events.
Every output a failed request would leave stale is cleared first (``_clear`` runs before the
handler), so an error never sits next to the previous image's verdict; the verdict panel then shows
the reason (:func:`failed`), the same text as the toast, which fades.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import html
import inspect
import logging
import re
import threading
import time
from collections import OrderedDict
from typing import Any, Callable, Iterator, Sequence

import gradio as gr

from croft_app.service import explain as explain_text
from croft_core.errors import CroftError
from croft_app.service.classifier import ZERO_SHOT
from croft_app.service.decision import RULE_AUTOMATIC, RULE_NEGATIVES, RULE_USER
from croft_app.service.labcost import lab_note
from croft_app.service.showcase import WHAT_IT_KNOWS
from croft_core.clip.prompts import get_vocabulary, list_vocabularies
from croft_app.service.security import display_spec, scrub_paths

logger = logging.getLogger(__name__)


GENERIC_ERROR = ("The server could not handle this request (the error was logged); check the inputs "
                 "and try again.")
MAX_REMEMBERED_ERRORS = 1000  # sessions whose latest failure is kept for their verdict panel
_errors: OrderedDict[tuple[str, str], str] = OrderedDict()  # (session, handler) -> its last message
_errors_lock = threading.Lock()


def _session_of(args: tuple, kwargs: dict) -> str | None:
    """The session of the gr.Request Gradio passed to a handler (positionally or by name), if any."""
    for value in (*args, *kwargs.values()):
        if isinstance(value, gr.Request):
            return getattr(value, "session_hash", None)
    return None


def _remember(session: str | None, handler: str, message: str | None) -> None:
    """Keep (or, with None, drop) the message of ``handler``'s last failure in ``session``."""
    if not session:
        return
    with _errors_lock:
        _errors.pop((session, handler), None)
        if message is not None:
            _errors[(session, handler)] = message
            while len(_errors) > MAX_REMEMBERED_ERRORS:
                _errors.popitem(last=False)


def last_error(handler: str, request: gr.Request | None) -> str | None:
    """The message ``handler`` last failed with in the request's session (read once), or None."""
    session = getattr(request, "session_hash", None)
    with _errors_lock:
        return _errors.pop((session, handler), None) if session else None


def user_errors(fn: Callable) -> Callable:
    """A handler's input errors -- the library's own (``CroftError``) and ``ValueError``s (bad image,
    vocabulary, threshold, model...) -- become a ``gr.Error`` with any server path shortened;
    anything else a generic ``gr.Error`` (the traceback goes to the server log, never the visitor).

    The message (the toast's text) is also kept for the caller's session, so that the verdict panel
    can show it after the toast has gone (:func:`failed`). Generator handlers are wrapped as
    generators (Gradio streams them)."""
    name = fn.__name__

    @contextlib.contextmanager
    def reported(args: tuple, kwargs: dict) -> Iterator[None]:
        """Any failure inside becomes the visitor's ``gr.Error``, kept for the session's panel."""
        session = _session_of(args, kwargs)
        _remember(session, name, None)
        try:
            yield
        except gr.Error as err:
            _remember(session, name, scrub_paths(str(err.message)))
            raise
        except (CroftError, ValueError) as err:
            message = scrub_paths(str(err))
            _remember(session, name, message)
            raise gr.Error(message, print_exception=False) from None
        except Exception:  # noqa: BLE001 - every failure reaches the visitor as a gr.Error
            logger.exception("unexpected error in %s", name)
            _remember(session, name, GENERIC_ERROR)
            raise gr.Error(GENERIC_ERROR, print_exception=False) from None

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def generator(*args, **kwargs):
            with reported(args, kwargs):
                yield from fn(*args, **kwargs)
        return generator

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with reported(args, kwargs):
            return fn(*args, **kwargs)
    return wrapper


def _markdown_text(text: str) -> str:
    """Plain text shown as is in Markdown: HTML escaped, Markdown's special characters backslashed."""
    text = html.escape(text, quote=False)
    return re.sub(r"([\\`*_{}\[\]()#+!|~>-])", r"\\\1", text)


def failure_markdown(message: str | None, heading: str = "No result") -> str:
    """The verdict panel of a failed request: the reason (the toast's text, without server paths)."""
    if not message:
        return (f"### {heading}\n\nThe request failed: the message at the top of the page says why. "
                "Fix the input and try again.")
    return f"### {heading}\n\n{_markdown_text(scrub_paths(message))}\n\nFix the input and try again."


def failed(handler: str, heading: str = "No result") -> Callable:
    """The ``.failure`` event of a ``handler``'s request: its panel then shows why it failed.

    A function of its own (not ``functools.partial``), so that Gradio passes it the gr.Request."""
    def show_failure(request: gr.Request = None) -> str:
        return failure_markdown(last_error(handler, request), heading)
    show_failure.__name__ = f"{handler}_failed"
    return show_failure


TOP_K = 5
PRIVATE = dict(api_visibility="private")  # every event except the documented endpoints
PUBLIC_PRESETS = ("shapes", "cifar10", "cifar100", "imagenet1k")  # internal benchmark presets hidden
SHIPPED_NAME = "CRoFT · shapes · painting held out"


def presets() -> list[str]:
    """The vocabulary presets a visitor is offered (benchmark-internal ones are hidden)."""
    available = list_vocabularies()
    return [p for p in PUBLIC_PRESETS if p in available]


def preset_text(preset: str | None) -> Any:
    """The class list of a preset, written out in full (the box and the menu stay in sync)."""
    if not preset or preset not in list_vocabularies():
        return gr.update()
    return ", ".join(get_vocabulary(preset))


def preset_of(text: str | None) -> Any:
    """The preset whose class list the box holds, or no preset once the visitor edits it."""
    words = [w.strip() for w in (text or "").replace("\n", ",").split(",") if w.strip()]
    for name in presets():
        if words == list(get_vocabulary(name)) or words == [name]:
            return gr.update(value=name)
    return gr.update(value=None)


def _clear(n: int) -> Any:
    return functools.partial(lambda k: tuple([None] * k) if k > 1 else None, n)


AUTOMATIC, ENERGY = "automatic", "my energy threshold"
RULES = (AUTOMATIC, ENERGY)
STALE = "*The inputs changed: press **Classify** for a new verdict.*"


def _stale_verdict(n: int, text: str = STALE) -> Callable:
    """Outputs of a verdict made for other inputs: the panel (the second output) says so, the rest
    are emptied."""
    return functools.partial(lambda k: tuple(text if i == 1 else None for i in range(k)), n)


def _mark_stale(outputs: list, batch: list, image, vocabulary, preset, threshold, images) -> None:
    """Every Classify output that depends on an input is cleared the moment the visitor changes it
    (an upload, a typed vocabulary, a preset, a threshold), so no verdict sits beside other inputs."""
    verdict, both = _stale_verdict(len(outputs)), _stale_verdict(len(outputs) + len(batch))
    for event in (image.upload, image.clear):
        event(verdict, None, outputs, queue=False, **PRIVATE)
    for event in (vocabulary.input, preset.input, threshold.input):
        event(both, None, [*outputs, *batch], queue=False, **PRIVATE)
    for event in (images.upload, images.clear):
        event(_clear(len(batch)), None, batch, queue=False, **PRIVATE)


def _threshold_inputs() -> tuple[gr.Radio, gr.Textbox]:
    """Who decides "unknown", and the threshold box that belongs to that rule (one unit per rule:
    the box was an energy while the plot showed the word-list score on a 0-1 scale)."""
    rule = gr.Radio(list(RULES), value=AUTOMATIC, label="who decides 'unknown'", elem_id="rule",
                    info="automatic: the model's own rule (named under the verdict), or your threshold "
                         "on the energy score")
    # a Textbox, not gr.Number: Number turns "empty" into 0, and empty means "automatic"; shown
    # only with the energy rule, filled with a value on that rule's own scale
    threshold = gr.Textbox(label="energy threshold", value="", max_lines=1, elem_id="threshold",
                           placeholder="automatic", visible=False,
                           info="an energy score; images below it are 'unknown'")
    return rule, threshold


def _vocabulary_inputs(h, preset, vocabulary, model, outputs: list) -> None:
    """The preset menu and the vocabulary box stay in sync; a trained model brings its own classes:
    choosing it (or training it) fills the vocabulary, and the old verdict goes."""
    preset.input(preset_text, preset, vocabulary, queue=False, **PRIVATE)
    vocabulary.input(preset_of, vocabulary, preset, queue=False, **PRIVATE)
    # .input too: Gradio's menu sends no .change when an option is clicked (only .select and .input)
    gr.on([model.change, model.input], h.model_classes, model, vocabulary, queue=False, **PRIVATE).then(
        preset_of, vocabulary, preset, queue=False, **PRIVATE).then(
        _stale_verdict(len(outputs)), None, outputs, queue=False, **PRIVATE)


def intro(resources) -> None:
    """The first screen: what the model knows, what to try, what "unknown" means."""
    embedded = resources.registry.embedded_world
    knows = (WHAT_IT_KNOWS if embedded else
             f"It is a CLIP model (`{display_spec(resources.backbone.spec)}`) that knows everyday words.")
    gr.Markdown(
        "# CRoFT Lab — an image classifier that can say *unknown*\n"
        f"{knows} Give it a picture and a list of classes: it answers with one of your classes, "
        "or **unknown** when the picture is none of them — and says why. Try an example below, or "
        "upload your own image.", elem_id="intro")
    if embedded and resources.classes:
        gr.Gallery([(p, n) for p, n in resources.classes], label="what the model knows (its ten shapes)",
                   columns=10, rows=1, height=130, allow_preview=False, show_label=True,
                   elem_id="known-classes", object_fit="contain", buttons=[])


MENU_WIDTH = 300  # px: a model menu never narrower (a row wraps it onto its own line instead), so
# that a name such as SHIPPED_NAME or a trained "CRoFT · my-data · 16-shot" is shown whole


def _model_menu(resources, label: str, value: str) -> gr.Dropdown:
    return gr.Dropdown(label=label, value=value, choices=resources.registry.names(), allow_custom_value=True,
                       info="zero-shot CLIP, or a fine-tuned checkpoint", min_width=MENU_WIDTH,
                       elem_classes=["model-menu"])


def _examples(resources, elem_id: str, columns: int = 5) -> gr.Gallery:
    """The clickable examples, each captioned with the compared models' answers, and under them the
    line of context (the held-out style's accuracies, read from the checkpoint folder)."""
    both = len(resources.compared) > 1
    gallery = gr.Gallery(resources.examples, label="try an example (the caption is what "
                         f"{'each model answers' if both else 'the model answers'})",
                         columns=columns, height=260 if columns == 5 else 440, allow_preview=False, elem_id=elem_id, object_fit="contain",
                         buttons=[])
    if resources.context:
        gr.Markdown(resources.context, elem_id=f"{elem_id}-context", elem_classes="examples-context")
    return gallery


def classify_tab(resources, h) -> dict[str, Any]:
    """One image (or several) against a vocabulary; the public ``/classify`` endpoint."""
    with gr.Row():
        with gr.Column(scale=1):
            examples = _examples(resources, "examples")
            image = gr.Image(label="image", type="filepath", sources=["upload", "clipboard"], height=240,
                             elem_id="image")
            with gr.Row():
                preset = gr.Dropdown(label="preset", choices=presets(), value=preset_of(resources.default_vocabulary)["value"],
                                     elem_id="preset",
                                     info="fills the class list", scale=1)
                model = _model_menu(resources, "model", resources.default_model)
            vocabulary = gr.Textbox(label="vocabulary", value=resources.default_vocabulary, lines=2,
                                    elem_id="vocabulary", info="your classes, separated by commas or new lines")
            with gr.Accordion("threshold (optional)", open=False):
                rule, threshold = _threshold_inputs()
            button = gr.Button("Classify", variant="primary", elem_id="classify")
        with gr.Column(scale=1):
            decision = gr.Markdown("*Click an example, or upload an image and press Classify.*", elem_id="decision")
            plot = gr.Plot(label="why: the score against the threshold", elem_id="score-plot")
            probabilities = gr.Label(label="probabilities (over your classes only)", num_top_classes=TOP_K, show_heading=False,
                                     elem_id="probabilities")
            with gr.Accordion("raw result (JSON)", open=False):
                result = gr.JSON(label="result")
    with gr.Accordion("Several images at once", open=True):
        with gr.Row():
            images = gr.File(label="images", file_count="multiple", file_types=["image"], scale=1)
            batch_button = gr.Button("Classify all", scale=0, elem_id="classify-all")
        gallery = gr.Gallery(label="verdicts", columns=4, height="auto", elem_id="batch-gallery")
        batch_table = gr.Dataframe(label="per image", headers=explain_text.BATCH_HEADERS, wrap=True,
                                   elem_id="batch-table")
        batch_plot = gr.Plot(label="your images' scores")

    outputs = [result, decision, probabilities, plot]
    _mark_stale(outputs, [gallery, batch_table, batch_plot], image, vocabulary, preset, threshold, images)
    rule.input(h.threshold_box, [rule, vocabulary, model], threshold, queue=False, **PRIVATE).then(
        _stale_verdict(len(outputs)), None, outputs, queue=False, **PRIVATE)
    _vocabulary_inputs(h, preset, vocabulary, model, outputs)
    run = dict(concurrency_id="infer")
    classified = button.click(_clear(4), None, outputs, queue=False, **PRIVATE).then(
        h.classify, [image, vocabulary, model, threshold], result, api_name="classify", preprocess=False, **run)
    # a failure leaves its reason in the verdict panel (the toast with the same text fades)
    classified.success(h.explain, [result, vocabulary, model], [decision, probabilities, plot], **run, **PRIVATE
                       ).failure(failed("explain"), None, decision, queue=False, **PRIVATE)
    classified.failure(failed("classify"), None, decision, queue=False, **PRIVATE)
    example_classified = examples.select(h.pick_example, None, [image, vocabulary], queue=False, **PRIVATE).success(
        preset_of, vocabulary, preset, queue=False, **PRIVATE).then(
        _clear(4), None, outputs, queue=False, **PRIVATE).then(
        h.classify, [image, vocabulary, model, threshold], result, preprocess=False, **run, **PRIVATE)
    example_classified.success(h.explain, [result, vocabulary, model], [decision, probabilities, plot], **run,
                               **PRIVATE).failure(failed("explain"), None, decision, queue=False, **PRIVATE)
    example_classified.failure(failed("classify"), None, decision, queue=False, **PRIVATE)
    batch_button.click(_clear(3), None, [gallery, batch_table, batch_plot], queue=False, **PRIVATE).then(
        h.classify_batch, [images, vocabulary, model, threshold], [gallery, batch_table, batch_plot],
        preprocess=False, show_progress_on=[gallery], **run, **PRIVATE)  # one progress/"Error" badge
    return {"model": model, "image": image, "vocabulary": vocabulary, "threshold": threshold}


def compare_tab(resources, h, shared: dict[str, Any]) -> tuple[gr.Dropdown, gr.Dropdown]:
    """Two models on the same image, side by side; the Classify image and vocabulary are carried over.
    Returns the model menus A and B."""
    names = resources.registry.names()
    # the pair the examples' captions answer for (zero-shot, the shown checkpoint)
    default_a, default_b = resources.compared[0], resources.compared[-1] if len(resources.compared) > 1 else names[-1]
    with gr.Row():
        with gr.Column(scale=1):
            examples = _examples(resources, "compare-examples", columns=3)
            image = gr.Image(label="image (carried over from Classify)", type="filepath", height=220,
                             elem_id="compare-image")
            preset = gr.Dropdown(label="preset", choices=presets(), value=preset_of(resources.default_vocabulary)["value"],
                                 elem_id="compare-preset", info="fills the class list")
            vocabulary = gr.Textbox(label="vocabulary", value=resources.default_vocabulary, lines=2,
                                    elem_id="compare-vocabulary")
            with gr.Row():
                model_a = _model_menu(resources, "model A", default_a)
                model_b = _model_menu(resources, "model B", default_b)
            rule, threshold = _compare_rule_inputs()
            button = gr.Button("Compare", variant="primary", elem_id="compare")
        with gr.Column(scale=2):
            with gr.Row(equal_height=True):
                with gr.Column(variant="panel", min_width=160):
                    decision_a = gr.Markdown(elem_id="card-a")
                    probs_a = gr.Label(label="A: probabilities", num_top_classes=3, show_heading=False)
                with gr.Column(variant="panel", min_width=160):
                    decision_b = gr.Markdown(elem_id="card-b")
                    probs_b = gr.Label(label="B: probabilities", num_top_classes=3, show_heading=False)
            plot = gr.Plot(label="both models: how far above (accepted) or below (unknown) its threshold "
                                 "each model is, in units of its usual spread", elem_id="compare-plot")
            statement = gr.Markdown(elem_id="compare-rule")  # which rule decided, under the result
    outputs = [decision_a, probs_a, decision_b, probs_b, plot, statement]
    stale = _stale_verdict(len(outputs) + 1, STALE.replace("Classify", "Compare"))  # (nothing, card A, ...)
    for src, dst in ((shared["image"], image), (shared["vocabulary"], vocabulary)):
        # carried over unprocessed (decoding the image made a 500 for a non-image renamed .png), an
        # image only from the upload folder; the old cards go
        src.change(functools.partial(_carried, h) if src is shared["image"] else (lambda v: v), src, dst,
                   queue=False, preprocess=False, **PRIVATE)
    shared["threshold"].change(_carried_threshold, shared["threshold"], [threshold, rule], queue=False, **PRIVATE)
    for src in (shared["image"], shared["vocabulary"], shared["threshold"]):
        src.change(lambda: stale()[1:], None, outputs, queue=False, **PRIVATE)
    rule.input(_compare_threshold_box, rule, threshold, queue=False, **PRIVATE)
    vocabulary.change(preset_of, vocabulary, preset, queue=False, **PRIVATE)
    preset.input(preset_text, preset, vocabulary, queue=False, **PRIVATE)
    for event in (image.upload, image.clear, vocabulary.input, preset.input, threshold.input, rule.input,
                  model_a.input, model_b.input):
        event(lambda: stale()[1:], None, outputs, queue=False, **PRIVATE)
    # progress (and a failure's badge) on the first card only, not one "Error" box per output
    go = dict(preprocess=False, concurrency_id="infer", show_progress_on=[decision_a], **PRIVATE)
    inputs = [image, vocabulary, model_a, model_b, threshold, rule]
    button.click(_clear(len(outputs)), None, outputs, queue=False, **PRIVATE).then(
        h.compare, inputs, outputs, **go).failure(
        failed("compare"), None, decision_a, queue=False, **PRIVATE)  # the reason, in the first card
    examples.select(h.pick_example, None, [image, vocabulary], queue=False, **PRIVATE).then(
        _clear(len(outputs)), None, outputs, queue=False, **PRIVATE).then(
        h.compare, inputs, outputs, **go).failure(
        failed("compare"), None, decision_a, queue=False, **PRIVATE)
    return model_a, model_b


COMPARE_RULES = ((f"same for both: {RULE_NEGATIVES}", RULE_NEGATIVES),
                 ("same for both: my energy threshold", RULE_USER),
                 ("each model's own rule (may differ)", RULE_AUTOMATIC))  # (label, value); the first is the default


def _compare_rule_inputs() -> tuple[gr.Radio, gr.Textbox]:
    """Compare's one control for the rule of both models, and the energy box of the user rule."""
    rule = gr.Radio(list(COMPARE_RULES), value=COMPARE_RULES[0][1], label="who decides 'unknown'",
                    elem_id="compare-rule-choice",
                    info="one kind of rule for both models, so that their verdicts can be compared")
    threshold = gr.Textbox(label="energy threshold (both models)", value="", max_lines=1, visible=False,
                           elem_id="compare-threshold", placeholder="e.g. 8.5",
                           info="an energy score; images below it are 'unknown'")
    return rule, threshold


def _compare_threshold_box(rule: str) -> dict:
    """The energy box is shown only with the user rule."""
    return gr.update(visible=rule == RULE_USER)


def _carried_threshold(value: Any) -> tuple[dict, dict]:
    """A threshold typed in Classify comes over with its rule: the user rule for both models; an
    emptied one (Classify back to automatic) takes Compare back to its default rule."""
    if not str(value or "").strip():
        return gr.update(value="", visible=False), gr.update(value=COMPARE_RULES[0][1])
    return gr.update(value=value, visible=True), gr.update(value=RULE_USER)


def _carried(h, payload: Any) -> str | None:
    """The Classify image's path for Compare's box: only a file in the upload folder."""
    try:
        return h._path(payload)
    except ValueError:
        return None


LAB_READING = (
    "**How to read it.** AUROC is the chance that an unseen shape scores lower than a known one: 100% is "
    "perfect, 50% is guessing. *Full spectrum* counts the new styles of the known shapes as known too, "
    "which is much harder: a value under 50% there means the model finds the new styles less familiar "
    "than the unseen shapes, not that it is broken. A ROC curve under the diagonal says the same for one "
    "set: that set scores *higher* than the known images.")


def lab_menu(resources, benchmarks, current: str | None = None, shown: tuple | None = None) -> tuple:
    """The Lab's benchmark menu, its note and the pair ``(offered, note)`` they show, under the plan
    as it stands (never waits for it): while the host's cost is being measured, every benchmark and
    a note saying so; then only what finishes within the limit (croft_app.service.labcost).

    ``shown`` is what the page shows already (a session state): what has not changed is skipped,
    so that a refresh never rewrites the menu under a visitor typing in it. The selection is set
    only when ``current`` is a benchmark left out, or None (the first build): the first offered."""
    lab = resources.lab
    offered, left_out = lab.offer(benchmarks) if lab else (list(benchmarks), [])
    plan = (tuple(offered), lab_note(left_out, measuring=bool(lab and lab.measuring)))
    shown = shown or (None, None)
    menu = gr.skip() if plan[0] == shown[0] else gr.update(choices=offered)
    if current is None or (current in benchmarks and current not in offered):
        menu = gr.update(choices=offered, value=(offered or [None])[0])
    note = gr.skip() if plan[1] == shown[1] else gr.update(value=plan[1], visible=bool(plan[1]))
    return menu, note, plan


def lab_tab(resources, h, benchmarks, no_comparison: str, refresh_on: Sequence = ()) -> tuple[gr.Dropdown, gr.Dropdown]:
    """A benchmark evaluation of one model, or two compared; the public ``/evaluate`` endpoint.
    The benchmark menu is brought up to date with the Lab's plan on each of ``refresh_on`` (the
    page's load, the tab's opening). Returns the model menu and the "compare with" menu."""
    names = resources.registry.names()
    menu, note, plan = lab_menu(resources, benchmarks)
    gr.Markdown("Run a whole benchmark: accuracy on the known shapes (photos, then new styles) and how "
                "well each unseen shape is told apart (AUROC: higher is better; FPR95: lower is better). "
                "The first run renders the images (about a minute); later runs take seconds.")
    with gr.Row():
        benchmark = gr.Dropdown(label="benchmark", choices=menu["choices"], value=menu["value"],
                                allow_custom_value=True, elem_id="lab-benchmark")
        model = _model_menu(resources, "model", ZERO_SHOT)
        other = gr.Dropdown(label="compare with", choices=[no_comparison, *names], min_width=MENU_WIDTH,
                            value=SHIPPED_NAME if SHIPPED_NAME in names else no_comparison, allow_custom_value=True,
                            elem_classes=["model-menu"])
        seed = gr.Number(label="seed", value=1, precision=0, minimum=0)
    limits = gr.Markdown(note["value"], visible=note["visible"], elem_id="lab-limits")
    if refresh_on:
        shown = gr.State(plan)  # what this page's menu and note show
        gr.on(refresh_on, functools.partial(lab_menu, resources, benchmarks), [benchmark, shown],
              [benchmark, limits, shown], queue=False, show_progress="hidden", **PRIVATE)
    button = gr.Button("Run evaluation", variant="primary", elem_id="lab-run")
    table = gr.Dataframe(label="results (%)", headers=explain_text.lab_headers([ZERO_SHOT]), wrap=True,
                         elem_id="lab-table")
    statement = gr.Markdown(elem_id="lab-rule")  # which rule each dashed threshold is (explain_text.lab_rules)
    with gr.Row():  # side by side on a wide screen; one above the other below ~1000 px (min_width)
        hist = gr.Plot(label="score distributions", elem_id="lab-hist", min_width=480)
        roc = gr.Plot(label="ROC curves", elem_id="lab-roc", min_width=480)
    gr.Markdown(LAB_READING, elem_id="lab-reading")
    with gr.Accordion("results JSON", open=False):
        results = gr.JSON(label="results")
        download = gr.DownloadButton("download results JSON", value=None)
    state, state_b = gr.State(), gr.State()  # results and energies, kept on the server
    outputs = [table, hist, roc, download, statement]
    cleared = [*outputs, results, state, state_b]
    # the progress bar (stage, seconds, fraction) sits on the table, where the visitor looks, not on
    # the JSON inside the closed accordion; two slots: one evaluation runs, the second slot refuses
    # others at once (see Handlers.evaluate)
    shown = dict(show_progress_on=[table], concurrency_id="lab")
    button.click(_clear(len(cleared)), None, cleared, queue=False, **PRIVATE).then(
        h.evaluate, [benchmark, model, seed], [results, state], api_name="evaluate", concurrency_limit=2,
        preprocess=False, **shown).success(
        h.evaluate_other, [benchmark, model, seed, other], state_b, **shown, **PRIVATE).success(
        h.explain_evaluation, [state, state_b], outputs, show_progress_on=[table], **PRIVATE)
    for box in (benchmark, model, other, seed):  # results of other inputs are not left beside new ones
        box.input(_clear(len(cleared)), None, cleared, queue=False, **PRIVATE)
    return model, other


class Ticker:
    """Lab progress that moves from the first second: a thread reports the current stage and its
    elapsed time every half second, creeping towards the stage's end (stages that report nothing,
    like rendering a benchmark, still show life)."""

    def __init__(self, progress: Callable, prefix: str = ""):
        self.progress, self.prefix = progress, prefix
        self._stage = (0.0, 0.1, "starting")
        self._stop = threading.Event()

    def stage(self, start: float, end: float, desc: str) -> None:
        self._stage = (start, end, desc)
        self._began = time.monotonic()
        self._report()

    def _report(self) -> None:
        start, end, desc = self._stage
        elapsed = time.monotonic() - self._began
        try:
            self.progress(start + (end - start) * (1 - 0.97 ** elapsed), desc=f"{self.prefix}{desc} — {elapsed:.0f} s")
        except Exception:  # noqa: BLE001 - progress is best effort (e.g. no request context)
            pass

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            self._report()

    def __enter__(self) -> "Ticker":
        self._began = time.monotonic()
        self._report()
        # Gradio finds the request's progress bar through context variables, which a new thread
        # does not inherit: without this copy every report from the thread was silently dropped
        self._thread = threading.Thread(target=contextvars.copy_context().run, args=(self._run,), daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join(2)
