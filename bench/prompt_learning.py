"""Prompt learning on `shapes`: time per run and what the local features cost (issue 20).

One run: the 16-shot features of `shapes` (embedded backbone, seed 1, 8 views) are prepared once with
local features; then each method trains on them and is evaluated, timed in CPU seconds of this
process (``time.process_time``, less sensitive than wall time to a shared machine) and wall seconds.
It prints the feature cache of every split with and without the local features (float16) and
their ratio, then one line per method: seconds, ID accuracy, mean covariate accuracy and the
energy / MCM / GL-MCM AUROC.

Usage: ``python bench/prompt_learning.py [--methods zeroshot,clip_adapter,coop,cocoop,locoop]
[--threads 1] [--epochs N]`` (features cached under $CROFT_CACHE).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from croft_core.clip.backbones import load_backbone
from croft_core.data.benchmarks import get_benchmark
from croft_core.runs.evaluate import benchmark_text_features, evaluate, prepare_features, zeroshot_model
from croft_core.runs.train import init_model, method_config, train


def _bytes(feats) -> tuple[int, int]:
    splits = [feats.train, feats.val, feats.id_test, *feats.covariate, *feats.semantic]
    return (sum(fs.features.numel() * fs.features.element_size() for fs in splits),
            sum(fs.local_bytes for fs in splits))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default="zeroshot,clip_adapter,croft,coop,cocoop,locoop")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: stable on a shared machine)")
    parser.add_argument("--epochs", type=int, default=None, help="override every method's epochs")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    backbone = load_backbone("embedded")
    bench = get_benchmark("shapes", seed=1)
    feats = prepare_features(backbone, bench, shots=16, seed=1, views=8, local=True)
    text = benchmark_text_features(backbone, bench)
    plain, local = _bytes(feats)
    print(f"feature cache (shapes, 16 shots, 8 views): global float32 {plain / 2**20:.2f} MB, "
          f"local float16 {local / 2**20:.2f} MB ({feats.id_test.local.shape[2]} positions), "
          f"local/global = {local / plain:.2f}")
    print("method        cpu_s   wall_s  ID_acc  cov_acc  energy_AUROC  MCM_AUROC  GLMCM_AUROC")
    for method in [m.strip() for m in args.methods.split(",") if m.strip()]:
        cpu, wall = time.process_time(), time.perf_counter()
        if method == "zeroshot":
            model = zeroshot_model(backbone, bench)
        else:
            cfg = method_config(method, seed=1, epochs=args.epochs)
            model = init_model(cfg, embed_dim=backbone.embed_dim, logit_scale=backbone.logit_scale,
                               classnames=bench.classnames, train_set=feats.train, text_features=text,
                               backbone=backbone.spec, clip=backbone)
            model = train(model, feats.train, text, cfg, val_set=feats.val, progress=False).model
        results, _ = evaluate(model, text, feats)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        sem = results["semantic_all"]
        cov = np.mean([c["accuracy"] for c in results["covariate"]])
        print(f"{method:12s} {cpu:6.1f}  {wall:7.1f}  {100 * results['id']['accuracy']:6.1f}  {100 * cov:7.1f}  "
              f"{100 * sem['energy']['auroc']:12.1f}  {100 * sem['mcm']['auroc']:9.1f}  "
              f"{100 * sem['glmcm']['auroc']:11.1f}")


if __name__ == "__main__":
    main()
