"""Install a `croft bench` run as the shipped checkpoint ``croft_core/data/synth/croft-shapes``.

    python bench/install_shapes_checkpoint.py RUN_DIR NOTE [ZEROSHOT_EVAL_JSON]

RUN_DIR is a run folder of ``croft bench`` (e.g. ``RUNS/shapes_dg_painting/sgd/croft_seed1``, the
validation-selected configuration of the lr grid). The folder's ``config.json`` and
``model.safetensors`` are copied unchanged except for a ``display_name`` (what the app shows), and
the model card is rendered from the config (its metrics are the ones ``croft eval`` reproduces) with
a provenance section: how it was trained, how to reproduce the numbers, and NOTE (one paragraph,
e.g. whether it beats zero-shot on the held-out style).

ZEROSHOT_EVAL_JSON (or ``--zeroshot-only EVAL_JSON`` alone, for an installed checkpoint) is the output of
:data:`ZEROSHOT_COMMAND`; its headline metrics go into the folder's ``zeroshot.json``, the baseline
the app's first screen quotes beside the checkpoint's own held-out-style accuracy
(:func:`croft_app.service.showcase.heldout_numbers`).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from croft_core.heads.checkpoint import HeadConfig, render_model_card
from croft_core.runs.evaluate import headline_metrics

DISPLAY_NAME = "CRoFT · shapes · painting held out"
ZEROSHOT_COMMAND = ("croft eval --backbone embedded --benchmark shapes_dg --benchmark-arg heldout=painting "
                    "--method zeroshot --seed 1 --json eval.json")  # the card's detection side (the default)
TARGET = Path(__file__).resolve().parents[1] / "croft_core" / "data" / "synth" / "croft-shapes"

PROVENANCE = """
## Provenance (croft_core/data/synth/croft-shapes)

Shown as **{name}**. Trained by `croft bench` on the `shapes_dg` benchmark (leave-one-style-out
Setup-II miniature of the embedded shapes world; trained on photo, sketch and cartoon, 16 shots per
class; painting held out), seed 1, `--min-steps 500`, learning rate selected on validation
(source styles only) from `--grid lr=0.002,0.02`: lr {lr}. The full comparison is in
`docs/RESULTS_SHAPES.md`.

The metrics above are exactly what this reproduces:

```
croft eval --backbone embedded --benchmark shapes_dg --benchmark-arg heldout=painting \\
    --checkpoint croft_core/data/synth/croft-shapes --seed 1 --json eval.json
```

{note}

`zeroshot.json` beside it holds zero-shot's numbers on the same benchmark, from the command it records (`bench/install_shapes_checkpoint.py --zeroshot-only EVAL_JSON` writes it); the app's first screen quotes the two painting accuracies from these files.
"""


def install(run_dir: str | Path, note: str, target: Path = TARGET) -> Path:
    run_dir = Path(run_dir)
    config = json.loads((run_dir / "config.json").read_text())
    config["display_name"] = DISPLAY_NAME
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run_dir / "model.safetensors", target / "model.safetensors")
    (target / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    card = render_model_card(HeadConfig.from_dict(config))
    card = card.rstrip() + "\n" + PROVENANCE.format(name=DISPLAY_NAME, lr=config["training"]["lr"], note=note)
    (target / "README.md").write_text(card)
    return target


def install_zeroshot(eval_json: str | Path, target: Path = TARGET) -> Path:
    """Write ``zeroshot.json``: zero-shot's headline metrics on the checkpoint's benchmark."""
    results = json.loads(Path(eval_json).read_text())
    if results.get("method") != "zeroshot":
        raise SystemExit(f"{eval_json} is not a zero-shot evaluation (method {results.get('method')!r})")
    out = {"about": "zero-shot CLIP on the benchmark this checkpoint was evaluated on (the baseline its card "
                    "compares with); the app reads accuracy/<held-out style> for the first screen",
           "command": ZEROSHOT_COMMAND, "benchmark": results["benchmark"], "backbone": results["backbone"],
           "seed": results["seed"], "metrics": dict(sorted(headline_metrics(results).items()))}
    path = target / "zeroshot.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    return path


if __name__ == "__main__":
    if sys.argv[1] == "--zeroshot-only":
        print(install_zeroshot(sys.argv[2]))
    else:
        print(install(sys.argv[1], sys.argv[2]))
        if len(sys.argv) > 3:
            print(install_zeroshot(sys.argv[3]))
