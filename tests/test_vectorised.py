"""Stacked training of many CRoFT configurations (croft_core.runs.vectorised) = the sequential loop."""

from __future__ import annotations

import json

import pytest
import torch

from croft_core.runs.train import init_model, method_config, search_configs, train
from croft_core.runs.vectorised import group_configs, supports_vectorised, train_many
from helpers import clustered_features

CLASSES = ["a", "b", "c", "d"]
WEIGHTS = ("image_weight", "text_weight", "generator_weight")


def _data():
    train_set, text = clustered_features(seed=0)
    val_set, _ = clustered_features(seed=3, views=1, name="val")
    return train_set, val_set, text


def _both(cfgs, validate: bool = True):
    """``(sequential results, stacked results)`` of ``cfgs`` on the same tiny features (without
    ``validate``, no validation set: each keeps its last epoch)."""
    train_set, val_set, text = _data()
    val_set = val_set if validate else None

    def models():
        torch.manual_seed(0)  # CLIP-Adapter starts from random weights; CRoFT from the identity
        return [init_model(c, embed_dim=16, logit_scale=20.0, classnames=CLASSES, train_set=train_set,
                           text_features=text) for c in cfgs]

    sequential = [train(m, train_set, text, c, val_set=val_set, progress=False) for m, c in zip(models(), cfgs)]
    return sequential, train_many(models(), cfgs, train_set, text, val_set=val_set)


def _assert_same_history(a, b) -> None:
    """The same validation accuracies, best epoch and logged losses, epoch by epoch."""
    assert [r.get("val_accuracy") for r in b.history] == [r.get("val_accuracy") for r in a.history]
    assert (b.best_epoch, b.best_val_accuracy) == (a.best_epoch, a.best_val_accuracy)
    assert [list(r) for r in b.history] == [list(r) for r in a.history]  # the same logged losses
    for ra, rb in zip(a.history, b.history):
        assert rb == pytest.approx(ra, rel=1e-4, abs=1e-5)


def _assert_same(sequential, stacked):
    for a, b in zip(sequential, stacked, strict=True):
        _assert_same_history(a, b)
        for name in WEIGHTS:  # the selected (best-epoch) weights
            wa, wb = getattr(a.model.head, name), getattr(b.model.head, name)
            assert (wa - wb).abs().max().item() < 1e-5, name
        assert not b.model.training


def _configs(method, extra):
    drawn = search_configs(method, 4, seed=1) + extra
    return [method_config(method, epochs=4, batch_size=8, **c) for c in drawn]


# per variant: the search's draw plus hand-picked configurations that differ in exactly the stacked
# options where the draw might not (lambda2 across three orders of magnitude, both reductions)
VARIANTS = {
    "croft": [{"lr": 0.01, "lambda1": 5.0, "lambda2": 0.1, "edr_reduction": "mean_sum"},
              {"lr": 0.01, "lambda1": 5.0, "lambda2": 20.0, "edr_reduction": "mean_sum"},
              {"lr": 0.01, "lambda1": 5.0, "lambda2": 20.0, "edr_reduction": "sum_mean"}],
    "croft_noedr": [{"lr": 0.02, "lambda1": 1.0}],
    "croft_clean": [{"lr": 0.005, "lambda1": 1.0, "lambda2": 0.1}, {"lr": 0.005, "lambda1": 1.0, "lambda2": 20.0}],
}


@pytest.mark.parametrize("method", sorted(VARIANTS))
def test_stacked_training_equals_the_sequential_loop(method):
    cfgs = _configs(method, VARIANTS[method])
    assert len(group_configs(cfgs)) == 1  # one stacked group: only lr, lambda1, lambda2, reduction differ
    sequential, stacked = _both(cfgs)
    _assert_same(sequential, stacked)
    # every configuration trains differently, so one value shared across the stack cannot pass unseen
    last = [r.history[-1]["loss"] for r in sequential]
    assert min(abs(a - b) for i, a in enumerate(last) for b in last[i + 1:]) > 1e-3


def test_lambda2_alone_changes_the_result():
    """Two croft configurations that differ only in lambda2 end with different weights: the
    equality test above would see a lambda2 shared across the stack."""
    sequential, stacked = _both(_configs("croft", VARIANTS["croft"][:2])[-2:], validate=False)
    gap = (sequential[0].model.head.image_weight - sequential[1].model.head.image_weight).abs().max().item()
    assert gap > 1e-3
    _assert_same(sequential, stacked)


