"""The Lab's cost estimates (croft_app.service.labcost): measured throughput, counts, the limit.

Everything but the measurement is pure: a throughput and a counter are injected."""

from __future__ import annotations

import logging
import math
import threading
import time

import pytest

from croft_app.service.labcost import (LabEstimate, LabMeasuring, LabPlanner, LabTooLong, LabWork, Throughput, benchmark_work,
                                       describe_seconds, lab_note, measure_throughput)
from datagen import tiny_benchmark

# a ViT-B/16-like host (~0.4 s per image) against a 5-minute limit
SLOW = Throughput(image_seconds=0.42, text_seconds=0.02)
FAST = Throughput(image_seconds=0.002, text_seconds=0.0002)  # the embedded model's order of magnitude
WORK = {"small": LabWork(images=200, prompts=20), "large": LabWork(images=2000, prompts=20)}


def counter(calls: list | None = None):
    def count(name: str) -> LabWork:
        if calls is not None:
            calls.append(name)
        return WORK[name]
    return count


def test_seconds_are_described_rounded_up():
    assert describe_seconds(0.2) == "1 s" and describe_seconds(42.1) == "43 s"
    assert describe_seconds(14 * 60 - 5) == "14 min" and describe_seconds(2.5 * 3600) == "2.5 h"


def test_the_estimate_is_images_batches_and_prompts_times_their_costs():
    planner = LabPlanner(300, SLOW, count=counter())
    estimate = planner.estimate("large")
    assert estimate.seconds == pytest.approx(2000 * 0.42 + 20 * 0.02)
    assert estimate.work == WORK["large"]
    batched = LabPlanner(300, Throughput(image_seconds=0.01, text_seconds=0.001, batch_seconds=0.5),
                         count=lambda name: LabWork(images=100, prompts=10, batches=7))
    assert batched.estimate("any").seconds == pytest.approx(100 * 0.01 + 7 * 0.5 + 10 * 0.001)


def test_rates_are_a_line_fitted_to_timed_calls():
    from croft_app.service.labcost import _rate

    sizes = []

    def run(n: int) -> None:  # 20 ms per call + 5 ms per item
        sizes.append(n)
        time.sleep(0.02 + 0.005 * n)

    per_item, per_call = _rate(run, 64, budget=10.0)
    assert sizes == [2, 8, 16, 32, 64]  # a warm-up, then doubling batches up to the Lab's
    # a sleep overshoots by a roughly constant amount on a busy host: the call's cost takes it
    assert per_item == pytest.approx(0.005, rel=0.3) and 0.01 < per_call < 0.08
    sizes.clear()
    _rate(run, 64, budget=0.05)
    assert sizes == [2, 8, 64]  # a small budget: 8 and the Lab's batch only, never less


def test_a_job_fits_up_to_the_margin_of_the_limit_and_not_beyond():
    limit = 300
    at = LabEstimate("b", WORK["small"], seconds=0.8 * limit, limit=limit, margin=0.8)
    over = LabEstimate("b", WORK["small"], seconds=0.8 * limit + 1, limit=limit, margin=0.8)
    under_limit_over_margin = LabEstimate("b", WORK["small"], seconds=0.9 * limit, limit=limit, margin=0.8)
    assert at.fits and not over.fits and not under_limit_over_margin.fits


def test_a_slow_host_offers_less_and_refuses_the_rest_with_the_estimate():
    planner = LabPlanner(300, SLOW, count=counter())
    offered, reasons = planner.offer(["small", "large"])
    assert offered == ["small"]  # 84 s fits in 80% of 5 min; 14 min does not
    assert len(reasons) == 1 and "'large' would take ~15 min on this host" in reasons[0]
    assert "the Lab's limit is 5 min" in reasons[0] and "2,000 images" in reasons[0]
    with pytest.raises(LabTooLong, match=r"would take ~15 min .* limit is 5 min"):
        planner.check("large")
    assert planner.check("small").fits
    assert "Not offered on this host" in lab_note(reasons) and lab_note([]) == ""


