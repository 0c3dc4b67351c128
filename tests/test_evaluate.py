"""The evaluation protocol on hand-built feature sets with a known structure."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from croft_core.evaluate import BenchmarkFeatures, calibrate, evaluate
from croft_core.features import FeatureSet
from croft_core.model import CroftModel, HeadConfig
from croft_core.report import flatten, markdown_table, summarize

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
    from croft_core.report import _pool_semantic

    groups = {"ID: photo": [1.0, 2.0], **{f"semantic: s{i}": [float(i)] for i in range(5)}}
    pooled = _pool_semantic(groups)
    assert set(pooled) == {"ID: photo", "semantic: all 5 sets"}
    assert sorted(pooled["semantic: all 5 sets"]) == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert set(_pool_semantic({"ID": [1.0], "semantic: a": [0.0]})) == {"ID", "semantic: a"}
