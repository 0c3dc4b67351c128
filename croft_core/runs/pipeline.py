"""End-to-end runs used by the CLI and the app: train on a benchmark, evaluate, sweep (bench).

Every run directory gets the checkpoint (``config.json``, ``model.safetensors``, model card), the
results JSON of DESIGN.md, the training history and the split manifest, so any result can be
re-evaluated on exactly the same images.
"""

from __future__ import annotations

import inspect
import itertools
import json
import logging
import re
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch

from croft_core.clip.backbones import DEFAULT_CACHE_DIR, Backbone, same_backbone
from croft_core.data.benchmarks import write_manifest
from croft_core.errors import UsageError
from croft_core.runs.evaluate import (BenchmarkFeatures, benchmark_text_features, calibrate, evaluate,
                       headline_metrics, prepare_features, write_results, zeroshot_model)
from croft_core.heads.checkpoint import CroftModel
from croft_core.runs.train import (METHODS, SEARCH_SPACES, TrainConfig, init_model, on_edge, search_configs,
                                   train)
from croft_core.runs.vectorised import supports_vectorised, train_many

logger = logging.getLogger(__name__)


def _metadata(benchmark, backbone: Backbone, method: str, seed: int, shots: int | None) -> dict:
    return {"benchmark": benchmark.name, "backbone": backbone.spec, "method": method, "seed": seed,
            "shots": shots}


def fit(backbone: Backbone, benchmark, cfg: TrainConfig, feats: BenchmarkFeatures,
        text_features: torch.Tensor, *, out_dir: str | Path | None = None, resume: bool = True,
        progress: bool = True) -> tuple[CroftModel, list[dict]]:
    """Train ``cfg.method`` on prepared features and calibrate its threshold on validation."""
    model = _new_model(backbone, benchmark, cfg, feats, text_features)
    result = train(model, feats.train, text_features, cfg, val_set=feats.val, out_dir=out_dir,
                   resume=resume, progress=progress)
    calibrate(result.model, text_features, feats.val)
    return result.model, result.history


def _new_model(backbone: Backbone, benchmark, cfg: TrainConfig, feats: BenchmarkFeatures,
               text_features: torch.Tensor) -> CroftModel:
    model = init_model(cfg, embed_dim=backbone.embed_dim, logit_scale=backbone.logit_scale,
                       classnames=benchmark.classnames, train_set=feats.train,
                       text_features=text_features, backbone=backbone.spec,
                       templates=_templates(benchmark), text_mode=benchmark.text_mode, clip=backbone)
    return model.to(backbone.device)


def fit_many(backbone: Backbone, benchmark, cfgs: Sequence[TrainConfig], feats: BenchmarkFeatures,
             text_features: torch.Tensor, *, progress: bool = True) -> list[tuple[CroftModel, list[dict]]]:
    """:func:`fit` for many configurations at once (:func:`~croft_core.runs.vectorised.train_many`:
    CRoFT's and the prompt learners' configurations stacked, other methods one by one); no training
    state is saved."""
    models = [_new_model(backbone, benchmark, cfg, feats, text_features) for cfg in cfgs]
    results = train_many(models, cfgs, feats.train, text_features, val_set=feats.val, progress=progress)
    for result in results:
        calibrate(result.model, text_features, feats.val)
    return [(r.model, r.history) for r in results]


def _templates(benchmark) -> tuple[str, ...]:
    from croft_core.clip.prompts import get_templates

    return get_templates(benchmark.templates)


