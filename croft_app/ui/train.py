"""The Train tab of CRoFT Lab and its ``/finetune`` endpoint (the Gradio side; logic in croft_core).

A visitor fine-tunes on a registered benchmark, a zip of class folders, single images each given a
label, or a Hub dataset id; watches the loss and validation-accuracy curves while it trains; stops
it (the best epoch so far is kept); then uses the model at once (by its name, in this session only:
:class:`croft_app.service.sessions.SessionRegistry`), downloads it as a zip, or pushes it to the Hub with
their own token. Everything is done by :mod:`croft_app.service.finetune`, :mod:`croft_app.service.userdata` and
:mod:`croft_app.service.uploads`; this file only wires components.

Hooking it into ``app.py`` (the whole change: /work/notes/issue13_app_integration.patch)::

    registry = SessionRegistry(ClassifierRegistry(...))          # load_resources
    classifier = self.r.registry.get(model, _session(request))   # every handler, + request: gr.Request
    with gr.Tab("Train"):                                        # build_demo; the tabs return their menus
        train = TrainHandlers(resources.backbone, resources.registry, cache_dir=resources.cache_dir,
                              upload_root=resources.upload_root)
        train_tab(train, model_menus=[classify_menu, compare_b, lab_model], listing_menus=[compare_a, lab_other])
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator, Sequence

import gradio as gr

from croft_core.data.benchmarks import BENCHMARKS
from croft_app.service.finetune import (METHOD_LABELS, TRAINABLE_METHODS, FinetuneLimits, FinetuneRequest,
                                 FinetuneStopped, StopCheck, finetune, push_finetuned, save_checkpoint, slug, zip_checkpoint)
from croft_app.service.limits import return_freed_memory
from croft_app.service.security import check_number, file_path, is_hub_id, short_repr
from croft_app.service.sessions import QueueFull, SessionRegistry, TrainingQueue, stream_job
from croft_app.service.trainproc import TrainingProcess
from croft_app.service.uploads import UploadLimits
from croft_app.service.userdata import DataRecipe, TrainingData, hub_data

from croft_app.ui.common import failed, user_errors
from croft_app.ui.zerogpu import GPU as gpu
from croft_app.ui.zerogpu import train_seconds

logger = logging.getLogger("croft.app.train")

TRAIN_BENCHMARKS = tuple(b for b in ("shapes", "shapes_dg") if b in BENCHMARKS)
SOURCES = ("benchmark", "zip of class folders", "labelled images", "Hub dataset")
UPDATE_SECONDS = 0.5  # the Train tab's status and curves change at most this often while it trains:
# the curves are drawn once, at the first epoch, then only the epochs since the last update are sent
# and appended in the browser (Plotly.extendTraces, LIVE_POINTS_JS): an update's size does not grow
# with the run (bench/finetune.py, BENCH_BROWSER=1, prints the bytes per update)
MAX_POINTS = 200  # curves of more epochs are thinned to this many points each, sent whole with the result
# (up to MAX_POINTS epochs the result brings only the last epochs' points: redrawing both curves at
# the end cost the page ~0.2 s, bench/finetune.py)
STOPPING = " — stopping after this epoch; the best model so far is kept."
STOP_NOTE = "*Stopping after the current epoch; the best model so far is kept.*"
MAX_KEPT_FOLDERS = 100  # checkpoint folders kept on disk for downloads and pushes (newest sessions)

def _session(request: gr.Request | None) -> str:
    return getattr(request, "session_hash", None) or ""


def _whole(value: Any, name: str, default: int) -> int:
    """A whole number from the form; empty -> ``default`` (the range is checked by the library)."""
    message = f"{name} must be a whole number, e.g. {default}, or empty for {default}; got {short_repr(value)}"
    number = check_number(value, message)
    if number is None:
        return default
    if not number.is_integer() or abs(number) > 2**31:
        raise ValueError(message)
    return int(number)


def _optional_float(value: Any, name: str) -> float | None:
    """A number from the form's "Advanced" part; empty -> None (the method's default)."""
    return check_number(value, f"{name} must be a finite number, or empty for the method's default; got "
                               f"{short_repr(value)}")


class TrainHandlers:
    """Training events bound to a backbone and a :class:`SessionRegistry` (tests call them directly).

    Args:
        backbone: the app's frozen backbone.
        registry: where trained models are offered (by name, per session).
        cache_dir: the app's cache root; features of training runs go to ``cache_dir/finetune``.
        limits, upload_limits: run and upload bounds (default: environment, then safe defaults).
        queue: the one-job-at-a-time queue (one per process).
        upload_root: Gradio's upload folder (every file argument must lie inside it).
    """

    def __init__(self, backbone, registry: SessionRegistry, *, cache_dir: str | os.PathLike,
                 limits: FinetuneLimits | None = None, upload_limits: UploadLimits | None = None,
                 queue: TrainingQueue | None = None, upload_root: str | os.PathLike | None = None,
                 trainer: TrainingProcess | None = None):
        self.backbone, self.registry = backbone, registry
        self.upload_root = Path(upload_root or gr.utils.get_upload_folder())
        self.cache_dir = Path(cache_dir) / "finetune"
        self.limits = limits or FinetuneLimits.from_env()
        self.upload_limits = upload_limits or UploadLimits(max_images=self.limits.max_images,
                                                           max_classes=self.limits.max_classes)
        self.queue = queue or TrainingQueue()
        self.trainer = trainer  # None: jobs train in a thread of this process
        self._folders: OrderedDict[str, Path] = OrderedDict()  # session -> its latest checkpoint
        self._jobs: dict[str, Path] = {}  # session -> the stop flag of its one job (queued or running)
        self._jobs_lock = threading.Lock()

    # -- inputs ------------------------------------------------------------------------------
    def upload_path(self, payload: Any) -> str | None:
        """The local path of an uploaded file, confined to the upload folder, or None."""
        return file_path(payload, self.upload_root)

    def _data(self, source: str, value: Any, labels: str, shots: int, seed: int, work: Path,
              check: Callable[[], None] = lambda: None) -> DataRecipe | TrainingData:
        """The run's data: a :class:`DataRecipe` (built where the run trains) once the cheap checks
        passed, or a Hub dataset's data (read here, with the visitor's credentials). ``check`` is
        called before each image is checked (it raises to stop)."""
        common = dict(shots=shots, seed=seed, max_images=self.limits.max_images,
                      max_classes=self.limits.max_classes)
        if source == "benchmark":
            name = (value or "").strip() if isinstance(value, str) else ""
            if name not in TRAIN_BENCHMARKS:
                raise gr.Error(f"Unknown benchmark {name[:60]!r}; choose one of {list(TRAIN_BENCHMARKS)} "
                               f"or upload a zip", print_exception=False)
            return DataRecipe("benchmark", name, **common)
        if source == "Hub dataset":
            return hub_data(value if isinstance(value, str) else "", **common)
        upload = dict(limits=self.upload_limits, check=check, **common)
        if source == "labelled images":
            value = value if isinstance(value, list) else [value] if value else []
            if len(value) > self.upload_limits.max_images:  # before any per-file work
                raise gr.Error(f"{len(value):,} images; at most {self.upload_limits.max_images:,} per "
                               f"training run", print_exception=False)
            paths = [self.upload_path(f) for f in value]
            names = [n.strip() for n in (labels or "").replace("\n", ",").split(",")]
            if len(names) != len(paths):
                raise gr.Error(f"{len(paths)} images but {len(names)} labels: give one label per image, "
                               f"in order, separated by commas", print_exception=False)
            return DataRecipe("labelled", list(zip(paths, names)), name="my images", **upload)
        path = self.upload_path(value)
        if path is None:
            raise gr.Error("No data: upload a zip of class folders or choose a benchmark", print_exception=False)
        name = Path(value.get("orig_name") or "") if isinstance(value, dict) else Path(path)
        return DataRecipe("zip", path, name=slug(name.stem) or "my-data", work=str(work / "images"), **upload)

    # -- the run -----------------------------------------------------------------------------
    def _claim(self, session: str) -> Path:
        """The stop flag of a new job of ``session`` (a file, so that a Stop reaches a run in another
        process, a ZeroGPU worker, too); each session holds at most one job, queued or running.

        Raises:
            QueueFull: the session has a job already.
        """
        with self._jobs_lock:
            if session in self._jobs:
                raise QueueFull("this session has a training job already (waiting or running); wait "
                                "for it to end, or press Stop")
            flag = self.cache_dir / "stop" / uuid.uuid4().hex
            flag.parent.mkdir(parents=True, exist_ok=True)
            self._jobs[session] = flag
            return flag

    def _release(self, session: str, flag: Path) -> None:
        with self._jobs_lock:
            if self._jobs.get(session) == flag:
                del self._jobs[session]
        flag.unlink(missing_ok=True)

    def _gpu_seconds(self, data, request: FinetuneRequest, stop_flag: str = "", seconds: float = 0.0) -> int:
        """The ZeroGPU duration of a run: its training views encoded, then its steps."""
        return train_seconds(request.steps, len(data.train) * request.views + len(data.val))

    @gpu(duration=_gpu_seconds)
    def _train_on_gpu(self, data, request: FinetuneRequest, stop_flag: str, seconds: float) -> Iterator[dict]:
        """The part that needs the accelerator, in one ``spaces.GPU`` call: progress events, then
        ``{"stage": "done", "result": FinetuneResult}`` (the model on the CPU). ``seconds``: what is
        left of the job's time cap once its data was checked."""
        limits = replace(self.limits, max_seconds=max(seconds, 0.0))

        def job(emit):
            result = finetune(self.backbone, data, request, limits=limits, cache_dir=self.cache_dir,
                              on_event=emit, should_stop=lambda: os.path.exists(stop_flag))
            result.model.cpu()
            return result

        yield from stream_job(job)

    def _train(self, prepared: DataRecipe | TrainingData, request: FinetuneRequest, flag: Path,
               deadline: float) -> Iterator[dict]:
        """Build the data and train: in the training process when there is one (a recipe is built
        there too), else here (in a thread, or in one ``spaces.GPU`` call)."""
        if self.trainer is not None:
            try:
                for event in self.trainer.run(prepared, request, limits=self.limits, cache_dir=self.cache_dir,
                                              stop_flag=str(flag), deadline=deadline):
                    if event["stage"] == "done":
                        event["result"].model.attach_backbone(self.backbone)  # prompt heads run its text tower
                    yield event
            finally:
                if isinstance(prepared, TrainingData):  # a recipe's data is cleaned up where it was built
                    prepared.cleanup()
            return
        data = prepared() if isinstance(prepared, DataRecipe) else prepared
        try:
            self._gpu_seconds(data, request)  # too long for one ZeroGPU call: refused now
            yield from self._train_on_gpu(data, request, str(flag), deadline - time.monotonic())
        finally:
            data.cleanup()

    def run_events(self, source: str, value: Any, labels: str, request: FinetuneRequest,
                   session: str) -> Iterator[dict]:
        """Queue, build the data, train (on the GPU when there is one), save and offer the model to
        ``session``. Yields progress events; the last is ``{"stage": "done", "result": API JSON}``.

        One job per session; the time cap and Stop cover the data checks and the training. A job
        that ends with its result keeps its checkpoint (for Push), whether or not the caller reads on.
        """
        request.checked(self.limits)
        session = session or "-"
        flag = self._claim(session)
        try:
            ticket = self.queue.join()
        except BaseException:
            self._release(session, flag)
            raise
        work, finished = Path(tempfile.mkdtemp(prefix="croft-train-")), False
        try:
            while (position := self.queue.position(ticket)) > 0:
                yield {"stage": "queued", "position": position}
                if flag.exists():
                    raise FinetuneStopped("the training job was cancelled while it waited")
                self.queue.wait(ticket, 0.5)
            deadline = time.monotonic() + self.limits.max_seconds
            yield {"stage": "data"}
            prepared = self._data(source, value, labels, request.shots, request.seed, work,
                                  check=StopCheck(str(flag), deadline, self.limits.max_seconds))
            for event in self._train(prepared, request, flag, deadline):
                if event["stage"] == "done":
                    result = event["result"]
                elif event["stage"] != "tick":
                    yield event
            prepared = None  # noqa: F841 -- nothing of the run's data outlives it (see the trim below)
            folder = save_checkpoint(result, work / "checkpoint")
            name = self.registry.add(session, result.name, result.model)
            self._keep_folder(session, work)
            finished = True  # the caller may stop reading at the result: the checkpoint stays
            yield {"stage": "done", "result": {"model": name, "history": result.history,
                                               "results": result.results, "skipped": result.skipped,
                                               "folder": str(folder)}}
        except BaseException:  # an error, or the visitor left (GeneratorExit): stop the worker too
            if not finished:
                flag.touch()
                shutil.rmtree(work, ignore_errors=True)
            raise
        finally:
            self.queue.leave(ticket)
            self._release(session, flag)
            return_freed_memory(trim=True)  # what the job freed (features, buffers, images) goes back to the OS

    def _keep_folder(self, session: str, work: Path) -> None:
        """Keep one checkpoint folder per session (to download or push), for the newest sessions."""
        old = self._folders.pop(session or "-", None)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        self._folders[session or "-"] = work
        while len(self._folders) > MAX_KEPT_FOLDERS:
            shutil.rmtree(self._folders.popitem(last=False)[1], ignore_errors=True)

    def _request(self, method, shots, seed, steps, lambda1=None, lambda2=None, lr=None) -> FinetuneRequest:
        return FinetuneRequest(method=str(method or "croft"), shots=_whole(shots, "shots", 16),
                               seed=_whole(seed, "seed", 1), steps=_whole(steps, "steps", 200),
                               lambda1=_optional_float(lambda1, "λ1"), lambda2=_optional_float(lambda2, "λ2"),
                               lr=_optional_float(lr, "learning rate"))

    # -- events ------------------------------------------------------------------------------
    @user_errors
    def finetune(self, data: Any, method: Any, shots: Any, seed: Any, steps: Any,
                 request: gr.Request = None) -> dict[str, Any]:
        """Fine-tune on ``data`` (a benchmark name such as "shapes", an uploaded zip of class
        folders, or a Hub dataset id ORG/NAME with image and label columns) and return
        ``{model, history, results}``; ``model`` is a name ``/classify`` and ``/evaluate`` accept in
        this client session."""
        source = "zip of class folders"
        if isinstance(data, str):
            source = "Hub dataset" if is_hub_id(data.strip()) else "benchmark"
        req = self._request(method, shots, seed, steps)
        for event in self.run_events(source, data, "", req, _session(request)):
            if event["stage"] == "done":
                return {k: event["result"][k] for k in ("model", "history", "results")}
        raise AssertionError("a run ends with its result")

    @user_errors
    def train_stream(self, source, benchmark, zip_file, images, labels, hub_id, method, shots, seed,
                     lambda1, lambda2, lr, steps, request: gr.Request = None) -> Iterator[tuple]:
        """The Train button: status, live curves, then the results, the model's name and its zip.

        Uses only the chosen source's input (the others are hidden). The page is sent at most one
        update per :data:`UPDATE_SECONDS` while training: redrawing two plots after every epoch
        blocked the browser (a 400-epoch run could not be stopped); the final curves come with
        the result."""
        value = {"benchmark": benchmark, "Hub dataset": hub_id, "labelled images": images}.get(source, zip_file)
        session, history, sent, drawn, run = _session(request), [], 0.0, 0, uuid.uuid4().hex
        req = self._request(method, shots, seed, steps, lambda1, lambda2, lr)
        same = [gr.update()] * 3
        for event in self.run_events(source, value, labels, req, session):
            if event["stage"] == "epoch":
                history.append(event)
                now = time.monotonic()
                if now - sent >= UPDATE_SECONDS:  # the status (with the numbers): twice a second
                    status, sent = self._epoch_status(event, session), now
                    if not drawn:  # the curves, drawn once; then only the epochs since the last update
                        yield status, *_curves(history), *same, gr.update()
                    else:
                        yield status, gr.update(), gr.update(), *same, _new_points(run, history[drawn:])
                    drawn = len(history)
            elif event["stage"] in ("queued", "extract", "data"):
                yield (_status(event), *[gr.update()] * 6)
            elif event["stage"] == "done":
                out = event["result"]
                folder = Path(out["folder"])
                if drawn and len(history) <= MAX_POINTS:  # the drawn curves get their last epochs only
                    curves, last_points = (gr.update(), gr.update()), _new_points(run, history[drawn:])
                else:  # never drawn, or thinned to MAX_POINTS: the whole curves, once
                    curves, last_points = _curves(history), gr.update()
                yield (_done_text(out), *curves, out["results"],
                       str(zip_checkpoint(folder, folder.parent / f"{slug(out['model'])}.zip")), out["model"],
                       last_points)

    def _stopping(self, session: str) -> bool:
        """Whether Stop was pressed for this session's job."""
        with self._jobs_lock:
            flag = self._jobs.get(session)
        return flag is not None and flag.exists()

    def _epoch_status(self, event: dict, session: str) -> str:
        numbers = [f"{k.replace('val_', 'validation ')} {event[k]:.3g}" for k in ("loss", "val_accuracy")
                   if isinstance(event.get(k), (int, float))]
        text = f"Training: epoch {event['epoch']} of {event['epochs']}" + (f" ({', '.join(numbers)})" if numbers else "")
        return text + STOPPING if self._stopping(session) else text

    def stop(self, request: gr.Request = None) -> str:
        """The Stop button: the run ends after its current epoch, keeping the best model so far.
        Writes nothing unless this session has a job (its flag is deleted when the job ends). The
        page shows nothing from it: its answer could arrive after the run's final status and cover
        it (the button's note is set in the browser at once, and cleared when the run ends)."""
        with self._jobs_lock:
            flag = self._jobs.get(_session(request) or "-")
            if flag is None:
                return "No training job of yours is running."
            flag.touch()
        return "Stopping after the current epoch; the best model so far is kept."

    @user_errors
    def push(self, repo_id: str, token: str, private: bool, oauth: gr.OAuthToken | None = None,
             request: gr.Request = None) -> str:
        """Push this session's latest model with the visitor's token (the field or the HF login)."""
        work = self._folders.get(_session(request) or "-")
        if work is None:
            raise gr.Error("Train a model first", print_exception=False)
        token = (token or "").strip() or getattr(oauth, "token", None)
        url = push_finetuned(work / "checkpoint", repo_id, token, private=bool(private))
        return f"Pushed to [{repo_id}]({url})"


