"""The evaluation protocol on hand-built feature sets with a known structure."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from croft_core.runs.evaluate import BenchmarkFeatures, calibrate, evaluate
from croft_core.clip.features import FeatureSet
from croft_core.heads.checkpoint import CroftModel, HeadConfig
from croft_core.runs.report import flatten, markdown_table, summarize

D, K = 8, 3


def _set(name, centres, labels, scale=1.0):
    feats = torch.stack([centres[y] * scale for y in labels])
    return FeatureSet(feats, torch.as_tensor(labels), [f"{name}{i}" for i in range(len(labels))], name)


@pytest.fixture()
def setup():
    eye = torch.eye(D)
    text = eye[:K]  # class k <-> axis k
    centres = eye
    id_test = _set("photo", centres, [0, 1, 2, 0, 1, 2])
    val = _set("val", centres, [0, 1, 2])
    # covariate: the right class but mixed with an unrelated axis -> lower energy, still correct
    cov = FeatureSet(torch.stack([eye[y] + 0.8 * eye[6] for y in [0, 1, 2]]), torch.tensor([0, 1, 2]),
                     ["c0", "c1", "c2"], "sketch")
    # semantic: axes no class uses -> low energy
    sem = FeatureSet(torch.stack([eye[4], eye[5], eye[7]]), torch.full((3,), -1), ["s0", "s1", "s2"], "unseen")
    train = _set("train", centres, [0, 1, 2])
    feats = BenchmarkFeatures(train=train, val=val, id_test=id_test, covariate=[cov], semantic=[sem])
    model = CroftModel(HeadConfig(head="zeroshot", logit_scale=10.0, embed_dim=D, num_classes=K))
    return model, text, feats


def test_perfect_separation(setup):
    model, text, feats = setup
    results, energies = evaluate(model, text, feats)
    assert results["id"] == {"name": "photo", "accuracy": 1.0, "n": 6}
    assert results["covariate"] == [{"name": "sketch", "accuracy": 1.0, "n": 3}]
    energy = results["semantic"][0]["scores"]["energy"]
    assert energy["auroc"] == 1.0 and energy["fpr95"] == 0.0
    assert results["semantic"][0]["scores"]["knn"]["auroc"] == 1.0
    assert results["full_spectrum"]["accuracy"] == 1.0
    assert results["full_spectrum"]["energy"]["auroc"] == 1.0
    assert results["threshold"]["fitted_on"] == "val"
    assert results["threshold"]["id_accept_rate"] == 1.0 and results["threshold"]["semantic_accept_rate"] == [0.0]
    assert set(energies) == {"ID: photo", "covariate: sketch", "semantic: unseen"}


def test_correct_only_reference(setup):
    model, text, feats = setup
    # make one ID image misclassified *and* low-energy: it hurts the standard AUROC only
    bad = feats.id_test.features.clone()
    eye = torch.eye(D)
    bad[0, 0] = eye[4] - 0.3 * eye[0] - 0.2 * eye[1] - 0.3 * eye[2]  # label 0, predicted 1
    feats.id_test = FeatureSet(bad, feats.id_test.labels, feats.id_test.ids, "photo")
    standard, _ = evaluate(model, text, feats)
    official, _ = evaluate(model, text, feats, correct_only=True)
    assert standard["semantic"][0]["scores"]["energy"]["auroc"] < 1.0
    assert official["semantic"][0]["scores"]["energy"]["auroc"] == 1.0


def test_deployment_threshold_is_fitted_on_validation_and_says_so(setup):
    """Validation energies differ from the ID test's: the threshold is the validation quantile and
    ``fitted_on`` names the split it was fitted on."""
    from croft_core.ood.metrics import threshold_at_tpr
    from croft_core.runs.evaluate import compute_scores

    model, text, feats = setup
    eye = torch.eye(D)
    val = FeatureSet(torch.stack([eye[y] + w * eye[6] for y, w in zip([0, 1, 2, 0], [0.2, 0.5, 0.9, 1.4])]),
                     torch.tensor([0, 1, 2, 0]), ["v0", "v1", "v2", "v3"], "source val")
    feats.val = val
    results, _ = evaluate(model, text, feats)
    val_energy = compute_scores(model, val.first_view(), text)[1]["energy"]
    id_energy = compute_scores(model, feats.id_test.first_view(), text)[1]["energy"]
    assert threshold_at_tpr(val_energy, 0.95) != pytest.approx(threshold_at_tpr(id_energy, 0.95))
    thr = results["threshold"]
    assert thr["value"] == pytest.approx(threshold_at_tpr(val_energy, 0.95))
    assert thr["fitted_on"] == "val" and thr["fitted_on_split"] == "source val" and thr["n"] == 4
    assert thr["id_accept_rate"] == 1.0  # the ID test energies all sit above the validation quantile


def test_calibrate_stores_threshold(setup):
    model, text, feats = setup
    calibrate(model, text, feats.val, tpr=0.95)
    expected = np.log(np.exp(10.0) + 2.0)  # logsumexp of [10, 0, 0]
    assert model.config.threshold == pytest.approx(expected, rel=1e-5)
    assert len(model.config.id_scores) == 3


def test_summary_mean_and_std():
    runs = [{"method": "m", "seed": s, "benchmark": "b", "backbone": "x", "shots": 1,
             "id": {"name": "p", "accuracy": a, "n": 1}, "covariate": [{"name": "c", "accuracy": a / 2, "n": 1}]}
            for s, a in ((1, 0.5), (2, 0.7))]
    summary = summarize(runs)
    stats = summary["methods"]["m"]
    assert stats["id.accuracy"]["mean"] == pytest.approx(0.6)
    assert stats["id.accuracy"]["std"] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert stats["covariate/c.accuracy"]["mean"] == pytest.approx(0.3)
    assert "60.0 ± 14.1" in markdown_table(summary)
    assert "seed" not in flatten(runs[0])


def test_report_pools_many_semantic_sets():
    from croft_core.runs.report import _pool_semantic

    groups = {"ID: photo": [1.0, 2.0], **{f"semantic: s{i}": [float(i)] for i in range(5)}}
    pooled = _pool_semantic(groups)
    assert set(pooled) == {"ID: photo", "semantic: all 5 sets"}
    assert sorted(pooled["semantic: all 5 sets"]) == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert set(_pool_semantic({"ID": [1.0], "semantic: a": [0.0]})) == {"ID", "semantic: a"}


def test_other_tpr_keeps_fixed_metric_keys(setup):
    """``tpr`` sets the deployment threshold only; ``fpr95`` always means FPR at 95% TPR."""
    from croft_core.runs.evaluate import headline_metrics
    from croft_core.ood.metrics import METRIC_KEYS

    model, text, feats = setup
    results, _ = evaluate(model, text, feats, tpr=0.9)
    assert results["threshold"]["tpr"] == 0.9
    for block in (results["semantic"][0]["scores"], results["semantic_all"], results["full_spectrum"]):
        for name, m in block.items():
            if name != "accuracy":
                assert tuple(m) == METRIC_KEYS, name
    assert headline_metrics(results)["energy_fpr95"] == 0.0


def _tip_adapter(text, feats):
    from croft_core.clip.features import l2n

    model = CroftModel(HeadConfig(head="tip_adapter", logit_scale=10.0, embed_dim=D, num_classes=K,
                                  cache_size=3, tip_alpha=5.0))
    model.head.init_cache(feats.train.first_view(), feats.train.labels)
    return model, l2n


def test_mcm_uses_cosines_to_the_class_texts_for_every_head(setup):
    """Tip-Adapter's logits carry the cache term: MCM must not treat them as scaled cosines."""
    from croft_core.runs.evaluate import compute_scores

    _, text, feats = setup
    model, l2n = _tip_adapter(text, feats)
    x = feats.covariate[0].first_view()
    logits, scores = compute_scores(model, x, text, mcm_temperature=0.5)
    cos = l2n(x) @ l2n(text).T  # [N, K]: Tip-Adapter embeds images and texts as zero-shot CLIP
    expected = torch.softmax(cos / 0.5, dim=-1).amax(-1).numpy()
    np.testing.assert_allclose(scores["mcm"], expected, rtol=1e-5)
    wrong = torch.softmax(logits / 10.0 / 0.5, dim=-1).amax(-1).numpy()  # the old logits / logit_scale
    assert not np.allclose(wrong, expected, rtol=1e-3)


