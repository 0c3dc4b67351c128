"""What a Lab job costs on this host, and whether it finishes within the Lab's time limit.

A Lab evaluation encodes every evaluation image of a benchmark (validation, ID test, covariate and
semantic sets) through the frozen image tower, the benchmark's prompts through the text tower, and
-- while the app's negative-label lexicon is not yet in memory -- that lexicon too. Its cost is
therefore::

    seconds = images x image_seconds + batches x batch_seconds + prompts x text_seconds

(``batches``: the encoder calls, each set of images encoded apart in batches of 64) with the three
rates measured once per process, in the background after start-up, on the loaded backbone and
this host (:func:`measure_throughput`: a batch of 8 and one of 64 timed, images and prompts), so a ViT-B/16 on two CPU
cores and the embedded model get their own numbers without any table of model names. The heads
themselves (zero-shot, CRoFT, a baseline) add no measurable cost: a Lab job trains nothing, and a
head's scores are a few small matrix products on the features.

:class:`LabPlanner` holds the measured :class:`Throughput` and the limit; a job *fits* when its
estimate is at most :data:`MARGIN` of the limit (measurements on a busy host vary, and a job the
cap would stop is worse than one not offered). The Lab's menu offers what fits
(:meth:`LabPlanner.offer`) and ``/evaluate`` refuses the rest before any work starts
(:meth:`LabPlanner.check`, :class:`LabTooLong`) with the estimate in the message. Everything here
is pure given a throughput and a counter, and tests inject both.

**When the measurement runs.** Not on the start-up path: it takes 1.4 s on the embedded model but
about two minutes for a ViT-B/16 on a CPU (and a slow host then renders ``shapes`` to count it), so
the app's first page would wait for it. :meth:`LabPlanner.start` runs it in a background thread,
started by ``create_app`` once the app is built; any planner nobody started (a test's, a script's)
starts it at its first job (:meth:`LabPlanner.check`). A background thread at start-up rather than
only a lazy start at the first Lab request, because (a) the plan is then usually ready before a
visitor reaches the Lab, so the menu of their first page already applies it; (b) a lazy measurement
would make the first Lab visitor wait for it (two minutes on a slow host) while holding a Lab slot;
(c) no request thread ever runs it, so no visitor's ``/classify`` waits on it. Its cost: for its
duration it shares the CPU with the first requests; a measurement slowed that way is larger, so
the Lab offers less, never more. It runs once per planner (a lock guards the start).

**Until it arrives** the menu offers every benchmark with a note that the server is still
measuring, and a job (:meth:`LabPlanner.check`, which ``/evaluate`` calls before anything starts)
waits for it at most :data:`PLAN_WAIT` seconds, then is refused with :class:`LabMeasuring` ("the
server is still measuring how long runs take ...; try again in a few seconds"): no job runs
without the plan. The menu applies the plan at each page load and each time the Lab tab is opened.
Jobs may run as soon as the rates are measured; a slow host's benchmarks are counted afterwards in
the same thread, and one not counted yet is offered and counted at its job's first stage (after
the count under way, if it is the same benchmark), then refused there before any image is encoded.

**If the measurement fails** (it raises), the failure is logged with its traceback and the Lab
runs no benchmark in this process (:data:`UNMEASURED`, also the menu's note); the other tabs are
unaffected. Without a rate nothing is known to fit, and a job the cap stops after ten minutes is
worse than a refusal that says why; the measurement runs the Lab's own encoding code, so a failure
there most likely means the Lab's jobs would fail too. Restarting the app measures again.

``bench/lab_cost.py`` prints the measured throughput and each benchmark's estimate for a backbone,
and (``--check N``) times a real feature extraction of N images against the estimate.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from croft_core.errors import CroftError

__all__ = ["MARGIN", "PLAN_WAIT", "LabEstimate", "LabMeasuring", "LabPlanner", "LabTooLong", "LabWork", "Throughput", "benchmark_work",
           "describe_seconds", "lab_note", "measure_throughput"]

logger = logging.getLogger(__name__)

LAB_BATCH = 64  # images per encoder call of a Lab job (prepare_features' batch_size)
MARGIN = 0.8  # a job is offered when its estimate is at most this share of the time limit
COUNT_AHEAD_IMAGES = 100_000  # below this many images fitting in the limit, benchmarks are counted ahead
PLAN_WAIT = 10.0  # seconds a Lab job waits for a measurement still running before it is refused
MEASURING = ("The server is still measuring how long runs take on this host (for {elapsed} so far); "
             "try again in a few seconds.")
UNMEASURED = ("The server could not measure how long a Lab run takes on this host, so the Lab runs no "
              "benchmark here (the server log says why); `croft evaluate` runs one on your own machine.")
MEASURING_NOTE = ("**Still measuring** how long a Lab run takes on this host: a benchmark that would not "
                  "finish within the Lab's time limit is refused when you run it, and this menu keeps only "
                  "what fits the next time you open the Lab tab.")


class LabTooLong(CroftError, ValueError):
    """A Lab job whose estimate does not fit the time limit; the message gives both."""


class LabMeasuring(CroftError, ValueError):
    """A Lab job asked for while the host's cost is still being measured, or after that failed."""


