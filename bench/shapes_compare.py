"""The shapes comparison of docs/RESULTS_SHAPES.md: every method, one grid of equal size, 3 seeds.

    OMP_WAIT_POLICY=PASSIVE python bench/shapes_compare.py RUNS_DIR [BENCHMARK ...] [--dry-run]

BENCHMARK is ``shapes``, ``shapes_dg_<style>`` (one held-out style) or ``shapes_dg`` (every style held
out in turn: one ``croft bench`` sweep over ``heldout=[...]``, a sub-folder per style; default:
``shapes shapes_dg_painting``). For each one it runs three ``croft bench`` commands that share one
feature cache (``RUNS_DIR/cache``):

1. ``zeroshot,linear_probe`` -- no grid: zero-shot has nothing to train, and the L-BFGS probe picks
   its L2 strength on validation itself (croft_core/heads/probe.py);
2. ``clip_adapter,croft,croft_noedr,croft_clean`` -- ``--grid lr=0.002,0.02`` (the official lr and
   ten times it);
3. ``tip_adapter`` -- ``--grid lr=0.001,0.01`` (its own default lr, AdamW, and ten times it);

so every trained method chooses among two configurations on validation (never test), with
``--min-steps 500`` (16-shot runs on 10 classes otherwise get 150 steps; CROFT_SPEC's Setup-II runs
get several hundred). The commands are printed before they run; ``--dry-run`` only prints them.
``python bench/shapes_results.py RUNS_DIR`` turns the results into the tables.

``--search N`` runs issue 21's protocol instead: one ``croft bench`` per benchmark with every method,
N configurations per method and seed drawn from its declared space (``SEARCH_SPACES``), seeds 1-5
(``--methods a,b`` for a subset),
so the summary holds the 95% intervals and the paired differences of every method against
zero-shot and the best other method (``RUNS_DIR/<benchmark>/search``).
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

from croft_core.data.synth.world import DOMAINS

GROUPS = (("fixed", "zeroshot,linear_probe", ()),
          ("sgd", "clip_adapter,croft,croft_noedr,croft_clean", ("--grid", "lr=0.002,0.02")),
          ("tip", "tip_adapter", ("--grid", "lr=0.001,0.01")))
COMMON = ("--backbone", "embedded", "--seeds", "1,2,3", "--shots", "16", "--min-steps", "500", "--quiet")


# every method, CoCoOp included since its search is stacked (croft_core/runs/stacked_prompts.py): the
# three prompt learners took 58 CPU-minutes on the five benchmarks (docs/RESULTS_SHAPES.md)
ALL_METHODS = "zeroshot,linear_probe,clip_adapter,tip_adapter,croft,croft_noedr,croft_clean,coop,cocoop,locoop"
SEARCH_SEEDS = "1,2,3,4,5"


def commands(runs_dir: str, benchmark: str, search: int = 0, methods: str = ALL_METHODS) -> list[list[str]]:
    """The ``croft`` argument lists of one benchmark's comparison (one ``--search N`` bench when
    ``search``, else the three fixed-grid groups)."""
    if benchmark == "shapes_dg":
        bench_args = ["--benchmark", "shapes_dg", "--benchmark-arg", f"heldout={json.dumps(list(DOMAINS))}"]
    elif benchmark.startswith("shapes_dg_"):
        bench_args = ["--benchmark", "shapes_dg", "--benchmark-arg", f"heldout={benchmark.removeprefix('shapes_dg_')}"]
    else:
        bench_args = ["--benchmark", benchmark]
    if search:
        common = [a if a != "1,2,3" else SEARCH_SEEDS for a in COMMON]
        return [["bench", *bench_args, "--methods", methods, "--search", str(search), *common,
                 "--cache-dir", f"{runs_dir}/cache", "--out", f"{runs_dir}/{benchmark}/search"]]
    out = []
    for name, group_methods, grid in GROUPS:
        out.append(["bench", *bench_args, "--methods", group_methods, *grid, *COMMON,
                    "--cache-dir", f"{runs_dir}/cache", "--out", f"{runs_dir}/{benchmark}/{name}"])
    return out


def main(argv: list[str]) -> int:
    dry = "--dry-run" in argv
    search = 0
    if "--search" in argv:
        i = argv.index("--search")
        search, argv = int(argv[i + 1]), argv[:i] + argv[i + 2:]
    methods = ALL_METHODS
    if "--methods" in argv:
        i = argv.index("--methods")
        methods, argv = argv[i + 1], argv[:i] + argv[i + 2:]
    args = [a for a in argv if a != "--dry-run"]
    runs_dir, benchmarks = args[0], args[1:] or ["shapes", "shapes_dg_painting"]
    from croft_core.cli import main as croft

    for benchmark in benchmarks:
        for cmd in commands(runs_dir, benchmark, search, methods):
            print("croft " + shlex.join(cmd), flush=True)
            if not dry and not (Path(cmd[-1]) / "summary.json").is_file():
                code = croft(cmd)
                if code:
                    return code
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
