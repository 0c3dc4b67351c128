"""Break each method's and each OOD score's central line, one at a time, and check a test goes red.

Every mutant is one exact text replacement in one file of ``croft_core``. The tree is copied once to
a temporary folder; each mutant is applied there, the tests named for it run (``pytest -x``), and
the file is restored. A mutant is *caught* when pytest fails. The working tree is never touched.

Usage: ``python bench/mutants.py [--only ID,ID]`` (prints one row per mutant; exit 1 if any survives).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
POWER = "tests/test_methods_power.py"
SCORING = "tests/test_scoring.py"
EVAL = "tests/test_evaluate.py"
LOSSES = "tests/test_losses.py"

# (id, file, original text, broken text, test files that must catch it)
MUTANTS: list[tuple[str, str, str, str, list[str]]] = [
    # --- the defects of issue 21 item 4 ---
    ("tip_labels_shifted", "croft_core/heads/baselines.py", "F.one_hot(labels.long(), self.values.shape[1])",
     "F.one_hot((labels.long() + 1) % self.values.shape[1], self.values.shape[1])", [POWER]),
    ("tip_keys_not_normalised", "croft_core/heads/baselines.py", "self.keys.copy_(l2n(features))",
     "self.keys.copy_(features)", [POWER]),
    ("tip_affinity_sign", "croft_core/heads/baselines.py", "torch.exp(-self.beta * (1 - affinity))",
     "torch.exp(-self.beta * (1 + affinity))", [POWER]),
    ("tip_cache_first_view", "croft_core/runs/train.py",
     "mean_view = torch.nn.functional.normalize(train_set.features, dim=-1).mean(0)",
     "mean_view = train_set.features[0]", [POWER]),
    ("neg_percentile_max", "croft_core/ood/negatives.py", "NEG_PERCENTILE = 0.95", "NEG_PERCENTILE = 1.0",
     ["tests/test_negatives.py"]),
    ("threshold_on_id_test", "croft_core/runs/evaluate.py", 'THRESHOLD_ROLE = "val"',
     'THRESHOLD_ROLE = "id_test"', [EVAL]),
    ("threshold_scores_id_test", "croft_core/runs/evaluate.py",
     'detector = ThresholdDetector(tpr=tpr).fit(run(split)[1]["energy"])',
     'detector = ThresholdDetector(tpr=tpr).fit(id_energy)', [EVAL]),
    # --- every method's central line ---
    ("zeroshot_no_scale", "croft_core/heads/baselines.py",
     "return self.logit_scale * self.embed_image(f) @ l2n(t).T  # [N, K]",
     "return self.embed_image(f) @ l2n(t).T  # [N, K]", [POWER]),
    ("zeroshot_text_not_normalised", "croft_core/heads/baselines.py",
     "return self.logit_scale * self.embed_image(f) @ l2n(t).T  # [N, K]",
     "return self.logit_scale * self.embed_image(f) @ t.T  # [N, K]", [POWER]),
    ("clip_adapter_ratio_swapped", "croft_core/heads/baselines.py",
     "return l2n(self.ratio * self.mlp(f) + (1 - self.ratio) * f)",
     "return l2n((1 - self.ratio) * self.mlp(f) + self.ratio * f)", [POWER]),
    # (dropping CLIP-Adapter's input l2n is an equivalent mutant: the bias-free ReLU MLP is positively
    # homogeneous, so the output direction, which is all that is kept, does not change)
    ("clip_adapter_no_output_norm", "croft_core/heads/baselines.py",
     "return l2n(self.ratio * self.mlp(f) + (1 - self.ratio) * f)",
     "return self.ratio * self.mlp(f) + (1 - self.ratio) * f", [POWER]),
    ("tip_alpha_ignored", "croft_core/heads/baselines.py", "+ self.alpha * cache_logits", "+ cache_logits",
     [POWER]),
    ("tip_query_not_normalised", "croft_core/heads/baselines.py",
     "        z = l2n(f)\n        affinity", "        z = f\n        affinity", [POWER]),
    ("probe_no_input_norm", "croft_core/heads/baselines.py", "return self.linear(l2n(f))",
     "return self.linear(f)", [POWER]),
    ("probe_init_scale", "croft_core/heads/baselines.py", "self.linear.weight.copy_(self.logit_scale * l2n(t))",
     "self.linear.weight.copy_(l2n(t))", [POWER]),
    ("probe_fit_unnormalised_rows", "croft_core/heads/probe.py", "x = l2n(feats.float()).reshape",
     "x = feats.float().reshape", [POWER]),
    ("probe_export_no_bias", "croft_core/heads/probe.py",
     "head.linear.bias.copy_(torch.as_tensor(bias, dtype=weight.dtype))", "head.linear.bias.zero_()", [POWER]),
    ("croft_image_ratio_swapped", "croft_core/heads/checkpoint.py",
     "return l2n(self.image_ratio * f @ w.T + (1 - self.image_ratio) * f)",
     "return l2n((1 - self.image_ratio) * f @ w.T + self.image_ratio * f)", [POWER]),
    ("croft_image_untransposed", "croft_core/heads/checkpoint.py",
     "return l2n(self.image_ratio * f @ w.T + (1 - self.image_ratio) * f)",
     "return l2n(self.image_ratio * f @ w + (1 - self.image_ratio) * f)", [POWER]),
    ("croft_text_ratio_swapped", "croft_core/heads/checkpoint.py",
     "return l2n(self.text_ratio * t @ w.T + (1 - self.text_ratio) * t)",
     "return l2n((1 - self.text_ratio) * t @ w.T + self.text_ratio * t)", [POWER]),
    ("croft_perturb_no_residual", "croft_core/heads/checkpoint.py", "return l2n(x @ w + x)",
     "return l2n(x @ w)", [POWER]),
    ("croft_generate_order", "croft_core/heads/checkpoint.py",
     "return self.adapt_image(self.perturb(l2n(f)))", "return self.perturb(self.adapt_image(f))", [POWER]),
    ("croft_forward_no_text_adapter", "croft_core/heads/checkpoint.py",
     "return self.logit_scale * self.adapt_image(f) @ self.adapt_text(t).T",
     "return self.logit_scale * self.adapt_image(f) @ l2n(t).T", [POWER]),
    ("supervised_step_no_step", "croft_core/objectives/steps.py",
     "    loss.backward()\n    for opt in optimizers:\n        opt.step()\n    return {\"loss\"",
     "    loss.backward()\n    return {\"loss\"", [POWER]),
    ("official_lambda1_sign", "croft_core/objectives/steps.py",
     "return F.cross_entropy(tau * c_tilde @ z_txt.T, y) - lambda1 * sim",
     "return F.cross_entropy(tau * c_tilde @ z_txt.T, y) + lambda1 * sim", [LOSSES]),
    ("official_no_lambda2", "croft_core/objectives/steps.py",
     "loss_edr = loss_l1 + lambda2 * loss_l2 if", "loss_edr = loss_l1 + 0 * loss_l2 if", [LOSSES]),
    ("official_gen_loop_pull", "croft_core/objectives/steps.py",
     "+ lambda1 * same_class_similarity(z_cov, z_img, y))", "- lambda1 * same_class_similarity(z_cov, z_img, y))",
     [LOSSES]),
    ("clean_no_cov_ce", "croft_core/objectives/steps.py", "        loss = loss + loss_cov\n",
     "        loss = loss + 0 * loss_cov\n", [LOSSES]),
    ("clean_gen_loss_sign", "croft_core/objectives/steps.py",
     "+ lambda1 * same_class_similarity(x_cov, z_hat, y))", "- lambda1 * same_class_similarity(x_cov, z_hat, y))",
     [LOSSES]),
    ("clean_no_lambda2", "croft_core/objectives/steps.py", "loss = loss + lambda2 * loss_l2",
     "loss = loss + 0 * lambda2 * loss_l2", [LOSSES]),
    ("edr_no_square", "croft_core/objectives/terms.py", "squares = sum((g ** 2).sum() for g in grads)",
     "squares = sum(g.abs().sum() for g in grads)", [LOSSES]),
    ("same_class_no_mask", "croft_core/objectives/terms.py", "return (mask * (a @ b.T)).sum()",
     "return (a @ b.T).sum()", [LOSSES]),
    # --- every OOD score's central line ---
    ("energy_max", "croft_core/ood/scores.py",
     "return temperature * torch.logsumexp(logits / temperature, dim=-1)",
     "return temperature * (logits / temperature).amax(dim=-1)", [SCORING]),
    ("mcm_no_temperature", "croft_core/ood/scores.py",
     "return torch.softmax(cosines / temperature, dim=-1).amax(dim=-1)",
     "return torch.softmax(cosines, dim=-1).amax(dim=-1)", [SCORING]),
    ("msp_min", "croft_core/ood/scores.py", "return torch.softmax(_check_logits(logits), dim=-1).amax(dim=-1)",
     "return torch.softmax(_check_logits(logits), dim=-1).amin(dim=-1)", [SCORING]),
    ("max_logit_mean", "croft_core/ood/scores.py", "return _check_logits(logits).amax(dim=-1)",
     "return _check_logits(logits).mean(dim=-1)", [SCORING]),
    ("knn_first_neighbour", "croft_core/ood/scores.py", "idx = sims.topk(k, dim=-1).indices[:, -1]",
     "idx = sims.topk(k, dim=-1).indices[:, 0]", [SCORING]),
    ("knn_unnormalised", "croft_core/ood/scores.py", "queries = F.normalize(features.to(dtype), dim=-1)",
     "queries = features.to(dtype)", [SCORING]),
    ("neglabel_sign", "croft_core/ood/scores.py",
     "return torch.sigmoid(pos - torch.logsumexp(neg, dim=-1))",
     "return torch.sigmoid(torch.logsumexp(neg, dim=-1) - pos)", [SCORING]),
    ("neglabel_groups_max", "croft_core/ood/scores.py",
     "torch.logsumexp(grouped, dim=-1)).mean(dim=-1)", "torch.logsumexp(grouped, dim=-1)).amax(dim=-1)",
     [SCORING]),
    ("neglabel_no_temperature", "croft_core/ood/scores.py", "pos = torch.logsumexp(cosines / temperature, dim=-1)",
     "pos = torch.logsumexp(cosines, dim=-1)", [SCORING]),
    ("mining_closest", "croft_core/ood/negatives.py", "return torch.argsort(closeness, stable=True)[:num]",
     "return torch.argsort(closeness, descending=True, stable=True)[:num]", ["tests/test_negatives.py"]),
    # --- the Setup-II protocol ---
    ("detection_ignores_reference", "croft_core/runs/evaluate.py",
     "id_ref = _detection_reference(reference, id_scores, id_preds, id_labels, cov_parts)",
     "id_ref = id_scores", [EVAL]),
]


def _run(copy: Path, tests: list[str]) -> tuple[bool, float]:
    env = {**os.environ, "PYTHONPATH": str(copy), "HF_HUB_OFFLINE": "1"}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
                          cwd=copy, env=env, capture_output=True, text=True)
    return proc.returncode != 0, time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="comma-separated mutant ids")
    args = parser.parse_args()
    chosen = [m for m in MUTANTS if not args.only or m[0] in args.only.split(",")]
    survivors = []
    with tempfile.TemporaryDirectory(prefix="croft-mutants-") as tmp:
        copy = Path(tmp) / "tree"
        shutil.copytree(ROOT, copy, ignore=shutil.ignore_patterns(".git", "__pycache__", ".venv"))
        print(f"{'mutant':32s} {'file':34s} caught  seconds")
        for mid, rel, old, new, tests in chosen:
            path = copy / rel
            text = path.read_text()
            if text.count(old) != 1:
                print(f"{mid:32s} {rel:34s} ERROR: the original text occurs {text.count(old)} times")
                survivors.append(mid)
                continue
            path.write_text(text.replace(old, new))
            try:
                caught, seconds = _run(copy, tests)
            finally:
                path.write_text(text)
            print(f"{mid:32s} {rel:34s} {'yes' if caught else 'NO':6s}  {seconds:5.1f}", flush=True)
            if not caught:
                survivors.append(mid)
        baseline, _ = _run(copy, sorted({t for m in chosen for t in m[4]}))
    print(f"\n{len(chosen) - len(survivors)}/{len(chosen)} mutants caught; unmutated tree "
          f"{'FAILS its tests' if baseline else 'passes'}")
    if survivors:
        print("survivors:", ", ".join(survivors))
    return 1 if survivors or baseline else 0


if __name__ == "__main__":
    raise SystemExit(main())