@dataclass(frozen=True)
class Throughput:
    """Measured wall-clock costs on this host: seconds per image (decode, preprocess, image tower),
    per batch of images (an encoder call's own cost, paid again by every small set), and per
    prompt (tokenize, text tower)."""

    image_seconds: float
    text_seconds: float
    batch_seconds: float = 0.0

    def __post_init__(self) -> None:
        for name in ("image_seconds", "text_seconds", "batch_seconds"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"Throughput.{name} must be a finite number >= 0, got {value!r}")


@dataclass(frozen=True)
class LabWork:
    """The work of one Lab evaluation: images through the image tower (in ``batches`` encoder
    calls: each set is encoded apart, in batches of :data:`LAB_BATCH`), prompts through the text tower."""

    images: int
    prompts: int
    batches: int = 0


@dataclass(frozen=True)
class LabEstimate:
    """The estimated wall-clock seconds of one Lab job against the limit."""

    benchmark: str
    work: LabWork
    seconds: float
    limit: int
    margin: float = MARGIN

    @property
    def fits(self) -> bool:
        """The central comparison: the estimate is within ``margin`` of the limit."""
        return self.seconds <= self.margin * self.limit

    @property
    def reason(self) -> str:
        """Why a job that does not fit is not offered (the estimate and the limit, in words)."""
        return (f"{self.benchmark!r} would take ~{describe_seconds(self.seconds)} on this host "
                f"({self.work.images:,} images); the Lab's limit is {describe_seconds(self.limit)} "
                f"(CROFT_LAB_TIME_LIMIT) and a job is offered up to {self.margin:.0%} of it. "
                f"Run it with `croft evaluate` on your own machine.")


def describe_seconds(seconds: float) -> str:
    """``42 s``, ``14 min``, ``2.5 h``: rounded up, so an estimate is never shown smaller."""
    if seconds < 90:
        return f"{max(1, math.ceil(seconds))} s"
    if seconds < 90 * 60:
        return f"{math.ceil(seconds / 60)} min"
    return f"{math.ceil(seconds / 360) / 10:g} h"


def benchmark_work(name: str, seed: int = 1) -> LabWork:
    """The images and prompts a Lab evaluation of a registered benchmark (or JSON file) encodes.

    Materializes the benchmark's evaluation sets (reading row lists, not decoding images; a
    rendered benchmark such as ``shapes`` is rendered first, as the Lab's first run would).
    """
    from croft_core.clip.prompts import get_templates
    from croft_core.data.benchmarks import EVAL_ROLES, get_benchmark, materialize

    bench = get_benchmark(name, seed=seed)
    sizes = []
    for role in ("val", *EVAL_ROLES):
        split = materialize(bench, role, shots=None, seed=seed)
        sizes += [len(s) for s in split] if isinstance(split, list) else [len(split)]
    prompts = len(bench.classnames) * (1 + len(get_templates(bench.templates)))  # labels + the class texts
    return LabWork(images=sum(sizes), prompts=prompts, batches=sum(math.ceil(n / LAB_BATCH) for n in sizes))


