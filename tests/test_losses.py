"""Parity of the `official` CRoFT step with an independent re-derivation of CROFT_SPEC.md §2,
gradient checks of the energy-gradient penalty, and properties of the clean objective."""

from __future__ import annotations

import pytest
import torch

from croft_core.objectives import clean_step, energy_gradient_penalty, official_step, same_class_similarity
from croft_core.heads.checkpoint import CroftHead

# ---- an independent reference, written from the spec's equations with plain tensors --------------

ALPHA, BETA, TAU, LR, MOM, WD = 0.2, 0.5, 30.0, 0.01, 0.9, 0.1


def _n(v):
    return v / (v.norm(dim=-1, keepdim=True) + 1e-6)


def _ce(logits, y):
    return (torch.logsumexp(logits, dim=1) - logits.gather(1, y[:, None]).squeeze(1)).mean()


class Reference:
    """W_i, W_t, W_g as plain tensors and SGD (momentum, weight decay) written out by hand."""

    def __init__(self, d):
        self.W = [torch.eye(d, dtype=torch.float64).requires_grad_() for _ in range(3)]
        self.buf = [None, None, None]

    def sgd_all(self, loss):
        """Dassl: every loss updates every matrix (gradients from the kept graph)."""
        grads = torch.autograd.grad(loss, self.W, retain_graph=True)
        with torch.no_grad():
            for j, (p, g) in enumerate(zip(self.W, grads)):
                g = g + WD * p
                self.buf[j] = g.clone() if self.buf[j] is None else MOM * self.buf[j] + g
                p -= LR * self.buf[j]

    def step(self, f, t, y, lam1, lam2, gen_steps, branch_a, reduction):
        Wi, Wt, Wg = self.W
        N = len(y)
        M = (y[:, None] == y[None, :]).double()
        zh, th = _n(f), _n(t)
        zI = _n(ALPHA * f @ Wi.T + (1 - ALPHA) * f)  # step 0, kept
        zT = _n(BETA * t @ Wt.T + (1 - BETA) * t)
        logits = TAU * zI @ zT.T
        for _ in range(gen_steps):  # step 1
            zc = _n(zI @ Wg + zI)
            d_gen = (M * (zc @ zI.T)).sum() / N ** 2
            self.sgd_all(_ce(TAU * zc @ zT.T, y) + lam1 * d_gen)
        zc = _n(zI @ Wg + zI)  # step 2
        if branch_a:  # step 3
            D = (M * (zc @ zh.T)).sum() / N ** 2
            c = ALPHA * zc + (1 - ALPHA) * zc @ Wi
            L1 = _ce(TAU * c @ zT.T, y) - lam1 * D
            Zp = torch.cat([zh, zc])
        else:
            L1 = _ce(TAU * zc @ zT.T, y)
            Zp = zh
        delta = (1e-4 * torch.ones_like(Wi)).requires_grad_()
        u = _n(ALPHA * Zp @ (Wi + delta) + (1 - ALPHA) * Zp)
        v = _n(BETA * th @ (Wt + delta) + (1 - BETA) * th)
        e = torch.exp(u @ v.T)
        phi = e.sum() if reduction == "sum_mean" else e.mean()
        G = torch.autograd.grad(phi, delta, create_graph=True)[0]
        L2 = (G ** 2).mean() if reduction == "sum_mean" else (G ** 2).sum()
        loss = _ce(logits, y) + L1 + lam2 * L2  # step 4
        self.sgd_all(loss)
        return {"loss": loss.item(), "loss_l1": L1.item(), "loss_l2": L2.item()}


def _batch(seed, n=12, k=4, d=8, raw_text=True):
    g = torch.Generator().manual_seed(seed)
    f = torch.randn(n, d, generator=g, dtype=torch.float64) * 3
    t = torch.randn(k, d, generator=g, dtype=torch.float64) * (5 if raw_text else 1)
    y = torch.randint(0, k, (n,), generator=g)
    return f, t, y


