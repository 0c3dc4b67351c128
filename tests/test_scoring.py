"""Scores on hand-built tensors with known answers."""

from __future__ import annotations

import math

import pytest
import torch

from croft_core.ood import scores as scoring
from croft_core.ood.scores import SCORES, ScoreInputs, energy, knn_score, max_logit, mcm, msp, neglabel, score_all


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


def test_mcm_is_defined_on_cosines():
    cos = torch.tensor([[0.3, 0.1, -0.2]])
    expected = torch.softmax(cos / 0.5, dim=-1).max()
    torch.testing.assert_close(mcm(cos, temperature=0.5)[0], expected)
    assert mcm(100.0 * cos, temperature=0.5)[0] > 0.99  # logits are not cosines: a much sharper softmax


def test_msp_and_max_logit():
    logits = torch.tensor([[0.0, math.log(3.0)], [5.0, -1.0]])
    torch.testing.assert_close(msp(logits)[0], torch.tensor(0.75))
    torch.testing.assert_close(max_logit(logits), torch.tensor([math.log(3.0), 5.0]))


def _inputs(cos, **kw):
    return ScoreInputs(logits=10.0 * cos, cosines=cos, **kw)


def test_scores_are_higher_for_confident_samples():
    confident, flat = torch.tensor([[0.9, 0.0, 0.0]]), torch.tensor([[0.1, 0.1, 0.1]])
    bank = torch.eye(3)
    neg = torch.tensor([[0.3, 0.2]])
    high = score_all(_inputs(confident, embedded=confident, bank=bank, negative_cosines=neg,
                             local_cosines=confident[:, None]))
    low = score_all(_inputs(flat, embedded=flat, bank=bank, negative_cosines=neg, local_cosines=flat[:, None]))
    assert list(high) == list(SCORES) == ["energy", "mcm", "msp", "max_logit", "knn", "neglabel", "glmcm"]
    for name in SCORES:
        assert high[name] > low[name], name


def test_score_all_skips_scores_without_inputs_and_rejects_unknown():
    cos = torch.tensor([[0.5, 0.1]])
    assert list(score_all(_inputs(cos))) == ["energy", "mcm", "msp", "max_logit"]
    torch.testing.assert_close(score_all(_inputs(cos), names=("energy",))["energy"], energy(10.0 * cos))
    torch.testing.assert_close(score_all(_inputs(cos, mcm_temperature=0.5))["mcm"], mcm(cos, 0.5))
    with pytest.raises(ValueError, match=r"unknown score\(s\) \['bogus'\]"):
        score_all(_inputs(cos), names=("bogus",))


def test_neglabel_known_values_and_groups():
    cos, neg = torch.tensor([[0.02, 0.0]]), torch.tensor([[0.01, 0.0, 0.03, 0.0]])
    t = 0.01
    pos = math.exp(2) + 1
    expected = pos / (pos + math.exp(1) + 1 + math.exp(3) + 1)
    assert neglabel(cos, neg, t).item() == pytest.approx(expected, rel=1e-6)
    groups = torch.tensor([[0, 1], [2, 3]])
    per_group = [pos / (pos + math.exp(1) + 1), pos / (pos + math.exp(3) + 1)]
    assert neglabel(cos, neg, t, groups).item() == pytest.approx(sum(per_group) / 2, rel=1e-6)
    # one class is enough: the negatives are the alternative
    assert 0 < neglabel(cos[:, :1], neg, t).item() < 1
    # far from every negative -> close to 1; close to a negative -> close to 0
    assert neglabel(torch.tensor([[0.9]]), torch.tensor([[0.1]])).item() > 0.999
    assert neglabel(torch.tensor([[0.1]]), torch.tensor([[0.9]])).item() < 0.001
    with pytest.raises(ValueError, match=r"negative_cosines must be \[N, M\]"):
        neglabel(cos, torch.zeros(2, 3))


@pytest.mark.parametrize("fn", [energy, mcm, msp, max_logit])
def test_logit_validation(fn):
    with pytest.raises(ValueError, match="at least two classes"):
        fn(torch.zeros(3, 1))
    with pytest.raises(ValueError, match="2-D"):
        fn(torch.zeros(3))
    with pytest.raises(ValueError, match="NaN"):
        fn(torch.tensor([[0.0, float("nan")]]))


def test_bad_temperature():
    with pytest.raises(ValueError, match="temperature must be > 0"):
        energy(torch.zeros(1, 2), temperature=0.0)
    with pytest.raises(ValueError, match="temperature must be > 0"):
        mcm(torch.zeros(1, 2), temperature=-1.0)


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
