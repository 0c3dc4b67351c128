"""One prepared GPU check: feature-extraction and training throughput, precision, placement, memory.

On a CUDA machine it measures, in one run (well under 5 minutes on one H100/H200):

1. encoder throughput of ViT-B-16 (random weights: the cost is that of the pretrained model) on
   synthetic 224 px batches of 256 already on the GPU, in fp32, fp32 with TF32 matmuls, and under
   fp16 / bf16 autocast;
2. end-to-end extraction images/s through :func:`croft_core.clip.features.extract_features` (JPEG decode
   and transform in worker processes, autocast fp16 vs fp32);
3. training steps/s of the official CRoFT step and of the clean step on random d=512 features
   (Setup-I shape: 400 classes, batch 32), fp32 and bf16 autocast;
   and of a CoOp step (16 random context vectors, 400 class prompts through the frozen text
   tower forward and backward, batch 32), fp32 and bf16 autocast;
4. that every tensor involved (backbone, features before the CPU copy, heads, optimizer state, text
   features) lives on the GPU, and the peak GPU memory of each phase.

It prints a table and, last, one JSON line (``{"gpu_check": {...}}``) to paste into the README's
performance table with the date and the GPU. This is a script, not a CI test::

    python bench/gpu_check.py                      # needs CUDA; exits 2 without it
    python bench/gpu_check.py --allow-cpu --tiny   # smoke test of the script itself on a CPU
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from croft_core.clip.backbones import build_text_classifier, load_backbone
from croft_core.clip.features import extract_features, precision_of
from croft_core.objectives.steps import clean_step, official_step
from croft_core.runs.train import _optimizers, init_model, method_config

TINY_MODEL_CFG = {  # the tests' tiny CLIP (tests/conftest.py), for --tiny
    "embed_dim": 16,
    "vision_cfg": {"image_size": 16, "patch_size": 8, "width": 32, "layers": 1, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 1},
}


class SyntheticJPEGs:
    """``n`` random JPEG-encoded images (decoded on access, as a real dataset is)."""

    def __init__(self, n: int, size: tuple[int, int] = (320, 240), seed: int = 0):
        rng = np.random.default_rng(seed)
        base = rng.integers(0, 256, (8, size[1], size[0], 3), dtype=np.uint8)
        self._jpegs = []
        for i in range(8):  # 8 distinct encodings, reused (decode cost is what matters)
            buf = io.BytesIO()
            Image.fromarray(base[i]).save(buf, format="JPEG", quality=90)
            self._jpegs.append(buf.getvalue())
        self.n = n
        self.labels = np.zeros(n, dtype=np.int64)
        self.ids = [f"synthetic-{i}" for i in range(n)]
        self.name = "synthetic"

    def __len__(self) -> int:
        return self.n

    def image(self, i: int) -> Image.Image:
        return Image.open(io.BytesIO(self._jpegs[i % 8])).convert("RGB")

    def fingerprint(self) -> str:
        return f"synthetic-{self.n}"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None


def _on(device: torch.device, tensors, what: str, failures: list[str]) -> None:
    bad = [t.device for t in tensors if t.device.type != device.type]
    if bad:
        failures.append(f"{what}: {len(bad)} tensor(s) on {bad[0]}, expected {device.type}")


@torch.no_grad()
def encoder_throughput(backbone, device, batch: int, iters: int, failures: list[str]) -> dict:
    """Images/s of ``encode_image`` on GPU-resident batches, per precision."""
    size = backbone.image_size
    pixels = torch.randn(batch, 3, size, size, device=device)
    modes = [("fp32", None, False), ("tf32", None, True), ("amp_fp16", torch.float16, False),
             ("amp_bf16", torch.bfloat16, False)]
    if device.type != "cuda":
        modes = [("fp32", None, False), ("amp_bf16", torch.bfloat16, False)]
    out = {}
    for name, dtype, tf32 in modes:
        previous = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = tf32
        ctx = (torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext())
        _reset_peak(device)
        with ctx:
            emb = backbone.model.encode_image(pixels)  # warm-up (and kernel selection)
            _sync(device)
            start = time.perf_counter()
            for _ in range(iters):
                emb = backbone.model.encode_image(pixels)
            _sync(device)
        seconds = time.perf_counter() - start
        torch.backends.cuda.matmul.allow_tf32 = previous
        _on(device, [emb], f"encoder output ({name})", failures)
        out[name] = {"images_per_s": round(batch * iters / seconds, 1), "peak_gib": _peak_gib(device),
                     "output_dtype": str(emb.dtype).removeprefix("torch.")}
    return out


def extraction_throughput(backbone, device, n: int, batch: int, workers: int) -> dict:
    """Images/s of ``extract_features`` (decode + transform in workers, encode, copy to CPU)."""
    split = SyntheticJPEGs(n)
    out = {}
    for name, amp in (("fp32", False), ("amp_fp16", True)):
        _reset_peak(device)
        extract_features(backbone, SyntheticJPEGs(min(n, batch)), batch_size=batch, num_workers=workers,
                         amp=amp, cache_dir=None)  # warm-up: workers, cudnn
        start = time.perf_counter()
        fs = extract_features(backbone, split, batch_size=batch, num_workers=workers, amp=amp, cache_dir=None)
        seconds = time.perf_counter() - start
        out[name] = {"images_per_s": round(n / seconds, 1), "images": n, "workers": workers,
                     "precision": precision_of(backbone, amp), "peak_gib": _peak_gib(device),
                     "features": list(fs.features.shape)}
    return out


def training_throughput(device, classes: int, dim: int, batch: int, steps: int, failures: list[str]) -> dict:
    """Steps/s of the official and the clean CRoFT step on random features, fp32 and bf16 autocast."""
    gen = torch.Generator().manual_seed(0)
    f = torch.randn(batch, dim, generator=gen).to(device)
    t = torch.randn(classes, dim, generator=gen).to(device)
    y = torch.randint(0, classes, (batch,), generator=gen).to(device)
    out = {}
    for method, step in (("croft", official_step), ("croft_clean", clean_step)):
        cfg = method_config(method, gen_steps=1)
        for precision in ("fp32", "amp_bf16"):
            model = init_model(cfg, embed_dim=dim, logit_scale=100.0,
                               classnames=[str(i) for i in range(classes)]).to(device)
            optimizers = _optimizers(model, cfg)
            kwargs = dict(lambda1=cfg.lambda1, lambda2=cfg.lambda2, gen_steps=cfg.gen_steps,
                          edr_reduction=cfg.edr_reduction)
            ctx = (torch.autocast(device.type, dtype=torch.bfloat16) if precision != "fp32"
                   else contextlib.nullcontext())
            _reset_peak(device)
            try:
                with ctx:
                    log = step(model.head, f, t, y, optimizers, **kwargs)  # warm-up
                    _sync(device)
                    start = time.perf_counter()
                    for _ in range(steps):
                        log = step(model.head, f, t, y, optimizers, **kwargs)
                    _sync(device)
                seconds = time.perf_counter() - start
            except Exception as e:  # noqa: BLE001 - report, do not abort the whole check
                out[f"{method}/{precision}"] = {"error": f"{type(e).__name__}: {e}"[:200]}
                continue
            state = [v for opt in optimizers for s in opt.state.values() for v in s.values()
                     if isinstance(v, torch.Tensor)]
            _on(device, list(model.parameters()) + state, f"{method} head + optimizer ({precision})",
                failures)
            finite = all(np.isfinite(v) for v in log.values())
            if not finite:
                failures.append(f"{method} ({precision}): non-finite loss {log}")
            out[f"{method}/{precision}"] = {"steps_per_s": round(steps / seconds, 1),
                                            "loss": round(log["loss"], 4), "peak_gib": _peak_gib(device)}
    return out


def coop_throughput(backbone, device, classes: int, batch: int, steps: int, failures: list[str]) -> dict:
    """Steps/s of a CoOp step (text tower forward + backward every step), fp32 and bf16 autocast."""
    from croft_core.objectives.steps import supervised_step

    gen = torch.Generator().manual_seed(0)
    f = torch.randn(batch, backbone.embed_dim, generator=gen).to(device)
    y = torch.randint(0, classes, (batch,), generator=gen).to(device)
    n_ctx = 16 if backbone.model.positional_embedding.shape[0] >= 40 else 4  # the tiny model has 16 tokens
    cfg = method_config("coop", n_ctx=n_ctx, ctx_init="")
    out = {}
    for precision in ("fp32", "amp_bf16"):
        model = init_model(cfg, embed_dim=backbone.embed_dim, logit_scale=100.0,
                           classnames=[f"class {i}" for i in range(classes)], clip=backbone).to(device)
        optimizers = _optimizers(model, cfg)
        ctx = (torch.autocast(device.type, dtype=torch.bfloat16) if precision != "fp32"
               else contextlib.nullcontext())
        _reset_peak(device)
        try:
            with ctx:
                log = supervised_step(model.head, f, None, y, optimizers)  # warm-up
                _sync(device)
                start = time.perf_counter()
                for _ in range(steps):
                    log = supervised_step(model.head, f, None, y, optimizers)
                _sync(device)
            seconds = time.perf_counter() - start
        except Exception as e:  # noqa: BLE001 - report, do not abort the whole check
            out[f"coop/{precision}"] = {"error": f"{type(e).__name__}: {e}"[:200]}
            continue
        _on(device, list(model.parameters()), f"coop context ({precision})", failures)
        if not np.isfinite(log["loss"]):
            failures.append(f"coop ({precision}): non-finite loss {log}")
        out[f"coop/{precision}"] = {"steps_per_s": round(steps / seconds, 1), "loss": round(log["loss"], 4),
                                    "peak_gib": _peak_gib(device)}
    return out


def _tiny_backbone(device: str):
    from safetensors.torch import save_file
    import open_clip

    folder = Path(tempfile.mkdtemp(prefix="gpu-check-tiny-"))
    torch.manual_seed(0)
    model = open_clip.model.CLIP(**TINY_MODEL_CFG)
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": TINY_MODEL_CFG}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(folder / "open_clip_model.safetensors"))
    return load_backbone(f"local-dir:{folder}", device=device)


def _table(rows: list[tuple[str, str, str, str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-16")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--iters", type=int, default=20, help="timed encoder batches per precision")
    parser.add_argument("--images", type=int, default=4096, help="images for the end-to-end extraction")
    parser.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1))
    parser.add_argument("--steps", type=int, default=300, help="timed training steps per variant")
    parser.add_argument("--allow-cpu", action="store_true", help="run on the CPU when CUDA is missing")
    parser.add_argument("--tiny", action="store_true", help="tiny model and sizes (smoke test)")
    args = parser.parse_args(argv)

    if not torch.cuda.is_available() and not args.allow_cpu:
        print("gpu_check: CUDA is not available (torch.cuda.is_available() is False); this check "
              "measures GPU throughput. Run it on a CUDA machine, or pass --allow-cpu --tiny to "
              "smoke-test the script.", file=sys.stderr)
        return 2
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.tiny:
        args.batch_size, args.iters, args.images, args.steps = 8, 2, 16, 3
        args.workers = min(args.workers, 2)
    failures: list[str] = []
    t0 = time.perf_counter()
    backbone = (_tiny_backbone(str(device)) if args.tiny
                else load_backbone(f"{args.model}:random", device=str(device)))
    _on(device, list(backbone.model.parameters()), "backbone parameters", failures)
    text = build_text_classifier(backbone, ["dog", "cat"], ["a photo of a {}."], cache_dir=None)
    _on(device, [text], "text features", failures)
    dim = backbone.embed_dim if args.tiny else 512
    classes, batch = (5, 4) if args.tiny else (400, 32)

    encoder = encoder_throughput(backbone, device, args.batch_size, args.iters, failures)
    extraction = extraction_throughput(backbone, device, args.images, args.batch_size, args.workers)
    training = training_throughput(device, classes, dim, batch, args.steps, failures)
    training.update(coop_throughput(backbone, device, classes, batch, max(1, args.steps // 10), failures))

    report = {
        "date": datetime.date.today().isoformat(),
        "device": (torch.cuda.get_device_name(device) if device.type == "cuda"
                   else platform.processor() or "cpu"),
        "torch": torch.__version__, "cuda": torch.version.cuda,
        "model": "tiny" if args.tiny else f"{args.model} (random)",
        "batch_size": args.batch_size, "encoder": encoder, "extraction": extraction,
        "training": {"classes": classes, "dim": dim, "batch": batch, **training},
        "placement_ok": not failures, "placement_failures": failures,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    rows = [("phase", "variant", "throughput", "peak GiB")]
    rows += [("encoder", k, f"{v['images_per_s']} img/s", str(v["peak_gib"])) for k, v in encoder.items()]
    rows += [("extract", k, f"{v['images_per_s']} img/s", str(v["peak_gib"])) for k, v in extraction.items()]
    rows += [("train", k, f"{v['steps_per_s']} steps/s" if "steps_per_s" in v else v["error"],
              str(v.get("peak_gib"))) for k, v in training.items()]
    print(f"gpu_check on {report['device']} (torch {report['torch']}, CUDA {report['cuda']}), "
          f"{report['model']}, batch {args.batch_size}, {report['seconds']} s")
    print(_table(rows))
    print("placement: " + ("every tensor on " + device.type if not failures else "; ".join(failures)))
    print(json.dumps({"gpu_check": report}))
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