class _NoiseSplit:
    """``count`` PNG files of noise in a ``datasets.Dataset``, read as the Lab reads a benchmark's
    split (``image(i)``: the row's decoding included), for :func:`croft_core.clip.features.encode_split`."""

    def __init__(self, count: int, size: int):
        import io

        import datasets
        import numpy as np
        from PIL import Image

        rng, files = np.random.default_rng(0), []
        for _ in range(count):
            buffer = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buffer, format="PNG")
            files.append({"bytes": buffer.getvalue(), "path": None})
        self.dataset = datasets.Dataset.from_dict({"image": files},
                                                  features=datasets.Features({"image": datasets.Image()}))

    def __len__(self) -> int:
        return len(self.dataset)

    def image(self, i: int):
        return self.dataset[int(i)]["image"].convert("RGB")


def _rate(run: Callable[[int], None], largest: int, budget: float) -> tuple[float, float]:
    """``(seconds per item, seconds per call)`` of ``run(n)``, a line fitted to timed calls.

    After a warm-up call, a batch of 8 items and one of ``largest`` (the batch size the Lab encodes
    with) are always timed: on a CPU a large batch can cost more per image than a small one, so
    the rate is measured where the Lab works. Batches of 16, 32, ... in between are timed too when
    they fit in ``budget`` seconds (a fast backbone: more points, a steadier line). A fit that a
    busy host makes meaningless (a slope <= 0) falls back to the largest batch's per-item rate.
    """
    import numpy as np

    sizes: list[int] = []
    times: list[float] = []

    def timed(n: int) -> None:
        start = time.perf_counter()
        run(n)
        sizes.append(n)
        times.append(time.perf_counter() - start)

    run(2)  # warm-up: first-call allocations are not part of the rate
    timed(min(8, largest))
    between = [k for k in (16, 32, 64, 128, 256) if sizes[0] < k < largest]
    if times[0] / sizes[0] * sum(between) > budget:
        between = []
    for n in between + ([largest] if largest > sizes[0] else []):
        timed(n)
    if len(sizes) >= 2:
        slope, intercept = np.polyfit(sizes, times, 1)
        if slope > 0:
            return float(slope), float(max(intercept, 0.0))
    return times[-1] / sizes[-1], 0.0


def measure_throughput(backbone, *, budget: float = 3.0, batch_size: int = 64,
                       image_size: int = 96) -> Throughput:
    """Time images and prompts on the loaded backbone, through the Lab's own code paths: images
    (PNG files in a dataset, decoded, preprocessed, image tower: ``encode_split``) and prompts
    (tokenizer, text tower: ``build_text_classifier``).

    Wall-clock seconds per item and per call, from a batch of 8 and one of ``batch_size`` (the
    Lab's extraction batch), with batches in between when they fit in ``budget`` seconds
    (:func:`_rate`): about 74 images' and prompts' worth of work. A measurement on a busy host is
    slower, so the Lab then offers less, never more.
    """
    import torch

    from croft_core.clip.backbones import build_text_classifier
    from croft_core.clip.features import encode_split

    split = _NoiseSplit(batch_size, image_size)
    words = [f"object number {i}" for i in range(batch_size)]

    def images(n: int) -> None:  # the Lab's own extraction loop, one batch of n
        encode_split(backbone, split, backbone.preprocess, batch_size=n, rows=range(n), desc="measuring")

    def prompts(n: int) -> None:
        build_text_classifier(backbone, words[:n], ("{}",), cache_dir=None)

    with torch.inference_mode():
        image_seconds, batch_seconds = _rate(images, batch_size, budget)
        text_seconds, text_call = _rate(prompts, batch_size, budget)
    return Throughput(image_seconds=image_seconds, text_seconds=text_seconds + text_call / batch_size,
                      batch_seconds=batch_seconds)