def test_mcm_of_croft_uses_the_adapted_text(setup):
    from croft_core.runs.evaluate import compute_scores

    _, text, feats = setup
    model = CroftModel(HeadConfig(head="croft", logit_scale=10.0, embed_dim=D, num_classes=K))
    with torch.no_grad():
        model.head.text_weight.add_(0.3 * torch.randn(D, D, generator=torch.Generator().manual_seed(0)))
    x = feats.covariate[0].first_view()
    _, scores = compute_scores(model, x, text)
    cos = model.head.adapt_image(x) @ model.head.adapt_text(text).T
    np.testing.assert_allclose(scores["mcm"], torch.softmax(cos, -1).amax(-1).detach().numpy(), rtol=1e-5)


def _negatives(words_axes, d=D):
    """Hand-built NegLabel negatives: one negative word per unused axis."""
    from croft_core.ood.negatives import NegativeLabels

    raw = torch.eye(d)[list(words_axes)]
    return NegativeLabels(words=tuple(f"w{a}" for a in words_axes), embeddings=raw, id_embeddings=torch.eye(d)[:K],
                          groups=torch.arange(len(words_axes)).view(1, -1), removed=(), lexicon="test",
                          raw=raw, raw_id=torch.eye(d)[:K])


def test_neglabel_is_a_score_of_every_method(setup):
    model, text, feats = setup
    feats.negatives = _negatives([4, 5, 7])
    results, _ = evaluate(model, text, feats)
    assert results["semantic"][0]["scores"]["neglabel"]["auroc"] == 1.0
    assert set(results["semantic_all"]["neglabel"]) == {"auroc", "aupr_in", "aupr_out", "fpr95"}
    rule = results["neglabel"]  # the fixed-threshold decision, no calibration images
    assert rule["num_negatives"] == 3 and rule["removed"] == [] and rule["threshold"] == 0.01
    assert rule["id_accept_rate"] == 1.0 and rule["semantic_accept_rate"] == [0.0]
    tip, _ = _tip_adapter(text, feats)
    tip_results, _ = evaluate(tip, text, feats)
    assert tip_results["semantic"][0]["scores"]["neglabel"]["auroc"] == 1.0


