"""CoOp, CoCoOp, LoCoOp, GL-MCM and WiSE (issue 20), on the embedded model (no images needed) and,
in the slow tests, on the rendered `shapes` benchmark."""

from __future__ import annotations

import json
from dataclasses import fields

import pytest
import torch

from croft_core.clip.backbones import build_text_classifier, encode_image_with_local, load_backbone
from croft_core.clip.features import FeatureSet, l2n
from croft_core.data.synth.world import ID_CLASSES
from croft_core.heads.baselines import ZeroShotHead
from croft_core.heads.checkpoint import CroftModel
from croft_core.heads.wise import wise, zeroshot_state
from croft_core.objectives.steps import locoop_entropy, locoop_ood_regions
from croft_core.ood import scores
from croft_core.runs.evaluate import compute_scores, zeroshot_model
from croft_core.runs.train import METHODS, SEARCH_SPACES, TrainConfig, init_model, method_config, train


@pytest.fixture(scope="module")
def embedded():
    return load_backbone("embedded")


@pytest.fixture(scope="module")
def template_text(embedded):
    return build_text_classifier(embedded, ID_CLASSES, ["a photo of a {}."], cache_dir=None)


def _model(backbone, method: str, **overrides) -> CroftModel:
    cfg = method_config(method, **overrides)
    return init_model(cfg, embed_dim=backbone.embed_dim, logit_scale=backbone.logit_scale,
                      classnames=ID_CLASSES, backbone=backbone.spec, clip=backbone)


def _features(n: int = 6, seed: int = 0, dim: int = 128) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))


# ---- CoOp -------------------------------------------------------------------------------------

@pytest.mark.parametrize("class_specific", [False, True])
def test_coop_from_a_photo_of_a_is_the_zeroshot_template(embedded, template_text, class_specific):
    model = _model(embedded, "coop", class_specific_ctx=class_specific)
    f = _features()
    with torch.no_grad():
        got, want = model(f, template_text), ZeroShotHead(embedded.logit_scale)(f, template_text)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_coop_context_is_what_the_prompt_reads(embedded, template_text):
    model = _model(embedded, "coop")
    f = _features()
    before = model(f, template_text).detach()
    with torch.no_grad():
        model.head.ctx.add_(0.5 * torch.randn_like(model.head.ctx))
    assert (model(f, template_text) - before).abs().max() > 1e-2
    loss = model(f, template_text).logsumexp(-1).sum()
    loss.backward()
    assert model.head.ctx.grad.abs().sum() > 0  # the frozen text tower passes gradients to the context
    assert all(p.grad is None for p in embedded.model.parameters())


def test_coop_checkpoint_holds_only_the_prompts(embedded, template_text, tmp_path):
    model = _model(embedded, "coop")
    with torch.no_grad():
        model.head.ctx.add_(0.1)
    model.save(tmp_path)
    loaded = CroftModel.from_pretrained(str(tmp_path))
    assert set(loaded.state_dict()) == {"head.ctx", "head.ctx_zeroshot"}  # token ids: from the class names
    with pytest.raises(RuntimeError, match="attach its backbone"):
        loaded(_features(), template_text)
    loaded.attach_backbone(embedded)
    torch.testing.assert_close(loaded(_features(), template_text), model(_features(), template_text))


def test_coop_context_that_does_not_fit_says_how_many_fit(embedded):
    with pytest.raises(ValueError, match="n_ctx <="):
        _model(embedded, "coop", n_ctx=16, ctx_init="")


def test_coop_rejects_another_vocabulary(embedded, template_text):
    with pytest.raises(ValueError, match="10 classes"):
        _model(embedded, "coop")(_features(), template_text[:3])


# ---- CoCoOp -----------------------------------------------------------------------------------

def test_cocoop_with_a_zero_meta_net_is_coop(embedded, template_text):
    coop, cocoop = _model(embedded, "coop"), _model(embedded, "cocoop")
    with torch.no_grad():
        ctx = 0.05 * torch.randn(coop.head.ctx.shape, generator=torch.Generator().manual_seed(3))
        coop.head.ctx.copy_(ctx)
        cocoop.head.ctx.copy_(ctx)
        for p in cocoop.head.meta_net[2].parameters():
            p.zero_()
        torch.testing.assert_close(cocoop(_features(), template_text), coop(_features(), template_text),
                                   atol=1e-5, rtol=0)


