"""The linear probe on the shapes benchmark: L-BFGS logistic regression vs the SGD probe it replaced.

Every probe sees the same cached 16-shot features (embedded backbone, seeds 1-3) and is scored on
the photo test set and each style (covariate shift):

- ``lbfgs`` — the library's ``linear_probe`` (croft_core.heads.probe: every cached view a training row,
  ``C`` swept on validation);
- ``lbfgs_first_view`` — the same fit on the first cached view only;
- ``sklearn_reference`` — scikit-learn's logistic regression as ``croft check-embedded`` fits it
  (first view, ``C`` in 0.1..100 on validation), the 92.3% of issue 8;
- ``sgd_adamw`` — the previous baseline: the zero-shot-initialised linear head trained by the
  epoch loop with AdamW (lr 1e-3, weight decay 1e-4, 30 epochs).

Usage: ``python bench/linear_probe.py [--seeds 1,2,3]`` (features cached under $CROFT_CACHE).
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression

from croft_core.clip.backbones import load_backbone
from croft_core.data.benchmarks import get_benchmark
from croft_core.runs.evaluate import benchmark_text_features, prepare_features
from croft_core.ood.metrics import accuracy
from croft_core.heads.probe import fit_linear_probe
from croft_core.runs.train import METHODS, init_model, method_config, train

METHODS["sgd_probe"] = {"head": "linear_probe", "step": "supervised",  # the replaced baseline
                        "defaults": {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 1e-4}}


def _scores(predict, feats) -> dict[str, float]:
    sets = [("photo", feats.id_test), *[(fs.name, fs) for fs in feats.covariate]]
    return {name: 100.0 * accuracy(predict(fs.first_view()), fs.labels) for name, fs in sets}


def _sklearn_reference(feats):
    x = lambda fs: F.normalize(fs.first_view(), dim=-1).numpy()  # noqa: E731
    best = None
    for c in (0.1, 1.0, 10.0, 100.0):
        clf = LogisticRegression(C=c, max_iter=2000).fit(x(feats.train), feats.train.labels.numpy())
        acc = float(np.mean(clf.predict(x(feats.val)) == feats.val.labels.numpy()))
        if best is None or acc > best[0]:
            best = (acc, clf)
    return lambda f: best[1].predict(F.normalize(f, dim=-1).numpy())


def run_seed(backbone, bench, text, seed: int) -> dict[str, dict[str, float]]:
    feats = prepare_features(backbone, bench, shots=16, seed=seed, views=8)
    out = {}
    for name, all_views in (("lbfgs", True), ("lbfgs_first_view", False)):
        model = init_model(method_config("linear_probe"), embed_dim=backbone.embed_dim,
                           logit_scale=backbone.logit_scale, classnames=bench.classnames,
                           text_features=text)
        fit_linear_probe(model.head, feats.train, feats.val, all_views=all_views)
        out[name] = _scores(lambda f: model(f, text), feats)
    out["sklearn_reference"] = _scores(_sklearn_reference(feats), feats)
    cfg = method_config("sgd_probe", seed=seed)
    model = init_model(cfg, embed_dim=backbone.embed_dim, logit_scale=backbone.logit_scale,
                       classnames=bench.classnames, text_features=text)
    model = train(model, feats.train, text, cfg, val_set=feats.val, progress=False).model
    out["sgd_adamw"] = _scores(lambda f: model(f, text), feats)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1,2,3")
    args = parser.parse_args()
    backbone = load_backbone("embedded")
    bench = get_benchmark("shapes")
    text = benchmark_text_features(backbone, bench)
    runs = [run_seed(backbone, bench, text, int(s)) for s in args.seeds.split(",")]
    domains = list(runs[0]["lbfgs"])
    print("probe | " + " | ".join(domains) + "   (accuracy %, mean ± std over seeds)")
    for probe in runs[0]:
        cells = []
        for d in domains:
            values = [r[probe][d] for r in runs]
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.1f} ± {std:.1f}")
        print(f"{probe} | " + " | ".join(cells))


if __name__ == "__main__":
    main()
