"""Summaries over seeds and the self-contained HTML report of ``croft bench``."""

from __future__ import annotations

import html
import math
import statistics
from pathlib import Path
from typing import Any, Sequence

import numpy as np

HEADLINE = (("id.accuracy", "ID acc"), ("covariate.mean_accuracy", "covariate acc"),
            ("semantic_all.energy.auroc", "energy AUROC"), ("semantic_all.energy.fpr95", "energy FPR95"),
            ("semantic_all.mcm.auroc", "MCM AUROC"), ("semantic_all.knn.auroc", "KNN AUROC"),
            ("semantic_all.neglabel.auroc", "NegLabel AUROC"), ("semantic_all.neglabel.fpr95", "NegLabel FPR95"),
            ("full_spectrum.energy.auroc", "full-spectrum AUROC"))


def flatten(results: dict[str, Any]) -> dict[str, float]:
    """Numeric leaves of a results dict as ``"a.b.c" -> value``; named list items use their name."""
    out: dict[str, float] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        elif isinstance(node, list):
            for i, item in enumerate(node):
                name = item.get("name", str(i)) if isinstance(item, dict) else str(i)
                walk(f"{prefix}/{name}", item)
        elif isinstance(node, (int, float)) and not isinstance(node, bool):
            out[prefix] = float(node)

    walk("", {k: v for k, v in results.items() if k not in ("seed", "shots", "train_config", "seconds")})
    covs = [v for k, v in out.items() if k.startswith("covariate/") and k.endswith(".accuracy")]
    if covs:
        out["covariate.mean_accuracy"] = float(np.mean(covs))
    return out


def summarize(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean and standard deviation over seeds of every metric, per method."""
    by_method: dict[str, list[dict[str, float]]] = {}
    for r in runs:
        by_method.setdefault(r["method"], []).append(flatten(r))
    methods = {}
    for method, flats in by_method.items():
        keys = sorted(set().union(*flats))
        methods[method] = {}
        for k in keys:
            vals = [f[k] for f in flats if k in f and not math.isnan(f[k])]
            if vals:
                methods[method][k] = {"mean": statistics.fmean(vals),
                                      "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
                                      "n": len(vals)}
    first = runs[0] if runs else {}
    return {"benchmark": first.get("benchmark"), "backbone": first.get("backbone"),
            "shots": first.get("shots"), "seeds": sorted({r["seed"] for r in runs}),
            "methods": methods}


def markdown_table(summary: dict[str, Any], columns=HEADLINE) -> str:
    """The headline table (mean ± std, in %) as Markdown, for the README."""
    head = "| method | " + " | ".join(label for _, label in columns) + " |"
    rule = "|---" * (len(columns) + 1) + "|"
    rows = []
    for method, stats in summary["methods"].items():
        cells = []
        for key, _ in columns:
            s = stats.get(key)
            cells.append("–" if s is None else f"{100 * s['mean']:.1f} ± {100 * s['std']:.1f}")
        rows.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join([head, rule, *rows])


def _html_table(summary: dict[str, Any]) -> str:
    md = markdown_table(summary).splitlines()
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in md if not line.startswith("|---")]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cells[0])
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in cells[1:])
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _pool_semantic(groups: dict[str, list], max_sets: int = 3) -> dict[str, np.ndarray]:
    """Histogram groups with many semantic sets pooled into one (the paper's four-way figure)."""
    semantic = [k for k in groups if k.startswith("semantic")]
    out = {k: np.asarray(v) for k, v in groups.items() if k not in semantic or len(semantic) <= max_sets}
    if len(semantic) > max_sets:
        out[f"semantic: all {len(semantic)} sets"] = np.concatenate([np.asarray(groups[k]) for k in semantic])
    return out


def write_report(path: str | Path, summary: dict[str, Any], energies: dict[str, dict[str, list]],
                 histories: dict[str, list]) -> Path:
    """A self-contained HTML page: headline table, energy histograms, ROC curves, training curves."""
    from . import viz

    figures = []
    for method, groups in energies.items():
        figures.append(viz.energy_histogram(_pool_semantic(groups),
                                            title=f"{method}: energy distributions (seed {summary['seeds'][0]})"))
        id_key = next((k for k in groups if k.startswith("ID")), None)
        sem = {k: np.asarray(v) for k, v in groups.items() if k.startswith("semantic")}
        if id_key and sem:
            figures.append(viz.roc_curves(np.asarray(groups[id_key]), sem,
                                          title=f"{method}: ROC, energy score"))
    for method, history in histories.items():
        if history:
            figures.append(viz.training_curves(history, title=f"{method}: training"))
    parts = [fig.to_html(full_html=False, include_plotlyjs=(i == 0)) for i, fig in enumerate(figures)]
    title = f"CRoFT Lab bench — {summary['benchmark']} / {summary['backbone']}"
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}} th{{background:#f4f4f4}}</style></head>
<body><h1>{html.escape(title)}</h1>
<p>{summary['shots']} shots per class, seeds {summary['seeds']}; mean ± std over seeds, in %.
Scores: higher = more in-distribution; FPR95 = OOD accepted at 95% ID TPR.</p>
{_html_table(summary)}
{''.join(parts)}
</body></html>"""
    path = Path(path)
    path.write_text(page, encoding="utf-8")
    return path
