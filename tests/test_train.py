"""The training loop: determinism, learning, resume after interruption, schedules, methods."""

from __future__ import annotations

import json

import pytest
import torch

from croft_core.train import METHODS, init_model, lr_at_epoch, method_config, train
from helpers import clustered_features

CLASSES = ["a", "b", "c", "d"]


def _fit(method="croft", out_dir=None, resume=True, **overrides):
    train_set, text = clustered_features(seed=0)
    val_set, _ = clustered_features(seed=0, views=1, name="val")
    cfg = method_config(method, epochs=4, batch_size=8, lr=0.05, **overrides)
    torch.manual_seed(123)  # must not matter: all randomness is explicitly seeded
    model = init_model(cfg, embed_dim=16, logit_scale=20.0, classnames=CLASSES, train_set=train_set,
                       text_features=text)
    return train(model, train_set, text, cfg, val_set=val_set, out_dir=out_dir, resume=resume,
                 progress=False), train_set, text


def test_lr_schedule_matches_dassl():
    cfg = method_config("croft", epochs=30)
    assert lr_at_epoch(cfg, 0) == pytest.approx(1e-5)
    assert lr_at_epoch(cfg, 1) == pytest.approx(0.002)
    assert lr_at_epoch(cfg, 16) == pytest.approx(0.001)
    assert lr_at_epoch(cfg, 29) < lr_at_epoch(cfg, 2)


@pytest.mark.parametrize("method", sorted(set(METHODS) - {"zeroshot"}))
def test_methods_train_and_improve(method):
    result, train_set, text = _fit(method, warmup_epochs=0)
    assert len(result.history) == 4
    assert result.best_val_accuracy is not None and result.best_val_accuracy >= 0.9
    assert all(torch.isfinite(torch.tensor(row["loss"])) for row in result.history)


def test_training_is_deterministic():
    a, *_ = _fit("croft")
    b, *_ = _fit("croft")
    for pa, pb in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(pa, pb)
    assert a.history == b.history


def test_resume_after_interruption_matches_uninterrupted(tmp_path):
    full, *_ = _fit("croft", out_dir=tmp_path / "full")
    # "interrupt" after 2 epochs, then rerun the same command: it resumes from epoch 2
    train_set, text = clustered_features(seed=0)
    val_set, _ = clustered_features(seed=0, views=1, name="val")
    cfg = method_config("croft", epochs=4, batch_size=8, lr=0.05)
    model = init_model(cfg, embed_dim=16, logit_scale=20.0, classnames=CLASSES)
    steps_per_epoch = len(train_set) // 8
    train(model, train_set, text, cfg.__class__(**{**cfg.__dict__, "max_steps": 2 * steps_per_epoch}),
          val_set=val_set, out_dir=tmp_path / "cut", progress=False)
    state = json.loads((tmp_path / "cut" / "train_state" / "state.json").read_text())
    assert state["epoch"] == 2
    resumed = train(init_model(cfg, embed_dim=16, logit_scale=20.0, classnames=CLASSES), train_set,
                    text, cfg, val_set=val_set, out_dir=tmp_path / "cut", progress=False)
    for pa, pb in zip(full.model.parameters(), resumed.model.parameters()):
        assert torch.equal(pa, pb)
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3, 4]


def test_resume_refuses_a_different_config(tmp_path):
    _fit("croft", out_dir=tmp_path)
    with pytest.raises(ValueError, match=r"different configuration \(\['lambda1'\]\)"):
        _fit("croft", out_dir=tmp_path, lambda1=1.0)


def test_method_config_validation():
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        method_config("nope")
    with pytest.raises(ValueError, match="unknown training options"):
        method_config("croft", lambda3=1)
    assert method_config("croft_noedr").lambda2 == 0.0
    assert method_config("croft_clean", lambda2=None).edr_reduction == "sample_sum"
