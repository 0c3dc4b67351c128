"""What the app shows, computed without Gradio: verdict text, tables, JSON, plot groups, inputs.

The Gradio app (``app.py``) only turns component values into calls of this module and of
:mod:`croft_app.service.classifier`, and their results into component values. Everything here is plain
Python (strings, lists, dicts, numpy arrays), so it is tested once, in ``tests/test_present.py``.

Scores follow the project's convention: the energy ``S(x) = logsumexp_k(tau * cos)`` is higher for
in-distribution images, and an image is accepted when ``S(x) >= threshold``.
"""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from croft_app.service.classifier import Prediction
from croft_app.service.security import check_number, scrub_paths, short_repr
from croft_core.seeds import EXAMPLE_STREAM

__all__ = ["BATCH_HEADERS", "EXAMPLES", "MAX_SEED", "TABLE_HEADERS", "batch_rows", "caption", "check_result",
           "decision_markdown", "energy_groups", "json_safe", "parse_seed",
           "render_examples", "results_filename", "results_table", "roc_sets", "without_paths"]

BATCH_HEADERS = ["file", "label", "closest class", "energy", "probability", "error"]
TABLE_HEADERS = ["set", "kind", "n", "accuracy", "energy AUROC", "energy FPR95"]
MAX_SEED = 2**32 - 1  # numpy and torch both accept it; larger seeds are user errors
EXAMPLES = (  # (shape, style, what it shows) rendered from the shapes world
    ("circle", "photo", "in-distribution photo"),
    ("star", "sketch", "covariate shift: a sketch"),
    ("heart", "cartoon", "covariate shift: a cartoon"),
    ("pentagon", "photo", "semantic shift: an unseen shape"),
)
EXAMPLE_SIZE = 224


# --------------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------------

def parse_seed(value: Any, default: int = 1) -> int:
    """A seed typed by a user: empty -> ``default``; a whole number in ``[0, MAX_SEED]``.

    Raises:
        ValueError: not a whole number, negative, or above :data:`MAX_SEED`.
    """
    message = f"seed must be a whole number from 0 to {MAX_SEED}, got {short_repr(value)}"
    number = check_number(value, message)
    if number is None:
        return default
    if not number.is_integer() or not 0 <= number <= MAX_SEED:
        raise ValueError(message)
    return int(number)


# --------------------------------------------------------------------------------------------------
# Classify
# --------------------------------------------------------------------------------------------------

def decision_markdown(p: Mapping[str, Any]) -> str:
    """The verdict in words: the class or "unknown", the score against the threshold, and why.

    Args:
        p: a ``/classify`` result (:meth:`Prediction.to_dict` plus ``model``).
    """
    score, threshold = p["score"], p["threshold"]
    top = p["predicted_class"]
    top_prob = p["probabilities"].get(top, 0.0)
    if threshold is None:
        head = f"## {top}\n\nenergy score **{score:.2f}**, no threshold: closed-set prediction."
    elif p["accepted"]:
        head = (f"## {top}\n\nenergy score **{score:.2f}** ≥ threshold **{threshold:.2f}**: "
                f"in-distribution, accepted.")
    else:
        head = (f"## unknown\n\nenergy score **{score:.2f}** < threshold **{threshold:.2f}**: this "
                f"image looks less like the known classes than the ID reference images, so it is "
                f"rejected (closest class: {top}, {top_prob:.0%}).")
    lines = [head, f"\n*model:* `{p.get('model', '')}` · *threshold:* {p['threshold_source']}"]
    lines += [f"\n- {n}" for n in p.get("notes", [])]
    lines += [f"\n- ⚠️ {w}" for w in p.get("warnings", [])]
    return "".join(lines)


MAX_RESULT_CLASSES = 1000
MAX_NOTE_CHARS = 2000


def check_result(result: Any) -> dict[str, Any]:
    """A ``/classify`` result sent back by a browser, checked before it is shown or plotted.

    Raises:
        ValueError: not the shape :meth:`Prediction.to_dict` gives (types, sizes, finite numbers).
    """
    def fail(what: str) -> ValueError:
        return ValueError(f"this is not a /classify result ({what}); classify the image again")

    if not isinstance(result, dict):
        raise fail("not a JSON object")
    for key in ("score", "threshold"):
        value = result.get(key)
        if key == "threshold" and value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise fail(f"{key} is not a finite number")
    probabilities = result.get("probabilities")
    if (not isinstance(probabilities, dict) or len(probabilities) > MAX_RESULT_CLASSES
            or not all(isinstance(k, str) and isinstance(v, (int, float)) for k, v in probabilities.items())):
        raise fail("probabilities is not a class -> number object")
    notes, warnings = result.get("notes", []), result.get("warnings", [])
    if not isinstance(notes, list) or not isinstance(warnings, list) or len(notes) + len(warnings) > 100:
        raise fail("notes and warnings are not short lists")
    texts = [result.get(k) for k in ("label", "predicted_class", "threshold_source", "model")]
    if not all(isinstance(t, str) and len(t) <= MAX_NOTE_CHARS for t in [*texts, *notes, *warnings]):
        raise fail("a text field is missing or too long")
    if not isinstance(result.get("accepted"), bool):
        raise fail("accepted is not a boolean")
    return result


def caption(prediction: Prediction) -> str:
    """A one-line gallery caption: the verdict and the energy."""
    p = prediction
    verdict = p.label if p.accepted else f"unknown (closest: {p.predicted_class})"
    return f"{verdict} · energy {p.score:.2f}"