def grid_configs(cfg: TrainConfig, grid: dict[str, Sequence[Any]] | None) -> list[TrainConfig]:
    """Every combination of ``grid`` values applied to ``cfg`` (just ``[cfg]`` without a grid)."""
    if not grid or cfg.method == "zeroshot":
        return [cfg]
    names = list(grid)
    unknown = set(names) - set(TrainConfig.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown grid options {sorted(unknown)}")
    return [replace(cfg, **dict(zip(names, values))) for values in itertools.product(*grid.values())]


def _best_val(history: list[dict]) -> float:
    return max((row.get("val_accuracy", float("-inf")) for row in history), default=float("-inf"))


def train_and_evaluate(backbone: Backbone, benchmark, cfg: TrainConfig, *, shots: int | None,
                       out_dir: str | Path, views: int = 8, feats: BenchmarkFeatures | None = None,
                       cache_dir: str | Path | None = DEFAULT_CACHE_DIR, resume: bool = True,
                       progress: bool = True, num_workers: int = 0,
                       grid: dict[str, Sequence[Any]] | None = None,
                       detection_id: str | None = None, search: int = 0, wise: Sequence[float] = (),
                       local: bool = False, vectorise: bool = True) -> dict[str, Any]:
    """``croft train``: features -> train -> calibrate -> evaluate -> save everything in ``out_dir``.

    ``wise`` (alphas in [0, 1]) adds ``results["wise"]``, the WiSE curve of a head with a zero-shot
    point (:mod:`croft_core.heads.wise`); ``local`` caches local features (the ``glmcm`` score;
    LoCoOp turns it on itself).

    With a ``grid`` (e.g. ``{"lr": [0.002, 0.02], "lambda2": [1, 5]}``) every combination is trained
    on the cached features and the one with the best validation accuracy (the official selection
    criterion; the first on ties) is evaluated and saved; ``results["selection"]`` lists them all.
    Test splits are never used for selection. With ``search=N`` (instead of a grid) N configurations
    are drawn from the method's :data:`~croft_core.runs.train.SEARCH_SPACES` (seeded by method and
    seed) and selected the same way; ``results["search"]`` records every configuration tried, the
    chosen one and which of its options lie on the edge of the space.

    With ``vectorise`` (the default), the candidates of a method with a stacked step (CRoFT's, see
    :mod:`croft_core.runs.vectorised`; CoOp's, CoCoOp's and LoCoOp's, see
    :mod:`croft_core.runs.stacked_prompts`) are trained at once, with the same result as one by one but
    without a resumable training state; ``vectorise=False`` (``--no-vectorise``) forces the
    sequential loop, which saves each candidate's state in ``out_dir/search/NNN`` (or ``grid/NNN``).

    Returns:
        The results dict (also written to ``out_dir/results.json``).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if feats is None:
        feats = prepare_features(backbone, benchmark, shots=shots, seed=cfg.seed, views=views,
                                 cache_dir=cache_dir, num_workers=num_workers,
                                 local=local or needs_local(cfg.method))
    text = benchmark_text_features(backbone, benchmark, cache_dir=cache_dir)
    if cfg.method == "zeroshot":
        model, history = zeroshot_model(backbone, benchmark), []
        calibrate(model, text, feats.val)
    if search and grid:
        raise UsageError("give either a grid or a search budget, not both")
    drawn = search_configs(cfg.method, search, cfg.seed) if search else []
    selection: list[dict[str, Any]] = []
    if cfg.method != "zeroshot":
        candidates = [replace(cfg, **c) for c in drawn] if drawn else grid_configs(cfg, grid)
        keys = list(drawn[0]) if drawn else list(grid or {})
        best = None
        stacked = vectorise and len(candidates) > 1 and all(supports_vectorised(c) for c in candidates)
        trained = fit_many(backbone, benchmark, candidates, feats, text, progress=progress) if stacked else None
        for i, candidate in enumerate(candidates):
            run_dir = out_dir if len(candidates) == 1 else out_dir / ("search" if drawn else "grid") / f"{i:03d}"
            model_i, history_i = trained[i] if trained else fit(backbone, benchmark, candidate, feats, text,
                                                                out_dir=run_dir, resume=resume, progress=progress)
            val = _best_val(history_i)
            selection.append({**{k: getattr(candidate, k) for k in keys}, "val_accuracy": val})
            if best is None or val > best[0]:
                best = (val, candidate, model_i, history_i)
        _, cfg, model, history = best
    results, energies = evaluate(model, text, feats, detection_id=detection_id or benchmark.detection_id)
    results = {**_metadata(benchmark, backbone, cfg.method, cfg.seed, shots), **results,
               "train_config": asdict(cfg), "seconds": round(time.perf_counter() - t0, 2)}
    if drawn:
        chosen = {k: getattr(cfg, k) for k in drawn[0]}
        results["search"] = {"budget": search, "space": SEARCH_SPACES[cfg.method], "tried": selection,
                             "chosen": chosen, "val_accuracy": _best_val(history),
                             "on_edge": on_edge(cfg.method, chosen), "selected_on": feats.val.name}
    elif len(selection) > 1:
        results["selection"] = selection
    if wise:
        results["wise"] = wise_curve(model, text, feats, wise)
    model.update_config(metrics=headline_metrics(results))
    model.save(out_dir)
    write_results(out_dir / "results.json", results)
    (out_dir / "history.json").write_text(json.dumps(history, indent=1))
    write_manifest(out_dir / "manifest.json", benchmark, feats.splits, cfg.seed, shots)
    (out_dir / "energies.json").write_text(json.dumps({k: [round(float(x), 4) for x in v]
                                                       for k, v in energies.items()}))
    return results


def needs_local(method: str) -> bool:
    """Whether ``method`` trains on local features (LoCoOp)."""
    return METHODS.get(method, {}).get("step") == "locoop"


def wise_curve(model: CroftModel, text_features: torch.Tensor, feats: BenchmarkFeatures,
               alphas: Sequence[float]) -> list[dict[str, Any]]:
    """WiSE: ID and covariate accuracy and semantic AUROC of every score against ``alpha``
    (``[]`` for a head without a zero-shot point)."""
    from croft_core.heads.wise import WISE_HEADS, wise

    if model.config.head not in WISE_HEADS:
        logger.info("no WiSE curve for %s (no zero-shot point)", model.config.method)
        return []
    curve = []
    for alpha in alphas:
        res, _ = evaluate(wise(model, alpha), text_features, feats)
        curve.append({"name": f"alpha={alpha:g}", "alpha": float(alpha), "id_accuracy": res["id"]["accuracy"],
                      "covariate_accuracy": {c["name"]: c["accuracy"] for c in res["covariate"]},
                      "auroc": {k: v["auroc"] for k, v in res.get("semantic_all", {}).items()}})
    return curve


def check_compatible(model: CroftModel, backbone: Backbone, benchmark) -> None:
    """Raise ``ValueError`` unless ``model`` can run on ``backbone`` and score ``benchmark``'s classes
    (the backbone rule is :func:`~croft_core.clip.backbones.same_backbone`, as in the app)."""
    if model.config.backbone and not same_backbone(model.config.backbone, backbone.spec):
        raise ValueError(f"the checkpoint was trained on backbone {model.config.backbone!r} but "
                         f"{backbone.spec!r} is loaded; pass --backbone {model.config.backbone}")
    if model.config.embed_dim != backbone.embed_dim and model.config.head != "zeroshot":
        raise ValueError(f"checkpoint width {model.config.embed_dim} != backbone width "
                         f"{backbone.embed_dim}")
    if not model.class_agnostic and tuple(model.config.classnames) != tuple(benchmark.classnames):
        raise ValueError(f"this {model.config.head} checkpoint is tied to its {model.config.num_classes} "
                         f"training classes, which differ from the benchmark's classes")


def evaluate_checkpoint(backbone: Backbone, benchmark, model: CroftModel, *, seed: int = 1,
                        shots: int | None = None, views: int = 8,
                        cache_dir: str | Path | None = DEFAULT_CACHE_DIR, knn: bool = True,
                        correct_only: bool = False, detection_id: str | None = None,
                        num_workers: int = 0, local: bool = False) -> tuple[dict[str, Any], dict]:
    """``croft eval``: evaluate a trained or zero-shot model on a benchmark.

    The training split is only encoded for the KNN score's bank (``knn=True``). The ID side of
    detection is the benchmark's ``detection_id`` unless ``detection_id`` names another
    (``correct_only`` turns ``"id_test"`` into ``"id_test_correct"``).
    """
    check_compatible(model, backbone, benchmark)
    model.attach_backbone(backbone)  # prompt-learning heads run the frozen text tower
    feats = prepare_features(backbone, benchmark, shots=shots, seed=seed, views=views,
                             cache_dir=cache_dir, need_train=knn, num_workers=num_workers, local=local)
    text = benchmark_text_features(backbone, benchmark, cache_dir=cache_dir)
    results, energies = evaluate(model.to(backbone.device), text, feats, correct_only=correct_only,
                                 detection_id=detection_id or benchmark.detection_id)
    return {**_metadata(benchmark, backbone, model.config.method, seed, shots), **results}, energies


def _takes_sequence(benchmark, key: str) -> bool:
    """Whether the registered factory's option ``key`` itself takes a list (e.g. a class list)."""
    from croft_core.data.benchmarks import BENCHMARKS

    factory = BENCHMARKS.get(str(benchmark)) if isinstance(benchmark, (str, Path)) else None
    param = inspect.signature(factory).parameters.get(key) if factory else None
    if param is None:
        return False
    if param.annotation is inspect.Parameter.empty:
        return isinstance(param.default, (list, tuple))
    text = param.annotation if isinstance(param.annotation, str) else str(param.annotation)
    return re.search(r"\b(Sequence|Iterable|Collection|list|List|tuple|Tuple)\b", text) is not None


def sweep_folder(value: Any) -> str:
    """The sub-folder (and column) name of one swept value: its text, made safe for a path."""
    text = value if isinstance(value, str) else json.dumps(value)
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", text).strip("._") or "_"


def sweep_axis(benchmark, benchmark_args: Mapping[str, Any]) -> tuple[str, list] | None:
    """The swept option of a bench: the one list-valued benchmark option whose factory parameter
    takes a single value (``heldout=["photo", "sketch"]``); ``None`` when there is none.

    Raises:
        UsageError: two such options, an empty list, or two values with the same folder name.
    """
    keys = [k for k, v in benchmark_args.items() if isinstance(v, list) and not _takes_sequence(benchmark, k)]
    if len(keys) > 1:
        raise UsageError(f"only one benchmark option can be a list (a sweep), got lists for {keys}; "
                         f"give one of them a single value and run one bench per value of it")
    if not keys:
        return None
    key, values = keys[0], list(benchmark_args[keys[0]])
    if not values:
        raise UsageError(f"--benchmark-arg {key}=[] is an empty sweep; give at least one value")
    folders = [sweep_folder(v) for v in values]
    if len(set(folders)) < len(folders):
        raise UsageError(f"--benchmark-arg {key}={json.dumps(values)} names a value twice "
                         f"(sub-folders {folders}); list each value once")
    return key, values


def _factory(benchmark, benchmark_args: Mapping[str, Any] | None) -> Callable[[int], Any]:
    if callable(benchmark):
        if benchmark_args:
            raise ValueError("benchmark_args only apply to a benchmark name or JSON file, not to a factory")
        return benchmark
    from croft_core.data.benchmarks import get_benchmark

    return lambda seed: get_benchmark(benchmark, seed=seed, **dict(benchmark_args or {}))


def run_bench(backbone: Backbone, benchmark: str | Path | Callable[[int], Any], methods: Sequence[str],
              seeds: Sequence[int], out_dir: str | Path, *, shots: int | None,
              config_for: Callable[[str, int], TrainConfig], views: int = 8,
              cache_dir: str | Path | None = DEFAULT_CACHE_DIR, progress: bool = True,
              num_workers: int = 0, grid: dict[str, Sequence[Any]] | None = None,
              benchmark_args: Mapping[str, Any] | None = None, detection_id: str | None = None,
              search: int = 0, wise: Sequence[float] = (), local: bool = False,
              vectorise: bool = True) -> dict[str, Any]:
    """``croft bench``: every method x seed on shared cached features, then summary and report.

    A sweep (see :func:`sweep_axis`), e.g. ``benchmark_args={"heldout": ["photo", "sketch"]}``,
    runs the bench once per value in ``out_dir/<value>/`` (one feature cache for all) and writes the
    combined ``summary.json`` / ``report.html`` of :func:`~croft_core.runs.report.sweep_summary`: a table
    per metric with a column per value plus their average, mean ± std over seeds.

    Args:
        benchmark: a registered name or benchmark JSON file (options in ``benchmark_args``), or a
            ``seed -> Benchmark`` factory (Setup-I draws its class split per seed).
        config_for: ``(method, seed) -> TrainConfig``.
        grid: hyper-parameter values selected on validation per method and seed (see
            :func:`train_and_evaluate`).
        benchmark_args: options of a named benchmark (``--benchmark-arg``).
        detection_id: the ID side of detection (default: each benchmark's own ``detection_id``).
        search: N > 0 draws N configurations per method and seed from
            :data:`~croft_core.runs.train.SEARCH_SPACES`, selected on validation (the summary's
            ``search`` lists the chosen one per seed and whether it lies on the edge of the space).
        vectorise: train a grid's or search's configurations stacked where the method allows it
            (see :func:`train_and_evaluate`); False forces the sequential loop.

    Returns:
        The summary dict (also written to ``out_dir/summary.json``; ``report.html`` beside it).
    """
    axis = sweep_axis(benchmark, benchmark_args or {}) if not callable(benchmark) else None
    settings = dict(methods=methods, seeds=seeds, shots=shots, config_for=config_for, views=views,
                    cache_dir=cache_dir, progress=progress, num_workers=num_workers, grid=grid,
                    detection_id=detection_id, search=search, wise=wise, local=local, vectorise=vectorise)
    if axis is None:
        return _bench_once(backbone, _factory(benchmark, benchmark_args), Path(out_dir), **settings)[0]
    from croft_core.runs.report import sweep_summary, write_sweep_report

    key, values = axis
    runs_by_value = {}
    for value in values:
        logger.info("bench sweep: %s=%s", key, value)
        factory = _factory(benchmark, {**benchmark_args, key: value})
        _, runs_by_value[sweep_folder(value)] = _bench_once(backbone, factory, Path(out_dir) / sweep_folder(value),
                                                            **settings)
    summary = {**sweep_summary(key, runs_by_value, values=values), "benchmark": str(benchmark)}
    write_results(Path(out_dir) / "summary.json", summary)
    write_sweep_report(Path(out_dir) / "report.html", summary)
    return summary


def _bench_once(backbone: Backbone, benchmark_factory: Callable[[int], Any], out_dir: Path, *,
                methods: Sequence[str], seeds: Sequence[int], shots: int | None,
                config_for: Callable[[str, int], TrainConfig], views: int,
                cache_dir: str | Path | None, progress: bool, num_workers: int,
                grid: dict[str, Sequence[Any]] | None, detection_id: str | None,
                search: int, wise: Sequence[float] = (),
                local: bool = False, vectorise: bool = True) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One bench (every method x seed) in ``out_dir``; returns its summary and its runs."""
    from croft_core.runs.report import summarize, write_report

    runs: list[dict[str, Any]] = []
    energies_by_method: dict[str, dict] = {}
    histories: dict[str, list] = {}
    for seed in seeds:
        benchmark = benchmark_factory(seed)
        feats = prepare_features(backbone, benchmark, shots=shots, seed=seed, views=views,
                                 cache_dir=cache_dir, num_workers=num_workers,
                                 local=local or any(needs_local(m) for m in methods))
        for method in methods:
            cfg = config_for(method, seed)
            run_dir = out_dir / f"{method}_seed{seed}"
            logger.info("bench: %s seed %d", method, seed)
            results = train_and_evaluate(backbone, benchmark, cfg, shots=shots, out_dir=run_dir,
                                         views=views, feats=feats, cache_dir=cache_dir,
                                         progress=progress, grid=grid, detection_id=detection_id,
                                         search=search, wise=wise, vectorise=vectorise)
            write_results(out_dir / f"{method}_seed{seed}.json", results)
            runs.append(results)
            if seed == seeds[0]:
                energies_by_method[method] = json.loads((run_dir / "energies.json").read_text())
                histories[method] = json.loads((run_dir / "history.json").read_text())
    summary = summarize(runs)
    write_results(out_dir / "summary.json", summary)
    write_report(out_dir / "report.html", summary, energies_by_method, histories)
    return summary, runs
