"""What negative labels add to one classification, with the caches warm: ratio in one run.

Issue 10's target: ``/classify`` with the negative-label rule costs <= 1.2x its energy-only cost.
On the embedded model, for one rendered image and the ``shapes`` vocabulary (and a vocabulary the
model does not fit), this script times, taking turns (median of ``--n`` warm calls each):

1. **energy only** — :meth:`OpenSetClassifier.classify` (encode, logits, energy, softmax, top-5);
2. **open set** — :func:`croft_app.service.decision.classify_open`, what ``/classify`` runs: the same, plus
   the memoized negatives of this (model, vocabulary), their scores and the rule's decision.

Both include the image encoding, as a request does; the image is decoded once outside the timing.

Run: ``OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/classify_cost.py [--n 40]``
"""

from __future__ import annotations

import argparse
import os
import tempfile

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from croft_core.clip.backbones import load_backbone  # noqa: E402
from croft_app.service.decision import NegativeRules, classify_open  # noqa: E402
from croft_app.service.classifier import OpenSetClassifier  # noqa: E402
from croft_core.clip.prompts import get_vocabulary  # noqa: E402
from croft_core.data.synth.world import render  # noqa: E402
from timing import interleaved  # noqa: E402 (bench/timing.py)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40)
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)
    backbone = load_backbone("embedded")
    image = render("circle", "photo", np.random.default_rng(0), size=224)
    with tempfile.TemporaryDirectory() as cache:
        classifier = OpenSetClassifier(backbone, cache_dir=cache)
        rules = NegativeRules(backbone, cache)
        for name, vocab in (("shapes", list(get_vocabulary("shapes"))), ("cat, dog, horse, car", ["cat", "dog", "horse", "car"])):
            energy = lambda: classifier.classify([image], vocab, None, 5)  # noqa: E731
            open_set = lambda: classify_open(classifier, rules, [image], vocab, None, 5)  # noqa: E731
            open_set(), energy()  # warm: text features, reference, negatives mined once
            t = interleaved({"energy": energy, "open set": open_set}, args.n)  # taking turns
            ma, mb = t["energy"], t["open set"]
            print(f"{name:>22}: energy only {1e3 * ma:6.1f} ms, open set {1e3 * mb:6.1f} ms, "
                  f"ratio {mb / ma:.2f}x (target <= 1.2x); rule {open_set()[0]['rule']!r}")


if __name__ == "__main__":
    main()