def test_cocoop_conditions_each_image_on_its_meta_net_shift(embedded, template_text):
    coop, cocoop = _model(embedded, "coop"), _model(embedded, "cocoop")
    f = _features(3)
    with torch.no_grad():
        shift = cocoop.head.meta_net(l2n(f))  # [3, w], non-zero (random init)
        assert shift.abs().max() > 1e-3
        got = cocoop(f, template_text)
        for i in range(3):  # image i = CoOp with context ctx + pi(x_i)
            coop.head.ctx.copy_(cocoop.head.ctx + shift[i])
            torch.testing.assert_close(got[i], coop(f[i:i + 1], template_text)[0], atol=1e-4, rtol=0)
        assert (got - coop(f, template_text)).abs().max() > 1e-3


# ---- LoCoOp -----------------------------------------------------------------------------------

def test_locoop_regions_exclude_the_label():
    # 1 image, 3 regions, 4 classes; label 0; top-2 of each region
    local = torch.tensor([[[5.0, 4.0, 0.0, 0.0],    # top-2 {0, 1}: holds the label -> ID
                           [0.0, 1.0, 5.0, 4.0],    # top-2 {2, 3} -> OOD
                           [3.0, 0.0, 4.0, 0.0]]])  # top-2 {2, 0} -> ID
    y = torch.tensor([0])
    assert locoop_ood_regions(local, y, top_k=2).tolist() == [[False, True, False]]
    # K = 200 is capped at K - 1 = 3: only a region ranking the label last is OOD
    assert locoop_ood_regions(local, y, top_k=200).tolist() == [[False, True, False]]
    local[0, 2] = torch.tensor([0.0, 1.0, 2.0, 3.0])
    assert locoop_ood_regions(local, y, top_k=200).tolist() == [[False, True, True]]


def test_locoop_entropy_is_the_mean_over_selected_regions():
    logits = torch.tensor([[[0.0, 0.0], [10.0, -10.0]]])  # uniform (entropy log 2) and peaked (~0)
    both = locoop_entropy(logits, torch.tensor([[True, True]]))
    assert both.item() == pytest.approx(0.5 * torch.log(torch.tensor(2.0)).item(), abs=1e-6)
    assert locoop_entropy(logits, torch.tensor([[False, False]])).item() == 0.0


