"""Soak test of the public app: mixed valid and invalid requests from concurrent clients.

Starts ``python app.py`` with default settings on 127.0.0.1 (a free port; loopback only), then:

1. ``/classify`` latency while idle (sequential calls);
2. ``/classify`` latency while an ``/evaluate`` of ``shapes`` runs;
3. ``--requests`` (default 1,000) mixed requests from ``--clients`` concurrent clients: valid
   ``/classify`` calls and every kind of refused input (local paths, raw file paths, bad numbers,
   oversized images, private handlers called with junk), bounded by ``--time-limit`` seconds;
4. the hostile phase (``--hostile``; alone with ``--hostile-only``): a 38-byte lossless WebP that
   declares 6300x6300 pixels, six at once; vocabularies of 50 MB and of 900 kB from 40 new
   sessions each; a flood of ``/finetune`` calls from one client (40 in its session, 40 in new
   sessions) while another client calls ``/classify``. Printed: the peak RSS over the phase's
   start (per hostile request), the RSS still held 20 s after it, and the other client's p95 (and
   refusals) against its idle p95.

The server's RSS is sampled every 0.2 s throughout. Printed: p50/p95 latency per request kind,
counts of accepted / refused / unhandled requests (an unhandled one is an error without a message,
or an HTTP 5xx other than "queue full"), RSS at start, peak and end, and the ratio of ``/classify``
p95 during ``/evaluate`` to idle. Requests speak Gradio's queue protocol over plain HTTP, as a
browser does. Usage::

    .venv/bin/python bench/soak.py [--requests 1000] [--clients 8] [--time-limit 900] [--hostile]
    .venv/bin/python bench/soak.py --hostile-only
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import PIL.Image

REPO = Path(__file__).resolve().parents[1]
VOCAB = "circle, square, triangle, star, heart"


def _png(image: PIL.Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


class Server:
    """The default app in a subprocess, and Gradio's queue protocol over HTTP."""

    def __init__(self, workdir: Path, cache: Path):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CROFT_", "GRADIO_"))}
        env.update({k: v for k, v in os.environ.items() if k.startswith("MALLOC_")})
        env.update(GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port), HF_HUB_OFFLINE="1",
                   GRADIO_TEMP_DIR=str(workdir / "gradio"), GRADIO_ANALYTICS_ENABLED="False")
        env["CROFT_CACHE"] = str(cache)  # fresh by default: the first /evaluate renders and encodes
        self.log = open(workdir / "server.log", "w")
        self.proc = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=env, stdout=self.log,
                                     stderr=subprocess.STDOUT)
        self.url = f"http://127.0.0.1:{port}"
        self.http = httpx.Client(base_url=self.url, timeout=300,
                                 limits=httpx.Limits(max_connections=64, max_keepalive_connections=64))
        self._wait()
        self.fn = {d["api_name"]: d["id"] for d in self.http.get("/config").json()["dependencies"]}

    def _wait(self, timeout: float = 300) -> None:
        end = time.time() + timeout
        while time.time() < end:
            if self.proc.poll() is not None:
                raise SystemExit("the app exited; see server.log")
            try:
                if self.http.get("/config", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(1)
        raise SystemExit("the app did not start")

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def upload(self, name: str, data: bytes) -> dict:
        r = self.http.post("/gradio_api/upload", files={"files": (name, data)})
        r.raise_for_status()
        return {"path": r.json()[0], "meta": {"_type": "gradio.FileData"}}

    def join(self, event: str, data: list, session: str | None = None) -> httpx.Response:
        return self.http.post("/gradio_api/queue/join", json={
            "data": data, "fn_index": self.fn[event], "session_hash": session or uuid.uuid4().hex,
            "event_data": None, "trigger_id": None})

    def call(self, event: str, data: list, session: str | None = None) -> str:
        """``"ok"``, ``"refused"`` (an error with a message, or queue full) or ``"unhandled"``.

        ``session``: a browser tab's session hash; default a new one per call (as a script may do).
        """
        session = session or uuid.uuid4().hex
        r = self.join(event, data, session)
        if r.status_code == 503:
            return "refused"  # queue full: the bound at work
        if r.status_code != 200:
            return "refused" if r.status_code < 500 else "unhandled"
        with self.http.stream("GET", "/gradio_api/queue/data", params={"session_hash": session}) as s:
            for line in s.iter_lines():
                msg = json.loads(line[5:]) if line.startswith("data:") else {}
                if msg.get("msg") == "process_completed":
                    if msg.get("success"):
                        return "ok"
                    return "refused" if (msg.get("output") or {}).get("error") else "unhandled"
        return "unhandled"

    def call_many(self, event: str, data: list, n: int, session: str) -> dict[str, int]:
        """``n`` calls from one session, as one browser tab sends them: ``n`` joins, then the
        session's one message stream (Gradio serves one stream per session)."""
        counts = {"ok": 0, "refused": 0, "unhandled": 0}
        joined = 0
        for _ in range(n):
            r = self.join(event, data, session)
            if r.status_code == 200:
                joined += 1
            else:
                counts["refused" if r.status_code < 500 or r.status_code == 503 else "unhandled"] += 1
        with self.http.stream("GET", "/gradio_api/queue/data", params={"session_hash": session}) as s:
            for line in s.iter_lines():
                msg = json.loads(line[5:]) if line.startswith("data:") else {}
                if msg.get("msg") == "process_completed":
                    kind = "ok" if msg.get("success") else \
                        "refused" if (msg.get("output") or {}).get("error") else "unhandled"
                    counts[kind] += 1
                    joined -= 1
                    if joined == 0:
                        break
        return counts

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


class RssSampler(threading.Thread):
    def __init__(self, server: Server, every: float = 0.2):
        super().__init__(daemon=True)
        self.server, self.every, self.samples, self.stop = server, every, [], threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.samples.append(self.server.rss_mb())
            time.sleep(self.every)


def requests_mix(server: Server) -> list[tuple[str, str, list]]:
    """(kind, event, data) of every request type; valid ones weigh half."""
    from croft_core.data.synth.world import render

    rng = np.random.default_rng(0)
    circle = server.upload("circle.png", _png(render("circle", "photo", rng, size=64)))
    star = server.upload("star.png", _png(render("star", "sketch", rng, size=224)))
    strip = server.upload("strip.png", _png(PIL.Image.new("RGB", (100_000, 1))))
    text = server.upload("text.png", b"not an image")
    deep = (np.arange(2000 * 2000, dtype=np.uint32) % 65536).astype(np.uint16).reshape(2000, 2000)
    deep16 = server.upload("deep.png", _png(PIL.Image.fromarray(deep)))
    folder = str(Path(server.upload("config.json", b'{"head":"croft","embed_dim":12000}')["path"]).parent)
    valid = [("classify ok", "classify", [circle, VOCAB, "zero-shot", None]),
             ("classify ok", "classify", [star, "shapes", "zero-shot", None]),
             ("classify ok", "classify", [circle, VOCAB, "zero-shot", 14.0]),
             ("classify 16-bit", "classify", [deep16, VOCAB, "zero-shot", None])]
    invalid = [("model path", "classify", [circle, VOCAB, folder, None]),
               ("raw file path", "classify", [{"path": "/etc/hostname"}, VOCAB, "zero-shot", None]),
               ("huge threshold", "classify", [circle, VOCAB, "zero-shot", 10**400]),
               ("non-text model", "classify", [circle, VOCAB, ["x"], None]),
               ("not an image", "classify", [text, VOCAB, "zero-shot", None]),
               ("100000x1 strip", "classify", [strip, VOCAB, "zero-shot", None]),
               ("one class", "classify", [circle, "circle", "zero-shot", None]),
               ("private compare", "compare", [{"path": "/etc/hostname"}, VOCAB, "zero-shot", "zero-shot"]),
               ("private explain", "explain", [{"score": "x"}, VOCAB, "zero-shot"]),
               ("benchmark path", "evaluate", ["/etc/passwd", "zero-shot", 1]),
               ("seed 2^64", "evaluate", ["shapes", "zero-shot", 2**64])]
    return valid * 3 + invalid


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def timed(server: Server, event: str, data: list, session: str | None = None) -> tuple[str, float]:
    t0 = time.perf_counter()
    outcome = server.call(event, data, session)
    return outcome, (time.perf_counter() - t0) * 1000


def classify_latency(server: Server, data: list, n: int, until: threading.Event | None = None) -> list[float]:
    """``n`` sequential calls from one browser tab (one session: Gradio keeps the message queues of
    only the last 2,000 sessions, so a new session per call would evict a running /evaluate's)."""
    times, session = [], uuid.uuid4().hex
    for _ in range(n):
        if until is not None and until.is_set():
            break
        outcome, ms = timed(server, "classify", data, session)
        assert outcome == "ok", outcome
        times.append(ms)
    return times


def during_evaluation(server: Server, data: list, n: int) -> tuple[list[float], float, str]:
    done, result = threading.Event(), {}

    def evaluate():
        result["outcome"], result["ms"] = timed(server, "evaluate", ["shapes", "zero-shot", 1])
        done.set()

    worker = threading.Thread(target=evaluate)
    worker.start()
    time.sleep(1.0)  # let it start
    result["queued"] = flood_queue(server, 60)
    times = classify_latency(server, data, n, until=done)
    worker.join()
    return times, result["ms"], f"{result['outcome']}; {result['queued']}"


def flood_queue(server: Server, n: int) -> str:
    """One client asks for ``n`` more evaluations while one runs: how many does the queue take?"""
    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(lambda _: server.call("evaluate", ["shapes", "zero-shot", 1]), range(n)))
    return (f"{n} more /evaluate of shapes from one client meanwhile: {outcomes.count('refused')} refused "
            f"at once ('Lab busy' or 'queue full'), {outcomes.count('ok')} ran, "
            f"{outcomes.count('unhandled')} unhandled")


