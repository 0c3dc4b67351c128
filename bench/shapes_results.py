"""Markdown tables of the shapes comparison (docs/RESULTS_SHAPES.md) from `croft bench` summaries.

    python bench/shapes_results.py RUNS_DIR

RUNS_DIR holds one folder per benchmark: ``shapes/`` (Setup-I miniature) and, for ``shapes_dg``,
either ``shapes_dg/`` (`croft bench` sweeps ``heldout=[...]``, one sub-folder per style) or
``shapes_dg_<style>/`` (one held-out style each); each holds one or more `croft bench --out` folders
(one per method group, e.g. per grid), whose results are merged. Every number is mean ± std over the
seeds with its 95% t-interval, in % (``mean [low, high]``; "(1 seed)" where there is one). The
``shapes_dg`` tables come from the library's sweep summary
(:func:`croft_core.runs.report.sweep_summary`): a column per held-out style (from its own runs) and the
average over the styles present, taken per seed and then over seeds. After each benchmark's tables come
the library's statistics (:func:`croft_core.runs.report.statistics_markdown`): paired differences
against zero-shot and the best other method ("better"/"worse" only where the paired interval excludes
zero) and, for ``--search`` runs, the configuration chosen per seed; for ``shapes_dg`` also the paired
held-out accuracy differences per style; last, CRoFT against its own ablations (``croft_noedr``,
``croft_clean``), paired the same way, since "the best other method" rarely is one of them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

METHOD_ORDER = ("zeroshot", "linear_probe", "clip_adapter", "tip_adapter", "coop", "cocoop", "locoop",
                "croft", "croft_noedr", "croft_clean")
STYLES = ("photo", "sketch", "cartoon", "painting")
COMMON = (("id.accuracy", "ID acc"), ("semantic_all.energy.auroc", "energy AUROC"),
          ("semantic_all.energy.fpr95", "energy FPR95"), ("full_spectrum.energy.auroc", "full-spectrum AUROC"),
          ("full_spectrum.accuracy", "full-spectrum acc"))
ABLATIONS = ("croft_noedr", "croft_clean")  # compared with "croft" seed by seed
DG_METRICS = (("covariate.mean_accuracy", "Held-out-style accuracy"), ("id.accuracy", "ID accuracy (the three training styles)"),
              ("semantic_all.energy.auroc", "Semantic energy AUROC"), ("semantic_all.energy.fpr95", "Semantic energy FPR95"),
              ("full_spectrum.energy.auroc", "Full-spectrum AUROC"), ("full_spectrum.accuracy", "Full-spectrum accuracy"))


def _cell(stat: dict | None) -> str:
    from croft_core.runs.report import _interval_cell

    return _interval_cell(stat)


def _methods(summary: dict) -> list[str]:
    return [m for m in METHOD_ORDER if m in summary["methods"]] + \
           [m for m in summary["methods"] if m not in METHOD_ORDER]


def shapes_table(summary: dict) -> str:
    """Setup-I miniature: ID (photo), each covariate style, OOD and full-spectrum columns."""
    cols = [("id.accuracy", "photo (ID) acc")] + [(f"covariate/{s}.accuracy", f"{s} acc") for s in STYLES[1:]]
    cols += list(COMMON[1:])
    lines = ["| method | " + " | ".join(name for _, name in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for m in _methods(summary):
        stats = summary["methods"][m]
        lines.append(f"| {m} | " + " | ".join(_cell(stats.get(k)) for k, _ in cols) + " |")
    return "\n".join(lines)


def ablation_markdown(per_seed: dict[str, dict[int, dict[str, float]]], keys) -> str:
    """Paired differences of each ablation in :data:`ABLATIONS` against ``croft`` (same seed, same
    split), for the metrics ``keys``; "" when CRoFT or every ablation is missing."""
    from croft_core.runs.report import paired_comparisons, paired_markdown

    if "croft" not in per_seed or not any(m in per_seed for m in ABLATIONS):
        return ""
    paired = paired_comparisons({m: v for m, v in per_seed.items() if m == "croft" or m in ABLATIONS},
                                list(keys), baseline="croft")
    rows = {k: {m: {"vs_croft": r.get("vs_croft")} for m, r in v.items() if m in ABLATIONS} for k, v in paired.items()}
    table = paired_markdown({"paired": rows}, baseline="croft").splitlines()
    table = ["|".join(line.split("|")[:-2]) + "|" for line in table]  # without the (empty) "vs best other" column
    return ("CRoFT's ablations against CRoFT, paired differences in points (the ablation minus CRoFT):\n\n"
            + "\n".join(table))


def dg_tables(runs_by_style: dict[str, list[dict]]) -> str:
    """Leave-one-style-out: per metric, a column per held-out style and their average."""
    from croft_core.runs.report import sweep_summary

    styles = [s for s in STYLES if s in runs_by_style] + [s for s in runs_by_style if s not in STYLES]
    rank = {m: i for i, m in enumerate(METHOD_ORDER)}
    ordered = {s: sorted(runs_by_style[s], key=lambda r: (rank.get(r["method"], len(rank)), r["method"]))
               for s in styles}
    from croft_core.runs.report import paired_markdown, rejection_markdown, statistics_markdown, sweep_markdown

    summary = sweep_summary("heldout", ordered, metrics=DG_METRICS)
    parts = ["Cells: mean [95% t-interval over seeds], in %.", sweep_markdown(summary, cell=_cell)]
    # the sweep's rejection table has a column per (style, unseen set): given per style below instead
    parts.append(statistics_markdown({k: v for k, v in summary.items() if k != "rejection_at_tpr95"}))
    from croft_core.runs.report import _seed_averages

    ablations = ablation_markdown({m: _seed_averages(ordered, m) for m in summary["methods"]}, [k for k, _ in DG_METRICS])
    if ablations:
        parts.append(ablations)
    for style in styles:
        one = {"paired": {k: v for k, v in summary["runs"][style]["paired"].items() if k == "covariate.mean_accuracy"}}
        parts.append(f"Held-out accuracy, {style} held out, paired differences in points:\n\n" + paired_markdown(one))
        if summary["runs"][style].get("rejection_at_tpr95"):
            parts.append(f"{style} held out: share of each unseen set rejected at 95% acceptance of the known "
                         "images (1 - FPR95), mean [95% interval], %:\n\n" + rejection_markdown(summary["runs"][style]))
    return "\n\n".join(parts)


def dg_runs(root: Path) -> dict[str, list[dict]]:
    """Every ``shapes_dg`` run under ``root`` (either layout), by held-out style; a later file of the
    same (style, method, seed) replaces an earlier one."""
    runs: dict[tuple[str, str, int], dict] = {}
    for folder in sorted(root.glob("shapes_dg*")):
        for f in sorted(folder.rglob("*_seed*.json")):
            r = json.loads(f.read_text())
            if str(r.get("benchmark", "")).startswith("shapes_dg_"):
                runs[(r["benchmark"].removeprefix("shapes_dg_"), r["method"], r["seed"])] = r
    out: dict[str, list[dict]] = {}
    for (style, _, _), r in runs.items():
        out.setdefault(style, []).append(r)
    return out


def _runs(folder: Path) -> dict[tuple[str, int], dict]:
    """Every run under ``folder`` by (method, seed); a later file of the same pair replaces an earlier one."""
    runs = {}
    for f in sorted(folder.rglob("*_seed*.json")):
        r = json.loads(f.read_text())
        runs[(r["method"], r["seed"])] = r
    return runs


def load(folder: Path) -> dict | None:
    """The summary of every run under ``folder`` (any number of ``croft bench`` folders, e.g. one per
    method group), recomputed from the per-run JSON files so the paired differences cover every
    method; a later file of the same (method, seed) replaces an earlier one. None if there is none."""
    from croft_core.runs.report import summarize

    runs = _runs(folder)
    if not runs:
        return None
    rank = {m: i for i, m in enumerate(METHOD_ORDER)}
    return summarize(sorted(runs.values(), key=lambda r: (rank.get(r["method"], len(rank)), r["method"], r["seed"])))


def main(runs_dir: str) -> None:
    root = Path(runs_dir)
    shapes = load(root / "shapes")
    if shapes is not None:
        print("## shapes (Setup-I miniature)\n")
        print(shapes_table(shapes) + "\n")
        from croft_core.runs.report import HEADLINE, flatten, statistics_markdown

        print(statistics_markdown(shapes) + "\n")
        per_seed: dict[str, dict[int, dict[str, float]]] = {}
        for r in _runs(root / "shapes").values():
            per_seed.setdefault(r["method"], {})[r["seed"]] = flatten(r)
        ablations = ablation_markdown(per_seed, [k for k, _ in HEADLINE])
        if ablations:
            print(ablations + "\n")
    dg = dg_runs(root)
    if dg:
        print("## shapes_dg (Setup-II miniature, leave-one-style-out)\n")
        print(dg_tables(dg))


if __name__ == "__main__":
    main(sys.argv[1])
