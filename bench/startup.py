"""Seconds from ``python app.py`` to the first page served, measured as a visitor meets it.

Starts the app in a fresh process (the default settings: the embedded model, offline) on a free
port, polls ``GET /`` every 0.1 s and prints the time until the first ``200`` whose page carries
the app's title, then stops the app.
Issue 12's target: the first page within 15 s on 2 cores.

Each run is cold for Python (new process, imports), warm for the disk caches (text features,
rendered example images), as a restarted Space is. ``--cold-cache`` points the caches at an empty
temporary folder (``CROFT_CACHE``) to measure a first-ever start.

Run: ``.venv/bin/python bench/startup.py [--runs 3] [--cold-cache]``
"""

from __future__ import annotations

import argparse
import os
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


def one_run(env: dict[str, str]) -> float:
    port = free_port()
    env = {**env, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port)}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(ROOT / "app.py")], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        return first_page(f"http://127.0.0.1:{port}/", proc, start)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cold-cache", action="store_true", help="empty CROFT_CACHE per run")
    args = parser.parse_args(argv)
    base = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
            "OMP_WAIT_POLICY": "PASSIVE"}
    times = []
    for i in range(args.runs):
        env = dict(base)
        with tempfile.TemporaryDirectory() as tmp:
            if args.cold_cache:
                env["CROFT_CACHE"] = tmp
            times.append(one_run(env))
        print(f"run {i + 1}: first page after {times[-1]:.1f} s", flush=True)
    print(f"first page: median {statistics.median(times):.1f} s over {len(times)} runs "
          f"(target <= 15 s on 2 cores; {os.cpu_count()} CPUs visible)")


if __name__ == "__main__":
    main()