def soak(server: Server, total: int, clients: int, time_limit: float) -> dict:
    mix = requests_mix(server)
    picks = [random.Random(i).choice(mix) for i in range(total)]
    stats: dict[str, list[float]] = defaultdict(list)
    outcomes: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    end = time.time() + time_limit

    def one(item):
        kind, event, data = item
        if time.time() > end:
            return
        outcome, ms = timed(server, event, data)
        stats[kind].append(ms)
        outcomes[kind][outcome] += 1

    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, picks))
    return {"latency": stats, "outcomes": outcomes}


def _webp_bomb() -> bytes:
    buffer = io.BytesIO()
    PIL.Image.new("RGB", (6300, 6300), (40, 90, 200)).save(buffer, format="WEBP", lossless=True, quality=0,
                                                          method=0)
    return buffer.getvalue()  # 38 bytes


def _burst(server: Server, calls: list[tuple[str, list, str | None]], workers: int = 8) -> dict[str, int]:
    with ThreadPoolExecutor(workers) as pool:
        outcomes = list(pool.map(lambda c: server.call(*c), calls))
    return {k: outcomes.count(k) for k in ("ok", "refused", "unhandled")}


def _peak_during(server: Server, sampler: "RssSampler", action) -> tuple[Any, float]:
    before, n = server.rss_mb(), len(sampler.samples)
    result = action()
    time.sleep(0.5)
    return result, max(sampler.samples[n:] or [before]) - before


