"""The linear probe: L-BFGS logistic regression, C selected on validation, exported as a head."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from croft_core.clip.features import FeatureSet
from croft_core.clip.features import l2n
from croft_core.heads.baselines import LinearProbeHead
from croft_core.heads.probe import fit_linear_probe
from helpers import clustered_features


def _rows(fs: FeatureSet) -> tuple[np.ndarray, np.ndarray]:
    x = l2n(fs.features).reshape(-1, fs.dim).numpy()
    return x, np.tile(fs.labels.numpy(), fs.views)


def test_probe_is_sklearns_logistic_regression_at_the_selected_c():
    train_set, _ = clustered_features(n_per_class=6, noise=2.0, seed=3)
    val_set, _ = clustered_features(n_per_class=6, noise=2.0, seed=3, views=1, name="val")
    head = LinearProbeHead(16, 4)
    history, selected = fit_linear_probe(head, train_set, val_set)

    best = max(history, key=lambda r: (r["val_accuracy"], -r["val_loss"]))
    assert selected == best  # validation accuracy decides, validation loss breaks ties
    assert [r["C"] for r in history] == sorted(r["C"] for r in history)
    reference = LogisticRegression(C=selected["C"], max_iter=1000).fit(*_rows(train_set))
    x_val = torch.as_tensor(_rows(val_set)[0])
    with torch.no_grad():
        probs = torch.softmax(head.linear(x_val), -1).numpy()
    np.testing.assert_allclose(probs, reference.predict_proba(x_val.numpy()), atol=1e-4)


def test_probe_beats_the_zero_shot_start_on_held_out_data():
    train_set, text = clustered_features(n_per_class=8, seed=0)
    val_set, _ = clustered_features(n_per_class=8, seed=0, views=1, name="val")
    text = text[[1, 0, 2, 3]]  # classes a and b swapped: the zero-shot start is 50% wrong
    head = LinearProbeHead(16, 4, logit_scale=20.0)
    head.init_from_text(text)
    start = (head(val_set.first_view(), text).argmax(-1) == val_set.labels).float().mean()
    _, selected = fit_linear_probe(head, train_set, val_set)
    after = (head(val_set.first_view(), text).argmax(-1) == val_set.labels).float().mean()
    assert start <= 0.6 and after >= 0.9 and selected["val_accuracy"] == pytest.approx(after.item())


def test_binary_probe_exports_the_same_probabilities():
    train_set, _ = clustered_features(n_per_class=10, k=2, seed=1, noise=2.0)
    head = LinearProbeHead(16, 2)
    fit_linear_probe(head, train_set, None)  # no validation: C = 1
    x, y = _rows(train_set)
    reference = LogisticRegression(C=1.0, max_iter=1000).fit(x, y)
    with torch.no_grad():
        probs = torch.softmax(head.linear(torch.as_tensor(x)), -1).numpy()
    np.testing.assert_allclose(probs, reference.predict_proba(x), atol=1e-4)


def test_probe_needs_every_class():
    train_set, _ = clustered_features(n_per_class=4, k=3)
    with pytest.raises(ValueError, match=r"every class; classes \[3\] have none"):
        fit_linear_probe(LinearProbeHead(16, 4), train_set, None)