def test_a_fast_host_offers_everything_without_counting_ahead():
    calls: list = []
    planner = LabPlanner(600, FAST, count=counter(calls))
    assert planner.offer(["small", "large"]) == (["small", "large"], [])
    assert calls == []  # nothing rendered or counted at start-up for a fast backbone
    assert planner.check("small", known_only=True) is None  # not counted yet: nothing to say
    assert planner.check("large").fits and calls == ["large"]  # counted at the job, once
    planner.check("large")
    assert calls == ["large"]


def test_a_slow_host_counts_ahead_once():
    calls: list = []
    planner = LabPlanner(300, SLOW, count=counter(calls))
    assert planner.counts_ahead()
    planner.offer(["small", "large"])
    with pytest.raises(LabTooLong):
        planner.check("large", known_only=True)  # known from start-up: refused at once
    assert calls == ["small", "large"]


def test_no_throughput_means_no_estimate_and_nothing_refused():
    planner = LabPlanner(1, None, count=counter())
    assert planner.offer(["large"]) == (["large"], []) and planner.check("large") is None


def test_a_lexicon_still_to_encode_is_part_of_the_job():
    pending = {"words": 20_000}
    planner = LabPlanner(300, Throughput(image_seconds=0.01, text_seconds=0.02), count=counter(),
                         pending_words=lambda: pending["words"])
    with pytest.raises(LabTooLong, match="would take ~7 min"):  # 2 s of images + 400 s of lexicon
        planner.check("small")
    pending["words"] = 0  # the app's lexicon is in memory now
    assert planner.check("small").fits


def test_bad_throughputs_are_refused():
    for bad in (-1.0, math.nan, math.inf, "1"):
        with pytest.raises(ValueError, match="finite number"):
            Throughput(image_seconds=bad, text_seconds=0.0)


def test_benchmark_work_counts_the_evaluation_sets(tmp_path):
    from croft_core.data.benchmarks import EVAL_ROLES, materialize

    bench = tiny_benchmark(tmp_path / "data")
    path = bench.to_json(tmp_path / "tiny.json")
    work = benchmark_work(str(path))
    sets = [materialize(bench, role, shots=None, seed=1) for role in ("val", *EVAL_ROLES)]
    expected = sum(sum(len(s) for s in x) if isinstance(x, list) else len(x) for x in sets)
    assert work.images == expected > 0
    assert work.batches == sum(len(x) if isinstance(x, list) else 1 for x in sets)  # small sets: one call each
    assert work.prompts == 2 * len(bench.classnames)  # one template: the class texts and the labels


def test_throughput_is_measured_on_the_backbone(tiny_backbone, monkeypatch):
    quick = measure_throughput(tiny_backbone, budget=1.0)
    assert 0 < quick.image_seconds < 0.5 and 0 < quick.text_seconds < 0.5
    encode = tiny_backbone.model.encode_image

    def slow_encode(pixels, *args, **kwargs):  # a backbone 50 ms slower per image
        time.sleep(0.05 * len(pixels))
        return encode(pixels, *args, **kwargs)

    monkeypatch.setattr(tiny_backbone.model, "encode_image", slow_encode)
    slow = measure_throughput(tiny_backbone, budget=1.0)
    assert slow.image_seconds >= 0.05 and slow.image_seconds > quick.image_seconds


# -- the measurement: in the background, once, never skipped ------------------------------------

def blocked_measure(release, result=SLOW, calls: list | None = None):
    """A stand-in measurement that blocks until ``release`` is set (at most 20 s), then returns ``result``."""
    def measure() -> Throughput:
        if calls is not None:
            calls.append(threading.current_thread().name)
        release.wait(20)
        return result
    return measure