def hostile(server: Server, sampler: "RssSampler", data: list, idle: list[float]) -> list[str]:
    """The hostile phase (issue 25); returns the report's lines."""
    lines, start = [], server.rss_mb()
    bomb = server.upload("bomb.webp", _webp_bomb())
    out, peak = _peak_during(server, sampler, lambda: _burst(
        server, [("classify", [bomb, VOCAB, "zero-shot", None], None)] * 6, workers=6))
    lines.append(f"38-byte WebP declaring 6300x6300, 6 at once: {out}; peak +{peak:.0f} MB")
    for size in (50 * 2**20, 900 * 2**10):
        vocab = ("x, " * (size // 3))[:size]
        out, peak = _peak_during(server, sampler, lambda: _burst(
            server, [("classify", [data[0], vocab, "zero-shot", None], None)] * 40, workers=4))
        lines.append(f"{size / 2**20:.1f} MB vocabulary from 40 new sessions: {out}; peak +{peak:.0f} MB")
    time.sleep(20)
    lines.append(f"RSS 20 s after the images and vocabularies: {server.rss_mb() - start:+.0f} MB over the start")
    done, other = threading.Event(), []
    watcher = threading.Thread(target=lambda: other.extend(_watch(server, data, done)))
    watcher.start()
    job = ["shapes", "croft", 2, 1, 4]
    session = uuid.uuid4().hex
    own = server.call_many("finetune", job, 40, session)
    fresh = _burst(server, [("finetune", job, None)] * 40, workers=40)
    done.set()
    watcher.join()
    times = [ms for outcome, ms in other if outcome == "ok"]
    refused = sum(1 for outcome, _ in other if outcome != "ok")
    lines.append(f"/finetune flood: 40 from one session {own}, 40 from new sessions {fresh}")
    lines.append(f"the other client's /classify meanwhile: n={len(other)} refused={refused} "
                 f"p95={percentile(times, 95):.0f} ms ({percentile(times, 95) / percentile(idle, 95):.2f}x idle)")
    time.sleep(20)
    lines.append(f"RSS: hostile phase start {start:.0f} MB, 20 s after it {server.rss_mb():.0f} MB "
                 f"(held {server.rss_mb() - start:+.0f} MB)")
    return lines


def _watch(server: Server, data: list, done: threading.Event) -> list[tuple[str, float]]:
    session, seen = uuid.uuid4().hex, []
    while not done.is_set():
        try:
            seen.append(timed(server, "classify", data, session))
        except httpx.HTTPError:
            seen.append(("unhandled", float("nan")))
    return seen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--time-limit", type=float, default=900, help="seconds for the mixed phase")
    parser.add_argument("--idle-calls", type=int, default=60)
    parser.add_argument("--hostile", action="store_true", help="add the hostile phase (issue 25)")
    parser.add_argument("--hostile-only", action="store_true", help="idle calls and the hostile phase only")
    parser.add_argument("--cache", type=Path, default=None,
                        help="CROFT_CACHE of the server (default: a fresh folder, so /evaluate does real work)")
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="croft-soak-"))
    server = Server(workdir, args.cache or workdir / "cache")
    sampler = RssSampler(server)
    sampler.start()
    try:
        ready_rss = server.rss_mb()
        from croft_core.data.synth.world import render

        circle = server.upload("c.png", _png(render("circle", "photo", np.random.default_rng(1), size=64)))
        data = [circle, VOCAB, "zero-shot", None]
        classify_latency(server, data, 5)  # warm
        idle = classify_latency(server, data, args.idle_calls)
        if args.hostile_only:
            print("\n".join([f"/classify idle: n={len(idle)} p95={percentile(idle, 95):.0f} ms",
                             *hostile(server, sampler, data, idle)]))
            return 0
        busy, eval_ms, eval_outcome = during_evaluation(server, data, 10_000)
        start_rss = server.rss_mb()
        t0 = time.time()
        result = soak(server, args.requests, args.clients, args.time_limit)
        soak_s = time.time() - t0
        end_rss = server.rss_mb()
        hostile_lines = hostile(server, sampler, data, idle) if args.hostile else []
    finally:
        sampler.stop.set()
        server.close()
    report(idle, busy, eval_ms, eval_outcome, result, soak_s, (ready_rss, start_rss, end_rss),
           sampler.samples, args)
    print("\n".join(hostile_lines))
    return 0