class LabPlanner:
    """The Lab's estimates against its limit, for a measured (or injected) :class:`Throughput`.

    Args:
        limit: seconds a Lab job may run (``CROFT_LAB_TIME_LIMIT``).
        throughput: known costs (a test's, a script's); with neither this nor ``measure`` there is
            no estimate (everything is offered: e.g. on ZeroGPU, whose own per-call budget applies).
        measure: returns this host's :class:`Throughput`; run once, in a background thread, by
            :meth:`start` (or by the first :meth:`check`). Until it has returned the plan is pending.
        count: ``benchmark name -> LabWork`` (default :func:`benchmark_work`), memoized.
        pending_words: lexicon words a job would still have to encode (the app's lexicon not yet
            in memory); called at each estimate.
        margin: the share of the limit an estimate may use.
        wait: seconds a job waits for a pending measurement before it is refused.
    """

    def __init__(self, limit: int, throughput: Throughput | None = None, *,
                 measure: Callable[[], Throughput] | None = None,
                 count: Callable[[str], LabWork] = benchmark_work,
                 pending_words: Callable[[], int] = lambda: 0, margin: float = MARGIN,
                 wait: float = PLAN_WAIT):
        self.limit, self.throughput, self.margin = int(limit), throughput, float(margin)
        self._count, self._pending, self._measure, self.wait = count, pending_words, measure, float(wait)
        self._work: dict[str, LabWork] = {}
        self._counting: dict[str, threading.Lock] = {}
        self._lock, self._start_lock = threading.Lock(), threading.Lock()
        self._ready = threading.Event()  # set once the host's cost is measured (or that failed)
        self._thread: threading.Thread | None = None
        self._since = time.monotonic()
        self.failed = False
        if measure is None:
            self._ready.set()

    # -- the measurement: once, in the background ---------------------------------------------
    @property
    def measuring(self) -> bool:
        """The plan is not known yet (the measurement is running, or has not been started)."""
        return not self._ready.is_set()

    def start(self, names: Iterable[str] = ()) -> bool:
        """Start the measurement in a background thread, then count ``names`` ahead there when the
        host is slow (:meth:`counts_ahead`). Once per planner: later calls (from any thread) do
        nothing. Returns whether this call started it."""
        with self._start_lock:
            if self._measure is None or self._thread is not None:
                return False
            self._since = time.monotonic()
            self._thread = threading.Thread(target=self._run, args=(tuple(names),), daemon=True,
                                            name="croft-lab-measure")
            self._thread.start()
            return True

    def _run(self, names: tuple[str, ...]) -> None:
        try:
            throughput = self._measure()
            if not isinstance(throughput, Throughput):
                raise TypeError(f"the measurement returned {type(throughput).__name__}, not a Throughput")
        except Exception:  # noqa: BLE001 - any failure: logged, and the Lab refuses (UNMEASURED)
            logger.exception("could not measure the Lab's cost on this host; the Lab runs no benchmark")
            self.failed = True
            self._ready.set()
            return
        self.throughput = throughput
        logger.info("Lab cost on this host: %.4f s per image, %.4f s per prompt (limit %d s), measured in %.1f s",
                    throughput.image_seconds, throughput.text_seconds, self.limit, time.monotonic() - self._since)
        self._ready.set()  # jobs may run now: each is counted (and checked) before it encodes anything
        try:
            self._plan(names, count=True)  # a slow host: counted (rendered) here, never in a page's request
        except Exception:  # noqa: BLE001 - each job is still counted and checked when it is asked for
            logger.exception("could not count the Lab's benchmarks ahead")

    def wait_for_plan(self, timeout: float | None = None) -> bool:
        """Wait at most ``timeout`` seconds (default: the planner's ``wait``) for the plan; raises
        :class:`LabMeasuring` when it is still pending then, or when the measurement failed."""
        if not self._ready.wait(self.wait if timeout is None else timeout):
            elapsed = describe_seconds(time.monotonic() - self._since)
            raise LabMeasuring(MEASURING.format(elapsed=elapsed))
        if self.failed:
            raise LabMeasuring(UNMEASURED)
        return True

    # -- estimates ------------------------------------------------------------------------------
    def _work_of(self, name: str) -> LabWork:
        """Counted once; a job waits for a count of the same benchmark under way (the background
        one), never for another benchmark's."""
        with self._lock:
            if name in self._work:
                return self._work[name]
            counting = self._counting.setdefault(name, threading.Lock())
        with counting:
            with self._lock:
                if name in self._work:
                    return self._work[name]
            work = self._count(name)
            with self._lock:
                self._work[name] = work
            return work

    def estimate(self, name: str, known_only: bool = False) -> LabEstimate | None:
        """The estimate of evaluating benchmark ``name`` (counted once), or None without a
        throughput (or, with ``known_only``, when it has not been counted yet)."""
        if self.throughput is None or (known_only and name not in self._work):
            return None
        work, speed = self._work_of(name), self.throughput
        prompts = work.prompts + max(0, int(self._pending()))
        seconds = (work.images * speed.image_seconds + work.batches * speed.batch_seconds
                   + prompts * speed.text_seconds)
        return LabEstimate(name, LabWork(work.images, prompts, work.batches), seconds, self.limit, self.margin)

    def check(self, name: str, known_only: bool = False) -> LabEstimate | None:
        """Refuse a job that would not finish in time, before it starts (``known_only``: only if
        its benchmark has been counted already, so that the check costs nothing). A pending
        measurement is started if nobody has, and waited for (:meth:`wait_for_plan`).

        Raises:
            LabMeasuring: the measurement is still running after ``wait`` seconds, or failed.
            LabTooLong: its estimate is over ``margin`` of the limit (the message gives both).
        """
        self.start()
        self.wait_for_plan()
        estimate = self.estimate(name, known_only)
        if estimate is not None and not estimate.fits:
            raise LabTooLong(estimate.reason)
        return estimate

    def counts_ahead(self) -> bool:
        """Whether counting the offered benchmarks ahead is worth it: the measured speed
        leaves fewer than :data:`COUNT_AHEAD_IMAGES` images within the limit. Faster backbones
        (the embedded model) are counted at their first job instead, and checked there."""
        if self.throughput is None or self.throughput.image_seconds <= 0:
            return False
        return self.margin * self.limit / self.throughput.image_seconds < COUNT_AHEAD_IMAGES

    def offer(self, names: Iterable[str]) -> tuple[list[str], list[str]]:
        """The benchmarks the Lab's menu offers, and the reasons of those it leaves out. While the
        measurement is pending every benchmark is offered (each job is checked when it is asked
        for); after a failed measurement none is. A planner that measures in the background counts
        there too, and this offers the benchmarks it has not counted yet (never rendering one in a
        page's request); a planner given its throughput counts here."""
        names = list(names)
        if self.measuring:
            return names, []
        if self.failed:
            return [], [UNMEASURED]
        return self._plan(names, count=self._measure is None)

    def _plan(self, names: Sequence[str], count: bool) -> tuple[list[str], list[str]]:
        """Benchmarks are estimated only when :meth:`counts_ahead` (and, without ``count``, only
        those counted already); otherwise all are offered and each job is checked when it is asked
        for. One that cannot be counted stays offered (the job then reports its own error)."""
        names = list(names)
        if not self.counts_ahead():
            return names, []
        offered, reasons = [], []
        for name in names:
            try:
                estimate = self.estimate(name, known_only=not count)
            except (ValueError, OSError, KeyError) as err:
                logger.warning("could not count the Lab benchmark %s: %s", name, err)
                estimate = None
            if estimate is None or estimate.fits:
                offered.append(name)
            else:
                reasons.append(estimate.reason)
        return offered, reasons


def lab_note(reasons: Sequence[str], measuring: bool = False) -> str:
    """The Lab tab's note: the measurement still running, or the benchmarks left out (empty when none is)."""
    if measuring:
        return MEASURING_NOTE
    if not reasons:
        return ""
    return ("**Not offered on this host** (a job must finish within the Lab's time limit): "
            + " ".join(f"{r}" for r in reasons))
