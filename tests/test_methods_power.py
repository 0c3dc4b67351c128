"""Tests with power: every method's central line against a constructed case with a known answer.

Each test here was checked by breaking the line it guards (see ``bench/mutants.py``, which applies
every such break to a copy of the tree and runs the tests that must catch it).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from croft_core.clip.features import FeatureSet, l2n
from croft_core.heads.baselines import ClipAdapterHead, LinearProbeHead, TipAdapterHead, ZeroShotHead
from croft_core.heads.checkpoint import CroftHead
from croft_core.runs.train import init_model, method_config

D, K = 6, 3
EYE = torch.eye(D)


# ---- zero-shot ------------------------------------------------------------------------------------

def test_zeroshot_is_scaled_cosine():
    f = torch.tensor([[3.0, 4.0, 0, 0, 0, 0]])  # norm 5
    t = 2 * EYE[:2]  # norm 2
    out = ZeroShotHead(logit_scale=10.0)(f, t)
    torch.testing.assert_close(out, torch.tensor([[6.0, 8.0]]))


# ---- Tip-Adapter ----------------------------------------------------------------------------------

def _tip(alpha=2.0, beta=1.5, logit_scale=10.0):
    head = TipAdapterHead(D, K, cache_size=3, logit_scale=logit_scale, alpha=alpha, beta=beta)
    head.init_cache(3.0 * EYE[:3], torch.tensor([0, 1, 2]))  # raw keys of norm 3, one per class
    return head


def test_tip_adapter_cache_term_known_answer():
    """Query on key 1: affinities [0, 1, 0] -> cache logits alpha * [e^-beta, 1, e^-beta].

    Fails on: values from shifted labels, keys not normalised, exp(-beta(1 + a)), alpha dropped,
    query not normalised."""
    head = _tip()
    text = EYE[3:6]  # orthogonal to every query: the zero-shot term is 0
    out = head(2.0 * EYE[1:2], text)
    e = math.exp(-1.5)
    torch.testing.assert_close(out, torch.tensor([[2 * e, 2.0, 2 * e]]))


def test_tip_adapter_adds_the_zero_shot_term():
    head = _tip(alpha=0.0)
    out = head(EYE[1:2] + EYE[0:1], EYE[:3])
    torch.testing.assert_close(out, 10.0 * torch.tensor([[1, 1, 0]]) / math.sqrt(2))


def test_tip_adapter_values_follow_the_labels():
    head = TipAdapterHead(D, K, cache_size=3)
    head.init_cache(EYE[:3], torch.tensor([2, 0, 1]))
    torch.testing.assert_close(head.values, F.one_hot(torch.tensor([2, 0, 1]), K).float())
    torch.testing.assert_close(head.keys.detach(), EYE[:3])


def test_tip_adapter_cache_is_the_mean_of_every_normalised_view():
    """init_model builds the cache from the mean of the L2-normalised augmented views (not view 0)."""
    v0 = torch.stack([3 * EYE[0], EYE[1], EYE[2]])
    v1 = torch.stack([EYE[3], 5 * EYE[4], EYE[2]])
    labels = torch.tensor([1, 2, 0])
    train_set = FeatureSet(torch.stack([v0, v1]), labels, ["a", "b", "c"], "train")
    model = init_model(method_config("tip_adapter"), embed_dim=D, logit_scale=10.0,
                       classnames=["x", "y", "z"], train_set=train_set, text_features=EYE[:3])
    expected = l2n(l2n(v0) + l2n(v1))
    torch.testing.assert_close(model.head.keys.detach(), expected)
    torch.testing.assert_close(model.head.values, F.one_hot(labels, 3).float())


# ---- CLIP-Adapter ---------------------------------------------------------------------------------

def test_clip_adapter_residual_mix_known_answer():
    head = ClipAdapterHead(D, logit_scale=1.0, ratio=0.25, reduction=2)
    with torch.no_grad():  # mlp(x) = relu(relu(x W1^T) W2^T) with W2 W1 = a swap of axes 0 and 1
        head.mlp[0].weight.copy_(EYE[:3])
        head.mlp[2].weight.copy_(torch.stack([EYE[1][:3], EYE[0][:3], EYE[2][:3], *torch.zeros(3, 3)]))
    f = 4.0 * EYE[0:1]  # normalised: e0; mlp(e0) = e1
    expected = l2n(0.25 * EYE[1:2] + 0.75 * EYE[0:1])
    torch.testing.assert_close(head.embed_image(f), expected)
    torch.testing.assert_close(head(f, 2 * EYE[:2]), expected[:, :2] / expected.norm())


# ---- linear probe ---------------------------------------------------------------------------------

def test_linear_probe_is_linear_on_normalised_features():
    head = LinearProbeHead(D, 2, logit_scale=10.0)
    head.init_from_text(2 * EYE[:2])
    f = 3.0 * (EYE[0:1] + EYE[1:2])
    torch.testing.assert_close(head(f, EYE[:2]), torch.tensor([[10.0, 10.0]]) / math.sqrt(2))
    with torch.no_grad():
        head.linear.bias.copy_(torch.tensor([1.0, -1.0]))
    torch.testing.assert_close(head(f, EYE[:2]), torch.tensor([[10 / math.sqrt(2) + 1, 10 / math.sqrt(2) - 1]]))


def test_linear_probe_fit_predicts_like_sklearn_at_a_fixed_c():
    from sklearn.linear_model import LogisticRegression

    from croft_core.heads.probe import fit_linear_probe

    g = torch.Generator().manual_seed(0)
    centres = 2 * EYE[:3]
    labels = torch.arange(3).repeat_interleave(6)
    feats = centres[labels] + 0.8 * torch.randn(2, len(labels), D, generator=g)
    train_set = FeatureSet(feats, labels, [str(i) for i in range(len(labels))], "train")
    head = LinearProbeHead(D, 3)
    fit_linear_probe(head, train_set, None)
    x = l2n(feats).reshape(-1, D).numpy()
    clf = LogisticRegression(C=1.0, solver="lbfgs", max_iter=1000).fit(x, np.tile(labels.numpy(), 2))
    q = torch.randn(5, D, generator=g)
    ours = torch.softmax(head(q, EYE[:3]), -1).detach().numpy()
    np.testing.assert_allclose(ours, clf.predict_proba(l2n(q).numpy()), atol=1e-4)


# ---- CRoFT head -----------------------------------------------------------------------------------

def test_croft_adapters_known_answer():
    head = CroftHead(D, logit_scale=10.0, image_ratio=0.25, text_ratio=0.5)
    swap = EYE[[1, 0, 2, 3, 4, 5]]  # W: swaps axes 0 and 1 (symmetric, so W and W^T agree)
    shift = torch.roll(EYE, 1, dims=0)  # asymmetric: W e_j = e_{j+1}
    with torch.no_grad():
        head.image_weight.copy_(shift)
        head.text_weight.copy_(swap)
        head.generator_weight.copy_(shift)
    f = 3.0 * EYE[0:1]
    # f W_i^T = e0 shift^T = e_{1}: 0.25 e1 + 0.75 e0
    torch.testing.assert_close(head.adapt_image(f), l2n(0.25 * EYE[1:2] + 0.75 * EYE[0:1]))
    torch.testing.assert_close(head.adapt_text(EYE[0:1]), l2n(0.5 * EYE[1:2] + 0.5 * EYE[0:1]))
    lopsided = CroftHead(D, text_ratio=0.25)  # beta != 0.5, so swapping beta and 1 - beta shows
    with torch.no_grad():
        lopsided.text_weight.copy_(shift)
    torch.testing.assert_close(lopsided.adapt_text(2.0 * EYE[0:1]), l2n(0.25 * EYE[1:2] + 0.75 * EYE[0:1]))
    # perturb: n(x W_g + x): e0 shift = row 0 of shift = e_{5}
    torch.testing.assert_close(head.perturb(EYE[0:1]), l2n(EYE[5:6] + EYE[0:1]))
    logits = head(f, EYE[0:2])
    z, t = head.adapt_image(f), head.adapt_text(EYE[0:2])
    torch.testing.assert_close(logits, 10.0 * z @ t.T)
    torch.testing.assert_close(logits, 10.0 * torch.tensor([[1.0, 1.0]])
                               / math.sqrt(0.25 ** 2 + 0.75 ** 2) / math.sqrt(2))


def test_croft_generator_input_decides_the_order():
    official = CroftHead(D, image_ratio=0.25, generator_input="adapted")
    clean = CroftHead(D, image_ratio=0.25, generator_input="zeroshot")
    shift = torch.roll(EYE, 1, dims=0)
    for head in (official, clean):
        with torch.no_grad():
            head.image_weight.copy_(shift)
            head.generator_weight.copy_(EYE[[2, 1, 0, 3, 4, 5]])  # does not commute with the shift
    f = EYE[0:1]
    torch.testing.assert_close(official.generate(f), official.perturb(official.adapt_image(f)))
    torch.testing.assert_close(clean.generate(f), clean.adapt_image(clean.perturb(f)))
    assert not torch.allclose(official.generate(f), clean.generate(f))


# ---- supervised step ------------------------------------------------------------------------------

def test_supervised_step_is_one_sgd_step_on_cross_entropy():
    from croft_core.objectives.steps import supervised_step

    torch.manual_seed(0)
    head = ClipAdapterHead(D, logit_scale=5.0, reduction=2)
    ref = ClipAdapterHead(D, logit_scale=5.0, reduction=2)
    ref.load_state_dict(head.state_dict())
    f, t, y = torch.randn(4, D), torch.randn(K, D), torch.tensor([0, 1, 2, 0])
    supervised_step(head, f, t, y, [torch.optim.SGD(head.parameters(), lr=0.5)])
    loss = F.cross_entropy(ref(f, t), y)
    grads = torch.autograd.grad(loss, list(ref.parameters()))
    for p, q, g in zip(head.parameters(), ref.parameters(), grads):
        torch.testing.assert_close(p.detach(), q.detach() - 0.5 * g)
