"""What a Lab job costs on this host: the start-up measurement, each benchmark's estimate, and a check.

The app measures, once at start-up, the loaded backbone's wall-clock seconds per image and per
prompt (:func:`croft_app.service.labcost.measure_throughput`) and offers in the Lab only the
benchmarks whose estimate (images x seconds per image + encoder calls x seconds per call + prompts x
seconds per prompt) is at most
80% of ``CROFT_LAB_TIME_LIMIT``. This script prints that measurement and the estimates, and checks
the estimate against real work in the same run:

- ``--check N``: the first N ID test images of the first benchmark through the Lab's own
  feature extraction (no cache), measured / estimated;
- ``--job``: one whole Lab job (zero-shot evaluation of the first benchmark, empty caches,
  rendering excluded), measured / estimated.

Run: ``OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/lab_cost.py --backbone ViT-B-16:openai --check 64``
(``--backbone embedded --job`` for the default app). Wall-clock numbers: a busy host measures
slower, and the ratio is what to read.
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from croft_app.service.labcost import LAB_BATCH, LabPlanner, benchmark_work, describe_seconds, measure_throughput  # noqa: E402
from croft_app.service.settings import AppSettings  # noqa: E402
from croft_core.clip.backbones import load_backbone  # noqa: E402


class _First:
    """The first ``n`` rows of a LoadedSplit, as extract_features reads a split."""

    def __init__(self, split, n: int):
        self.split, self.n, self.name = split, min(n, len(split)), split.name
        self.labels, self.ids = np.asarray(split.labels)[:self.n], split.ids[:self.n]

    def __len__(self) -> int:
        return self.n

    def image(self, i: int):
        return self.split.image(i)

    def fingerprint(self) -> str:
        return f"{self.split.fingerprint()}-{self.n}"


def check_images(backbone, benchmark: str, n: int, throughput) -> None:
    from croft_core.clip.features import extract_features
    from croft_core.data.benchmarks import get_benchmark, materialize

    split = _First(materialize(get_benchmark(benchmark, seed=1), "id_test", shots=None, seed=1), n)
    start = time.perf_counter()
    extract_features(backbone, split, cache_dir=None)
    took = time.perf_counter() - start
    estimated = len(split) * throughput.image_seconds + math.ceil(len(split) / LAB_BATCH) * throughput.batch_seconds
    print(f"check: {len(split)} images of {benchmark} encoded in {took:.1f} s; estimated "
          f"{estimated:.1f} s; measured / estimated = {took / estimated:.2f}")


def check_job(backbone, planner: LabPlanner, benchmark: str) -> None:
    from croft_core.data.benchmarks import get_benchmark
    from croft_core.runs.evaluate import zeroshot_model
    from croft_core.runs.pipeline import evaluate_checkpoint

    bench = get_benchmark(benchmark, seed=1)  # rendered before the clock starts, as at start-up
    estimate = planner.estimate(benchmark)
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        evaluate_checkpoint(backbone, bench, zeroshot_model(backbone, bench), seed=1, knn=False, cache_dir=cache)
        took = time.perf_counter() - start
    print(f"job: a zero-shot Lab evaluation of {benchmark} took {took:.1f} s; estimated {estimate.seconds:.1f} s; "
          f"measured / estimated = {took / estimate.seconds:.2f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="embedded")
    parser.add_argument("--benchmarks", default="shapes,shapes_dg")
    parser.add_argument("--limit", type=int, default=AppSettings.from_env().lab_time_limit,
                        help="seconds (default: CROFT_LAB_TIME_LIMIT or 600)")
    parser.add_argument("--check", type=int, default=0, metavar="N", help="time N real images too")
    parser.add_argument("--job", action="store_true", help="time one whole Lab job too")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.benchmarks.split(",") if n.strip()]

    backbone = load_backbone(args.backbone, device="cuda" if torch.cuda.is_available() else "cpu")
    start = time.perf_counter()
    throughput = measure_throughput(backbone)
    print(f"{args.backbone} on {backbone.device} ({torch.get_num_threads()} threads): "
          f"{throughput.image_seconds:.4f} s per image, {throughput.batch_seconds:.4f} s per batch, "
          f"{throughput.text_seconds:.4f} s per prompt "
          f"(measured in {time.perf_counter() - start:.1f} s)")
    planner = LabPlanner(args.limit, throughput, count=benchmark_work)
    print(f"Lab limit {args.limit} s; a job is offered up to {planner.margin:.0%} of it")
    print(f"{'benchmark':<12} {'images':>7} {'prompts':>7} {'estimate':>9}  offered")
    for name in names:
        e = planner.estimate(name)
        print(f"{name:<12} {e.work.images:>7,} {e.work.prompts:>7} {describe_seconds(e.seconds):>9}  "
              f"{'yes' if e.fits else 'no'}")
    if args.check:
        check_images(backbone, names[0], args.check, throughput)
    if args.job:
        check_job(backbone, planner, names[0])


if __name__ == "__main__":
    main()
