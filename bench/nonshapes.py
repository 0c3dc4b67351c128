"""What the app says to images that are no shape at all (issue 19), for zero-shot and the shipped CRoFT.

Runs the app's own ``/classify`` path (:func:`croft_app.service.decision.classify_open`: the rule that
decides, at its fixed threshold, no calibration here) with the ``shapes`` vocabulary on the rendered
``shapes`` dataset's test split, for zero-shot and the shipped checkpoint
(``croft_core/data/synth/croft-shapes``), and prints:

1. the share of the **non-shape** test images (the far-OOD set: noise, blank canvases, stripes, ...;
   rendered from their own seed, never used to train, select or calibrate) called "unknown", per kind
   and in all (target >= 90% for both models);
2. the share of **known-shape photos** (photo-style test images of the vocabulary's classes) still
   accepted with the right class (target >= 85% for both models);
3. the rule that decided (``energy (calibrated)`` for the checkpoint on its own classes, unless the
   negative labels reject; ``negative labels`` for zero-shot);
4. for information, the share of known shapes in the other styles accepted with the right class.

    python bench/nonshapes.py [--data DIR]

``--data`` is a folder written by ``croft render-shapes`` (default: the cached dataset, rendered on
first use).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from collections import Counter

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import datasets  # noqa: E402
import torch  # noqa: E402

from croft_app.service.classifier import OpenSetClassifier  # noqa: E402
from croft_app.service.decision import NegativeRules, classify_open  # noqa: E402
from croft_core.clip.backbones import load_backbone  # noqa: E402
from croft_core.clip.prompts import get_vocabulary  # noqa: E402
from croft_core.data.benchmarks.shapes import ensure_shapes_dataset  # noqa: E402
from croft_core.data.synth import EMBEDDED_CHECKPOINT  # noqa: E402
from croft_core.data.synth.world import CLASSES, DOMAINS, NONSHAPE_KINDS  # noqa: E402
from croft_core.heads.checkpoint import CroftModel  # noqa: E402

TARGET_UNKNOWN = 0.90
TARGET_KNOWN = 0.85
BATCH = 64


def test_images(data: str | None, vocabulary: list[str]) -> tuple[list, list[str], dict[str, tuple[list, list]]]:
    """``(non-shape images, their kinds, {style: (known-shape images, their classes)})`` of the test split."""
    test = datasets.load_from_disk(str(ensure_shapes_dataset(data)))["test"]
    names = test.features["label"].names
    far, kinds = [], []
    known: dict[str, tuple[list, list]] = {d: ([], []) for d in DOMAINS}
    for row in test:
        name = names[row["label"]]
        if name in NONSHAPE_KINDS:
            far.append(row["image"].convert("RGB"))
            kinds.append(name)
        elif name in vocabulary:
            images, classes = known[DOMAINS[row["domain"]]]
            images.append(row["image"].convert("RGB"))
            classes.append(name)
    return far, kinds, known


def answers(classifier, rules, images: list, vocabulary: list[str]) -> list[dict]:
    out = []
    for i in range(0, len(images), BATCH):
        out += classify_open(classifier, rules, images[i:i + BATCH], vocabulary)
    return out


def right_share(results: list[dict], classes: list[str]) -> float:
    """Share of images accepted with their own class."""
    return sum(r["accepted"] and r["label"] == c for r, c in zip(results, classes)) / len(classes)


def report(name: str, far: list[dict], kinds: list[str], known: list[dict], classes: list[str]) -> None:
    unknown = [not r["accepted"] for r in far]
    share_u, share_k = sum(unknown) / len(unknown), right_share(known, classes)
    rules = Counter(r["rule"] for r in far + known)
    print(f"\n{name}  (rules: {dict(rules)})")
    print(f"  non-shapes called unknown: {100 * share_u:5.1f}% of {len(far)} "
          f"(target >= {100 * TARGET_UNKNOWN:.0f}%: {'OK' if share_u >= TARGET_UNKNOWN else 'MISS'})")
    for kind in NONSHAPE_KINDS:
        mine = [u for u, k in zip(unknown, kinds) if k == kind]
        said = Counter(r["label"] for r, k in zip(far, kinds) if k == kind and r["accepted"])
        print(f"    {kind:<14} {100 * sum(mine) / len(mine):5.1f}%  accepted as: {dict(said.most_common(3))}")
    print(f"  known-shape photos accepted with the right class: {100 * share_k:5.1f}% of {len(known)} "
          f"(target >= {100 * TARGET_KNOWN:.0f}%: {'OK' if share_k >= TARGET_KNOWN else 'MISS'})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="a `croft render-shapes` folder (default: the cache)")
    args = parser.parse_args(argv)
    torch.set_grad_enabled(False)
    backbone = load_backbone("embedded")
    vocabulary = list(get_vocabulary("shapes"))
    assert set(vocabulary) <= set(CLASSES)
    far, kinds, known = test_images(args.data, vocabulary)
    with tempfile.TemporaryDirectory() as cache:
        rules = NegativeRules(backbone, cache, background=False)
        models = {"zero-shot": OpenSetClassifier(backbone, cache_dir=cache),
                  "CRoFT (shipped)": OpenSetClassifier(backbone, CroftModel.from_pretrained(EMBEDDED_CHECKPOINT),
                                                       name="croft-shapes", cache_dir=cache)}
        print(f"vocabulary 'shapes': {', '.join(vocabulary)}")
        for name, classifier in models.items():
            photos, classes = known["photo"]
            report(name, answers(classifier, rules, far, vocabulary), kinds,
                   answers(classifier, rules, photos, vocabulary), classes)
            other = {d: right_share(answers(classifier, rules, imgs, vocabulary), cls)
                     for d, (imgs, cls) in known.items() if d != "photo"}
            print("  (information) other styles accepted with the right class: "
                  + ", ".join(f"{d} {100 * v:.1f}%" for d, v in other.items()))


if __name__ == "__main__":
    main()