def batch_rows(names: Sequence[str], predictions: Sequence[Prediction],
               errors: Sequence[tuple[str, str]] = ()) -> list[list[Any]]:
    """Rows of :data:`BATCH_HEADERS`: unusable files first (with the reason), then predictions."""
    rows: list[list[Any]] = [[name, "error", None, None, None, reason] for name, reason in errors]
    for name, p in zip(names, predictions):
        rows.append([name, p.label, p.predicted_class, round(p.score, 4),
                     round(p.probabilities[p.predicted_class], 4), ""])
    return rows


# --------------------------------------------------------------------------------------------------
# Lab
# --------------------------------------------------------------------------------------------------

def json_safe(value: Any) -> Any:
    """Plain JSON types, with NaN / infinity as ``None`` (JSON has neither)."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def without_paths(value: Any) -> Any:
    """The same JSON value with every absolute path in its strings shortened to ``…/<name>``
    (results shown to visitors must not reveal the server's layout)."""
    if isinstance(value, dict):
        return {k: without_paths(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_paths(v) for v in value]
    return scrub_paths(value) if isinstance(value, str) else value


def results_table(results: Mapping[str, Any]) -> list[list[Any]]:
    """Rows of :data:`TABLE_HEADERS` (``[set, kind, n, accuracy, energy AUROC, energy FPR95]``)."""
    def r(x):
        return None if x is None else round(float(x), 4)

    rows = [[results["id"]["name"], "ID", results["id"]["n"], r(results["id"]["accuracy"]), None, None]]
    rows += [[c["name"], "covariate", c["n"], r(c["accuracy"]), None, None] for c in results["covariate"]]
    for s in results["semantic"]:
        e = s["scores"].get("energy", {})
        rows.append([s["name"], "semantic", s["n"], None, r(e.get("auroc")), r(e.get("fpr95"))])
    if "semantic_all" in results:
        e = results["semantic_all"]["energy"]
        side = results.get("detection", {})  # the ID side, when it is not the ID test split
        label = ("all semantic" if side.get("id_side", "id_test") == "id_test"
                 else f"all semantic (vs correctly classified {', '.join(side['sets'])})")
        rows.append([label, "semantic", sum(s["n"] for s in results["semantic"]), None,
                     r(e["auroc"]), r(e["fpr95"])])
    if "full_spectrum" in results:
        e = results["full_spectrum"]["energy"]
        rows.append(["full spectrum (ID + covariate vs semantic)", "full-spectrum", None,
                     r(results["full_spectrum"].get("accuracy")), r(e["auroc"]), r(e["fpr95"])])
    return rows


def energy_groups(energies: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Histogram groups: ID and covariate sets as they are, every semantic set pooled into one.

    A benchmark may have a dozen unseen-class sets; one pooled group keeps the figure readable (the
    paper's figure shows ID / covariate / semantic). Keys of ``energies`` start with ``"ID"``,
    ``"covariate"`` or ``"semantic"``.
    """
    semantic = [k for k in energies if k.startswith("semantic")]
    groups = {k: np.asarray(v, dtype=np.float64) for k, v in energies.items() if k not in semantic}
    if semantic:
        groups[f"semantic: all {len(semantic)} unseen set(s)"] = np.concatenate(
            [np.asarray(energies[k], dtype=np.float64) for k in semantic])
    return groups


def roc_sets(energies: Mapping[str, Any]) -> tuple[np.ndarray, dict[str, np.ndarray]] | None:
    """``(id_scores, {unseen set: scores})`` for ROC curves, or ``None`` without ID or semantic sets."""
    id_key = next((k for k in energies if k.startswith("ID")), None)
    ood = {k.removeprefix("semantic: "): np.asarray(v, dtype=np.float64)
           for k, v in energies.items() if k.startswith("semantic")}
    if id_key is None or not ood:
        return None
    return np.asarray(energies[id_key], dtype=np.float64), ood


def results_filename(results: Mapping[str, Any]) -> str:
    """``results-<benchmark>-<method>-seed<seed>.json`` with only ``[A-Za-z0-9_.-]`` characters."""
    stem = f"{results.get('benchmark')}-{results.get('method')}-seed{results.get('seed')}"
    return f"results-{re.sub(r'[^A-Za-z0-9_.-]+', '_', stem)[:120]}.json"


def write_results(results: Mapping[str, Any], folder: str | Path) -> Path:
    """Write the results JSON into ``folder`` under :func:`results_filename`; returns the path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / results_filename(results)
    path.write_text(json.dumps(json_safe(results), indent=2))
    return path


# --------------------------------------------------------------------------------------------------
# Examples
# --------------------------------------------------------------------------------------------------

def render_examples(folder: str | Path) -> list[Path]:
    """Render the :data:`EXAMPLES` images from the shapes world into ``folder`` (once; reused)."""
    from croft_core.data.synth.world import render

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (shape, style, _) in enumerate(EXAMPLES):
        path = folder / f"{shape}-{style}.png"
        if not path.is_file():
            tmp = path.with_name(f".{path.name}.{os.getpid()}.png")
            render(shape, style, np.random.default_rng([EXAMPLE_STREAM, i]), size=EXAMPLE_SIZE).save(tmp)
            os.replace(tmp, path)  # atomic: another process may render the same file
        paths.append(path)
    return paths