def test_other_shared_options_make_groups_and_still_match():
    """gen_steps, the batch size and the generator branch are not stacked: each value is its own
    group, trained stacked on its own, and every configuration still equals its sequential run."""
    base = dict(epochs=3, lambda2=5.0)
    cfgs = [method_config("croft", lr=0.01, gen_steps=2, **base, batch_size=8),
            method_config("croft", lr=0.005, gen_steps=2, **base, batch_size=8),
            method_config("croft", lr=0.01, **base, batch_size=16),
            method_config("croft", lr=0.01, **base, batch_size=8, cov_branch=False),
            method_config("croft", lr=0.01, **base, batch_size=8, use_generator=False),
            method_config("croft_clean", lr=0.01, **base, batch_size=8, use_generator=False)]
    assert group_configs(cfgs) == [[0, 1], [2], [3], [4], [5]]
    _assert_same(*_both(cfgs))


def test_methods_without_a_stacked_step_fall_back_to_the_loop():
    cfgs = [method_config("clip_adapter", epochs=2, batch_size=8, lr=lr) for lr in (0.01, 0.02)]
    cfgs.append(method_config("croft", epochs=2, batch_size=8, optimizer="adamw", lr=1e-3))
    assert not any(supports_vectorised(c) for c in cfgs)
    assert supports_vectorised(method_config("croft_clean"))
    sequential, mixed = _both(cfgs)
    for a, b in zip(sequential, mixed, strict=True):
        assert b.history == a.history
        for pa, pb in zip(a.model.parameters(), b.model.parameters()):
            assert torch.equal(pa, pb)
    train_set, _, text = _data()
    with pytest.raises(ValueError, match="2 models for 3 configurations"):
        train_many([r.model for r in sequential[:2]], cfgs, train_set, text)


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    from croft_core.data.synth.dataset import build_shapes_dataset

    root = tmp_path_factory.mktemp("shapes") / "world"
    build_shapes_dataset(root, n_per_class_domain=1, seed=0, size=16)
    return root


METHODS_STACKED = ("croft", "croft_clean", "coop", "cocoop", "locoop")


def test_bench_search_stacks_and_no_vectorise_gives_the_same_selection(tiny_backbone, tiny_world, tmp_path):
    from croft_core.runs.pipeline import run_bench

    chosen = {}
    for vectorise in (True, False):
        out = tmp_path / str(vectorise)
        run_bench(tiny_backbone, "shapes_dg", list(METHODS_STACKED), [1], out, shots=3,
                  config_for=lambda m, s: method_config(m, seed=s, epochs=2, batch_size=8),
                  views=1, cache_dir=tmp_path / "cache", progress=False, search=3,
                  benchmark_args={"heldout": "painting", "root": str(tiny_world)}, vectorise=vectorise)
        for method in METHODS_STACKED:
            run = json.loads((out / f"{method}_seed1.json").read_text())
            chosen[vectorise, method] = (run["search"]["tried"], run["search"]["chosen"], run["id"]["accuracy"])
            # the sequential loop keeps a resumable state per configuration; the stacked path has none
            assert (out / f"{method}_seed1" / "search" / "000").is_dir() == (not vectorise)
    for method in METHODS_STACKED:
        assert chosen[True, method] == chosen[False, method], (method, chosen[True, method], chosen[False, method])


def test_cli_no_vectorise_flag():
    from croft_core.cli import build_parser

    for command in (["bench", "--out", "x", "--search", "8"], ["train", "--out", "x", "--grid", "lr=0.1,0.2"]):
        assert build_parser().parse_args(command).vectorise is True
        assert build_parser().parse_args([*command, "--no-vectorise"]).vectorise is False


# ---- the prompt learners (croft_core.runs.stacked_prompts) ---------------------------------------

@pytest.fixture(scope="module")
def embedded():
    from croft_core.clip.backbones import load_backbone

    return load_backbone("embedded")


def _prompt_data(n_per_class: int = 3, classes: int = 10, positions: int = 4):
    """Random global and local features of the embedded width (128), 2 views, and a validation set."""
    from croft_core.clip.features import FeatureSet

    g = torch.Generator().manual_seed(0)
    n = n_per_class * classes
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    train_set = FeatureSet(torch.randn(2, n, 128, generator=g), labels, [str(i) for i in range(n)], "train",
                           local=torch.randn(2, n, positions, 128, generator=g).half())
    val_set = FeatureSet(torch.randn(1, n, 128, generator=g), labels, [f"v{i}" for i in range(n)], "val")
    return train_set, val_set, torch.zeros(classes, 128)


def _prompt_both(embedded, cfgs):
    from croft_core.data.synth.world import ID_CLASSES

    train_set, val_set, text = _prompt_data()

    def models():
        torch.manual_seed(0)  # CoCoOp's meta-nets start from random weights
        return [init_model(c, embed_dim=embedded.embed_dim, logit_scale=embedded.logit_scale,
                           classnames=ID_CLASSES, clip=embedded) for c in cfgs]

    sequential = [train(m, train_set, text, c, val_set=val_set, progress=False) for m, c in zip(models(), cfgs)]
    return sequential, train_many(models(), cfgs, train_set, text, val_set=val_set)


