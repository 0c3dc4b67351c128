"""The training loop: determinism, learning, resume after interruption, schedules, methods."""

from __future__ import annotations

import importlib
import json
import math

import pytest
import torch

from croft_core.errors import CroftError
from croft_core.clip.features import FeatureSet
from croft_core.runs.train import (METHODS, ResumeConflictError, init_model, lr_at_epoch, method_config,
                              scheduled_epochs, steps_per_epoch, train)
from helpers import clustered_features

CLASSES = ["a", "b", "c", "d"]
train_module = importlib.import_module("croft_core.runs.train")  # the package re-exports `train` itself


def _fit(method="croft", out_dir=None, resume=True, on_epoch=None, should_stop=None, **overrides):
    train_set, text = clustered_features(seed=0)
    val_set, _ = clustered_features(seed=0, views=1, name="val")
    cfg = method_config(method, epochs=4, batch_size=8, lr=0.05, **overrides)
    torch.manual_seed(123)  # must not matter: all randomness is explicitly seeded
    model = init_model(cfg, embed_dim=16, logit_scale=20.0, classnames=CLASSES, train_set=train_set,
                       text_features=text)
    return train(model, train_set, text, cfg, val_set=val_set, out_dir=out_dir, resume=resume,
                 progress=False, on_epoch=on_epoch, should_stop=should_stop), train_set, text


def test_lr_schedule_matches_dassl():
    cfg = method_config("croft", epochs=30)
    assert lr_at_epoch(cfg, 0) == pytest.approx(1e-5)
    assert lr_at_epoch(cfg, 1) == pytest.approx(0.002)
    assert lr_at_epoch(cfg, 16) == pytest.approx(0.001)
    assert lr_at_epoch(cfg, 29) < lr_at_epoch(cfg, 2)


# ---- learning: held-out data, a wrong start ------------------------------------------------------

