"""Warm ``/classify`` latency of the app vs calling the model directly, measured in one run.

For one image and a vocabulary whose text features are already cached, with the threshold given,
this script times (median of ``CROFT_BENCH_N`` = 30 warm calls each, the paths taking turns):

1. **direct** — what any script would do: open the PNG, the backbone's preprocessing,
   ``model.encode_image``, cosine logits against the cached text features, energy, softmax, top-5;
2. **handlers, with the plot** — the app's own code in-process: ``Handlers.classify`` (the
   ``/classify`` endpoint: validation, image checks, vocabulary parsing, the JSON) plus
   ``Handlers.explain`` (decision text and the plotly energy figure, serialised as Gradio sends it) —
   everything the Classify button does except the HTTP transport;
3. **HTTP /classify** — the running server through Gradio's documented HTTP API (upload, then
   ``POST /gradio_api/call/classify`` and the SSE result), on one keep-alive connection;
4. **gradio_client /classify** — ``Client.predict(handle_file(img), ..., api_name="/classify")``;
5. **transport floors** — 3. and 4. against a no-op endpoint with the same inputs, served by a
   second Blocks app in the same process: what Gradio's transport costs with no work at all.

It prints the medians and the ratios to *direct*. The target of the issue is <= 1.5x for the
embedded model with the plot included. The backbone is ``embedded``; if its weights
(``croft_core/data/synth/embedded/open_clip_config.json``) are missing, a tiny random ``local-dir:``
model is written to a temporary folder and used instead (the script says so).

Run: ``OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/app_latency.py``
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable

from timing import interleaved  # bench/timing.py
from croft_app.ui import app as ui

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

N = int(os.environ.get("CROFT_BENCH_N", "30"))
WARMUP = 5


def choose_backbone() -> tuple[str, str]:
    """``embedded`` when its weights exist, else a tiny random local-dir model (and why)."""
    if (REPO / "croft_core" / "synth" / "embedded" / "open_clip_config.json").is_file():
        return "embedded", "embedded model (croft_core/data/synth/embedded)"
    import open_clip
    import torch
    from safetensors.torch import save_file

    cfg = {"embed_dim": 128, "vision_cfg": {"image_size": 64, "layers": [1, 1, 1, 1], "width": 16},
           "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 4, "layers": 4}}
    folder = Path(tempfile.mkdtemp(prefix="croft-bench-tiny-"))
    torch.manual_seed(0)
    model = open_clip.model.CLIP(**cfg)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(folder / "open_clip_model.safetensors"))
    return f"local-dir:{folder}", ("FALLBACK: the embedded weights are missing, so a tiny random model "
                                   "of the embedded architecture is used")


def median_ms(paths: dict[str, Callable[[], object]], n: int = N, warmup: int = WARMUP) -> dict[str, float]:
    """Median milliseconds per path, the paths taking turns (:func:`timing.interleaved`)."""
    return {name: 1000 * t for name, t in interleaved(paths, n, warmup).items()}


def http_classify(base: str, image: str, data: list) -> Callable[[], dict]:
    """One ``/classify`` call through Gradio's HTTP API on a keep-alive connection."""
    import httpx

    http = httpx.Client(base_url=base.rstrip("/") + "/gradio_api", timeout=60)

    def call() -> dict:
        with open(image, "rb") as fh:
            path = http.post("/upload", files={"files": (Path(image).name, fh, "image/png")}).json()[0]
        payload = {"data": [{"path": path, "meta": {"_type": "gradio.FileData"}}, *data]}
        event = http.post("/call/classify", json=payload).json()["event_id"]
        with http.stream("GET", f"/call/classify/{event}") as stream:
            kind = None
            for line in stream.iter_lines():
                if line.startswith("event:"):
                    kind = line.split(":", 1)[1].strip()
                elif line.startswith("data:") and kind in ("complete", "error"):
                    if kind == "error":
                        raise RuntimeError(line)
                    return json.loads(line[5:])[0]
        raise RuntimeError("no result")
    return call


