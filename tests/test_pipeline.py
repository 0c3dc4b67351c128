"""End-to-end runs: the checkpoint/backbone compatibility rule and grid selection."""

from __future__ import annotations

import os

import pytest

from croft_core.pipeline import check_compatible, evaluate_checkpoint, grid_configs
from croft_core.train import init_model, method_config
from datagen import tiny_benchmark


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    return tiny_benchmark(tmp_path_factory.mktemp("data"))


def _croft_on(spec: str, bench, embed_dim: int = 16):
    return init_model(method_config("croft"), embed_dim=embed_dim, logit_scale=20.0,
                      classnames=bench.classnames, backbone=spec)


def test_eval_accepts_another_spelling_of_the_same_backbone(tiny_backbone, bench, monkeypatch):
    folder = tiny_backbone.spec.removeprefix("local-dir:")
    monkeypatch.chdir(os.path.dirname(folder))
    relative = f"local-dir:{os.path.basename(folder)}"  # what `croft train` ran from that folder saved
    model = _croft_on(relative, bench)
    check_compatible(model, tiny_backbone, bench)  # same weights: no error
    results, _ = evaluate_checkpoint(tiny_backbone, bench, model, shots=2, views=1, cache_dir=None,
                                     knn=False)
    assert 0.0 <= results["id"]["accuracy"] <= 1.0


def test_eval_rejects_another_backbone(tiny_backbone, bench):
    with pytest.raises(ValueError, match="trained on backbone 'ViT-B-16:openai'.*--backbone"):
        check_compatible(_croft_on("ViT-B-16:openai", bench), tiny_backbone, bench)
    with pytest.raises(ValueError, match="checkpoint width 8"):
        check_compatible(_croft_on(tiny_backbone.spec, bench, embed_dim=8), tiny_backbone, bench)


def test_grid_configs_cover_min_steps():
    cfg = method_config("croft")
    grid = grid_configs(cfg, {"min_steps": [None, 500], "lr": [0.002, 0.02]})
    assert [(c.min_steps, c.lr) for c in grid] == [(None, 0.002), (None, 0.02), (500, 0.002),
                                                   (500, 0.02)]
    with pytest.raises(ValueError, match="unknown grid options"):
        grid_configs(cfg, {"nope": [1]})