def _local_train_set(n_per_class: int = 4, classes: int = 10, positions: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    n = n_per_class * classes
    f = torch.randn(2, n, 128, generator=g)
    local = torch.randn(2, n, positions, 128, generator=g).half()
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    return FeatureSet(f, labels, [str(i) for i in range(n)], "train", local=local)


def _train_ctx(embedded, text, method: str, **overrides) -> torch.Tensor:
    model = _model(embedded, method, epochs=2, batch_size=8, lr=0.05, **overrides)
    train(model, _local_train_set(), text, model_cfg(model), progress=False)
    return model.head.ctx.detach().clone()


def model_cfg(model: CroftModel) -> TrainConfig:
    return TrainConfig(**model.config.training)


def test_locoop_without_its_regulariser_is_coop(embedded, template_text):
    coop = _train_ctx(embedded, template_text, "coop")
    locoop_off = _train_ctx(embedded, template_text, "locoop", locoop_lambda=0.0)
    locoop_on = _train_ctx(embedded, template_text, "locoop")
    torch.testing.assert_close(locoop_off, coop, atol=1e-6, rtol=0)
    assert (locoop_on - coop).abs().max() > 1e-4  # the entropy term moves the context


def test_locoop_needs_local_features(embedded, template_text):
    model = _model(embedded, "locoop")
    plain = FeatureSet(torch.randn(1, 10, 128), torch.arange(10), [str(i) for i in range(10)])
    with pytest.raises(ValueError, match="local"):
        train(model, plain, template_text, model_cfg(model), progress=False)


# ---- GL-MCM -----------------------------------------------------------------------------------

def test_glmcm_known_values():
    cos = torch.tensor([[1.0, 0.0]])
    local = torch.tensor([[[0.0, 0.0], [0.0, 2.0]]])  # local MCMs 0.5 and e^2 / (1 + e^2)
    e = torch.e
    want = e / (e + 1) + e ** 2 / (1 + e ** 2)
    assert scores.glmcm(cos, local).item() == pytest.approx(want, abs=1e-6)
    assert scores.glmcm(cos, local, temperature=2.0).item() == pytest.approx(
        e ** 0.5 / (e ** 0.5 + 1) + e / (1 + e), abs=1e-6)


def test_glmcm_is_mcm_when_local_features_equal_the_global_one(embedded, template_text):
    f = _features(8)
    model = zeroshot_model(embedded, classnames=ID_CLASSES)
    _, sc = compute_scores(model, f, template_text, local=f[:, None].expand(-1, 4, -1))
    assert set(sc) >= {"glmcm", "mcm", "energy"}
    torch.testing.assert_close(torch.as_tensor(sc["glmcm"]), 2 * torch.as_tensor(sc["mcm"]))
    _, without = compute_scores(model, f, template_text)
    assert "glmcm" not in without
    with pytest.raises(ValueError, match=r"\[N, P, K\]"):
        scores.glmcm(torch.zeros(2, 3), torch.zeros(2, 3))


def test_local_features_of_the_resnet_and_vit_towers(embedded, tiny_backbone):
    for backbone, positions in ((embedded, 4), (tiny_backbone, 4)):
        pixels = torch.randn(2, 3, backbone.image_size, backbone.image_size)
        with torch.no_grad():
            pooled, local = encode_image_with_local(backbone.model, pixels)
            assert torch.equal(pooled, backbone.model.encode_image(pixels))
        assert local.shape == (2, positions, backbone.embed_dim)


def test_feature_set_keeps_local_features_in_half_precision(tmp_path):
    fs = FeatureSet(torch.randn(1, 3, 8), torch.arange(3), ["a", "b", "c"], "x", local=torch.randn(1, 3, 4, 8))
    loaded = FeatureSet.load(fs.save(tmp_path / "f.safetensors"))
    assert loaded.local.dtype == torch.float16 and loaded.local_bytes == 3 * 4 * 8 * 2
    torch.testing.assert_close(loaded.first_view_local(), fs.local[0].half().float())
    with pytest.raises(ValueError, match="local features"):
        FeatureSet(torch.randn(1, 3, 8), torch.arange(3), ["a", "b", "c"], local=torch.randn(1, 2, 4, 8))


# ---- WiSE -------------------------------------------------------------------------------------

def _trained_like(model: CroftModel, seed: int = 0) -> CroftModel:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))
    return model


@pytest.mark.parametrize("method", ["croft", "clip_adapter", "coop", "cocoop"])
def test_wise_endpoints_are_exact(embedded, template_text, method):
    model = _trained_like(_model(embedded, method))
    f = _features()
    one, zero, half = wise(model, 1.0), wise(model, 0.0), wise(model, 0.5)
    quarter = wise(model, 0.25).state_dict()
    for key, value in model.state_dict().items():
        zs = zeroshot_state(model)[key]
        assert torch.equal(one.state_dict()[key], value)
        assert torch.equal(zero.state_dict()[key], zs)
        if value.is_floating_point():
            torch.testing.assert_close(quarter[key], 0.75 * zs + 0.25 * value)
    with torch.no_grad():
        assert torch.equal(one(f, template_text), model(f, template_text))
        zs = ZeroShotHead(embedded.logit_scale)(f, template_text)
        torch.testing.assert_close(zero(f, template_text), zs, atol=1e-4, rtol=0)
        assert (half(f, template_text) - model(f, template_text)).abs().max() > 1e-4
        assert (half(f, template_text) - zs).abs().max() > 1e-4


def test_wise_refuses_heads_without_a_zeroshot_point(embedded):
    with pytest.raises(ValueError, match="zero-shot"):
        wise(_model(embedded, "coop", ctx_init="", n_ctx=4), 0.5)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        wise(_model(embedded, "croft"), 1.5)


# ---- the search spaces ------------------------------------------------------------------------

def test_every_method_declares_a_search_space_starting_at_its_default():
    assert set(SEARCH_SPACES) == set(METHODS) - {"zeroshot"}
    names = {f.name for f in fields(TrainConfig)}
    for method, space in SEARCH_SPACES.items():
        assert set(space) <= names, method
        default = method_config(method)  # the paper's defaults lie inside the searched space
        for key, values in space.items():
            value = getattr(default, key)  # None: the method's own choice (the probe sweeps C itself)
            assert values and (value is None or value in values), (method, key)


# ---- on shapes --------------------------------------------------------------------------------