@pytest.mark.parametrize("branch_a,reduction,gen_steps", [
    (True, "sum_mean", 1),  # Setup-I 16/32 shots, PACS ViT
    (True, "sum_mean", 3),  # Setup-I 1 shot uses 10
    (False, "mean_sum", 2),  # VLCS
    (False, "mean_sum", 0),  # PACS RN50: generator trained only cooperatively
])
def test_official_step_matches_reference(branch_a, reduction, gen_steps):
    d, lam1, lam2 = 8, 5.0, 3.0
    head = CroftHead(d, logit_scale=TAU, image_ratio=ALPHA, text_ratio=BETA).double()
    opts = [torch.optim.SGD(ps, lr=LR, momentum=MOM, weight_decay=WD)
            for ps in (head.adapter_parameters(), head.generator_parameters())]
    ref = Reference(d)
    for step in range(3):
        f, t, y = _batch(step)
        ours = official_step(head, f, t, y, opts, lambda1=lam1, lambda2=lam2, gen_steps=gen_steps,
                             cov_branch=branch_a, edr_reduction=reduction)
        theirs = ref.step(f, t, y, lam1, lam2, gen_steps, branch_a, reduction)
        for key in theirs:
            assert ours[key] == pytest.approx(theirs[key], rel=1e-9, abs=1e-12), (step, key)
        for mine, expected in zip((head.image_weight, head.text_weight, head.generator_weight), ref.W):
            torch.testing.assert_close(mine.detach(), expected.detach(), rtol=1e-9, atol=1e-12)
        if step == 0:  # after one step the matrices have really moved (the test can fail)
            assert not torch.allclose(head.image_weight, torch.eye(d, dtype=torch.float64))
            assert not torch.allclose(head.generator_weight, torch.eye(d, dtype=torch.float64))


def test_official_generator_steps_move_the_adapter():
    """CHECKED (b) in the spec: Dassl steps every optimizer, so L_gen updates W_i as well."""
    d = 8
    f, t, y = _batch(0)
    moved = []
    for gen_steps in (0, 2):
        head = CroftHead(d, logit_scale=TAU).double()
        opts = [torch.optim.SGD(ps, lr=LR, momentum=MOM, weight_decay=WD)
                for ps in (head.adapter_parameters(), head.generator_parameters())]
        official_step(head, f, t, y, opts, lambda1=5, lambda2=0, gen_steps=gen_steps)
        moved.append(head.image_weight.detach().clone())
    assert not torch.allclose(moved[0], moved[1])


def test_penalty_gradcheck_double_backward():
    g = torch.Generator().manual_seed(0)
    inputs = tuple(torch.randn(*shape, generator=g, dtype=torch.float64, requires_grad=True)
                   for shape in ((5, 4), (3, 4), (4, 4), (4, 4)))
    for combine in ("shared", "separate"):
        for reduction in ("sum_mean", "mean_sum", "sample_sum"):
            fn = lambda x, t, wi, wt: energy_gradient_penalty(  # noqa: E731
                x, t, wi, wt, combine=combine, reduction=reduction, temperature=0.7)
            assert torch.autograd.gradcheck(fn, inputs)


def test_shared_delta_is_sum_of_block_gradients():
    """CHECKED (e): G = dPhi/dW_i + dPhi/dW_t exactly, evaluated at W + delta."""
    g = torch.Generator().manual_seed(1)
    x, t = torch.randn(6, 4, generator=g, dtype=torch.float64), torch.randn(3, 4, generator=g, dtype=torch.float64)
    wi = torch.randn(4, 4, generator=g, dtype=torch.float64, requires_grad=True)
    wt = torch.randn(4, 4, generator=g, dtype=torch.float64, requires_grad=True)
    u = _n(0.2 * x @ wi + 0.8 * x)
    v = _n(0.5 * t @ wt + 0.5 * t)
    gi, gt = torch.autograd.grad(torch.exp(u @ v.T).sum(), (wi, wt))
    shared = energy_gradient_penalty(x, t, wi, wt, reduction="sum_mean", combine="shared", delta=0.0)
    separate = energy_gradient_penalty(x, t, wi, wt, reduction="sum_mean", combine="separate", delta=0.0)
    torch.testing.assert_close(shared, ((gi + gt) ** 2).mean())
    torch.testing.assert_close(separate, (gi ** 2).mean() + (gt ** 2).mean())


def test_penalty_rejects_unknown_options():
    x = torch.randn(2, 3)
    w = torch.eye(3)
    with pytest.raises(ValueError, match="reduction must be one of"):
        energy_gradient_penalty(x, x, w, w, reduction="mean")
    with pytest.raises(ValueError, match="combine must be"):
        energy_gradient_penalty(x, x, w, w, combine="both")


def test_same_class_similarity_by_hand():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    y = torch.tensor([0, 1, 0])
    # pairs with equal labels: (0,0)=1, (0,2)=1, (2,0)=1, (2,2)=1, (1,1)=1 -> 5 / 9
    assert same_class_similarity(a, a, y).item() == pytest.approx(5 / 9)


def test_clean_step_updates_only_its_own_matrices():
    d = 8
    f, t, y = _batch(3)
    f, t = f.float(), t.float()
    head = CroftHead(d, logit_scale=TAU, generator_input="zeroshot")
    adapter_opt = torch.optim.SGD(head.adapter_parameters(), lr=LR)
    gen_opt = torch.optim.SGD(head.generator_parameters(), lr=LR)
    before = [p.detach().clone() for p in head.parameters()]

    # the generator step alone (lambda2 = 0 and a frozen adapter optimizer) must not touch W_i, W_t
    frozen_adapter = torch.optim.SGD(head.adapter_parameters(), lr=0.0)
    clean_step(head, f, t, y, (frozen_adapter, gen_opt), lambda1=5, lambda2=0, gen_steps=2)
    assert torch.equal(head.image_weight, before[0]) and torch.equal(head.text_weight, before[1])
    assert not torch.equal(head.generator_weight, before[2])

    # the adapter step must not touch W_g
    w_g = head.generator_weight.detach().clone()
    clean_step(head, f, t, y, (adapter_opt, gen_opt), lambda1=5, lambda2=5, gen_steps=0)
    assert torch.equal(head.generator_weight, w_g)
    assert not torch.equal(head.image_weight, before[0])


