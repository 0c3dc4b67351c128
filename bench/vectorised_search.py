"""Training N configurations at once on cached features vs the sequential loop, as a ratio in one run.

The configurations are each method's ``--search N`` draw (``SEARCH_SPACES``) on the 16-shot
``shapes`` features of the embedded backbone. The sequential baseline is the library's loop
(:func:`croft_core.runs.train.train`, one run per configuration).

- CRoFT (``croft``, ``croft_noedr``, ``croft_clean``): the library's stacked path,
  :func:`croft_core.runs.vectorised.train_many` (what ``croft bench --search N`` runs; ``lr``,
  ``lambda1``, ``lambda2`` and ``edr_reduction`` per configuration, the generator's inner steps and
  the EDR double backward included).
- The prompt learners (``coop``, ``cocoop``, ``locoop``): the library's stacked path too
  (:mod:`croft_core.runs.stacked_prompts`: ``lr``, ``ctx_init``, ``class_specific_ctx``,
  ``locoop_lambda``, ``locoop_top_k`` per configuration), one text-tower pass per step for the N
  configurations' prompts (N * K; N * B * K for CoCoOp's per-image prompts). Each method's own
  schedule, raised to ``--min-steps``: CoOp and LoCoOp 100 epochs of 5 batches of 32, CoCoOp its 10
  epochs of 160 batch-1 steps.

  Measured 2026-12-03 (``--methods coop cocoop locoop``, N = 8, CPU seconds of the process on the
  shared 2-core machine at load 5-11, validation accuracy identical at every (configuration, epoch),
  selected weights within 1e-6): stacked / sequential CoOp 0.35 (16.0 vs 45.7 s), CoCoOp 0.59
  (104.7 vs 177.8 s; 0.50 with ``--methods cocoop --threads 1``: 77.9 vs 155.6 s), LoCoOp 0.31
  (21.0 vs 68.3 s). The stacked step of N * K (CoCoOp: N * B * K = 80) prompts is bound by the text
  tower's arithmetic, so CoCoOp, whose single-configuration step is the cheapest, gains least.

- CLIP-Adapter: stacked here only (not in the library): the N adapters' weights (``[N, r, d]`` and
  ``[N, d, r]``), one forward over every configuration for each batch (the batches are the same:
  they depend only on the seed), the N cross-entropies summed (so each configuration's gradient is
  its own) and the official SGD step with each configuration's own learning rate.

For every method the script checks that both give the same validation accuracy per configuration
(for the library's stacked paths: at every epoch) and prints the largest difference between the two
paths' selected weights, then the wall-clock and CPU seconds of each and their ratio. Both are timed
in the same process, one after the other, so a loaded machine (other jobs on the 2 cores) inflates
both; the ratio is the number to quote.

Usage: ``OMP_WAIT_POLICY=PASSIVE python bench/vectorised_search.py [--methods coop cocoop locoop]
[--n 8] [--min-steps 500]`` (methods separated by spaces or commas; default ``croft clip_adapter``)
(features cached under $CROFT_CACHE).
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torch.nn.functional as F

from croft_core.clip.backbones import load_backbone
from croft_core.clip.features import l2n
from croft_core.data.benchmarks import get_benchmark
from croft_core.runs.evaluate import benchmark_text_features, prepare_features
from croft_core.runs.pipeline import needs_local
from croft_core.runs.train import (init_model, lr_at_epoch, method_config, scheduled_epochs, search_configs,
                                   steps_per_epoch, train)
from croft_core.runs.vectorised import supports_vectorised, train_many
from croft_core.seeds import epoch_seed


def _stack(models) -> list[torch.Tensor]:
    w1 = torch.stack([m.head.mlp[0].weight.detach() for m in models]).clone().requires_grad_(True)  # [N, r, d]
    w2 = torch.stack([m.head.mlp[2].weight.detach() for m in models]).clone().requires_grad_(True)  # [N, d, r]
    return [w1, w2]


def _logits(params, ratio: torch.Tensor, f: torch.Tensor, text: torch.Tensor, scale: float) -> torch.Tensor:
    """``[N, B, K]``: every configuration's CLIP-Adapter logits for one batch ``f [B, d]``."""
    w1, w2 = params
    x = l2n(f)
    h = torch.relu(torch.einsum("bd,nrd->nbr", x, w1))
    m = torch.relu(torch.einsum("nbr,ndr->nbd", h, w2))
    z = l2n(ratio[:, None, None] * m + (1 - ratio[:, None, None]) * x)
    return scale * z @ l2n(text).T


def train_vectorised(models, cfgs, train_set, val_set, text, scale):
    """Every configuration's best validation accuracy, trained together (see the module doc)."""
    cfg = cfgs[0]
    params = _stack(models)
    ratio = torch.tensor([c.image_ratio for c in cfgs])
    bufs = [None, None]
    n = len(train_set)
    epochs = scheduled_epochs(cfg, n)
    best = torch.full((len(cfgs),), -1.0)
    for epoch in range(epochs):
        lr = torch.tensor([lr_at_epoch(c, epoch, epochs) for c in cfgs])
        gen = torch.Generator().manual_seed(epoch_seed(cfg.seed, epoch))
        order = torch.randperm(n, generator=gen)
        view = torch.randint(train_set.views, (n,), generator=gen)
        stop = n - n % cfg.batch_size if n >= cfg.batch_size else n
        for start in range(0, stop, cfg.batch_size):
            idx = order[start:start + cfg.batch_size]
            logits = _logits(params, ratio, train_set.features[view[idx], idx], text, scale)  # [N, B, K]
            y = train_set.labels[idx]
            loss = F.cross_entropy(logits.flatten(0, 1), y.repeat(len(cfgs)), reduction="sum") / len(idx)
            grads = torch.autograd.grad(loss, params)
            with torch.no_grad():  # torch.optim.SGD, one learning rate per configuration
                for j, (p, g) in enumerate(zip(params, grads)):
                    d_p = g + cfg.weight_decay * p
                    bufs[j] = d_p.clone() if bufs[j] is None else cfg.momentum * bufs[j] + d_p
                    p -= lr[:, None, None] * bufs[j]
        with torch.no_grad():
            preds = _logits(params, ratio, val_set.first_view(), text, scale).argmax(-1)  # [N, V]
            acc = (preds == val_set.labels).float().mean(-1)
        best = torch.maximum(best, acc)
    return best.tolist(), epochs, [p.detach() for p in params]


