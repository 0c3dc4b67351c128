"""Seconds from ``python app.py`` to the first page served, measured as a visitor meets it.

Starts the app in a fresh process (the default settings: the embedded model, offline) on a free
port, polls ``GET /`` every 0.1 s and prints the time until the first ``200`` whose page carries
the app's title, then stops the app.
Issue 12's target: the first page within 15 s on 2 cores.

Each run is cold for Python (new process, imports), warm for the disk caches (text features,
rendered example images), as a restarted Space is. ``--cold-cache`` points the caches at an empty
temporary folder (``CROFT_CACHE``) to measure a first-ever start.

``--baseline DIR`` times another checkout's ``app.py`` too (e.g. ``git archive COMMIT | tar -x -C
DIR``), alternating with this one in the same run (each with its own tree on ``PYTHONPATH``), and
prints the ratios this / baseline of the wall seconds and of the app process's CPU seconds (user +
system until it is stopped, which includes the background work it started): on a loaded machine the
CPU ratio is the steadier one.

Run: ``.venv/bin/python bench/startup.py [--runs 3] [--cold-cache] [--baseline DIR]``
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TITLE = "CRoFT Lab"
LIMIT_S = 180.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def first_page(url: str, proc: subprocess.Popen, start: float) -> float:
    """Seconds until ``url`` answers 200 with the app's title (raises if the app dies or stalls)."""
    while time.perf_counter() - start < LIMIT_S:
        if proc.poll() is not None:
            raise SystemExit(f"the app exited with code {proc.returncode} before serving a page")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200 and TITLE in response.read().decode("utf-8", "replace"):
                    return time.perf_counter() - start
        except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
            pass
        time.sleep(0.1)
    raise SystemExit(f"no page within {LIMIT_S:.0f} s")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def one_run(env: dict[str, str], root: Path = ROOT) -> tuple[float, float]:
    """``(wall seconds to the first page, CPU seconds of the app process)`` of ``root``'s ``app.py``."""
    port = free_port()
    env = {**env, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port), "PYTHONPATH": str(root)}
    cpu = _children_cpu()
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(root / "app.py")], cwd=root, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wall = first_page(f"http://127.0.0.1:{port}/", proc, start)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return wall, _children_cpu() - cpu


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cold-cache", action="store_true", help="empty CROFT_CACHE per run")
    parser.add_argument("--baseline", type=Path, help="another checkout's root, timed alternately")
    args = parser.parse_args(argv)
    if args.baseline is not None and not (args.baseline / "app.py").is_file():
        parser.error(f"--baseline {args.baseline}: no app.py there")
    base = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
            "OMP_WAIT_POLICY": "PASSIVE"}
    trees = {"this": ROOT, **({"baseline": args.baseline.resolve()} if args.baseline else {})}
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in trees}
    for i in range(args.runs):
        for name, root in trees.items():
            env = dict(base)
            with tempfile.TemporaryDirectory() as tmp:
                if args.cold_cache:
                    env["CROFT_CACHE"] = tmp
                times[name].append(one_run(env, root))
            wall, cpu = times[name][-1]
            print(f"run {i + 1} ({name}): first page after {wall:.1f} s, {cpu:.1f} CPU s", flush=True)
    for name, runs in times.items():
        print(f"first page ({name}): median {statistics.median(w for w, _ in runs):.1f} s, "
              f"{statistics.median(c for _, c in runs):.1f} CPU s over {len(runs)} runs "
              f"(target <= 15 s on 2 cores; {os.cpu_count()} CPUs visible)")
    if args.baseline:
        for k, what in ((0, "wall"), (1, "CPU")):
            ratio = statistics.median(r[k] for r in times["this"]) / statistics.median(r[k] for r in times["baseline"])
            print(f"this / baseline ({what}): {ratio:.2f}x")


if __name__ == "__main__":
    main()
