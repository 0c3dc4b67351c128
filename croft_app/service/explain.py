"""What the app shows a visitor: one verdict in words, the score plot's inputs, Lab tables in %.

Pure functions of ``/classify`` results (:meth:`croft_app.service.classifier.Prediction.to_dict` plus the
:mod:`croft_app.service.decision` keys ``rule``, ``reason``, ``nearest_negative``, ``neg_score``) and of
results JSON (:mod:`croft_core.runs.evaluate`). No gradio, no plotting (figures: :mod:`croft_core.runs.figures`).
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from croft_app.service.decision import RULE_CALIBRATED, RULE_NEGATIVES, RULE_NONE, RULE_USER, rule_statement

__all__ = ["BATCH_HEADERS", "PlotInputs", "batch_row", "caption", "lab_headers", "lab_rows", "lab_rules",
           "lab_rule_statement", "margin",
           "plot_inputs", "pooled_groups", "verdict_markdown"]

BATCH_HEADERS = ["file", "verdict", "accepted", "closest class", "score", "threshold", "rule", "reason"]


def _esc(text: Any) -> str:
    """``<``, ``>`` and ``&`` escaped (a visitor's class names are shown as text), quotes kept readable."""
    return html.escape(str(text), quote=False)


RULE_WORDS = {  # plain words first; the terms are explained in the fold under the verdict (GLOSSARY)
    RULE_USER: "your energy threshold",
    RULE_CALIBRATED: "the model's own threshold, set on its training classes (95% of their images pass)",
    RULE_NEGATIVES: "a list of thousands of other words: the image is 'unknown' when it looks more like "
                    "one of them than like your classes",
    RULE_NONE: "no rule yet (the answer is simply the closest of your classes)",
}
GLOSSARY = (
    ("energy score", "how strongly the image matches any of your classes (higher: more familiar)."),
    ("threshold", "the score below which the image is called 'unknown'."),
    ("negative labels", "the list of other words used for 'unknown'; your own classes are taken off it."),
    ("probability", "shared among your classes only, so it is high even for an unknown image."),
)


def verdict_markdown(result: Mapping[str, Any]) -> str:
    """The headline (class or "unknown"), the reason in words and the rule that decided.

    Probabilities are not repeated here (they are secondary and shown below); notes and warnings are
    folded into a ``<details>`` block.
    """
    label, rule = str(result["label"]), str(result.get("rule", RULE_NONE))
    reason = str(result.get("reason") or "")
    if result.get("accepted"):
        p = float(result.get("probabilities", {}).get(label, 0.0))
        head = f"## {_esc(label)}\n\nThe image is accepted as **{_esc(label)}** ({p:.0%} of the probability)."
        if rule == RULE_NONE:
            head += f"\n\n⚠️ {_esc(reason)}"
    else:
        closest = _esc(str(result.get("predicted_class", "")))
        head = (f"## unknown\n\nNone of your classes fits: {_esc(reason)}. "
                f"(The closest of your classes would be {closest}.)")
    lines = [head, f"\n\n**Decided by:** {RULE_WORDS.get(rule, rule)}"]
    if result.get("model"):
        lines.append(f" · **model:** {_esc(str(result['model']))}")
    extra = [*result.get("notes", []), *(f"⚠️ {w}" for w in result.get("warnings", []))]
    if extra:
        items = "".join(f"<li>{_esc(str(x))}</li>" for x in extra)
        lines.append(f"\n\n<details><summary>details ({len(extra)})</summary><ul>{items}</ul></details>")
    words = "".join(f"<li><b>{term}</b>: {text}</li>" for term, text in GLOSSARY)
    lines.append(f"\n\n<details><summary>what the words mean</summary><ul>{words}</ul></details>")
    return "".join(lines)


def caption(result: Mapping[str, Any]) -> str:
    """A short gallery caption: the verdict, and the closest word or class when rejected."""
    if result.get("accepted"):
        return str(result["label"])
    word = result.get("nearest_negative")
    return f"unknown (looks like '{word}')" if word else f"unknown (closest: {result.get('predicted_class')})"


def batch_row(name: str, result: Mapping[str, Any]) -> list[Any]:
    """One row of :data:`BATCH_HEADERS` for a classified file."""
    negatives = result.get("rule") == RULE_NEGATIVES
    score = result.get("neg_score") if negatives else result.get("score")
    threshold = result.get("neg_threshold") if negatives else result.get("threshold")
    return [name, result["label"], bool(result["accepted"]), result.get("predicted_class"),
            None if score is None else round(float(score), 4),
            None if threshold is None else round(float(threshold), 4), result.get("rule"),
            result.get("reason", "")]


@dataclass(frozen=True)
class PlotInputs:
    """What the score plot draws for one result: the rule's own score, threshold and reference."""

    score: float | None
    threshold: float | None
    reference: dict[str, np.ndarray]
    log_x: bool
    xaxis: str


def plot_inputs(result: Mapping[str, Any], reference: Any, reference_name: str) -> PlotInputs:
    """The score plot of the rule that decided: energy (with its threshold) or the negative-label score.

    Args:
        result: a ``/classify`` result.
        reference: the :class:`~croft_app.service.decision.PlotReference` of the same model and
            vocabulary (ID reference energies and, for rendered images, their negative-label scores).
        reference_name: how the reference is named in the legend (what the images are).
    """
    def group(values: Any) -> dict[str, np.ndarray]:
        return {} if values is None or not len(values) else {reference_name: np.asarray(values)}

    if result.get("rule") == RULE_NEGATIVES and result.get("neg_score") is not None:
        return PlotInputs(float(result["neg_score"]), result.get("neg_threshold"), group(reference.neg_scores),
                          True, "negative-label score (log scale)")
    return PlotInputs(float(result["score"]), result.get("threshold"), group(reference.energies), False,
                      "energy score")


def margin(inputs: PlotInputs) -> float | None:
    """The score's distance above its threshold in units of the reference's spread (None: no threshold).

    Energies of different heads and the (log) negative-label score live on different scales; the
    spread (standard deviation of the reference, 1 without one) makes them comparable on one plot.
    """
    if inputs.threshold is None or inputs.score is None:
        return None
    f = (lambda v: np.log10(np.maximum(v, 1e-12))) if inputs.log_x else (lambda v: v)
    values = np.concatenate([f(np.asarray(v, dtype=np.float64)) for v in inputs.reference.values()]) \
        if inputs.reference else np.zeros(0)
    spread = float(values.std()) if values.size > 1 and values.std() > 0 else 1.0
    return float((f(inputs.score) - f(inputs.threshold)) / spread)


def pooled_groups(energies: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """One model's energies in three groups: ``known`` (ID), ``new styles`` (every covariate set)
    and ``unseen shapes`` (every semantic set); keys of ``energies`` start with ``ID``,
    ``covariate`` or ``semantic``. Two models' twelve overlapping sets would be unreadable."""
    out = {}
    for key, name in (("ID", "known"), ("covariate", "new styles"), ("semantic", "unseen shapes")):
        parts = [np.asarray(v, dtype=np.float64) for k, v in energies.items() if k.startswith(key)]
        if parts:
            out[name] = np.concatenate(parts)
    return out


# --------------------------------------------------------------------------------------------------
# Lab: one table, in %, summary rows first, one column group per model
# --------------------------------------------------------------------------------------------------

def _pct(x: Any) -> float | None:
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else round(100 * float(x), 1)


def _rows(results: Mapping[str, Any], score: str) -> list[tuple[str, str, Any, list[float | None]]]:
    """``(set, kind, n, [accuracy %, AUROC %, FPR95 %])`` for one results JSON, summaries first."""
    def det(block: Mapping[str, Any] | None) -> list[float | None]:
        s = (block or {}).get(score, {})
        return [_pct(s.get("auroc")), _pct(s.get("fpr95"))]

    cov = results.get("covariate", [])
    sem = results.get("semantic", [])
    rows = [("ID", "summary", results["id"]["n"], [_pct(results["id"]["accuracy"]), None, None])]
    if cov:
        rows.append(("covariate (mean)", "summary", sum(c["n"] for c in cov),
                     [_pct(float(np.mean([c["accuracy"] for c in cov]))), None, None]))
    if "semantic_all" in results:
        rows.append(("semantic (pooled)", "summary", sum(s["n"] for s in sem), [None, *det(results["semantic_all"])]))
    if "full_spectrum" in results:
        rows.append(("full spectrum (ID + covariate vs semantic)", "summary", None,
                     [_pct(results["full_spectrum"].get("accuracy")), *det(results["full_spectrum"])]))
    rows += [(c["name"], "covariate", c["n"], [_pct(c["accuracy"]), None, None]) for c in cov]
    rows += [(s["name"], "semantic", s["n"], [None, *det(s["scores"])]) for s in sem]
    return rows


def lab_headers(models: Sequence[str], score: str = "energy") -> list[str]:
    """Column names of :func:`lab_rows`."""
    cols = ["set", "kind", "images"]
    for m in models:
        cols += [f"{m}: accuracy %", f"{m}: {score} AUROC %", f"{m}: {score} FPR95 % (lower is better)"]
    return cols


def lab_rows(runs: Mapping[str, Mapping[str, Any]], score: str = "energy") -> list[list[Any]]:
    """Rows of :func:`lab_headers`: summary rows (ID, covariate mean, semantic pooled, full spectrum)
    first, then every set; one group of columns per model (the runs share the benchmark)."""
    tables = [_rows(r, score) for r in runs.values()]
    out = []
    for i, (name, kind, n, _) in enumerate(tables[0]):
        row: list[Any] = [name, kind, n]
        for t in tables:
            row += t[i][3] if i < len(t) and t[i][0] == name else [None, None, None]
        out.append(row)
    return out


# Lab verdicts (issue 21, "comparable verdicts"). Decision, after reading the Lab: its table shows only
# threshold-free numbers (accuracy; AUROC and FPR95 sweep every threshold) and no "accepted" or
# "rejected" share. The one rule it shows is each model's dashed line on the score plot:
# ``results["threshold"]``, the energy at which 95% of the benchmark's known *validation* images are
# accepted, fitted by croft_core.runs.evaluate with the same code for every model (zero-shot too; never
# a checkpoint's stored threshold, never negative labels). So by default both lines are already the same
# kind of rule; the minimal honest change is to name it under the table, through Compare's
# :func:`~croft_app.service.decision.rule_statement`, and to say AUROC/FPR95 do not depend on it. The
# dashed lines are drawn from :func:`lab_rules` too, so the plot and the sentence cannot disagree.

def lab_rules(runs: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per model, the rule of its results JSON's threshold as a verdict for ``rule_statement``:
    ``rule`` (``RULE_CALIBRATED``, or ``RULE_NONE`` without an energy threshold), ``threshold``,
    ``tpr``, ``fitted_on``. Two models fitted at different acceptance rates or on different splits
    get different rule names (different kinds of rule), whatever their score."""
    rules = {}
    for name, results in runs.items():
        t = results.get("threshold") or {}
        if t.get("score") != "energy" or t.get("value") is None:
            rules[name] = {"rule": RULE_NONE, "threshold": None, "reason": "the results give no threshold"}
        else:
            rules[name] = {"rule": RULE_CALIBRATED, "threshold": float(t["value"]), "tpr": t.get("tpr"),
                           "fitted_on": t.get("fitted_on")}
    fits = {(r.get("tpr"), r.get("fitted_on")) for r in rules.values() if r["rule"] == RULE_CALIBRATED}
    if len(fits) > 1:  # one score, different operating points: not the same kind of rule
        for r in rules.values():
            if r["rule"] == RULE_CALIBRATED:
                r["rule"] = f"{RULE_CALIBRATED}, {r['tpr']} of known '{r['fitted_on']}' images accepted"
    return rules


def lab_rule_statement(rules: Mapping[str, Mapping[str, Any]]) -> str:
    """The sentence under the Lab table: which rule each dashed threshold is, whether the models' rules
    are the same kind (:func:`~croft_app.service.decision.rule_statement`), and that the table's
    numbers do not depend on it."""
    names, verdicts = list(rules), list(rules.values())
    first = verdicts[0] if verdicts else {}
    if len(verdicts) > 1:
        head = rule_statement(first.get("rule", RULE_NONE), verdicts, names)
    elif first.get("rule") == RULE_CALIBRATED:
        head = "**Rule:** the model's energy threshold calibrated on these classes."
    else:
        head = f"**Rule: none** ({first.get('reason', 'no results')})."
    fitted = ""
    if first.get("rule") == RULE_CALIBRATED and first.get("tpr") is not None:
        fitted = (f" The dashed line of each model is its energy at which {float(first['tpr']):.0%} of the "
                  f"benchmark's known '{first.get('fitted_on')}' images are accepted, fitted for that model "
                  "on this benchmark (not a checkpoint's stored threshold).")
    return (f"{head}{fitted} Accuracy, AUROC and FPR95 do not depend on it: AUROC and FPR95 are measured "
            "over every threshold.")
