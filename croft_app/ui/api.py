"""What the API page (``gradio_client``'s ``view_api`` and the "Use via API" page) teaches.

Gradio documents an endpoint from its handler's docstring and its components' defaults; for CRoFT
Lab that page showed raw double backticks, example inputs that fail (a bus photo downloaded from
the web, ``data={"foo": "bar"}``) and types that mislead (``threshold: str``, ``benchmark:
Literal['shapes']``). :func:`document_api` replaces them with plain-text descriptions, examples that
run offline (an example image the app renders, ``data="shapes"``) and the types
the handlers accept. A plain path string where an image is expected (instead of
``handle_file(...)``) is refused with a message saying what to do, not Gradio's generic
"the upstream app has raised an exception".
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import gradio as gr
from gradio.components.image import ImageData
from pydantic import model_validator

PLAIN_PATH = ("Pass the image with gradio_client.handle_file(...), e.g. client.predict(handle_file(\"img.png\"), "
              "...): a plain string is not uploaded, so the app cannot read it.")

DESCRIPTIONS = {
    "classify": "Classify one image against a vocabulary; the label is \"unknown\" when the image fits none of "
                "the classes. image: handle_file(path or URL). vocabulary: class names separated by commas, or "
                "a preset name (shapes, cifar10, cifar100, imagenet, pacs, vlcs). model: a name of the model "
                "menu (zero-shot, a listed checkpoint, or a model /finetune returned to this client). "
                "threshold: a number (energy threshold), or None for the model's own rule. Returns a JSON "
                "object: label, accepted, score, threshold, probabilities (top 5), predicted_class, rule, "
                "reason, nearest_negative, model, notes and warnings.",
    "evaluate": "Evaluate a model on a registered benchmark and return the results JSON: ID and covariate "
                "accuracy, semantic-shift detection (AUROC, FPR95, AUPR) per score, full-spectrum detection "
                "and the deployment threshold. benchmark: a registered name such as \"shapes\" (a string). "
                "model: a name of the model menu. seed: a whole number. A benchmark this server cannot "
                "evaluate within its Lab time limit is refused at once, with its estimate and the limit.",
    "finetune": "Fine-tune a head and return {model, history, results}; model is a name /classify and "
                "/evaluate accept in this client session (other clients do not see it). data: a benchmark "
                "name such as \"shapes\", a Hub dataset id ORG/NAME with image and label columns, or "
                "handle_file(\"classes.zip\") (a zip of one folder per class). method: a training recipe. "
                "shots: training images per class. seed, steps: whole numbers.",
}

THRESHOLD_TYPE = {"anyOf": [{"type": "number"}, {"type": "null"}],
                  "description": "energy threshold; None: the model's own rule"}
DATA_TYPE = {"type": "string", "description": "a benchmark name (\"shapes\"), a Hub dataset id ORG/NAME, "
                                              "or handle_file(\"classes.zip\")"}
BENCHMARK_TYPE = {"type": "string", "description": "a registered benchmark name, e.g. \"shapes\""}


PLAIN_STRING = "\x00plain string"  # orig_name of a payload that was a bare string (no file name has NUL)


class ImageUpload(ImageData):
    """Gradio's image payload. A plain string (a path never uploaded) fails Gradio's validation with
    its generic error before any handler runs; it is let through marked instead, with no path, and
    :func:`refuse_plain_string` says what to do."""

    @model_validator(mode="before")
    @classmethod
    def _mark_plain_string(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"path": "", "orig_name": PLAIN_STRING, "meta": {"_type": "gradio.FileData"}}
        return value


def refuse_plain_string(payload: Any) -> None:
    """Raise the message of :data:`PLAIN_PATH` for a payload :class:`ImageUpload` marked."""
    if isinstance(payload, dict) and payload.get("orig_name") == PLAIN_STRING:
        raise gr.Error(PLAIN_PATH, print_exception=False)


def example_file(path: str | Path) -> dict[str, Any]:
    """A FileData the API page shows as ``handle_file(...)``: on a Space, the image's public URL
    (the Space downloads it from itself); elsewhere its path, which a client on this machine uploads
    (Gradio refuses to download from a loopback address)."""
    path = str(path)
    host = os.environ.get("SPACE_HOST", "").strip()
    url = f"https://{host}/gradio_api/file={path}" if host else path
    return {"path": path, "url": url, "orig_name": Path(path).name, "meta": {"_type": "gradio.FileData"}}


def _typed(component: gr.components.Component, schema: dict | None, example: Any) -> None:
    if schema is not None:
        component.api_info_as_input = lambda: dict(schema)
    component.example_inputs = lambda: example


def document_api(demo: gr.Blocks, example_image: str | None) -> None:
    """Plain-text descriptions, offline examples and accepted types for the named endpoints.

    Call inside the ``gr.Blocks`` context, after the events are wired (the config is built on exit).
    """
    for fn in demo.fns.values():
        if fn.api_name not in DESCRIPTIONS:
            continue
        fn.api_description = DESCRIPTIONS[fn.api_name]
        for component in fn.inputs:
            label = getattr(component, "label", None)
            if isinstance(component, gr.Image):
                component.data_model = ImageUpload
                if example_image:
                    _typed(component, None, example_file(example_image))
            elif label and "threshold" in label:  # "energy threshold" (Classify), "threshold ..." (Compare)
                _typed(component, THRESHOLD_TYPE, None)
            elif label == "benchmark":
                _typed(component, BENCHMARK_TYPE, "shapes")
            elif label == "data":
                _typed(component, DATA_TYPE, "shapes")