def main() -> int:
    spec, what = choose_backbone()
    os.environ["CROFT_BACKBONE"] = spec
    os.environ.setdefault("CROFT_CHECKPOINTS", "")
    import gradio as gr
    import PIL.Image
    import torch
    from gradio_client import Client, handle_file

    import app
    from croft_core.ood import scores as scoring
    from croft_core.clip.features import l2n
    from croft_app.service.classifier import ZERO_SHOT
    from croft_app.service.vocabulary import resolve_vocabulary

    torch.set_num_threads(max(1, torch.get_num_threads()))
    resources = app.RESOURCES
    backbone = resources.backbone
    handlers = ui.Handlers(resources)
    example = Path(resources.examples[0][0])  # a rendered photo-style circle (224 px PNG)
    uploads = resources.upload_root / "croft-latency-bench"  # handlers read uploads only
    uploads.mkdir(parents=True, exist_ok=True)
    image = str(uploads / example.name)
    shutil.copyfile(example, image)
    upload = {"path": image, "meta": {"_type": "gradio.FileData"}}  # as Gradio passes an upload
    vocabulary = resources.default_vocabulary
    classifier = resources.registry.get(ZERO_SHOT)
    classes, _ = resolve_vocabulary(vocabulary)
    text = classifier.text_features(classes)  # cached, as in the app
    threshold = float(classifier.reference(classes).threshold or 0.0)

    @torch.inference_mode()
    def direct() -> dict:
        img = PIL.Image.open(image).convert("RGB")
        features = backbone.model.encode_image(backbone.preprocess(img)[None])
        logits = backbone.logit_scale * l2n(features.float()) @ l2n(text).T
        score = float(scoring.energy(logits)[0])
        probs = logits.softmax(-1)[0]
        top = probs.topk(5)
        return {"score": score, "accepted": score >= threshold,
                "top": {classes[int(i)]: float(p) for p, i in zip(top.values, top.indices)}}

    plot = gr.Plot()

    def in_process() -> None:
        result = handlers.classify(upload, vocabulary, ZERO_SHOT, threshold)
        _, _, fig = handlers.explain(result, vocabulary, ZERO_SHOT)
        plot.postprocess(fig)  # what Gradio sends to the browser

    def in_process_json() -> None:
        handlers.classify(upload, vocabulary, ZERO_SHOT, threshold)

    assert abs(direct()["score"] - handlers.classify(upload, vocabulary, ZERO_SHOT, threshold)["score"]) < 1e-3

    ui.launch(app.demo, app.RESOURCES, prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    with gr.Blocks() as floor_demo:  # same inputs, no work: the transport's own cost
        ins = [gr.Image(label="image", type="filepath"), gr.Textbox(label="vocabulary"),
               gr.Textbox(label="model"), gr.Textbox(label="threshold")]
        out = gr.JSON(label="result")
        gr.Button().click(lambda *a: {"label": "x"}, ins, out, api_name="classify", preprocess=False)
    floor_demo.queue(default_concurrency_limit=app.RESOURCES.settings.concurrency)
    floor_demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    try:
        client = Client(app.demo.local_url, verbose=False)
        floor_client = Client(floor_demo.local_url, verbose=False)
        args = (vocabulary, ZERO_SHOT, threshold)
        http = http_classify(app.demo.local_url, image, list(args))
        assert http()["score"] == client.predict(handle_file(image), *args, api_name="/classify")["score"]
        results = median_ms({
            "direct (load + preprocess + encode_image + scoring)": direct,
            "handlers: /classify JSON only (in-process)": in_process_json,
            "handlers: /classify + decision + plot (in-process)": in_process,
            "HTTP /classify (upload + call + SSE, keep-alive)": http,
            "gradio_client /classify": lambda: client.predict(handle_file(image), *args,
                                                              api_name="/classify"),
            "HTTP no-op endpoint (transport floor)": http_classify(floor_demo.local_url, image,
                                                                   list(args)),
            "gradio_client no-op endpoint (transport floor)": lambda: floor_client.predict(
                handle_file(image), *args, api_name="/classify"),
        })
    finally:
        app.demo.close()
        floor_demo.close()

    base = results["direct (load + preprocess + encode_image + scoring)"]
    client_ms = results["gradio_client /classify"]
    floor_ms = results["gradio_client no-op endpoint (transport floor)"]
    print(f"backbone: {what} [{spec}]; image {Path(image).name}; {len(classes)} classes (cached); "
          f"threshold given; median of {N} warm calls; {torch.get_num_threads()} torch threads")
    for name, ms in results.items():
        print(f"  {name:<55s} {ms:8.2f} ms   {ms / base:6.2f}x direct")
    for name, total, floor in (("HTTP", results["HTTP /classify (upload + call + SSE, keep-alive)"],
                                 results["HTTP no-op endpoint (transport floor)"]),
                                ("gradio_client", client_ms, floor_ms)):
        print(f"  {name + ' /classify minus its transport floor':<55s} {total - floor:8.2f} ms   "
              f"{(total - floor) / base:6.2f}x direct")
    ui = results["handlers: /classify + decision + plot (in-process)"]
    print(f"target <= 1.5x with the plot: app code {ui / base:.2f}x "
          f"({'met' if ui / base <= 1.5 else 'NOT met'}); through gradio_client {client_ms / base:.2f}x "
          f"({'met' if client_ms / base <= 1.5 else 'NOT met'}: the client's transport alone costs "
          f"{floor_ms:.0f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