def test_a_job_before_the_measurement_waits_a_bounded_time_then_is_refused_clearly():
    release = threading.Event()
    planner = LabPlanner(300, measure=blocked_measure(release), count=counter(), wait=0.2)
    assert planner.measuring and planner.start()
    t0 = time.perf_counter()
    with pytest.raises(LabMeasuring, match=r"still measuring how long runs take on this host .*try again"):
        planner.check("large")  # would not fit once measured: never let through because the plan is late
    assert 0.2 <= time.perf_counter() - t0 < 5  # waited its bound, then refused
    assert planner.offer(["small", "large"]) == (["small", "large"], [])  # the menu does not wait
    assert lab_note([], measuring=True).startswith("**Still measuring**")
    release.set()
    assert planner.wait_for_plan(10) and not planner.measuring
    with pytest.raises(LabTooLong, match="'large' would take ~15 min"):  # now the plan applies
        planner.check("large")
    assert planner.offer(["small", "large"])[0] == ["small"]


def test_a_measurement_arriving_during_the_wait_lets_a_job_that_fits_through():
    release = threading.Event()
    planner = LabPlanner(300, measure=blocked_measure(release), count=counter(), wait=10)
    threading.Timer(0.3, release.set).start()
    assert planner.check("small").fits  # started by the job itself (nobody had), waited for, applied


def test_the_measurement_runs_once_from_many_threads_and_in_the_background():
    release, calls = threading.Event(), []
    planner = LabPlanner(300, measure=blocked_measure(release, calls=calls), count=counter(), wait=10)
    starters = [threading.Thread(target=planner.start, args=(["small", "large"],)) for _ in range(8)]
    for t in starters:
        t.start()
    for t in starters:
        t.join()
    release.set()
    planner.wait_for_plan(10)
    planner.check("small")
    assert calls == ["croft-lab-measure"]  # one measurement, in its own thread


def test_a_slow_host_is_counted_ahead_in_the_background_thread():
    calls, threads = [], []

    def count(name: str) -> LabWork:
        calls.append(name)
        threads.append(threading.current_thread().name)
        return WORK[name]

    gate = threading.Event()
    planner = LabPlanner(300, measure=lambda: SLOW, count=lambda name: gate.wait(10) and count(name))
    planner.start(["small", "large"])
    planner.wait_for_plan(10)  # measured: jobs may run while the benchmarks are being counted
    assert planner.offer(["small", "large"]) == (["small", "large"], []) and calls == []  # the menu never counts
    gate.set()
    planner._thread.join(10)
    assert calls == ["small", "large"] and set(threads) == {"croft-lab-measure"}
    assert planner.offer(["small", "large"])[0] == ["small"] and len(calls) == 2  # not counted again


def test_a_job_waits_for_its_own_benchmark_being_counted_not_for_another():
    rendering, counted = threading.Event(), []

    def count(name: str) -> LabWork:
        if name == "large":  # rendered in the background for a long time
            rendering.wait(10)
        counted.append(name)
        return WORK[name]

    planner = LabPlanner(300, measure=lambda: SLOW, count=count)
    planner.start(["large"])
    planner.wait_for_plan(10)
    t0 = time.perf_counter()
    assert planner.check("small").fits and time.perf_counter() - t0 < 5  # not behind "large"
    rendering.set()
    with pytest.raises(LabTooLong):
        planner.check("large")
    assert sorted(counted) == ["large", "small"]  # each counted once


def test_a_failed_measurement_is_logged_and_the_lab_then_runs_nothing(caplog):
    def broken() -> Throughput:
        raise RuntimeError("out of memory")

    planner = LabPlanner(300, measure=broken, count=counter(), wait=10)
    with caplog.at_level(logging.ERROR, logger="croft_app.service.labcost"):
        planner.start()
        planner._ready.wait(10)
    assert "could not measure the Lab's cost" in caplog.text and "out of memory" in caplog.text
    assert planner.failed and not planner.measuring
    with pytest.raises(LabMeasuring, match="could not measure how long a Lab run takes"):
        planner.check("small")  # nothing unmeasured runs, not even what might have fitted
    offered, reasons = planner.offer(["small", "large"])
    assert offered == [] and "could not measure" in lab_note(reasons)
