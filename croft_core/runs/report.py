"""Summaries over seeds and the self-contained HTML report of ``croft bench`` (one run or a sweep)."""

from __future__ import annotations

import html
import math
import statistics
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

HEADLINE = (("id.accuracy", "ID acc"), ("covariate.mean_accuracy", "covariate acc"),
            ("semantic_all.energy.auroc", "energy AUROC"), ("semantic_all.energy.fpr95", "energy FPR95"),
            ("semantic_all.mcm.auroc", "MCM AUROC"), ("semantic_all.knn.auroc", "KNN AUROC"),
            ("semantic_all.neglabel.auroc", "NegLabel AUROC"), ("semantic_all.neglabel.fpr95", "NegLabel FPR95"),
            ("semantic_all.glmcm.auroc", "GL-MCM AUROC"),
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


# ---- statistics over seeds ------------------------------------------------------------------------

CONFIDENCE = 0.95
NO_DIFFERENCE = "no detectable difference"


def lower_is_better(key: str) -> bool:
    """Whether a smaller value of the flattened metric ``key`` is better (FPR95)."""
    return "fpr95" in key


def t_interval(vals: Sequence[float], confidence: float = CONFIDENCE) -> list[float] | None:
    """The t-based ``confidence`` interval of the mean of ``vals`` (None for fewer than two values)."""
    from scipy.stats import t as student_t

    if len(vals) < 2:
        return None
    mean, sem = statistics.fmean(vals), statistics.stdev(vals) / math.sqrt(len(vals))
    half = float(student_t.ppf(0.5 + confidence / 2, len(vals) - 1)) * sem
    return [mean - half, mean + half]


def _stat(vals: Sequence[float]) -> dict[str, Any]:
    """Mean, standard deviation, n and the 95% t-interval of the mean of per-seed values."""
    return {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
            "n": len(vals), "ci95": t_interval(vals)}


def paired_difference(a: dict[int, float], b: dict[int, float], key: str) -> dict[str, Any] | None:
    """``a - b`` over the seeds both have (same seed = same split), its 95% interval and a verdict.

    The verdict is ``"better"`` / ``"worse"`` (for ``a``, with the metric's direction) only where the
    interval excludes zero, and :data:`NO_DIFFERENCE` otherwise (also with fewer than two seeds).
    """
    seeds = sorted(s for s in set(a) & set(b) if not (math.isnan(a[s]) or math.isnan(b[s])))
    if not seeds:
        return None
    diffs = [a[s] - b[s] for s in seeds]
    ci = t_interval(diffs)
    verdict = NO_DIFFERENCE
    if ci is not None and (ci[0] > 0 or ci[1] < 0):
        verdict = "better" if (ci[0] > 0) != lower_is_better(key) else "worse"
    return {"mean": statistics.fmean(diffs), "ci95": ci, "n": len(seeds), "verdict": verdict}


def paired_comparisons(per_seed: dict[str, dict[int, dict[str, float]]], keys: Sequence[str],
                       baseline: str = "zeroshot") -> dict[str, dict[str, dict[str, Any]]]:
    """Per metric and method: the paired difference against ``baseline`` and against the best other
    method (by mean, with the metric's direction).

    Args:
        per_seed: method -> seed -> flattened metrics of that seed.
        keys: the metrics to compare.
    """
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for key in keys:
        values = {m: {s: f[key] for s, f in seeds.items() if key in f and not math.isnan(f[key])}
                  for m, seeds in per_seed.items()}
        means = {m: statistics.fmean(v.values()) for m, v in values.items() if v}
        rows = {}
        for method, vals in values.items():
            if not vals:
                continue
            row: dict[str, Any] = {}
            if baseline in means and method != baseline:
                row["vs_" + baseline] = paired_difference(vals, values[baseline], key)
            others = [m for m in means if m != method]
            if others:
                pick = min if lower_is_better(key) else max
                best = pick(others, key=lambda m: means[m])
                row["vs_best_other"] = {"other": best, **(paired_difference(vals, values[best], key) or {})}
            rows[method] = row
        out[key] = rows
    return out


def _search_records(runs: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Per method, the configuration ``--search`` chose for each seed and its edge options."""
    out: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        if "search" in r:
            s = r["search"]
            out.setdefault(r["method"], []).append({
                "seed": r["seed"], "chosen": s["chosen"], "on_edge": s["on_edge"],
                "val_accuracy": s["val_accuracy"], "budget": s["budget"]})
    return out


REJECTION_SCORES = ("energy", "neglabel")
"""Scores whose per-set rejection at 95% acceptance the report gives (where the results have them)."""


def rejection_at_tpr95(runs: Sequence[dict[str, Any]],
                       scores: Sequence[str] = REJECTION_SCORES) -> dict[str, dict[str, dict[str, dict]]]:
    """Per method, score and unseen (semantic) set: the share of the set rejected while 95% of the
    known images (the detection's ID side) are accepted, ``1 - fpr95`` of that set, over seeds.

    Returns:
        ``{method: {score: {set name: {"mean", "std", "n", "ci95"}}}}``; a score or set the results
        lack is left out.
    """
    values: dict[str, dict[str, dict[str, list[float]]]] = {}
    for r in runs:
        for entry in r.get("semantic", []):
            for score in scores:
                fpr = entry.get("scores", {}).get(score, {}).get("fpr95")
                if fpr is not None and not math.isnan(fpr):
                    values.setdefault(r["method"], {}).setdefault(score, {}).setdefault(
                        entry["name"], []).append(1.0 - fpr)
    return {m: {sc: {name: _stat(v) for name, v in sets.items()} for sc, sets in per.items()}
            for m, per in values.items()}


def rejection_markdown(summary: dict[str, Any]) -> str:
    """:func:`rejection_at_tpr95` as one table: a row per method and score, a column per unseen set,
    mean [95% t-interval over seeds] in %."""
    table = summary.get("rejection_at_tpr95", {})
    sets = list(dict.fromkeys(n for per in table.values() for s in per.values() for n in s))
    lines = ["| method | score | " + " | ".join(sets) + " |", "|---" * (len(sets) + 2) + "|"]
    for method, per in table.items():
        for score, row in per.items():
            lines.append(f"| {method} | {score} | " + " | ".join(_interval_cell(row.get(n)) for n in sets) + " |")
    return "\n".join(lines)


def summarize(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean, standard deviation and 95% t-interval over seeds of every metric, per method; paired
    differences of the headline metrics (against zero-shot and the best other method); the
    configurations a ``--search`` chose; the ID side of detection."""
    by_method: dict[str, list[dict[str, float]]] = {}
    per_seed: dict[str, dict[int, dict[str, float]]] = {}
    for r in runs:
        flat = flatten(r)
        by_method.setdefault(r["method"], []).append(flat)
        per_seed.setdefault(r["method"], {})[r["seed"]] = flat
    methods = {}
    for method, flats in by_method.items():
        keys = sorted(set().union(*flats))
        methods[method] = {}
        for k in keys:
            vals = [f[k] for f in flats if k in f and not math.isnan(f[k])]
            if vals:
                methods[method][k] = _stat(vals)
    first = runs[0] if runs else {}
    out = {"benchmark": first.get("benchmark"), "backbone": first.get("backbone"),
           "shots": first.get("shots"), "seeds": sorted({r["seed"] for r in runs}),
           "methods": methods, "paired": paired_comparisons(per_seed, [k for k, _ in HEADLINE])}
    rejection = rejection_at_tpr95(runs)
    if rejection:
        out["rejection_at_tpr95"] = rejection
    if "detection" in first:
        out["detection"] = first["detection"]
    search = _search_records(runs)
    if search:
        out["search"] = search
    return out


SWEEP_METRICS = (("id.accuracy", "ID accuracy"), ("covariate.mean_accuracy", "covariate (held-out) accuracy"),
                 ("semantic_all.energy.auroc", "semantic energy AUROC"),
                 ("semantic_all.energy.fpr95", "semantic energy FPR95"),
                 ("full_spectrum.energy.auroc", "full-spectrum energy AUROC"),
                 ("full_spectrum.accuracy", "full-spectrum accuracy"))


def _seed_averages(runs_by_value: dict[str, Sequence[dict]], method: str) -> dict[int, dict[str, float]]:
    """Per seed, the mean of every metric over the sweep's values (where every value has it)."""
    flats = [{r["seed"]: flatten(r) for r in runs if r["method"] == method} for runs in runs_by_value.values()]
    seeds = sorted(set.intersection(*(set(f) for f in flats)))
    keys = set.intersection(*(set(f[s]) for f in flats for s in seeds)) if seeds else set()
    return {s: {k: statistics.fmean(f[s][k] for f in flats) for k in sorted(keys)} for s in seeds}


def _average_over_values(runs_by_value: dict[str, Sequence[dict]], method: str) -> dict[str, dict]:
    """Per seed, the mean over the sweep's values; then mean ± std (and 95% interval) over the seeds.

    A metric (or a seed) counts only where every value has it, so the average's mean is the mean of
    the columns' means whenever the columns share their seeds.
    """
    per_seed = _seed_averages(runs_by_value, method)
    keys = set().union(*per_seed.values()) if per_seed else set()
    out = {}
    for k in sorted(keys):
        vals = [f[k] for f in per_seed.values() if k in f and not math.isnan(f[k])]
        if vals:
            out[k] = _stat(vals)
    return out


def sweep_summary(arg: str, runs_by_value: dict[str, Sequence[dict[str, Any]]], *,
                  values: Sequence[Any] | None = None, metrics=SWEEP_METRICS) -> dict[str, Any]:
    """The combined summary of a sweep: one bench per value of the benchmark option ``arg``.

    Args:
        arg: the swept benchmark option (e.g. ``heldout``).
        runs_by_value: column name -> that value's results dicts (every method x seed).
        values: the option's values as given (default: the column names).
        metrics: ``(flattened key, label)`` of the per-metric tables.

    Returns:
        ``runs`` (each value's :func:`summarize`), ``tables`` (per metric: method -> column ->
        mean ± std over seeds, plus ``average``) and ``methods`` (the average of every metric, so
        :func:`markdown_table`'s consumers keep working).
    """
    if not runs_by_value or not all(runs_by_value.values()):
        raise ValueError(f"a sweep over {arg!r} has no runs for some value; run the bench first")
    per_value = {v: summarize(runs) for v, runs in runs_by_value.items()}
    methods = list(dict.fromkeys(r["method"] for runs in runs_by_value.values() for r in runs))
    averages = {m: _average_over_values(runs_by_value, m) for m in methods}
    tables = {key: {"label": label, "methods": {
        m: {**{v: s["methods"].get(m, {}).get(key) for v, s in per_value.items()},
            "average": averages[m].get(key)} for m in methods}} for key, label in metrics}
    first = next(iter(per_value.values()))
    per_seed = {m: _seed_averages(runs_by_value, m) for m in methods}
    out = {"benchmark": first["benchmark"], "backbone": first["backbone"], "shots": first["shots"],
           "seeds": sorted({s for v in per_value.values() for s in v["seeds"]}),
           "sweep": {"arg": arg, "values": list(values if values is not None else runs_by_value),
                     "columns": list(runs_by_value)}, "tables": tables,
           "methods": averages, "runs": per_value,
           "paired": paired_comparisons(per_seed, [k for k, _ in metrics])}
    rejection: dict[str, dict[str, dict[str, dict]]] = {}
    for value, runs in runs_by_value.items():  # one column per (unseen set, swept value)
        for method, per in rejection_at_tpr95(runs).items():
            for score, sets in per.items():
                rejection.setdefault(method, {}).setdefault(score, {}).update(
                    {f"{name} ({arg}={value})": stat for name, stat in sets.items()})
    if rejection:
        out["rejection_at_tpr95"] = rejection
    if "detection" in first:
        out["detection"] = first["detection"]
    search: dict[str, list] = {}
    for value, summary in per_value.items():
        for method, records in summary.get("search", {}).items():
            search.setdefault(method, []).extend({**r, arg: value} for r in records)
    if search:
        out["search"] = search
    return out


def _cell(stat: dict | None) -> str:
    return "–" if stat is None else f"{100 * stat['mean']:.1f} ± {100 * stat['std']:.1f}"


def sweep_markdown(summary: dict[str, Any], cell: Callable[[dict | None], str] | None = None) -> str:
    """One Markdown table per metric: a column per swept value, then their average (``cell`` of each
    statistic; default mean ± std, %; ``_interval_cell`` gives mean [95% interval])."""
    cell = cell or _cell
    columns = summary["sweep"]["columns"]
    parts = []
    for table in summary["tables"].values():
        lines = [f"{table['label']}, by {summary['sweep']['arg']}:", "",
                 "| method | " + " | ".join(columns) + " | average |", "|---" * (len(columns) + 2) + "|"]
        for method, row in table["methods"].items():
            lines.append(f"| {method} | " + " | ".join(cell(row[c]) for c in [*columns, "average"]) + " |")
        parts.append("\n".join(lines))
    return "\n\n".join(parts)


def markdown_table(summary: dict[str, Any], columns=HEADLINE) -> str:
    """The headline table (mean ± std, in %) as Markdown, for the README; a sweep's summary gives
    its per-metric tables (:func:`sweep_markdown`)."""
    if "sweep" in summary:
        return sweep_markdown(summary)
    head = "| method | " + " | ".join(label for _, label in columns) + " |"
    rule = "|---" * (len(columns) + 1) + "|"
    rows = []
    for method, stats in summary["methods"].items():
        cells = [_cell(stats.get(key)) for key, _ in columns]
        rows.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join([head, rule, *rows])


def _interval_cell(stat: dict | None) -> str:
    if stat is None:
        return "–"
    ci = stat.get("ci95")
    return f"{100 * stat['mean']:.1f}" + (f" [{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]" if ci else " (1 seed)")


def interval_markdown(summary: dict[str, Any], columns=HEADLINE) -> str:
    """The headline metrics as mean [95% t-interval over seeds], in %."""
    columns = [(k, label) for k, label in columns if any(k in st for st in summary["methods"].values())]
    head = "| method | " + " | ".join(label for _, label in columns) + " |"
    rows = [f"| {m} | " + " | ".join(_interval_cell(st.get(k)) for k, _ in columns) + " |"
            for m, st in summary["methods"].items()]
    return "\n".join([head, "|---" * (len(columns) + 1) + "|", *rows])


def _diff_cell(d: dict | None) -> str:
    if not d or "mean" not in d:
        return "–"
    ci = d.get("ci95")
    interval = f" [{100 * ci[0]:+.1f}, {100 * ci[1]:+.1f}]" if ci else ""
    return f"{100 * d['mean']:+.1f}{interval} {d['verdict']}"


def paired_markdown(summary: dict[str, Any], baseline: str = "zeroshot") -> str:
    """Paired differences (same seed, same split) per headline metric, in points: against
    ``baseline`` and against the best other method, with their 95% intervals and the verdict
    ("better" / "worse" only where the interval excludes zero)."""
    labels = dict(HEADLINE) | dict(SWEEP_METRICS)
    lines = ["| metric | method | vs " + baseline + " | vs best other |", "|---|---|---|---|"]
    for key, rows in summary.get("paired", {}).items():
        for method, row in rows.items():
            best = row.get("vs_best_other") or {}
            other = f" ({best['other']})" if best.get("other") else ""
            lines.append(f"| {labels.get(key, key)} | {method} | {_diff_cell(row.get('vs_' + baseline))} | "
                         f"{_diff_cell(best)}{other} |")
    return "\n".join(lines)


def search_markdown(summary: dict[str, Any]) -> str:
    """The configuration ``--search`` chose per method and seed, with the options on the space's edge."""
    lines = ["| method | seed | chosen configuration | on the edge | val acc |", "|---|---|---|---|---|"]
    for method, records in summary.get("search", {}).items():
        for r in records:
            config = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in r["chosen"].items())
            where = "".join(f" {k}={v}" for k, v in r.items()
                            if k not in ("seed", "chosen", "on_edge", "val_accuracy", "budget"))
            lines.append(f"| {method} | {r['seed']}{where} | {config} | {', '.join(r['on_edge']) or 'no'} | "
                         f"{100 * r['val_accuracy']:.1f} |")
    return "\n".join(lines)


def statistics_markdown(summary: dict[str, Any]) -> str:
    """Everything a reader needs to judge the table: intervals, paired differences, chosen configs."""
    parts = []
    if "detection" in summary:
        d = summary["detection"]
        parts.append(f"Detection ID side: `{d['id_side']}`, {d['description']}.")
    if "sweep" not in summary:
        parts.append("Mean [95% t-interval over seeds], in %:\n\n" + interval_markdown(summary))
    parts.append("Paired differences (same seed, same split), in points, with 95% t-intervals"
                 + (" (per seed, averaged over the swept values)" if "sweep" in summary else "") + ":\n\n"
                 + paired_markdown(summary))
    if summary.get("rejection_at_tpr95"):
        parts.append("Share of each unseen set rejected while 95% of the known images (the detection's ID "
                     "side) are accepted, 1 - FPR95 per set, mean [95% t-interval over seeds], in %:\n\n"
                     + rejection_markdown(summary))
    if summary.get("search"):
        parts.append("Configurations chosen on validation (`--search`):\n\n" + search_markdown(summary))
    return "\n\n".join(parts)


def _html_table(summary: dict[str, Any], md: str | None = None) -> str:
    md = (md or markdown_table(summary)).splitlines()
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


def _page(title: str, body: str) -> str:
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}} th{{background:#f4f4f4}}</style></head>
<body><h1>{html.escape(title)}</h1>
{body}
</body></html>"""


def _statistics_html(summary: dict[str, Any]) -> str:
    """:func:`statistics_markdown` as HTML: paragraphs and tables."""
    out = []
    for block in statistics_markdown(summary).split("\n\n"):
        if block.startswith("|"):
            out.append(_html_table(summary, block))
        else:
            out.append(f"<p>{html.escape(block)}</p>")
    return "\n".join(out)


def write_sweep_report(path: str | Path, summary: dict[str, Any]) -> Path:
    """The HTML page of a sweep: a table per metric (a column per value, then the average) and a
    link to each value's own report (figures) in the sub-folder named by the value."""
    sweep = summary["sweep"]
    links = " · ".join(f'<a href="{html.escape(c)}/report.html">{html.escape(c)}</a>' for c in sweep["columns"])
    tables = []
    for key, table in summary["tables"].items():
        one = {**summary, "tables": {key: table}}
        md = "\n".join(line for line in sweep_markdown(one).splitlines()[2:])
        tables.append(f"<h2>{html.escape(table['label'])}</h2>\n{_html_table(one, md)}")
    body = (f"<p>One bench per value of <code>{html.escape(sweep['arg'])}</code>; {summary['shots']} shots "
            f"per class, seeds {summary['seeds']}; mean ± std over seeds, in %. The average is taken per "
            f"seed over the values, then mean ± std over seeds. FPR95 = OOD accepted at 95% ID TPR.</p>\n"
            f"<p>Per-value reports (figures): {links}</p>\n" + "\n".join(tables)
            + "\n" + _statistics_html(summary))
    title = f"CRoFT Lab bench — {summary['benchmark']} / {summary['backbone']}, sweep over {sweep['arg']}"
    path = Path(path)
    path.write_text(_page(title, body), encoding="utf-8")
    return path


def wise_rows(summary: dict[str, Any]) -> list[tuple[str, float, dict[str, dict]]]:
    """The WiSE curves of a summary (``croft bench --wise``): ``(method, alpha, {column: stat})``
    rows, columns ID accuracy, mean covariate accuracy and energy AUROC."""
    rows = []
    for method, metrics in summary.get("methods", {}).items():
        points = sorted((v["mean"], k[:-len("alpha")]) for k, v in metrics.items()
                        if k.startswith("wise/") and k.endswith(".alpha"))
        for a, prefix in points:
            covs = [v["mean"] for k, v in metrics.items()
                    if k.startswith(prefix + "covariate_accuracy.")]
            cells = {"ID acc": metrics.get(prefix + "id_accuracy"),
                     "covariate acc": {"mean": float(np.mean(covs)), "std": 0.0} if covs else None,
                     "energy AUROC": metrics.get(prefix + "auroc.energy")}
            rows.append((method, a, cells))
    return rows


def _wise_html(summary: dict[str, Any]) -> str:
    rows = wise_rows(summary)
    if not rows:
        return ""
    cols = ["ID acc", "covariate acc", "energy AUROC"]
    head = "".join(f"<th>{c}</th>" for c in ["method", "alpha", *cols])
    body = "".join(f"<tr><td>{html.escape(m)}</td><td>{a:g}</td>"
                   + "".join(f"<td>{html.escape(_cell(cells[c]))}</td>" for c in cols) + "</tr>"
                   for m, a, cells in rows)
    return (f"<h2>WiSE: head weights interpolated toward zero-shot (alpha = 1: fine-tuned)</h2>"
            f"<table><tr>{head}</tr>{body}</table>")


def write_report(path: str | Path, summary: dict[str, Any], energies: dict[str, dict[str, list]],
                 histories: dict[str, list]) -> Path:
    """A self-contained HTML page: headline table, energy histograms, ROC curves, training curves."""
    from croft_core.runs import figures as viz
    figures = []
    for method, groups in energies.items():
        figures.append(viz.energy_histogram(_pool_semantic(groups),
                                            title=f"{method}: energy distributions (seed {summary['seeds'][0]})"))
        id_key = (next((k for k in groups if k.startswith("ID side")), None)  # the detection's own side
                  or next((k for k in groups if k.startswith("ID")), None))
        sem = {k: np.asarray(v) for k, v in groups.items() if k.startswith("semantic")}
        if id_key and sem:
            figures.append(viz.roc_curves(np.asarray(groups[id_key]), sem,
                                          title=f"{method}: ROC, energy score"))
    for method, history in histories.items():
        if history:
            figures.append(viz.training_curves(history, title=f"{method}: training"))
    parts = [fig.to_html(full_html=False, include_plotlyjs=(i == 0)) for i, fig in enumerate(figures)]
    title = f"CRoFT Lab bench — {summary['benchmark']} / {summary['backbone']}"
    body = f"""<p>{summary['shots']} shots per class, seeds {summary['seeds']}; mean ± std over seeds, in %.
Scores: higher = more in-distribution; FPR95 = OOD accepted at 95% ID TPR.</p>
{_html_table(summary)}
{_statistics_html(summary)}
{_wise_html(summary)}
{''.join(parts)}"""
    path = Path(path)
    path.write_text(_page(title, body), encoding="utf-8")
    return path
