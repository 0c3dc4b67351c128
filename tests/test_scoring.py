"""Scores on hand-built tensors with known answers."""

from __future__ import annotations

import math

import pytest
import torch

from croft_core import scoring
from croft_core.scoring import SCORES, energy, knn_score, max_logit, mcm, msp, score_logits


def test_energy_known_values():
    logits = torch.tensor([[0.0, 0.0], [1.0, 1.0], [100.0, 0.0]])
    out = energy(logits)
    assert out.shape == (3,)
    torch.testing.assert_close(out, torch.tensor([math.log(2), 1 + math.log(2), 100.0 + math.log1p(math.exp(-100))]))


def test_energy_temperature():
    logits = torch.tensor([[2.0, 4.0]])
    expected = 2.0 * math.log(math.exp(1.0) + math.exp(2.0))
    assert energy(logits, temperature=2.0).item() == pytest.approx(expected, rel=1e-6)


def test_energy_is_logsumexp_of_scaled_cosines():
    torch.manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(5, 8), dim=-1)
    txt = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1)
    logits = 100.0 * img @ txt.T
    torch.testing.assert_close(energy(logits), torch.logsumexp(logits, dim=-1))


def test_mcm_equal_logits_is_one_over_k():
    logits = torch.full((2, 4), 3.0)
    torch.testing.assert_close(mcm(logits), torch.full((2,), 0.25))


def test_mcm_divides_by_logit_scale():
    cos = torch.tensor([[0.3, 0.1, -0.2]])
    expected = torch.softmax(cos / 0.5, dim=-1).max()
    torch.testing.assert_close(mcm(100.0 * cos, temperature=0.5, logit_scale=100.0)[0], expected)
    torch.testing.assert_close(mcm(100.0 * cos, temperature=0.5, logit_scale=torch.tensor(100.0))[0], expected)
    # without logit_scale the logits are taken as cosines: a much sharper softmax
    assert mcm(100.0 * cos, temperature=0.5)[0] > 0.99


def test_msp_and_max_logit():
    logits = torch.tensor([[0.0, math.log(3.0)], [5.0, -1.0]])
    torch.testing.assert_close(msp(logits)[0], torch.tensor(0.75))
    torch.testing.assert_close(max_logit(logits), torch.tensor([math.log(3.0), 5.0]))


def test_scores_are_higher_for_confident_samples():
    confident = torch.tensor([[10.0, 0.0, 0.0]])
    flat = torch.tensor([[1.0, 1.0, 1.0]])
    for name in SCORES:
        assert score_logits(name, confident) > score_logits(name, flat), name


def test_score_logits_passes_kwargs_and_rejects_unknown():
    logits = torch.tensor([[1.0, 2.0]])
    torch.testing.assert_close(score_logits("energy", logits, temperature=2.0), energy(logits, temperature=2.0))
    with pytest.raises(ValueError, match="unknown score 'bogus'.*energy, max_logit, mcm, msp"):
        score_logits("bogus", logits)


@pytest.mark.parametrize("fn", [energy, mcm, msp, max_logit])
def test_logit_validation(fn):
    with pytest.raises(ValueError, match="at least two classes"):
        fn(torch.zeros(3, 1))
    with pytest.raises(ValueError, match="2-D"):
        fn(torch.zeros(3))
    with pytest.raises(ValueError, match="NaN"):
        fn(torch.tensor([[0.0, float("nan")]]))


def test_bad_temperature_and_logit_scale():
    with pytest.raises(ValueError, match="temperature must be > 0"):
        energy(torch.zeros(1, 2), temperature=0.0)
    with pytest.raises(ValueError, match="logit_scale must be > 0"):
        mcm(torch.zeros(1, 2), logit_scale=0.0)


def test_knn_query_in_bank_scores_zero():
    torch.manual_seed(0)
    bank = torch.randn(10, 6)
    assert torch.equal(knn_score(bank[:4], bank, k=1), torch.zeros(4))
    # scale does not matter: both sides are normalised (equal up to float rounding)
    torch.testing.assert_close(knn_score(bank[:4] * 3.0, bank, k=1), torch.zeros(4), atol=1e-6, rtol=0)
    assert (knn_score(bank[:4], bank, k=2) < 0).all()


def test_knn_known_distances():
    bank = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    query = torch.tensor([[2.0, 0.0]])
    assert knn_score(query, bank, k=1).item() == pytest.approx(0.0)
    assert knn_score(query, bank, k=2).item() == pytest.approx(-math.sqrt(2))
    assert knn_score(query, bank, k=3).item() == pytest.approx(-2.0)


def test_knn_matches_brute_force_across_chunks(monkeypatch):
    monkeypatch.setattr(scoring, "_KNN_CHUNK_ROWS", 7)
    torch.manual_seed(1)
    feats, bank = torch.randn(30, 5, dtype=torch.float64), torch.randn(12, 5, dtype=torch.float64)
    dist = torch.cdist(torch.nn.functional.normalize(feats, dim=-1), torch.nn.functional.normalize(bank, dim=-1))
    expected = -dist.sort(dim=-1).values[:, 2]
    torch.testing.assert_close(knn_score(feats, bank, k=3), expected)


def test_knn_errors():
    bank = torch.randn(4, 3)
    with pytest.raises(ValueError, match=r"k must be an integer in \[1, len\(bank\)\] = \[1, 4\], got 0"):
        knn_score(bank, bank, k=0)
    with pytest.raises(ValueError, match="got 5"):
        knn_score(bank, bank, k=5)
    with pytest.raises(ValueError, match="same width"):
        knn_score(torch.randn(2, 5), bank)
    with pytest.raises(ValueError, match="NaN"):
        knn_score(torch.tensor([[float("nan"), 0.0, 0.0]]), bank)