def test_neglabel_uses_the_heads_text_map_on_the_negatives(setup):
    from croft_core.runs.evaluate import compute_scores
    from croft_core.ood.scores import neglabel

    _, text, feats = setup
    model = CroftModel(HeadConfig(head="croft", logit_scale=10.0, embed_dim=D, num_classes=K))
    with torch.no_grad():
        model.head.text_weight.add_(0.5 * torch.randn(D, D, generator=torch.Generator().manual_seed(1)))
    negs = _negatives([4, 5])
    x = feats.semantic[0].first_view()
    _, scores = compute_scores(model, x, text, negatives=negs)
    z = model.head.adapt_image(x)
    expected = neglabel(z @ model.head.adapt_text(text).T, z @ model.head.adapt_text(negs.raw).T, 0.01, negs.groups)
    np.testing.assert_allclose(scores["neglabel"], expected.detach().numpy(), rtol=1e-4, atol=1e-9)
    plain = neglabel(z @ model.head.adapt_text(text).T, z @ negs.raw.T, 0.01, negs.groups)
    assert not np.allclose(scores["neglabel"], plain.detach().numpy(), rtol=1e-3)


def test_report_table_shows_neglabel():
    run = {"method": "m", "seed": 1, "benchmark": "b", "backbone": "x", "shots": 1,
           "id": {"name": "p", "accuracy": 0.5, "n": 1}, "covariate": [],
           "semantic_all": {"neglabel": {"auroc": 0.875, "fpr95": 0.25, "aupr_in": 0.9, "aupr_out": 0.8}}}
    table = markdown_table(summarize([run]))
    assert "NegLabel AUROC | NegLabel FPR95" in table and "87.5 ± 0.0 | 25.0 ± 0.0" in table


def test_covariate_correct_is_the_paper_setup2_id_side(setup):
    """CRoFT Setup-II: the ID side of detection is the correctly classified held-out images.

    The covariate set gets a misclassified, high-energy image (it must be left out) and two
    correct ones whose energies sit below the semantic set's best; the ID test set is perfect, so
    the source-side AUROC is 1 while the paper's is not."""
    from croft_core.ood.metrics import auroc
    from croft_core.runs.evaluate import compute_scores

    model, text, feats = setup
    eye = torch.eye(D)
    cov = FeatureSet(torch.stack([eye[0] + 2.0 * eye[6], 3 * eye[1], eye[2] + 3.0 * eye[7]]),
                     torch.tensor([0, 2, 2]), ["c0", "c1", "c2"], "painting")  # c1: predicted 1, label 2
    sem = FeatureSet(torch.stack([eye[4], eye[0] + 1.0 * eye[5], eye[7]]), torch.full((3,), -1),
                     ["s0", "s1", "s2"], "unseen")
    feats.covariate, feats.semantic = [cov], [sem]
    source, _ = evaluate(model, text, feats)
    paper, paper_energies = evaluate(model, text, feats, detection_id="covariate_correct")
    e = {fs.name: compute_scores(model, fs.first_view(), text)[1]["energy"] for fs in (cov, sem)}
    expected = auroc(e["painting"][[0, 2]], e["unseen"])
    assert 0.0 < expected < 1.0
    np.testing.assert_allclose(paper_energies["ID side: correctly classified painting"], e["painting"][[0, 2]])
    assert paper["semantic_all"]["energy"]["auroc"] == pytest.approx(expected)
    assert source["semantic_all"]["energy"]["auroc"] == 1.0
    assert auroc(e["painting"], e["unseen"]) != pytest.approx(expected)  # the misclassified one counts
    assert paper["detection"] == {"id_side": "covariate_correct", "n": 2, "sets": ["painting"],
                                  "description": paper["detection"]["description"]}
    assert source["detection"]["id_side"] == "id_test" and source["detection"]["sets"] == ["photo"]
    # the full-spectrum view and the threshold do not depend on the detection side
    assert paper["full_spectrum"] == source["full_spectrum"] and paper["threshold"] == source["threshold"]
    with pytest.raises(ValueError, match="detection_id must be one of"):
        evaluate(model, text, feats, detection_id="painting")
    feats.covariate = []
    with pytest.raises(ValueError, match="needs a covariate set"):
        evaluate(model, text, feats, detection_id="covariate_correct")


def test_no_correct_image_gives_nan_detection_not_a_crash(setup):
    model, text, feats = setup
    eye = torch.eye(D)
    feats.covariate = [FeatureSet(torch.stack([eye[1], eye[2]]), torch.tensor([0, 0]), ["c0", "c1"], "painting")]
    results, _ = evaluate(model, text, feats, detection_id="covariate_correct")
    assert results["detection"]["n"] == 0 and np.isnan(results["semantic_all"]["energy"]["auroc"])
