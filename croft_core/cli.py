"""The ``croft`` command: train, eval, bench, push (DESIGN.md). The only module that parses argv.

Examples::

    croft train --backbone embedded --benchmark shapes --method croft --shots 16 --seed 1 --out runs/croft
    croft eval  --backbone embedded --benchmark shapes --checkpoint runs/croft --json runs/croft-eval.json
    croft eval  --backbone embedded --benchmark shapes --method zeroshot --json runs/zs.json
    croft bench --backbone embedded --benchmark shapes --methods zeroshot,croft --seeds 1,2,3 --out runs/bench
    croft push  runs/croft --repo-id USER/croft-shapes
    torchrun --nproc_per_node=8 -m croft_core.cli extract --backbone ViT-B-16:openai \
        --benchmark setup2 --benchmark-arg dataset=vlcs --benchmark-arg root=/data --seeds 1,2,3

Each subcommand is a pair of functions, ``_add_<name>`` (its flags) and ``_run_<name>`` (the library
calls), listed in :data:`COMMANDS`. The command's results go to stdout (``print``: this module is the
program's user interface); progress and diagnostics go through ``logging``. The library's own
errors exit with status 1 and one ``croft: error: ...`` line (``croft --debug`` adds the traceback);
any other exception is a bug and propagates with its traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
import traceback
from pathlib import Path
from typing import Callable, NamedTuple, Sequence

from croft_core.errors import CroftError, UsageError

logger = logging.getLogger("croft")

# TrainConfig fields exposed as flags (None = keep the method's default)
_HYPER = {
    "lambda1": float, "lambda2": float, "gen_steps": int, "edr_reduction": str,
    "edr_temperature": float, "image_ratio": float, "text_ratio": float, "optimizer": str,
    "lr": float, "momentum": float, "weight_decay": float, "epochs": int, "warmup_epochs": int,
    "batch_size": int, "max_steps": int, "min_steps": int, "n_ctx": int, "ctx_init": str,
    "locoop_lambda": float, "locoop_top_k": int,
}
_HYPER_HELP = {
    "max_steps": "stop after this many optimizer steps (a partial run; smoke tests)",
    "min_steps": "at least this many optimizer steps: more epochs on small data (default off)",
    "n_ctx": "prompt methods (coop, cocoop, locoop): learnable context vectors (4; 16 needs ctx-init '' "
             "and a 77-token text encoder)",
    "ctx_init": "prompt methods: the words the context starts from ('a photo of a'; '' = random)",
    "locoop_lambda": "LoCoOp: weight of the local entropy term (0.25)",
    "locoop_top_k": "LoCoOp: a region is OOD when its top-K classes miss the label (200, capped at K-1)",
}

BENCHMARK_HELP = ("a registered benchmark (shapes, shapes_dg, setup1, setup2, imagenet_four_ood, "
                  "imagenet_full_spectrum) or a benchmark JSON file")

def library_errors() -> tuple[type[BaseException], ...]:
    """The exception types the ``croft`` command reports as one line instead of a traceback:
    :class:`CroftError` (every named library error derives from it), and ``ValueError`` and
    ``FileNotFoundError``, which the library raises on bad input and missing files."""
    return (CroftError, ValueError, FileNotFoundError)


# --- flags ------------------------------------------------------------------------------------

def _add_benchmark(p: argparse.ArgumentParser) -> None:
    p.add_argument("--benchmark", default="shapes", help=BENCHMARK_HELP)
    p.add_argument("--benchmark-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="option of a registered benchmark, repeatable; VALUE is JSON or a plain "
                        "string (e.g. root=/data/croft, dataset=vlcs, test_domain=PASCAL, "
                        "heldout=painting for shapes_dg); for bench, a JSON list for an option "
                        "that takes one value is a sweep, one bench per value: "
                        "'heldout=[\"photo\",\"sketch\"]'")


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backbone", default="embedded",
                   help="MODEL:TAG (ViT-B-16:openai), hf-hub:ORG/REPO, local-dir:PATH or embedded")
    _add_benchmark(p)
    p.add_argument("--shots", type=int, default=16, help="training images per class (-1 = all)")
    p.add_argument("--views", type=int, default=8, help="cached augmented views per training image")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--precision", default="fp32", help="open_clip precision of the frozen backbone")
    p.add_argument("--cache-dir", default=None, help="feature/text cache (default $CROFT_CACHE or ~/.cache/croft)")
    p.add_argument("--workers", type=int, default=0, help="image-decoding worker processes")
    p.add_argument("--quiet", action="store_true", help="no progress bars, warnings only")
    p.add_argument("--local-features", action="store_true",
                   help="also cache local image features (float16) for the GL-MCM score (LoCoOp: always)")


def _add_hyper(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("hyper-parameters (default: the method's official values)")
    for name, typ in _HYPER.items():
        g.add_argument(f"--{name.replace('_', '-')}", type=typ, default=None, help=_HYPER_HELP.get(name))
    g.add_argument("--no-generator", dest="use_generator", action="store_const", const=False,
                   default=None, help="drop the covariate generator (official WCCF=False)")
    g.add_argument("--no-cov-branch", dest="cov_branch", action="store_const", const=False,
                   default=None, help="official branch B (CE on generated features only)")
    g.add_argument("--class-specific-ctx", dest="class_specific_ctx", action="store_const", const=True,
                   default=None, help="prompt methods: one context per class (CoOp's CSC)")
    g.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                   help="try every combination, keep the best validation accuracy (repeatable), "
                        "e.g. --grid lr=0.002,0.02 --grid lambda2=1,5; grid values override the "
                        "method's defaults (croft_noedr's lambda2 = 0 too)")
    g.add_argument("--no-vectorise", dest="vectorise", action="store_false",
                   help="train a --grid's or --search's configurations one by one (resumable) instead "
                        "of stacked (CRoFT's and the prompt learners'; same result, faster, no resume; "
                        "CoCoOp stacked holds N x its per-step activations: use this on large backbones)")


def _add_detection(p: argparse.ArgumentParser) -> None:
    from croft_core.data.benchmarks.spec import DETECTION_IDS

    p.add_argument("--detection-id", choices=sorted(DETECTION_IDS), default=None,
                   help="the ID side of open-set detection (default: the benchmark's own; setup2 and "
                        "shapes_dg use covariate_correct, the paper's protocol; id_test gives the "
                        "source-side numbers)")


def _add_train(p: argparse.ArgumentParser) -> None:
    _add_common(p)
    p.add_argument("--method", default="croft")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", required=True, help="run folder (checkpoint, results.json, history)")
    p.add_argument("--no-resume", action="store_true", help="start over even if --out holds a run")
    _add_detection(p)
    _add_wise(p)
    _add_hyper(p)


def _add_wise(p: argparse.ArgumentParser) -> None:
    p.add_argument("--wise", default=None, metavar="A1,A2,...",
                   help="WiSE curve: evaluate the head interpolated toward zero-shot at these alphas in "
                        "[0, 1] (1 = fine-tuned), e.g. 0,0.25,0.5,0.75,1 (CRoFT, CLIP-Adapter, CoOp heads)")


def _add_eval(p: argparse.ArgumentParser) -> None:
    _add_common(p)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--checkpoint", help="checkpoint folder or Hub id USER/NAME")
    src.add_argument("--method", choices=["zeroshot"])
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", required=True, help="where to write the results JSON")
    p.add_argument("--correct-only", action="store_true",
                   help="only correctly classified ID test images as the ID side (= --detection-id "
                        "id_test_correct)")
    _add_detection(p)
    p.add_argument("--no-knn", action="store_true", help="skip the KNN score (no training split)")


def _add_bench(p: argparse.ArgumentParser) -> None:
    _add_common(p)
    p.add_argument("--methods", default="zeroshot,clip_adapter,tip_adapter,croft,croft_clean")
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--out", required=True)
    p.add_argument("--quick", action="store_true", help="CI mode: 5 epochs, 2 views")
    p.add_argument("--search", type=int, default=0, metavar="N",
                   help="equal tuning budgets: draw N configurations per method and seed from the "
                        "method's declared space (croft_core.runs.train.SEARCH_SPACES), seeded, "
                        "selected on validation only")
    _add_detection(p)
    _add_wise(p)
    _add_hyper(p)


def _add_extract(p: argparse.ArgumentParser) -> None:
    _add_common(p)
    p.add_argument("--seeds", default="1")
    p.add_argument("--shots-list", default=None, help="comma-separated shots (default: --shots)")
    p.add_argument("--batch-size", type=int, default=64)


def _add_render_shapes(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, default=64, help="image side in pixels")
    for split, n in (("train", 40), ("validation", 10), ("test", 30)):
        p.add_argument(f"--n-{split}", type=int, default=n, help=f"images per (class, domain) in {split}")


def _add_pretrain_embedded(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True,
                   help="local-dir folder to write (to replace the shipped model, copy its files into "
                        "croft_core/data/synth/embedded/ afterwards; see PRETRAIN.md there)")
    for name, default, help_ in (
            ("seed", 0, None), ("steps", 1800, None), ("warmup", 100, None), ("batch_size", 128, None),
            ("lr", 2e-3, None), ("weight_decay", 0.1, None), ("pool", 12000, "initial rendered pool"),
            ("refresh", 6, "new images rendered per step"), ("threads", 2, None),
            ("eval_data", None, "shapes dataset folder: evaluate (and snapshot) on it"),
            ("eval_every", 0, "evaluate and snapshot to OUT/stepN every N steps")):
        p.add_argument(f"--{name.replace('_', '-')}", default=default, help=help_,
                       type=type(default) if default is not None else str)
    p.add_argument("--no-dedup", dest="dedup", action="store_false",
                   help="plain InfoNCE: identical captions in a batch count as negatives")


def _add_check_embedded(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="local-dir folder (default: the embedded model)")
    p.add_argument("--data", default=None,
                   help="folder written by `croft render-shapes` (default: the cached shapes dataset)")
    p.add_argument("--json", help="also write the numbers to this JSON file")


def _add_check_sources(p: argparse.ArgumentParser) -> None:
    p.add_argument("--benchmark", default=None,
                   help="one registered benchmark (default: every registered benchmark)")


def _add_push(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder")
    p.add_argument("--repo-id", required=True, help="USER/NAME")
    p.add_argument("--private", action="store_true")
    p.add_argument("--token", default=None, help="Hub token (default: the logged-in one)")


# --- argument values --------------------------------------------------------------------------

def _device(arg: str | None) -> str:
    import torch

    return arg or ("cuda" if torch.cuda.is_available() else "cpu")


def _shots(k: int) -> int | None:
    return None if k is not None and k < 0 else k


def _ints(text: str) -> list[int]:
    return [int(s) for s in text.split(",") if s.strip()]


def _overrides(args: argparse.Namespace) -> dict:
    keys = list(_HYPER) + ["use_generator", "cov_branch", "class_specific_ctx"]
    return {k: getattr(args, k) for k in keys if getattr(args, k, None) is not None}


def _alphas(text: str | None) -> list[float]:
    try:
        alphas = [float(a) for a in (text or "").split(",") if a.strip()]
    except ValueError as err:
        raise UsageError(f"--wise expects comma-separated numbers in [0, 1], got {text!r}") from err
    if any(not 0 <= a <= 1 for a in alphas):
        raise UsageError(f"--wise alphas must be in [0, 1], got {text!r}")
    return alphas


def _benchmark_args(pairs: Sequence[str]) -> dict:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--benchmark-arg expects KEY=VALUE, got {pair!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value  # a plain string such as a path
    return out


def _grid(pairs: Sequence[str]) -> dict[str, list]:
    grid = {}
    for pair in pairs:
        key, sep, values = pair.partition("=")
        if not sep or not key or not values:
            raise UsageError(f"--grid expects KEY=V1,V2,..., got {pair!r}")
        typ = _HYPER.get(key)
        if typ is None:
            raise UsageError(f"--grid {key}: choose one of {sorted(_HYPER)}")
        grid[key] = [typ(v) for v in values.split(",")]
    return grid


def _cache(args) -> Path:
    from croft_core.clip.backbones import DEFAULT_CACHE_DIR

    return Path(args.cache_dir) if args.cache_dir else DEFAULT_CACHE_DIR


def _benchmark_for(args: argparse.Namespace) -> Callable[[int], object]:
    """``seed -> Benchmark`` for ``--benchmark`` and its ``--benchmark-arg`` options."""
    from croft_core.data.benchmarks import get_benchmark

    kwargs = _benchmark_args(args.benchmark_arg)
    return lambda seed: get_benchmark(args.benchmark, seed=seed, **kwargs)


def _backbone(args: argparse.Namespace, device: str | None = None):
    from croft_core.clip.backbones import load_backbone

    return load_backbone(args.backbone, device=device or _device(args.device), precision=args.precision)


# --- subcommands ------------------------------------------------------------------------------

def _run_train(args: argparse.Namespace) -> int:
    from croft_core.runs.pipeline import train_and_evaluate
    from croft_core.runs.train import method_config

    benchmark_for, grid, wise = _benchmark_for(args), _grid(args.grid), _alphas(args.wise)  # flag checks first
    backbone = _backbone(args)  # fails fast offline, before a benchmark's data is prepared
    cfg = method_config(args.method, seed=args.seed, **_overrides(args))
    results = train_and_evaluate(backbone, benchmark_for(args.seed), cfg, shots=_shots(args.shots),
                                 out_dir=args.out, views=args.views, cache_dir=_cache(args),
                                 resume=not args.no_resume, progress=not args.quiet,
                                 num_workers=args.workers, grid=grid, detection_id=args.detection_id,
                                 wise=wise, local=args.local_features, vectorise=args.vectorise)
    print(json.dumps({"out": args.out, "id_accuracy": results["id"]["accuracy"],
                      "energy_auroc": results.get("semantic_all", {}).get("energy", {}).get("auroc")}))
    return 0


def _run_eval(args: argparse.Namespace) -> int:
    from croft_core.runs.evaluate import write_results, zeroshot_model
    from croft_core.heads.hub import load_model
    from croft_core.runs.pipeline import evaluate_checkpoint

    benchmark_for = _benchmark_for(args)
    backbone = _backbone(args)
    benchmark = benchmark_for(args.seed)
    model = (zeroshot_model(backbone, benchmark) if args.method == "zeroshot"
             else load_model(args.checkpoint, device=str(backbone.device)))
    results, _ = evaluate_checkpoint(backbone, benchmark, model, seed=args.seed, shots=_shots(args.shots),
                                     views=args.views, cache_dir=_cache(args), knn=not args.no_knn,
                                     correct_only=args.correct_only, detection_id=args.detection_id,
                                     num_workers=args.workers, local=args.local_features)
    write_results(args.json, results)
    print(args.json)
    return 0


def _run_bench(args: argparse.Namespace) -> int:
    from croft_core.runs.pipeline import run_bench, sweep_axis
    from croft_core.runs.report import markdown_table, statistics_markdown
    from croft_core.runs.train import method_config

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    overrides, views = _overrides(args), args.views
    if args.quick:
        overrides.setdefault("epochs", 5)
        views = min(views, 2)
    for m in methods:  # validate every method before any work
        method_config(m, **overrides)
    benchmark_args, grid, wise = _benchmark_args(args.benchmark_arg), _grid(args.grid), _alphas(args.wise)
    if args.search < 0 or (args.search and grid):
        raise UsageError("--search N needs N >= 1 and no --grid (the search draws from each method's space)")
    sweep_axis(args.benchmark, benchmark_args)  # a list is a sweep; two lists fail before any work
    summary = run_bench(_backbone(args), args.benchmark, methods, _ints(args.seeds), args.out,
                        shots=_shots(args.shots),
                        config_for=lambda m, s: method_config(m, seed=s, **overrides),
                        views=views, cache_dir=_cache(args), progress=not args.quiet,
                        num_workers=args.workers, grid=grid, benchmark_args=benchmark_args,
                        detection_id=args.detection_id, search=args.search, wise=wise,
                        local=args.local_features, vectorise=args.vectorise)
    print(markdown_table(summary) + "\n\n" + statistics_markdown(summary))
    return 0


def _run_extract(args: argparse.Namespace) -> int:
    from croft_core.runs.torchrun import dist_info, extract_benchmarks, init_distributed

    benchmark_for = _benchmark_for(args)
    device = init_distributed() if dist_info().world_size > 1 else _device(args.device)
    shots = [_shots(k) for k in _ints(args.shots_list or str(args.shots))]
    extract_benchmarks(_backbone(args, device), benchmark_for, seeds=_ints(args.seeds), shots=shots,
                       views=args.views, cache_dir=_cache(args), batch_size=args.batch_size,
                       num_workers=args.workers)
    return 0


def _run_render_shapes(args: argparse.Namespace) -> int:
    from croft_core.data.synth.dataset import build_shapes_dataset

    sizes = {s: getattr(args, f"n_{s}") for s in ("train", "validation", "test")}
    build_shapes_dataset(args.out, sizes, seed=args.seed, size=args.size)
    print(args.out)
    return 0


def _run_pretrain_embedded(args: argparse.Namespace) -> int:
    from croft_core.runs.pretrain import PretrainConfig, train

    values = {k: v for k, v in vars(args).items() if k in PretrainConfig.__dataclass_fields__}
    info = train(PretrainConfig(**values), command=args.command_line)
    print(json.dumps({"out": args.out, "wall_time_s": info["wall_time_s"],
                      **({"metrics": info["metrics"]} if "metrics" in info else {})}))
    return 0


def _run_check_embedded(args: argparse.Namespace) -> int:
    from croft_core.data.synth import EMBEDDED_DIR
    from croft_core.runs import embedded_check as check

    result = check.evaluate(args.model or str(EMBEDDED_DIR), args.data)
    print(check.format_table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 0


def _run_check_sources(args: argparse.Namespace) -> int:
    from croft_core.data.benchmarks import check_hub_sources, format_source_table

    rows = check_hub_sources(args.benchmark)  # offline: DatasetUnavailableError at once
    print(format_source_table(rows))
    return 0 if all(row.status in ("ok", "unverified") for row in rows) else 1


def _run_push(args: argparse.Namespace) -> int:
    from croft_core.heads.hub import push_checkpoint

    print(push_checkpoint(args.folder, args.repo_id, private=args.private, token=args.token))
    return 0


class Command(NamedTuple):
    help: str
    add: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS: dict[str, Command] = {
    "train": Command("train one method on one benchmark and seed", _add_train, _run_train),
    "eval": Command("evaluate a checkpoint or zero-shot CLIP", _add_eval, _run_eval),
    "bench": Command("methods x seeds, summary.json and report.html", _add_bench, _run_bench),
    "extract": Command("fill the feature cache (run under torchrun to shard over GPUs)", _add_extract,
                       _run_extract),
    "push": Command("upload a checkpoint folder to the Hugging Face Hub (card written for the repo)",
                    _add_push, _run_push),
    "check-sources": Command("check that the benchmarks' Hub datasets exist and have the expected "
                             "splits and columns (needs internet)", _add_check_sources, _run_check_sources),
    "render-shapes": Command("render the synthetic shapes dataset (save_to_disk)", _add_render_shapes,
                             _run_render_shapes),
    "pretrain-embedded": Command("pretrain the embedded tiny CLIP on the shapes world",
                                 _add_pretrain_embedded, _run_pretrain_embedded),
    "check-embedded": Command("zero-shot / linear-probe / AUROC numbers of a shapes CLIP",
                              _add_check_embedded, _run_check_embedded),
}


def build_parser() -> argparse.ArgumentParser:
    """The ``croft`` parser: one subparser per entry of :data:`COMMANDS`."""
    parser = argparse.ArgumentParser(prog="croft", description="CRoFT: robust CLIP fine-tuning "
                                     "with open-set rejection (ICML 2024)")
    debug_help = "on an error, show the traceback too (and log at DEBUG level)"
    parser.add_argument("--debug", action="store_true", help=debug_help)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.help, description=command.help)
        command.add(p)
        # also accepted after the subcommand; SUPPRESS keeps a --debug given before it
        p.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=debug_help)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``croft`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.command_line = "croft " + shlex.join(argv)  # recorded by pretrain-embedded
    level = logging.DEBUG if args.debug else logging.WARNING if getattr(args, "quiet", False) else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        return COMMANDS[args.command].run(args)
    except KeyboardInterrupt:
        print("croft: interrupted; rerun the same command to resume from the last epoch", file=sys.stderr)
        return 130
    except library_errors() as err:
        if args.debug:
            traceback.print_exc()
        print(f"croft: error: {str(err) or type(err).__name__}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
