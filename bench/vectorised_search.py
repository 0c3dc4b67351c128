"""Training N configurations at once on cached features vs the sequential loop, as a ratio in one run.

The configurations are the ``--search N`` draw of CLIP-Adapter (``lr`` and ``image_ratio`` from
``SEARCH_SPACES``) on the 16-shot ``shapes`` features of the embedded backbone. The sequential
baseline is the library's loop (:func:`croft_core.runs.train.train`, one run per configuration).
The vectorised run stacks the N adapters' weights (``[N, r, d]`` and ``[N, d, r]``), runs one
forward over every configuration for each batch (the batches are the same: they depend only on the
seed), sums the N cross-entropies (so each configuration's gradient is its own) and takes the
official SGD step (momentum 0.9, weight decay, warm-up then cosine) with each configuration's own
learning rate, selecting each configuration's best epoch on validation as the loop does. The script
checks that both give the same validation accuracy per configuration, and the same last-epoch weights
for the first one, before printing the ratio.

Usage: ``OMP_WAIT_POLICY=PASSIVE python bench/vectorised_search.py [--n 8] [--min-steps 500]``
(features cached under $CROFT_CACHE). Only CLIP-Adapter is vectorised here; the CRoFT steps (double
backward, two optimizers) are not.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from croft_core.clip.backbones import load_backbone
from croft_core.clip.features import l2n
from croft_core.data.benchmarks import get_benchmark
from croft_core.runs.evaluate import benchmark_text_features, prepare_features
from croft_core.runs.train import (init_model, lr_at_epoch, method_config, scheduled_epochs, search_configs,
                                   steps_per_epoch, train)
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8, help="configurations (the --search budget)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--min-steps", type=int, default=500)
    args = parser.parse_args()
    backbone = load_backbone("embedded")
    bench = get_benchmark("shapes")
    feats = prepare_features(backbone, bench, shots=16, seed=args.seed, views=1, negatives=False)
    text = benchmark_text_features(backbone, bench)
    drawn = search_configs("clip_adapter", args.n, args.seed)
    cfgs = [method_config("clip_adapter", seed=args.seed, min_steps=args.min_steps, **c) for c in drawn]

    def fresh():
        torch.manual_seed(0)
        return [init_model(c, embed_dim=backbone.embed_dim, logit_scale=backbone.logit_scale,
                           classnames=bench.classnames, train_set=feats.train, text_features=text) for c in cfgs]

    t0 = time.perf_counter()
    seq = [train(m, feats.train, text, c, val_set=feats.val, progress=False).best_val_accuracy
           for m, c in zip(fresh(), cfgs)]
    t_seq = time.perf_counter() - t0
    t0 = time.perf_counter()
    vec, epochs, final = train_vectorised(fresh(), cfgs, feats.train, feats.val, text, backbone.logit_scale)
    t_vec = time.perf_counter() - t0
    last = train(fresh()[0], feats.train, text, cfgs[0], progress=False).model.head.mlp  # no val: last epoch
    weight_gap = max((last[0].weight - final[0][0]).abs().max().item(), (last[2].weight - final[1][0]).abs().max().item())
    steps = epochs * steps_per_epoch(cfgs[0], len(feats.train))
    print(f"CLIP-Adapter, {len(cfgs)} configurations x {steps} steps, shapes 16-shot, seed {args.seed}")
    for c, a, b in zip(drawn, seq, vec):
        print(f"  {c}: val acc sequential {100 * a:.1f}  vectorised {100 * b:.1f}")
    same = max(abs(a - b) for a, b in zip(seq, vec))
    print(f"largest val-accuracy difference {100 * same:.2f} points; configuration 1's last-epoch weights "
          f"differ by at most {weight_gap:.1e}")
    print(f"sequential {t_seq:.1f} s, vectorised {t_vec:.1f} s: ratio {t_vec / t_seq:.3f} ({t_seq / t_vec:.1f}x faster)")
    return 0 if same <= 0.02 and weight_gap < 1e-3 else 1


if __name__ == "__main__":
    raise SystemExit(main())