class _Clock:
    """Wall-clock and CPU (all threads of this process) seconds of a block."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def _clip_adapter(fresh, cfgs, feats, text, scale):
    """``(sequential val accs, stacked val accs, weight gap, sequential clock, stacked clock, note)``."""
    with _Clock() as t_seq:
        seq = [train(m, feats.train, text, c, val_set=feats.val, progress=False).best_val_accuracy
               for m, c in zip(fresh(), cfgs)]
    with _Clock() as t_vec:
        vec, _, final = train_vectorised(fresh(), cfgs, feats.train, feats.val, text, scale)
    last = train(fresh()[0], feats.train, text, cfgs[0], progress=False).model.head.mlp  # no val: last epoch
    gap = max((last[0].weight - final[0][0]).abs().max().item(), (last[2].weight - final[1][0]).abs().max().item())
    return seq, vec, gap, t_seq, t_vec, ""


def _library(fresh, cfgs, feats, text):
    """The same for a method the library stacks (CRoFT's, the prompt learners'): its loop vs its stacked
    path (``train_many``), selected weights of every configuration."""
    with _Clock() as t_seq:
        seq = [train(m, feats.train, text, c, val_set=feats.val, progress=False) for m, c in zip(fresh(), cfgs)]
    with _Clock() as t_vec:
        vec = train_many(fresh(), cfgs, feats.train, text, val_set=feats.val)
    gap = max((pa - pb).abs().max().item() for a, b in zip(seq, vec)
              for pa, pb in zip(a.model.parameters(), b.model.parameters()))
    differ = sum(sum(ra.get("val_accuracy") != rb.get("val_accuracy") for ra, rb in zip(a.history, b.history))
                 for a, b in zip(seq, vec))
    epochs = sum(len(a.history) for a in seq)
    note = f"; validation accuracy identical at {epochs - differ} of {epochs} (configuration, epoch) pairs"
    gap = gap if differ == 0 else float("inf")  # a different curve fails the check
    return [r.best_val_accuracy for r in seq], [r.best_val_accuracy for r in vec], gap, t_seq, t_vec, note


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["croft", "clip_adapter"],
                        help="croft, croft_noedr, croft_clean, coop, cocoop, locoop, clip_adapter "
                             "(separated by spaces or commas)")
    parser.add_argument("--n", type=int, default=8, help="configurations (the --search budget)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--min-steps", type=int, default=500)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    methods = [m.strip() for given in args.methods for m in given.split(",") if m.strip()]
    unknown = [m for m in methods if m != "clip_adapter" and not supports_vectorised(method_config(m))]
    if unknown:
        parser.error(f"no stacked training for {unknown}")
    backbone = load_backbone("embedded")
    bench = get_benchmark("shapes")
    feats = prepare_features(backbone, bench, shots=16, seed=args.seed, views=1, negatives=False,
                             local=any(needs_local(m) for m in methods))  # LoCoOp's local features
    text = benchmark_text_features(backbone, bench)
    print(f"torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs; other jobs may share this "
          f"machine: seconds are inflated, the ratios are measured in one run")
    ok = True
    for method in methods:
        drawn = search_configs(method, args.n, args.seed)
        cfgs = [method_config(method, seed=args.seed, min_steps=args.min_steps, **c) for c in drawn]

        def fresh():
            torch.manual_seed(0)
            return [init_model(c, embed_dim=backbone.embed_dim, logit_scale=backbone.logit_scale,
                               classnames=bench.classnames, train_set=feats.train, text_features=text,
                               clip=backbone)  # the prompt learners run its frozen text tower
                    for c in cfgs]

        if method == "clip_adapter":
            seq, vec, gap, t_seq, t_vec, note = _clip_adapter(fresh, cfgs, feats, text, backbone.logit_scale)
        else:
            seq, vec, gap, t_seq, t_vec, note = _library(fresh, cfgs, feats, text)
        steps = scheduled_epochs(cfgs[0], len(feats.train)) * steps_per_epoch(cfgs[0], len(feats.train))
        print(f"\n{method}, {len(cfgs)} configurations x {steps} steps, shapes 16-shot, seed {args.seed}")
        for c, a, b in zip(drawn, seq, vec):
            print(f"  {c}: val acc sequential {100 * a:.1f}  vectorised {100 * b:.1f}")
        same = max(abs(a - b) for a, b in zip(seq, vec))
        which = "configuration 1's last-epoch" if method == "clip_adapter" else "every configuration's selected"
        print(f"largest val-accuracy difference {100 * same:.2f} points; {which} weights differ by at most "
              f"{gap:.1e}{note}")
        print(f"sequential {t_seq.wall:.1f} s ({t_seq.cpu:.1f} s CPU), vectorised {t_vec.wall:.1f} s "
              f"({t_vec.cpu:.1f} s CPU): ratio {t_vec.wall / t_seq.wall:.3f} wall, {t_vec.cpu / t_seq.cpu:.3f} CPU "
              f"({t_seq.wall / t_vec.wall:.1f}x faster)")
        ok = ok and same <= 0.02 and gap < 1e-3
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