@pytest.mark.slow
def test_coop_beats_zeroshot_on_shapes_validation(embedded):
    from croft_core.data.benchmarks import get_benchmark
    from croft_core.runs.evaluate import benchmark_text_features
    from croft_core.runs.torchrun import prepare_features

    bench = get_benchmark("shapes", seed=1)
    feats = prepare_features(embedded, bench, shots=16, seed=1, views=2, negatives=False)
    text = benchmark_text_features(embedded, bench)
    model = _model(embedded, "coop", epochs=10, lr=0.01)
    zs = zeroshot_model(embedded, bench)
    val_f, val_y = feats.val.first_view(), feats.val.labels

    def ce(m):
        with torch.no_grad():
            return torch.nn.functional.cross_entropy(m(val_f, text), val_y).item()

    def acc(m):
        with torch.no_grad():
            return (m(val_f, text).argmax(-1) == val_y).float().mean().item()

    assert ce(model) == pytest.approx(ce(zs), abs=1e-4)  # the untrained prompt is the template
    train(model, feats.train, text, model_cfg(model), progress=False)  # the last epoch, no selection
    assert acc(model) >= acc(zs)  # zero-shot is ~97% on photos: the validation loss shows the gain
    assert ce(model) < 0.95 * ce(zs)  # (0.135 -> 0.117 on the issue-19 embedded model)


@pytest.mark.slow
def test_bench_runs_the_prompt_methods_with_glmcm_and_wise(tmp_path):
    from croft_core.cli import main

    out = tmp_path / "bench"
    assert main(["bench", "--backbone", "embedded", "--benchmark", "shapes", "--quick", "--seeds", "1",
                 "--methods", "coop,locoop", "--epochs", "2", "--wise", "0,1", "--out", str(out),
                 "--quiet"]) == 0
    for method in ("coop", "locoop"):
        results = json.loads((out / f"{method}_seed1.json").read_text())
        assert "glmcm" in results["semantic_all"]  # LoCoOp turns local features on for the bench
        assert results["local_features"]["bytes"] > 0
        assert [w["alpha"] for w in results["wise"]] == [0.0, 1.0]
        assert results["wise"][1]["id_accuracy"] == results["id"]["accuracy"]
    assert "WiSE" in (out / "report.html").read_text()


def test_cocoop_inference_in_chunks_equals_one_call(embedded, template_text, monkeypatch):
    from croft_core.heads import prompts

    model = _model(embedded, "cocoop")
    f = _features(7)
    with torch.no_grad():
        whole = model.head.cosines(f, f[:, None])
        monkeypatch.setattr(prompts, "EVAL_PROMPTS_PER_CALL", 25)  # 2 images (20 prompts) per call
        chunked = model.head.cosines(f, f[:, None])
    for a, b in zip(whole, chunked):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


def test_a_coop_checkpoint_passes_the_app_vetting_and_classifies(embedded, template_text, tmp_path):
    from croft_app.service.vetting import load_vetted, vet_checkpoint

    model = _trained_like(_model(embedded, "coop"))
    model.save(tmp_path)
    config = vet_checkpoint(tmp_path, embed_dim=embedded.embed_dim, max_classes=100)
    loaded = load_vetted(tmp_path, config).attach_backbone(embedded)
    with torch.no_grad():
        torch.testing.assert_close(loaded(_features(), template_text), model(_features(), template_text))


def test_report_shows_the_wise_curve():
    from croft_core.runs.report import summarize, wise_rows

    def run(seed, acc):
        return {"method": "coop", "seed": seed, "id": {"name": "photo", "accuracy": acc},
                "wise": [{"name": f"alpha={a:g}", "alpha": a, "id_accuracy": acc * a,
                          "covariate_accuracy": {"sketch": 0.5, "painting": 0.3}, "auroc": {"energy": 0.9}}
                         for a in (0.0, 0.5, 1.0)]}

    rows = wise_rows(summarize([run(1, 0.8), run(2, 0.6)]))
    assert [(m, a) for m, a, _ in rows] == [("coop", 0.0), ("coop", 0.5), ("coop", 1.0)]
    assert rows[1][2]["ID acc"]["mean"] == pytest.approx(0.35)
    assert rows[2][2]["covariate acc"]["mean"] == pytest.approx(0.4)
    assert rows[2][2]["energy AUROC"]["mean"] == pytest.approx(0.9)
