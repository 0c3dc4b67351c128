"""Text classifier speed: truncated vs full-context encoding, and the on-disk cache.

Prints, from one run:
- truncated-encoding speed-up over ``encode_text`` at full context (target >= 2.5x) and the max
  absolute difference (target <= 1e-5);
- warm-cache speed-up over a cold build of the same classifier (target >= 100x).

    python bench/text_encoding.py [--model ViT-B-32] [--classes 1000]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES  # noqa: E402

from croft_core.clip.backbones import build_text_classifier, encode_text_truncated, load_backbone  # noqa: E402
from croft_core.clip.prompts import get_templates  # noqa: E402


def best_of(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-32")
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=250)
    args = parser.parse_args()
    torch.manual_seed(0)
    backbone = load_backbone(f"{args.model}:random")  # random weights: the cost is the same
    backbone.cache_id = f"bench-{args.model}"  # random weights are not cached by default
    names = list(IMAGENET_CLASSNAMES[: args.classes])
    prompts = [f"a photo of a {c}." for c in names]
    tokens = [backbone.tokenizer(prompts[i:i + args.batch]) for i in range(0, len(prompts), args.batch)]

    with torch.no_grad():
        full = torch.cat([backbone.model.encode_text(t) for t in tokens])
        short = torch.cat([encode_text_truncated(backbone.model, t) for t in tokens])
        t_full = best_of(lambda: [backbone.model.encode_text(t) for t in tokens])
        t_short = best_of(lambda: [encode_text_truncated(backbone.model, t) for t in tokens])
    diff = (full - short).abs().max().item()
    print(f"text encoding, {args.model}, {len(prompts)} prompts, context {tokens[0].shape[1]}:")
    print(f"  encode_text (full context): {t_full:.3f} s")
    print(f"  truncated to longest prompt: {t_short:.3f} s")
    print(f"  speed-up: {t_full / t_short:.1f}x (target >= 2.5x), max |diff| = {diff:.2e} (target <= 1e-5)")

    templates = get_templates("croft7")
    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        cold = build_text_classifier(backbone, names, templates, cache_dir=cache)
        t_cold = time.perf_counter() - start
        t_warm = best_of(lambda: build_text_classifier(backbone, names, templates, cache_dir=cache))
        warm = build_text_classifier(backbone, names, templates, cache_dir=cache)
    assert torch.equal(cold, warm)
    print(f"text classifier, {len(names)} classes x {len(templates)} templates:")
    print(f"  cold build: {t_cold:.3f} s, warm cache: {t_warm * 1000:.2f} ms, "
          f"speed-up: {t_cold / t_warm:.0f}x (target >= 100x)")


if __name__ == "__main__":
    main()
