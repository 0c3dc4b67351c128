"""What the app shows, computed without Gradio (croft_app.service.present)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from croft_app.service import present
from croft_app.service.classifier import check_threshold
from croft_app.service.classifier import Prediction


def _pred(label="cat", accepted=True, score=3.0, threshold=2.0):
    return Prediction(label=label, accepted=accepted, score=score, threshold=threshold,
                      probabilities={"cat": 0.9, "dog": 0.1}, predicted_class="cat",
                      threshold_source="checkpoint")


def test_json_safe_turns_numpy_and_nan_into_json():
    value = {"a": float("nan"), "b": [np.float32(1.5), np.int64(2)], "c": np.bool_(True), 3: (1, 2)}
    assert present.json_safe(value) == {"a": None, "b": [1.5, 2], "c": True, "3": [1, 2]}
    json.dumps(present.json_safe({"x": np.float64("inf")}), allow_nan=False)


def test_decision_markdown_accepted_rejected_and_closed_set():
    accepted = {"model": "m", **_pred().to_dict(), "notes": ["n"], "warnings": ["w"]}
    md = present.decision_markdown(accepted)
    assert md.startswith("## cat") and "≥ threshold **2.00**" in md and "- n" in md and "⚠️ w" in md
    rejected = _pred(label="unknown", accepted=False, score=1.0).to_dict()
    md = present.decision_markdown(rejected)
    assert md.startswith("## unknown") and "< threshold **2.00**" in md and "closest class: cat, 90%" in md
    assert "closed-set prediction" in present.decision_markdown(_pred(threshold=None).to_dict())


def test_caption_and_batch_rows():
    assert present.caption(_pred()) == "cat · energy 3.00"
    assert present.caption(_pred(label="unknown", accepted=False)) == "unknown (closest: cat) · energy 3.00"
    rows = present.batch_rows(["a.png"], [_pred()], errors=[("b.png", "not an image")])
    assert rows == [["b.png", "error", None, None, None, "not an image"],
                    ["a.png", "cat", "cat", 3.0, 0.9, ""]]
    assert all(len(r) == len(present.BATCH_HEADERS) for r in rows)


RESULTS = {
    "benchmark": "shapes/../x", "method": "croft", "seed": 1,
    "id": {"name": "photo", "accuracy": 0.91234, "n": 10},
    "covariate": [{"name": "sketch", "accuracy": 0.5, "n": 5}],
    "semantic": [{"name": "u1", "n": 3, "scores": {"energy": {"auroc": 0.8, "fpr95": 0.4}}},
                 {"name": "u2", "n": 4, "scores": {"energy": {"auroc": 0.6, "fpr95": 0.7}}}],
    "semantic_all": {"energy": {"auroc": 0.7, "fpr95": 0.5}},
    "full_spectrum": {"energy": {"auroc": 0.65, "fpr95": 0.6}, "accuracy": 0.75},
}


def test_results_shown_to_visitors_carry_no_server_path():
    value = {"lexicon": "/srv/app/.venv/lib/x/synsets.txt", "n": [1, {"p": "~/a/b"}], "url": "https://a/b/c"}
    assert present.without_paths(value) == {"lexicon": "…/synsets.txt", "n": [1, {"p": "…/b"}],
                                             "url": "https://a/b/c"}


def test_results_table_rows():
    rows = present.results_table(RESULTS)
    assert [r[1] for r in rows] == ["ID", "covariate", "semantic", "semantic", "semantic", "full-spectrum"]
    assert rows[0] == ["photo", "ID", 10, 0.9123, None, None]
    assert rows[4] == ["all semantic", "semantic", 7, None, 0.7, 0.5]
    assert all(len(r) == len(present.TABLE_HEADERS) for r in rows)


def test_energy_groups_pool_semantic_sets_and_roc_sets():
    energies = {"ID: photo": [3.0, 4.0], "covariate: sketch": [2.0], "semantic: u1": [1.0],
                "semantic: u2": [0.5, 0.0]}
    groups = present.energy_groups(energies)
    assert list(groups) == ["ID: photo", "covariate: sketch", "semantic: all 2 unseen set(s)"]
    assert groups["semantic: all 2 unseen set(s)"].tolist() == [1.0, 0.5, 0.0]
    id_scores, ood = present.roc_sets(energies)
    assert id_scores.tolist() == [3.0, 4.0] and list(ood) == ["u1", "u2"]
    assert present.roc_sets({"ID: photo": [1.0]}) is None


def test_results_file_name_is_safe(tmp_path):
    assert present.results_filename(RESULTS) == "results-shapes_.._x-croft-seed1.json"
    path = present.write_results({**RESULTS, "x": float("nan")}, tmp_path)
    assert path.parent == tmp_path and json.loads(path.read_text())["x"] is None


@pytest.mark.parametrize("value, expected", [(None, None), ("", None), ("  ", None), ("12.5", 12.5),
                                             (3, 3.0), (-1.0, -1.0), (np.float32(2.0), 2.0)])
def test_check_threshold(value, expected):
    assert check_threshold(value) == expected


@pytest.mark.parametrize("value", ["abc", "inf", "nan", float("-inf"), 10**400, True, [1], {"a": 1}])
def test_check_threshold_refuses(value):
    with pytest.raises(ValueError, match="threshold must be a finite number"):
        check_threshold(value)


@pytest.mark.parametrize("value, expected", [(None, 1), ("", 1), (0, 0), ("7", 7), (3.0, 3),
                                             (present.MAX_SEED, present.MAX_SEED)])
def test_parse_seed(value, expected):
    assert present.parse_seed(value) == expected


@pytest.mark.parametrize("value", [1.5, -1, 2**64, present.MAX_SEED + 1, "one", float("nan"), 10**400,
                                   True, [1], "x" * 1000])
def test_parse_seed_refuses(value):
    with pytest.raises(ValueError, match="seed must be a whole number from 0 to") as err:
        present.parse_seed(value)
    assert len(str(err.value)) < 120  # never echoes a long input


def test_examples_are_rendered_once(tmp_path):
    paths = present.render_examples(tmp_path)
    assert [p.name for p in paths] == [f"{s}-{st}.png" for s, st, _ in present.EXAMPLES]
    stamps = [p.stat().st_mtime_ns for p in paths]
    assert [p.stat().st_mtime_ns for p in present.render_examples(tmp_path)] == stamps


def test_results_table_names_the_detection_side_when_it_is_not_the_id_test():
    from croft_app.service.present import results_table

    results = {"id": {"name": "source styles", "n": 3, "accuracy": 0.5}, "covariate": [], "semantic": [],
               "semantic_all": {"energy": {"auroc": 0.7, "fpr95": 0.5}},
               "detection": {"id_side": "id_test_correct", "sets": ["source styles"]}}
    assert results_table(results)[1][0] == "all semantic (vs correctly classified source styles)"
    results["detection"] = {"id_side": "covariate_correct", "sets": ["painting"]}
    assert results_table(results)[1][0] == "all semantic (vs correctly classified painting)"
    results["detection"] = {"id_side": "id_test", "sets": ["source styles"]}
    assert results_table(results)[1][0] == "all semantic"
