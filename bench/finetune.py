"""Fine-tuning from an upload to a usable model, on the embedded backbone (issue 13).

A zip of 10 shape classes (rendered by the embedded world, 20 photo images per class) goes through
what ``/finetune`` does: the zip is checked and extracted, 16 shots per class are drawn with a
seeded held-out validation part, features are extracted, CRoFT trains (200 steps), the threshold is
calibrated, and the model is wrapped as a classifier and classifies one image. Measured twice in one
process: with a cold feature cache, then with the features cached (the same upload again); once
with the upload default (4 augmented views per training image) and once with plain views (the
embedded world's small centred shapes do not survive random crops, see croft_core.data.benchmarks.shapes).

    python bench/finetune.py            # targets: <= 60 s cold, <= 15 s cached, on 2 cores
    BENCH_DEVICE=cuda python bench/finetune.py

Prints both times and the validation accuracy.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from croft_core.clip.backbones import load_backbone  # noqa: E402
from croft_app.service.finetune import FinetuneRequest, finetune  # noqa: E402
from croft_app.service.classifier import OpenSetClassifier  # noqa: E402
from croft_core.data.synth.world import ID_CLASSES, render  # noqa: E402
from croft_app.service.uploads import extract_zip  # noqa: E402
from croft_app.service.userdata import upload_data  # noqa: E402

SHOTS, PER_CLASS, STEPS = 16, 20, 200


def make_upload(path: Path) -> Path:
    rng = np.random.default_rng(0)
    with zipfile.ZipFile(path, "w") as zf:
        for c in ID_CLASSES:
            for i in range(PER_CLASS):
                buf = io.BytesIO()
                render(c, "photo", rng, size=64).save(buf, "PNG")
                zf.writestr(f"my-shapes/{c}/{i}.png", buf.getvalue())
    return path


def upload_to_model(backbone, upload: Path, work: Path, cache: Path, augment: bool) -> tuple[float, float]:
    t0 = time.perf_counter()
    images = extract_zip(upload, work)
    data = upload_data(images, "my-shapes", shots=SHOTS, seed=1, max_images=2000, max_classes=100)
    data.augment = augment
    result = finetune(backbone, data, FinetuneRequest(steps=STEPS), cache_dir=cache)
    classifier = OpenSetClassifier(backbone, result.model, name=result.name)
    classifier.classify([data.val.image(0)], list(data.classnames), None)
    images.cleanup()
    return time.perf_counter() - t0, result.results["val_accuracy"]


def main() -> None:
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    device = os.environ.get("BENCH_DEVICE", "cpu")  # BENCH_DEVICE=cuda on a GPU machine
    backbone = load_backbone("embedded", device=device)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        upload = make_upload(tmp / "my-shapes.zip")
        print(f"upload -> usable model, {SHOTS}-shot x {len(ID_CLASSES)} classes, CRoFT, {STEPS} steps, "
              f"{torch.get_num_threads()} threads, device {device}")
        for augment, what in ((True, "4 augmented views (the upload default)"),
                              (False, "plain views (as the shapes benchmark trains)")):
            cache = tmp / f"cache-{augment}"
            cold, acc = upload_to_model(backbone, upload, tmp / f"a{augment}", cache, augment)
            warm, acc2 = upload_to_model(backbone, upload, tmp / f"b{augment}", cache, augment)
            print(f"  {what}:")
            print(f"    with feature extraction: {cold:6.1f} s (target <= 60 s)  val accuracy {acc:.3f}")
            print(f"    features cached:         {warm:6.1f} s (target <= 15 s)  val accuracy {acc2:.3f}")


if __name__ == "__main__":
    main()