def _assert_same_prompts(sequential, stacked):
    for a, b in zip(sequential, stacked, strict=True):
        _assert_same_history(a, b)
        sa, sb = a.model.state_dict(), b.model.state_dict()
        assert list(sa) == list(sb)
        for name in sa:  # the selected (best-epoch) context and meta-net
            assert (sa[name] - sb[name]).abs().max().item() < 1e-5, name
        assert not b.model.training


# per method: hand-picked configurations that differ in every stacked option (lr, the context's
# initialisation, shared or class-specific contexts; LoCoOp's lambda and top-K), one group each
PROMPT_VARIANTS = {
    "coop": [{"lr": 0.02, "ctx_init": "a photo of a"}, {"lr": 0.005, "ctx_init": "a photo of a"},
             {"lr": 0.02, "ctx_init": ""}, {"lr": 0.02, "ctx_init": "a photo of a", "class_specific_ctx": True},
             {"lr": 0.01, "ctx_init": "", "class_specific_ctx": True}],
    "cocoop": [{"lr": 0.02, "ctx_init": "a photo of a"}, {"lr": 0.005, "ctx_init": "a photo of a"},
               {"lr": 0.02, "ctx_init": ""}],
    "locoop": [{"lr": 0.02, "locoop_lambda": 0.25, "locoop_top_k": 2},
               {"lr": 0.02, "locoop_lambda": 1.0, "locoop_top_k": 2},
               {"lr": 0.02, "locoop_lambda": 1.0, "locoop_top_k": 5},
               {"lr": 0.005, "locoop_lambda": 0.5, "locoop_top_k": 200, "class_specific_ctx": True}],
}
PROMPT_SCHEDULE = {"coop": {"epochs": 3, "batch_size": 8}, "cocoop": {"epochs": 2, "batch_size": 4},
                   "locoop": {"epochs": 3, "batch_size": 8}}


@pytest.mark.parametrize("method", sorted(PROMPT_VARIANTS))
def test_stacked_prompt_learning_equals_the_sequential_loop(embedded, method, monkeypatch):
    from croft_core.runs import stacked_prompts

    monkeypatch.setattr(stacked_prompts, "EVAL_PROMPTS_PER_CALL", 100)  # CoCoOp validates 3 images a call
    cfgs = [method_config(method, **PROMPT_SCHEDULE[method], **c) for c in PROMPT_VARIANTS[method]]
    assert all(supports_vectorised(c) for c in cfgs) and len(group_configs(cfgs)) == 1
    sequential, stacked = _prompt_both(embedded, cfgs)
    _assert_same_prompts(sequential, stacked)
    # every configuration trains differently, so one value shared across the stack cannot pass unseen
    last = [r.history[-1]["loss"] for r in sequential]
    assert min(abs(a - b) for i, a in enumerate(last) for b in last[i + 1:]) > 1e-4


def test_prompt_groups_keep_apart_what_changes_the_data_or_the_shapes():
    base = dict(epochs=2, batch_size=8)
    cfgs = [method_config("coop", lr=0.01, **base), method_config("coop", lr=0.02, ctx_init="", **base),
            method_config("coop", lr=0.01, class_specific_ctx=True, **base),
            method_config("coop", lr=0.01, seed=2, **base),  # another data order
            method_config("coop", lr=0.01, epochs=3, batch_size=8),
            method_config("coop", lr=0.01, n_ctx=3, ctx_init="", **base),  # another context shape
            method_config("locoop", lr=0.01, **base), method_config("locoop", lr=0.01, locoop_top_k=2, **base),
            method_config("cocoop", lr=0.01, **base), method_config("cocoop", lr=0.01, batch_size=1, epochs=2)]
    assert group_configs(cfgs) == [[0, 1, 2], [3], [4], [5], [6, 7], [8], [9]]
    assert all(supports_vectorised(c) for c in cfgs)
    assert not supports_vectorised(method_config("coop", optimizer="adamw"))


def test_cocoop_starts_from_its_seed_alone(embedded):
    """CoCoOp's meta-net is drawn from the run's seed, not the process's random state: a search's
    configuration starts the same whether its models are built one by one between trainings or all
    at once for the stacked path (croft bench --search N with or without --no-vectorise)."""
    from croft_core.data.synth.world import ID_CLASSES

    def meta_net(seed: int, before: int) -> torch.Tensor:
        torch.manual_seed(before)  # whatever ran before in the process
        model = init_model(method_config("cocoop", seed=seed), embed_dim=embedded.embed_dim,
                           logit_scale=embedded.logit_scale, classnames=ID_CLASSES, clip=embedded)
        return torch.cat([p.detach().flatten() for p in model.head.meta_net.parameters()])

    assert torch.equal(meta_net(1, before=0), meta_net(1, before=5))
    assert not torch.equal(meta_net(1, before=0), meta_net(2, before=0))
