"""Hyper-parameter sweep cost: cached features vs the official way, in one run.

The official code encodes every training batch through the frozen image encoder at every step of
every run. CRoFT Lab encodes each training image ``V`` times once (augmented views), caches the
features, and trains every grid point on them. This script times a lambda1 x lambda2 grid of 4
points x 2 seeds both ways, with the same epochs, batch size and objective, and prints the ratio
(target: cached <= 1/10 of the official wall time).

    python bench/sweep.py [--model ViT-B-32] [--epochs 10] [--views 4]

Random backbone weights are used (the cost is the same as for pretrained ones).
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import os
import tempfile
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from croft_core.clip.backbones import build_text_classifier, load_backbone  # noqa: E402
from croft_core.clip.features import extract_features  # noqa: E402
from croft_core.objectives.steps import official_step  # noqa: E402
from croft_core.runs.train import _optimizers, init_model, lr_at_epoch, method_config, train  # noqa: E402


class SyntheticSplit:
    """``n_classes * shots`` generated RGB images (a stand-in for a few-shot training split)."""

    def __init__(self, n_classes: int, shots: int, size: int = 224, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.labels = np.repeat(np.arange(n_classes), shots)
        colours = rng.integers(0, 256, (n_classes, 3))
        self._images = [Image.fromarray(np.clip(colours[y] + rng.normal(0, 40, (size, size, 3)), 0, 255)
                                        .astype(np.uint8)) for y in self.labels]
        self.ids = [f"img{i}" for i in range(len(self.labels))]
        self.name = "synthetic train"

    def __len__(self) -> int:
        return len(self.labels)

    def image(self, i: int) -> Image.Image:
        return self._images[i]

    def fingerprint(self) -> str:
        return hashlib.sha1(",".join(self.ids).encode()).hexdigest()


def official_way(backbone, split, text, cfg) -> None:
    """One run as the official code does it: augment + encode every batch, every step."""
    model = init_model(cfg, embed_dim=backbone.embed_dim, logit_scale=backbone.logit_scale,
                       classnames=[str(i) for i in range(text.shape[0])])
    optimizers = _optimizers(model, cfg)
    transform = backbone.train_transform()
    labels = torch.as_tensor(split.labels)
    gen = torch.Generator().manual_seed(cfg.seed)
    for epoch in range(cfg.epochs):
        for opt in optimizers:
            for group in opt.param_groups:
                group["lr"] = lr_at_epoch(cfg, epoch)
        order = torch.randperm(len(split), generator=gen)
        for start in range(0, len(split) - len(split) % cfg.batch_size, cfg.batch_size):
            idx = order[start:start + cfg.batch_size]
            pixels = torch.stack([transform(split.image(int(i))) for i in idx])
            f = backbone.encode_images(pixels)
            official_step(model.head, f, text, labels[idx], optimizers, lambda1=cfg.lambda1,
                          lambda2=cfg.lambda2, gen_steps=cfg.gen_steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--classes", type=int, default=12)
    parser.add_argument("--shots", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()
    torch.manual_seed(0)
    backbone = load_backbone(f"{args.model}:random")
    backbone.cache_id = f"bench-{args.model}"
    split = SyntheticSplit(args.classes, args.shots)
    text = build_text_classifier(backbone, [f"class {i}" for i in range(args.classes)],
                                 ["a photo of a {}."], cache_dir=None)
    grid = list(itertools.product((1.0, 5.0), (1.0, 5.0)))  # lambda1 x lambda2
    seeds = (1, 2)
    configs = [method_config("croft", lambda1=l1, lambda2=l2, seed=s, epochs=args.epochs,
                             batch_size=args.batch_size) for (l1, l2), s in itertools.product(grid, seeds)]

    start = time.perf_counter()
    for cfg in configs:
        official_way(backbone, split, text, cfg)
    t_official = time.perf_counter() - start

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as cache:
        feats = extract_features(backbone, split, views=args.views, augment=True, seed=0, cache_dir=cache)
        t_extract = time.perf_counter() - start
        for cfg in configs:
            model = init_model(cfg, embed_dim=backbone.embed_dim, logit_scale=backbone.logit_scale,
                               classnames=[str(i) for i in range(args.classes)])
            train(model, feats, text, cfg, progress=False)
    t_cached = time.perf_counter() - start

    n_img = len(split)
    print(f"sweep: {len(grid)} (lambda1, lambda2) points x {len(seeds)} seeds, {args.epochs} epochs, "
          f"{n_img} training images, {args.model} (random weights), batch {args.batch_size}")
    print(f"  official way (encode every batch, every step): {t_official:.1f} s")
    print(f"  cached features ({args.views} views, extraction {t_extract:.1f} s included): {t_cached:.1f} s")
    print(f"  cached / official = {t_cached / t_official:.3f} (target <= 0.100); "
          f"speed-up {t_official / t_cached:.1f}x")


if __name__ == "__main__":
    main()