def _draw(centres: torch.Tensor, per_class: int, views: int, seed: int, name: str) -> FeatureSet:
    """Fresh samples around fixed class centres (the generator is independent of the centres')."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(len(centres)).repeat_interleave(per_class)
    base = centres[labels] + torch.randn(len(labels), centres.shape[1], generator=g)
    feats = base + 0.3 * torch.randn(views, len(labels), centres.shape[1], generator=g)
    return FeatureSet(feats, labels, [f"{name}-{i}" for i in range(len(labels))], name)


def _wrong_world():
    """Training and (independently drawn, larger) validation data, and text features that mix up
    classes a and b, so every head starts at about 50% validation accuracy."""
    centres = torch.randn(4, 16, generator=torch.Generator().manual_seed(0)) * 2
    text = centres.clone()
    text[[0, 1]] = 0.3 * centres[[0, 1]] + 0.7 * centres[[1, 0]]  # a's text is nearer b, and back
    return _draw(centres, 8, 3, seed=1, name="train"), _draw(centres, 50, 1, seed=2, name="val"), text


@pytest.mark.parametrize("method", sorted(m for m in METHODS if m != "zeroshot"
                                         and METHODS[m]["head"] not in ("coop", "cocoop")))
def test_methods_train_and_improve(method):  # prompt learners need a text tower: test_prompt_learning.py
    train_set, val_set, text = _wrong_world()
    cfg = method_config(method, epochs=20, batch_size=8, lr=0.2, warmup_epochs=0)
    torch.manual_seed(0)  # CLIP-Adapter's MLP starts from torch's default initialisation
    model = init_model(cfg, embed_dim=16, logit_scale=20.0, classnames=CLASSES, train_set=train_set,
                       text_features=text)
    start = train_module._val_accuracy(model, val_set, text)
    before = [p.detach().clone() for p in model.parameters()]
    result = train(model, train_set, text, cfg, val_set=val_set, progress=False)

    assert start <= 0.6  # the head is measurably wrong before training
    assert result.best_val_accuracy == train_module._val_accuracy(result.model, val_set, text)
    assert result.best_val_accuracy >= start + 0.08
    assert max((p - q).abs().max().item() for p, q in zip(result.model.parameters(), before)) > 1e-2
    if METHODS[method]["step"] != "lbfgs":
        assert len(result.history) == 20
        assert all(math.isfinite(row["loss"]) for row in result.history)


def test_training_is_deterministic():
    a, *_ = _fit("croft")
    b, *_ = _fit("croft")
    for pa, pb in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(pa, pb)
    assert a.history == b.history


# ---- resume --------------------------------------------------------------------------------------

def _resume_setup():
    train_set, text = clustered_features(seed=0)
    val_set, _ = clustered_features(seed=0, views=1, name="val")
    cfg = method_config("croft", epochs=4, batch_size=8, lr=0.05)
    return train_set, val_set, text, cfg, steps_per_epoch(cfg, len(train_set))


def _new_model(cfg):
    return init_model(cfg, embed_dim=16, logit_scale=20.0, classnames=CLASSES)


def test_resume_after_interruption_matches_uninterrupted(tmp_path, monkeypatch):
    full, *_ = _fit("croft", out_dir=tmp_path / "full")
    train_set, val_set, text, cfg, per_epoch = _resume_setup()
    real_step, calls = train_module._step, []

    def interrupted(*args, **kwargs):  # Ctrl-C in the middle of epoch 3
        calls.append(1)
        if len(calls) > 2 * per_epoch + 1:
            raise KeyboardInterrupt
        return real_step(*args, **kwargs)

    monkeypatch.setattr(train_module, "_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(_new_model(cfg), train_set, text, cfg, val_set=val_set, out_dir=tmp_path / "cut",
              progress=False)
    monkeypatch.setattr(train_module, "_step", real_step)
    state = json.loads((tmp_path / "cut" / "train_state" / "state.json").read_text())
    assert state["epoch"] == 2 and state["step"] == 2 * per_epoch
    resumed = train(_new_model(cfg), train_set, text, cfg, val_set=val_set, out_dir=tmp_path / "cut",
                    progress=False)
    for pa, pb in zip(full.model.parameters(), resumed.model.parameters()):
        assert torch.equal(pa, pb)
    assert resumed.history == full.history
    assert [r["epoch"] for r in resumed.history] == [1, 2, 3, 4]


def test_max_steps_run_saves_complete_epochs_and_full_run_refuses_it(tmp_path):
    train_set, val_set, text, cfg, per_epoch = _resume_setup()
    short = cfg.__class__(**{**cfg.__dict__, "max_steps": 2 * per_epoch + 1})  # stops inside epoch 3
    train(_new_model(short), train_set, text, short, val_set=val_set, out_dir=tmp_path, progress=False)
    state_file = tmp_path / "train_state" / "state.json"
    saved = state_file.read_text()
    assert json.loads(saved)["epoch"] == 2  # the partial third epoch is not saved as if complete
    with pytest.raises(ResumeConflictError, match=r"different configuration \(\['max_steps'\]\)"):
        train(_new_model(cfg), train_set, text, cfg, val_set=val_set, out_dir=tmp_path, progress=False)
    assert state_file.read_text() == saved  # nothing deleted or overwritten
    # the same short command again resumes and ends exactly where the first one did
    again = train(_new_model(short), train_set, text, short, val_set=val_set, out_dir=tmp_path,
                  progress=False)
    assert [r["epoch"] for r in again.history] == [1, 2, 3]


def test_resume_refuses_a_different_config(tmp_path):
    _fit("croft", out_dir=tmp_path)
    with pytest.raises(ResumeConflictError, match=r"different configuration \(\['lambda1'\]\)"):
        _fit("croft", out_dir=tmp_path, lambda1=1.0)
    assert issubclass(ResumeConflictError, CroftError)  # the CLI's one-line error path
    assert issubclass(ResumeConflictError, ValueError)  # callers catching ValueError keep working


# ---- min_steps -----------------------------------------------------------------------------------

def test_min_steps_scales_epochs_and_schedule():
    cfg = method_config("croft", epochs=30, batch_size=32)
    assert steps_per_epoch(cfg, 160) == 5 and steps_per_epoch(cfg, 10) == 1
    assert scheduled_epochs(cfg, 160) == 30  # official recipe: 150 steps
    scaled = method_config("croft", epochs=30, batch_size=32, min_steps=1000)
    assert scheduled_epochs(scaled, 160) == 200  # ceil(1000 / 5)
    assert scheduled_epochs(scaled, 165) == 200  # drop_last: still 5 steps per epoch
    assert scheduled_epochs(method_config("croft", min_steps=10), 160) == 30  # never fewer epochs
    assert scheduled_epochs(method_config("croft", min_steps=0), 160) == 30  # 0 = official (grids)
    with pytest.raises(ValueError, match="min_steps must be >= 0"):
        scheduled_epochs(method_config("croft", min_steps=-1), 160)
    # the cosine spans the scaled epochs: half the peak at the middle of the scaled run
    assert lr_at_epoch(scaled, 1 + 100, 200) == pytest.approx(0.001)


def test_min_steps_run_makes_the_steps_and_selects_on_validation():
    train_set, val_set, text, cfg, per_epoch = _resume_setup()
    cfg = method_config("croft", epochs=2, batch_size=8, lr=0.05, min_steps=5 * per_epoch + 1)
    result = train(_new_model(cfg), train_set, text, cfg, val_set=val_set, progress=False)
    assert [r["epoch"] for r in result.history] == [1, 2, 3, 4, 5, 6]
    assert result.history[-1]["lr"] == pytest.approx(lr_at_epoch(cfg, 5, 6))
    best = max(range(6), key=lambda i: (result.history[i]["val_accuracy"], -i))
    assert result.best_epoch == best + 1


def test_method_config_validation():
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        method_config("nope")
    with pytest.raises(ValueError, match="unknown training options"):
        method_config("croft", lambda3=1)
    assert method_config("croft_noedr").lambda2 == 0.0
    assert method_config("croft_clean", lambda2=None).edr_reduction == "sample_sum"


def test_on_epoch_and_should_stop_hooks():
    """The app's live curves and Stop button: a callback per epoch, a stop keeps the best so far."""
    rows = []
    result, _, _ = _fit(on_epoch=lambda row, epochs: rows.append((row["epoch"], epochs)),
                        should_stop=lambda: len(rows) >= 2)
    assert rows == [(1, 4), (2, 4)]
    assert result.stopped and len(result.history) == 2
    assert result.best_epoch in (1, 2)
    full, _, _ = _fit()
    assert not full.stopped and len(full.history) == 4