def report(idle, busy, eval_ms, eval_outcome, result, soak_s, rss, samples, args) -> None:
    ready_rss, start_rss, end_rss = rss
    print(f"/classify idle:            n={len(idle)} p50={percentile(idle, 50):.0f} ms "
          f"p95={percentile(idle, 95):.0f} ms")
    print(f"/classify during /evaluate: n={len(busy)} p50={percentile(busy, 50):.0f} ms "
          f"p95={percentile(busy, 95):.0f} ms  (ratio p95 {percentile(busy, 95) / percentile(idle, 95):.2f}x;"
          f" /evaluate in {eval_ms / 1000:.1f} s)\n/evaluate: {eval_outcome}")
    n = sum(len(v) for v in result["latency"].values())
    print(f"mixed: {n} of {args.requests} requests, {args.clients} clients, {soak_s:.0f} s")
    print(f"{'request':22s} {'n':>5s} {'ok':>5s} {'refused':>8s} {'unhandled':>9s} {'p50 ms':>8s} {'p95 ms':>8s}")
    totals = defaultdict(int)
    for kind in sorted(result["latency"]):
        times, out = result["latency"][kind], result["outcomes"][kind]
        for k, v in out.items():
            totals[k] += v
        print(f"{kind:22s} {len(times):5d} {out['ok']:5d} {out['refused']:8d} {out['unhandled']:9d} "
              f"{percentile(times, 50):8.0f} {percentile(times, 95):8.0f}")
    every = [t for v in result["latency"].values() for t in v]
    print(f"{'all':22s} {n:5d} {totals['ok']:5d} {totals['refused']:8d} {totals['unhandled']:9d} "
          f"{percentile(every, 50):8.0f} {percentile(every, 95):8.0f}")
    print(f"RSS: when ready {ready_rss:.0f} MB; mixed phase start {start_rss:.0f} MB, end {end_rss:.0f} MB, "
          f"growth {end_rss - start_rss:+.0f} MB; peak {max(samples):.0f} MB; end - ready "
          f"{end_rss - ready_rss:+.0f} MB ({len(samples)} samples)")


if __name__ == "__main__":
    sys.exit(main())