def _status(event: dict) -> str:
    if event["stage"] == "queued":
        return f"Waiting: {event['position']} training job(s) ahead of yours."
    if event["stage"] == "data":
        return "Checking the data ..."
    return f"Encoding images: {event['fraction']:.0%} ({event['done']} of {event['total']})"


SOURCE_WORDS = {"benchmark": "the benchmark", "upload": "your upload", "hub": "the Hub dataset"}
FEW_VALIDATION = 10  # validation images per class below which an accuracy says little


def _curves(history: list[dict]) -> tuple[Any, Any]:
    """The loss and validation-accuracy curves of the epochs so far."""
    from croft_core.runs.figures import training_curves

    stride = max(-(-len(history) // MAX_POINTS), 1)  # every epoch up to MAX_POINTS, then every k-th (and the last)
    rows = history[::stride] + ([history[-1]] if (len(history) - 1) % stride else [])
    return (training_curves([{"epoch": r["epoch"], "loss": r.get("loss")} for r in rows], title="loss"),
            training_curves([{"epoch": r["epoch"], "val_accuracy": r.get("val_accuracy")} for r in rows],
                            title="validation accuracy"))


def _new_points(run: str, rows: list[dict]) -> str:
    """The epochs since the last update, per curve, as ``[epoch, value]`` pairs, in JSON (``run``
    tells the browser a new run from more points of the same one)."""
    def pairs(key: str) -> list:
        return [[r["epoch"], round(r[key], 5)] for r in rows if isinstance(r.get(key), (int, float))]
    return json.dumps({"run": run, "loss": pairs("loss"), "val_accuracy": pairs("val_accuracy")},
                      separators=(",", ":"))


# Appends the new points to the curves already drawn. The points of the run are kept in the page, and
# each curve gets those after its last drawn epoch: points that arrive before plotly has drawn the
# first curves (it loads with them) are drawn once it has, and none twice.
LIVE_POINTS_JS = """(text) => {
  const p = text ? JSON.parse(text) : null;
  if (!p || !p.run) return;
  const s = window.__croftCurves = window.__croftCurves || {};
  if (s.run !== p.run) { s.run = p.run; s.loss = []; s.val_accuracy = []; }
  s.loss.push(...p.loss); s.val_accuracy.push(...p.val_accuracy);
  const draw = (tries) => {
    if (s.run !== p.run) return;  // a newer run took over
    let waiting = !window.Plotly;
    for (const [sel, key] of waiting ? [] : [['#train-loss', 'loss'], ['#train-acc', 'val_accuracy']]) {
      const gd = document.querySelector(sel + ' .js-plotly-plot');
      if (!gd || !gd.data) { waiting = true; continue; }
      const xs = (gd.data[0] && gd.data[0].x) || [];
      const last = xs.length ? xs[xs.length - 1] : -Infinity;
      const add = s[key].filter(q => q[0] > last);
      if (!add.length) continue;
      const x = add.map(q => q[0]), y = add.map(q => q[1]);
      if (gd.data.length) window.Plotly.extendTraces(gd, {x: [x], y: [y]}, [0]);
      else window.Plotly.addTraces(gd, {x, y, mode: 'lines+markers', name: key});
    }
    // plotly.js or the first curves not drawn yet: again soon (the run's last points come with its
    // result and may be the last update), for up to a minute
    if (waiting && tries > 0) setTimeout(() => draw(tries - 1), 500);
  };
  draw(120);
}"""


# Loads plotly.js in the browser's idle time once the first screen is shown, so that the Train tab's
# curves are ready when a visitor opens it (plotly.js is 4.6 MB and its first evaluation blocks the page
# for seconds on a slow machine; docs/APP.md). It imports the very module Gradio's Plot component
# imports (its chunk of Gradio's build, next to the page's own index script): the browser keeps one
# copy per URL, so Gradio's import later finds it loaded and evaluated. __CHUNK__ is its file name;
# a page that sets window.__croftPlotly first (bench/finetune.py: 'off') is left alone.
PRELOAD_PLOTLY_JS = """<script>
(() => {
  const idle = window.requestIdleCallback || ((f) => setTimeout(f, 200));
  const start = Date.now();
  const preload = () => {
    const index = document.querySelector('script[type="module"][src*="/assets/index-"]');
    if (!document.querySelector('#classify') && Date.now() - start < 60000) {
      setTimeout(() => idle(preload, {timeout: 2000}), 250);  // the first screen is not shown yet
      return;
    }
    if (!index || window.__croftPlotly) return;
    window.__croftPlotly = import(new URL('./' + __CHUNK__, index.src).href).catch(
      (e) => console.warn('plotly.js preload failed; the Train tab loads it when opened', e));
  };
  if (document.readyState === 'complete') idle(preload, {timeout: 2000});  // Gradio adds this after load
  else window.addEventListener('load', () => idle(preload, {timeout: 2000}));
})();
</script>"""


def preload_plotly_head() -> str:
    """The ``<head>`` script that preloads plotly.js (PRELOAD_PLOTLY_JS), or "" when this Gradio's
    build has no single plotly chunk (the Train tab then loads plotly.js when it is opened)."""
    assets = Path(gr.__file__).parent / "templates" / "frontend" / "assets"
    chunks = sorted(assets.glob("PlotlyPlot-*.js"))
    if len(chunks) != 1:
        logger.warning("no single plotly.js chunk in %s (%d found): not preloaded", assets, len(chunks))
        return ""
    return PRELOAD_PLOTLY_JS.replace("__CHUNK__", json.dumps(chunks[0].name))


def _waiting(figure):
    """An empty curve's figure before a run: no axes, a line saying what will be drawn."""
    figure.update_layout(height=220, xaxis_visible=False, yaxis_visible=False, annotations=[dict(
        text="drawn here while a model trains", showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5)])
    return figure


def _per_class(total: int, classes: int) -> str:
    share = total / max(classes, 1)
    return f"{share:.0f}" if share.is_integer() else f"about {share:.0f}"


def _done_text(out: dict) -> str:
    """The run's summary: what it trained on (source, classes, images per class), how it did, and a
    plain warning when the validation set is too small for its accuracy to mean much."""
    res = out["results"]
    data, classes = res.get("data", {}), res.get("classes", [])
    n, acc = max(len(classes), 1), res.get("val_accuracy")
    stopped = " (stopped early; best epoch kept)" if res.get("stopped") else ""
    names = ", ".join(classes[:8]) + (", …" if len(classes) > 8 else "")
    trained = (f"Trained on {SOURCE_WORDS.get(data.get('source'), 'your data')} **{data.get('name', '')}**: "
               f"{len(classes)} classes ({names}), {_per_class(data.get('train_images', 0), n)} "
               f"training images per class.")
    score = (f"Validation accuracy {'n/a' if acc is None else f'{acc:.1%}'} on {res['val_n']} images "
             f"({_per_class(res['val_n'], n)} per class).")
    warn = ""
    if res["val_n"] / n < FEW_VALIDATION:
        warn = (f"\n\n**Careful:** fewer than {FEW_VALIDATION} validation images per class, so this "
                "accuracy says little about new images; add more images per class for a number you "
                "can trust.")
    skipped = f"\n\n{len(out['skipped'])} file(s) skipped." if out.get("skipped") else ""
    return (f"**{out['model']}** is ready{stopped}. {trained} {score}{warn}\n\nChoose it in Classify and "
            f"Compare (this session only): its classes fill the vocabulary.{skipped}")


# what the Train click clears at once, in the browser (no round trip to the server before the run):
# status, curves, results, zip, model name, Stop's note
CLEAR_RUN_JS = """() => ["Starting ...", null, null, null, null, "", ""]"""


def train_tab(h: TrainHandlers, model_menus: Sequence[gr.Dropdown] = (),
              listing_menus: Sequence[gr.Dropdown] = ()) -> None:
    """Build the Train tab inside the current Blocks. Once a model is trained, every menu given
    lists it; ``model_menus`` also select it, ``listing_menus`` keep their selection.

    The training events have no concurrency limit of their own in Gradio (TRAIN_QUEUE): each
    request enters its handler at once, where :class:`TrainingQueue` runs one job, shows the others
    their position and refuses one more than ``max_waiting`` at once -- so training requests never
    wait in Gradio's shared queue, and a flood of them cannot fill it for other visitors."""
    with gr.Row():
        with gr.Column():
            source, benchmark, zip_file, images, labels, hub_id = _data_inputs()
            method = gr.Dropdown([(METHOD_LABELS[m], m) for m in TRAINABLE_METHODS], value="croft", label="method")
            with gr.Row():
                shots = gr.Number(label="shots", value=16, precision=0)
                seed = gr.Number(label="seed", value=1, precision=0)
            with gr.Accordion("Advanced", open=False):
                # Textboxes: Gradio's Number shows and sends 0 for "empty", and empty means the default
                lambda1 = gr.Textbox(label="λ1", value="", placeholder="default (5)", max_lines=1)
                lambda2 = gr.Textbox(label="λ2", value="", placeholder="default (5)", max_lines=1)
                lr = gr.Textbox(label="learning rate", value="", placeholder="the method's default", max_lines=1)
                steps = gr.Number(label="steps", value=200, precision=0)
            with gr.Row():
                start = gr.Button("Train", variant="primary", elem_id="train-run")
                stop = gr.Button("Stop")
            stop_note = gr.Markdown(elem_id="train-stop-note")
        with gr.Column():
            status = gr.Markdown(elem_id="train-status")
            # empty axes at first: plotly.js loads when the tab is opened, not after the Train click
            # (on a fresh page its first load blocked the page for seconds in the run: bench/finetune.py)
            empty = [_waiting(f) for f in _curves([])]
            loss_plot = gr.Plot(empty[0], label="loss (CRoFT's can go below zero: one of its terms is an energy "
                                             "bonus; lower is still better)", elem_id="train-loss")
            acc_plot = gr.Plot(empty[1], label="validation accuracy", elem_id="train-acc")
            results = gr.JSON(label="validation results")
            download = gr.File(label="checkpoint (zip)")
            new_model = gr.Textbox(label="new model", interactive=False)
            _push_box(h)
    points = _live_points()
    api_data = gr.JSON(label="data", visible=False)  # /finetune: a benchmark name or an uploaded zip
    api_out = gr.JSON(visible=False, label="finetune")
    api_button = gr.Button(visible=False)
    private_api = dict(api_visibility="private")
    run_outputs = [loss_plot, acc_plot, results, download, new_model]  # cleared: a failure leaves none stale
    trained = start.click(None, None, [status, *run_outputs, stop_note], js=CLEAR_RUN_JS, **private_api).then(
                h.train_stream, [source, benchmark, zip_file, images, labels, hub_id, method, shots, seed,
                                 lambda1, lambda2, lr, steps],
                [status, loss_plot, acc_plot, results, download, new_model, points], preprocess=False,
                concurrency_limit=None, concurrency_id="train",  # TRAIN_QUEUE: its own queue
                show_progress_on=[status], **private_api)
    trained.failure(  # one status badge, not one per output
        failed("train_stream", "Training failed"), None, status, queue=False, **private_api)  # the reason stays
    trained.then(lambda: "", None, stop_note, queue=False, **private_api)  # the run's own status is the last word
    stop.click(None, None, stop_note, js=f"() => {json.dumps(STOP_NOTE)}", **private_api)  # at once, in the browser
    stop.click(_press_stop(h), None, None, queue=False, **private_api)
    api_button.click(h.finetune, [api_data, method, shots, seed, steps], api_out, api_name="finetune",
                     preprocess=False, concurrency_limit=None, concurrency_id="train")
    _offer_models(h, new_model, model_menus, listing_menus)


def _live_points() -> gr.Textbox:
    """The new curve points of a run, as JSON text, drawn by LIVE_POINTS_JS (a hidden JSON
    component's tree view would cost the page more than the points themselves)."""
    points = gr.Textbox(visible="hidden", elem_id="train-points")
    points.change(None, points, None, js=LIVE_POINTS_JS, queue=False, api_visibility="private")
    return points


def _push_box(h: TrainHandlers) -> None:
    """Push the model just trained to the visitor's Hub repository (their token or login, never the
    server's)."""
    private_api = dict(api_visibility="private")
    with gr.Accordion("Push to the Hugging Face Hub", open=False):
        if os.environ.get("SPACE_ID"):  # on a Space: push with the visitor's HF login
            gr.LoginButton()
        repo_id = gr.Textbox(label="repository", placeholder="your-name/my-croft-model")
        token = gr.Textbox(label="write token", type="password",
                           info="used for this push only; never stored (or log in on a Space)")
        private = gr.Checkbox(label="private", value=True)
        push = gr.Button("Push")
        pushed = gr.Markdown()
    push.click(h.push, [repo_id, token, private], pushed, **private_api).failure(
        failed("push", "Not pushed"), None, pushed, queue=False, **private_api)


def _data_inputs() -> tuple:
    """The data source and its inputs, one source visible at a time (a zip uploaded while
    "benchmark" was chosen used to be ignored): returns the radio, then benchmark, zip, images,
    labels and Hub id."""
    source = gr.Radio(list(SOURCES), value="benchmark", label="data source", elem_id="train-source",
                      info="only the chosen source's inputs are shown, and only they are used")
    benchmark = gr.Dropdown(list(TRAIN_BENCHMARKS), value=(TRAIN_BENCHMARKS or ("",))[0], label="benchmark",
                            elem_id="train-benchmark")
    zip_file = gr.File(label="zip of class folders", file_types=[".zip"], visible=False, elem_id="train-zip")
    images = gr.File(label="images", file_count="multiple", file_types=["image"], visible=False,
                     elem_id="train-images")
    labels = gr.Textbox(label="labels", placeholder="one class name per image, comma-separated",
                        visible=False, elem_id="train-labels")
    hub_id = gr.Textbox(label="Hub dataset", placeholder="ORG/NAME (image and label columns)",
                        visible=False, elem_id="train-hub")
    boxes = [benchmark, zip_file, images, labels, hub_id]
    inputs_of = {"benchmark": [benchmark], "zip of class folders": [zip_file],
                 "labelled images": [images, labels], "Hub dataset": [hub_id]}
    source.change(lambda chosen: tuple(gr.update(visible=b in inputs_of.get(chosen, ())) for b in boxes),
                  source, boxes, queue=False, api_visibility="private")
    return source, *boxes


def _offer_models(h: TrainHandlers, new_model: gr.Textbox, model_menus: Sequence[gr.Dropdown],
                  listing_menus: Sequence[gr.Dropdown]) -> None:
    """Once a model is trained, every menu lists it; ``model_menus`` also select it."""
    private_api = dict(api_visibility="private")
    menus = [*model_menus, *listing_menus]
    if not menus:
        return
    picks = [True] * len(model_menus) + [False] * len(listing_menus)
    server_names = set(h.registry.names())
    own = [[c for c in menu.choices if c[1] not in server_names] for menu in menus]  # e.g. "(none)"

    # A function of its own, not functools.partial: Gradio passes the gr.Request only to a function
    # whose own annotations name it (a partial has none), and without the request the visitor's
    # session -- and so the model just trained -- is unknown.
    def offer_new_model(name: str, request: gr.Request = None) -> tuple:
        return tuple(_menu_update(h, name, request, select=pick, keep=keep) for pick, keep in zip(picks, own))

    new_model.change(offer_new_model, new_model, menus, **private_api)


def _menu_update(h: TrainHandlers, name: str, request: gr.Request = None, *, select: bool = True,
                 keep: Sequence[tuple[str, str]] = ()) -> dict:
    """A model menu's update once ``name`` is trained: the menu's own entries (``keep``), then the
    server's models and this session's own, each shown by its display name; ``select`` picks it."""
    if not name:
        return gr.update()
    names = h.registry.names(_session(request) or "-")  # the session key the model was added under
    choices = [*keep, *((n, n) for n in names if n not in {v for _, v in keep})]
    return gr.update(choices=choices, value=name) if select else gr.update(choices=choices)


def _press_stop(h: TrainHandlers) -> Callable:
    """Stop without an output on the page (see :meth:`TrainHandlers.stop`)."""
    def press(request: gr.Request = None) -> None:
        h.stop(request)
    return press