def test_clean_penalty_is_gradient_of_classifier_energy():
    """In the clean objective Phi is exp(-E) of exactly the features the classifier sees."""
    d = 6
    g = torch.Generator().manual_seed(4)
    f, t = torch.randn(5, d, generator=g, dtype=torch.float64), torch.randn(3, d, generator=g, dtype=torch.float64)
    head = CroftHead(d, logit_scale=TAU).double()
    with torch.no_grad():
        head.image_weight.add_(0.3 * torch.randn(d, d, generator=g, dtype=torch.float64))
        head.text_weight.add_(0.3 * torch.randn(d, d, generator=g, dtype=torch.float64))
    phi = torch.exp(head.adapt_image(f) @ head.adapt_text(t).T).sum(1).mean()
    gi, gt = torch.autograd.grad(phi, (head.image_weight, head.text_weight))
    expected = (gi ** 2).sum() + (gt ** 2).sum()
    got = energy_gradient_penalty(_n(f), _n(t), head.image_weight.T, head.text_weight.T,
                                  reduction="sample_sum", combine="separate", delta=0.0)
    # equal up to the 1e-6 of n(.) (rows are normalised before the adapter here, raw in the forward)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=0)


def test_clean_step_matches_a_reference():
    """One clean step (generator, then adapters) against the objective written out by hand.

    Fails when the covariate CE, the generator's push-away sign or the lambda2 term is dropped."""
    d, lr, l1, l2 = 6, 0.05, 5.0, 2.0
    g = torch.Generator().manual_seed(7)
    f, t = torch.randn(5, d, generator=g, dtype=torch.float64), torch.randn(3, d, generator=g, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1])
    head = CroftHead(d, logit_scale=TAU, image_ratio=ALPHA, text_ratio=BETA, generator_input="zeroshot").double()
    with torch.no_grad():
        for p in head.parameters():
            p.add_(0.2 * torch.randn(d, d, generator=g, dtype=torch.float64))
    w_i, w_t, w_g = (p.detach().clone() for p in (head.image_weight, head.text_weight, head.generator_weight))
    opts = (torch.optim.SGD(head.adapter_parameters(), lr=lr), torch.optim.SGD(head.generator_parameters(), lr=lr))
    clean_step(head, f, t, y, opts, lambda1=l1, lambda2=l2, gen_steps=1, edr_reduction="sample_sum")

    unit = _n  # the official normalisation, x / (||x|| + 1e-6), as the library's l2n

    def image(x, w):
        return unit(ALPHA * x @ w.T + (1 - ALPHA) * x)

    def text(x, w):
        return unit(BETA * x @ w.T + (1 - BETA) * x)

    same = (y[:, None] == y[None, :]).double()
    z = unit(f)
    # 1. generator: stay classifiable (adapters fixed) while moving away from same-class features
    wg = w_g.clone().requires_grad_()
    x_cov = unit(z @ wg + z)
    loss_gen = _ce(TAU * image(x_cov, w_i) @ text(t, w_t).T, y) + l1 * (same * (x_cov @ z.T)).sum() / 25
    wg_new = w_g - lr * torch.autograd.grad(loss_gen, wg)[0]
    # 2. adapters: CE(ID) + CE(covariate) + lambda2 (||dPhi/dW_i||^2 + ||dPhi/dW_t||^2)
    wi, wt = w_i.clone().requires_grad_(), w_t.clone().requires_grad_()
    x_cov = unit(z @ wg_new + z)
    loss = _ce(TAU * image(f, wi) @ text(t, wt).T, y) + _ce(TAU * image(x_cov, wi) @ text(t, wt).T, y)
    phi = torch.exp(image(torch.cat([z, x_cov]), wi) @ text(t, wt).T).sum(1).mean()
    gi, gt = torch.autograd.grad(phi, (wi, wt), create_graph=True)
    loss = loss + l2 * ((gi ** 2).sum() + (gt ** 2).sum())
    d_i, d_t = torch.autograd.grad(loss, (wi, wt))
    torch.testing.assert_close(head.generator_weight.detach(), wg_new, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(head.image_weight.detach(), w_i - lr * d_i, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(head.text_weight.detach(), w_t - lr * d_t, rtol=1e-5, atol=1e-7)