# ---- equal tuning budgets ------------------------------------------------------------------------

def test_search_spaces_name_training_options_in_increasing_order():
    from dataclasses import fields

    from croft_core.runs.train import SEARCH_SPACES, TrainConfig

    names = {f.name for f in fields(TrainConfig)}
    assert set(SEARCH_SPACES) <= set(METHODS) and "zeroshot" not in SEARCH_SPACES
    assert set(METHODS) - {"zeroshot"} <= set(SEARCH_SPACES)  # every trained method declares a space
    for method, space in SEARCH_SPACES.items():
        assert set(space) <= names, method
        for values in space.values():
            if all(isinstance(v, (int, float)) for v in values):
                assert list(values) == sorted(set(values)), (method, values)
    assert {"lr", "lambda1", "lambda2", "edr_reduction"} <= set(SEARCH_SPACES["croft"])
    assert {"lr", "tip_alpha", "tip_beta"} <= set(SEARCH_SPACES["tip_adapter"])


def test_search_draws_the_same_budget_seeded_and_distinct():
    from croft_core.runs.train import SEARCH_SPACES, on_edge, search_configs

    for method in SEARCH_SPACES:
        a, b = search_configs(method, 8, seed=1), search_configs(method, 8, seed=1)
        assert a == b and len(a) == 8
        assert len({tuple(c.items()) for c in a}) == 8  # no configuration twice
        assert all(c[k] in SEARCH_SPACES[method][k] for c in a for k in c)
    assert search_configs("croft", 8, seed=1) != search_configs("croft", 8, seed=2)
    assert search_configs("zeroshot", 8, seed=1) == []
    small = {tuple(c.items()) for c in search_configs("croft_noedr", 1000, seed=1)}
    assert len(small) == 18  # the whole space when it is smaller than the budget
    assert on_edge("croft", {"lr": 5e-4, "lambda1": 5.0, "lambda2": 1000.0, "edr_reduction": "sum_mean"}) == \
        ["lr", "lambda2"]
    assert on_edge("croft", {"lr": 2e-3, "lambda1": 5.0}) == []
    with pytest.raises(ValueError, match=">= 0"):
        search_configs("croft", -1, seed=1)


def test_drawn_options_reach_the_model():
    """Tip-Adapter's alpha / beta and the probe's C are training options, not fixed constants."""
    train_set, text = clustered_features(seed=0)
    val_set, _ = clustered_features(seed=0, views=1, name="val")
    cfg = method_config("tip_adapter", tip_alpha=3.0, tip_beta=5.5)
    model = init_model(cfg, embed_dim=16, logit_scale=20.0, classnames=CLASSES, train_set=train_set,
                       text_features=text)
    assert (model.head.alpha, model.head.beta) == (3.0, 5.5)
    probe = method_config("linear_probe", probe_c=0.01)
    result = train(init_model(probe, embed_dim=16, logit_scale=20.0, classnames=CLASSES, train_set=train_set,
                              text_features=text), train_set, text, probe, val_set=val_set, progress=False)
    assert [row["C"] for row in result.history] == [0.01]
