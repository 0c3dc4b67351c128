"""Markdown tables of the shapes comparison (docs/RESULTS_SHAPES.md) from `croft bench` summaries.

    python bench/shapes_results.py RUNS_DIR

RUNS_DIR holds one folder per benchmark: ``shapes/`` (Setup-I miniature) and ``shapes_dg_<style>/``
for each held-out style of ``shapes_dg``; each holds one or more `croft bench --out` folders (one per
method group, e.g. per grid), whose ``summary.json`` files are merged. Every number is mean ± std over the
seeds of the bench, in %; a held-out style's columns come from its own bench, "average" is the mean
over the held-out styles present (as PACS tables report them).
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

METHOD_ORDER = ("zeroshot", "linear_probe", "clip_adapter", "tip_adapter", "croft", "croft_noedr", "croft_clean")
STYLES = ("photo", "sketch", "cartoon", "painting")
COMMON = (("id.accuracy", "ID acc"), ("semantic_all.energy.auroc", "energy AUROC"),
          ("semantic_all.energy.fpr95", "energy FPR95"), ("full_spectrum.energy.auroc", "full-spectrum AUROC"),
          ("full_spectrum.accuracy", "full-spectrum acc"))


def _cell(stat: dict | None) -> str:
    return "–" if stat is None else f"{100 * stat['mean']:.1f} ± {100 * stat['std']:.1f}"


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


def _mean_over(stats: list[dict | None]) -> dict | None:
    """Mean of per-held-out means, and the mean of their stds (each over the seeds)."""
    present = [s for s in stats if s is not None]
    if not present:
        return None
    return {"mean": statistics.fmean(s["mean"] for s in present),
            "std": statistics.fmean(s["std"] for s in present)}


def dg_tables(summaries: dict[str, dict]) -> str:
    """Leave-one-style-out: held-out-style accuracy per style + average, then the averaged rest."""
    styles = [s for s in STYLES if s in summaries]
    methods = _methods(next(iter(summaries.values())))
    head = ["| method | " + " | ".join(f"{s} held out" for s in styles) + " | average |",
            "|---" * (len(styles) + 2) + "|"]
    for m in methods:
        cells = [summaries[s]["methods"].get(m, {}).get(f"covariate/{s}.accuracy") for s in styles]
        head.append(f"| {m} | " + " | ".join(_cell(c) for c in cells) + f" | {_cell(_mean_over(cells))} |")
    rest = ["| method (average over held-out styles) | " + " | ".join(n for _, n in COMMON) + " |",
            "|---" * (len(COMMON) + 1) + "|"]
    for m in methods:
        cells = [_mean_over([summaries[s]["methods"].get(m, {}).get(k) for s in styles]) for k, _ in COMMON]
        rest.append(f"| {m} | " + " | ".join(_cell(c) for c in cells) + " |")
    return "Held-out-style accuracy:\n\n" + "\n".join(head) + "\n\n" + "\n".join(rest)


def load(folder: Path) -> dict | None:
    """The merged summary of every ``croft bench`` folder under ``folder`` (None if there is none)."""
    files = sorted(folder.glob("*/summary.json")) + sorted(folder.glob("summary.json"))
    if not files:
        return None
    merged = json.loads(files[0].read_text())
    for f in files[1:]:
        merged["methods"].update(json.loads(f.read_text())["methods"])
    return merged


def main(runs_dir: str) -> None:
    root = Path(runs_dir)
    shapes = load(root / "shapes")
    if shapes is not None:
        print("## shapes (Setup-I miniature)\n")
        print(shapes_table(shapes) + "\n")
    dg = {s: d for s in STYLES if (d := load(root / f"shapes_dg_{s}")) is not None}
    if dg:
        print("## shapes_dg (Setup-II miniature, leave-one-style-out)\n")
        print(dg_tables(dg))


if __name__ == "__main__":
    main(sys.argv[1])
