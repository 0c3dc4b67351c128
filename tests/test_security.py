"""Safe to host in public (issue 11): the trust boundary, checkpoint vetting, limits, and every
reported attack replayed against a default ``python app.py`` on loopback.

The library tests run in-process on a tiny backbone. The live tests (marker ``slow``) start the app
as a visitor meets it — default settings, the embedded model, ``127.0.0.1`` only — in a subprocess,
and attack it through plain HTTP (Gradio's queue protocol, as the browser speaks it, so private
events are reachable by ``fn_index`` too). Each attack must be refused with a clear message that
names no server path, cost the server less than 300 MB of peak RSS, and leave it serving the next
normal request.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
import uuid
import zlib
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from croft_app.service.limits import JobTimeout, deadline, prune_lru
from croft_core.heads.checkpoint import CroftModel, HeadConfig
from croft_app.service.models import ClassifierRegistry
from croft_app.service.security import (LOCAL_PATH_REFUSED, NOT_AN_UPLOAD, AccessRefused, ServingPolicy,
                                 check_benchmark, check_benchmark_file, check_no_symlinks, confine,
                                 display_spec, is_hub_id, scrub_paths)
from croft_app.service.settings import AppSettings
from croft_app.service.vetting import CheckpointRejected, display_name, load_vetted, vet_checkpoint

REPO = Path(__file__).resolve().parents[1]
MB = 2**20


# ---------------------------------------------------------------------------------------------
# the trust boundary (library)
# ---------------------------------------------------------------------------------------------

def test_policy_and_settings_from_the_environment():
    assert ServingPolicy.from_env({}) == ServingPolicy(allow_local_paths=False, allow_hub_models=True)
    assert ServingPolicy.from_env({"CROFT_ALLOW_LOCAL_PATHS": "1", "CROFT_ALLOW_HUB_MODELS": "no"}) == \
        ServingPolicy(allow_local_paths=True, allow_hub_models=False)
    with pytest.raises(ValueError, match="CROFT_ALLOW_ANY_MODEL was replaced"):
        ServingPolicy.from_env({"CROFT_ALLOW_ANY_MODEL": "1"})
    with pytest.raises(ValueError, match="CROFT_ALLOW_LOCAL_PATHS must be 1 or 0"):
        ServingPolicy.from_env({"CROFT_ALLOW_LOCAL_PATHS": "maybe"})
    settings = AppSettings.from_env({"CROFT_MAX_FILE_SIZE": "2mb", "CROFT_QUEUE_SIZE": "5",
                                     "CROFT_TEXT_CACHE_MB": "3", "CROFT_CHECKPOINTS": "a/b, ,c/d",
                                     "CROFT_SESSION_MODELS_MB": "7"})
    assert (settings.max_file_size, settings.queue_size, settings.text_cache_bytes) == (2 * MB, 5, 3 * MB)
    assert settings.session_models_bytes == 7 * MB and AppSettings().session_models_bytes == 128 * MB
    assert settings.checkpoints == ("a/b", "c/d") and settings.policy == ServingPolicy()
    with pytest.raises(ValueError, match="CROFT_MAX_FILE_SIZE must be a size such as 10mb"):
        AppSettings.from_env({"CROFT_MAX_FILE_SIZE": "huge"})


@pytest.mark.parametrize("text, ok", [("org/name", True), ("a-b/c.d_e", True), ("org/name/x", False),
                                      ("/etc", False), ("../x", False), ("org/..", False),
                                      ("~/x", False), ("org/na me", False), ("name", False),
                                      ("org/-x", False), ("a" * 97 + "/x", False),
                                      ("org/name.git", False)])
def test_hub_ids(text, ok):
    assert is_hub_id(text) is ok


def _save(tmp_path, name, display_name: str | None = None, **config) -> Path:
    """A checkpoint folder; ``display_name`` is written into its config.json as a card would name it."""
    config = {"head": "croft", "embed_dim": 16, "backbone": "", "classnames": ("circle", "square"), **config}
    folder = CroftModel(HeadConfig(**config)).save(tmp_path / name)
    if display_name:
        data = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**data, "display_name": display_name}))
    return folder


@pytest.fixture
def registry(tiny_backbone, tmp_path):
    listed = _save(tmp_path, "listed", display_name="CRoFT · tiny · test")
    return ClassifierRegistry(tiny_backbone, [str(listed)], embedded_world=False, cache_dir=None)


def test_models_are_zero_shot_listed_names_or_hub_ids(registry, tmp_path):
    assert registry.names() == ["zero-shot", "CRoFT · tiny · test"]
    assert registry.resolve("CRoFT · tiny · test").kind == "folder"
    assert registry.get("CRoFT · tiny · test").name == "CRoFT · tiny · test"
    assert registry.resolve("org/name").kind == "hub"
    with pytest.raises(CheckpointRejected, match="'org/name' cannot be checked on the Hub: it is unreachable"):
        registry.get("org/name")  # tests run offline
    with pytest.raises(AccessRefused, match=r"Unknown model 'listed'; choose one of \['zero-shot', 'CRoFT"):
        registry.get("listed")
    for bad, message in ((["zero-shot"], "model must be text"), ("x" * 1000, "1,000 characters long")):
        with pytest.raises(AccessRefused, match=message):
            registry.get(bad)
    no_hub = ClassifierRegistry(registry.backbone, policy=ServingPolicy(allow_hub_models=False),
                                embedded_world=False, cache_dir=None)
    with pytest.raises(AccessRefused, match=r"Local paths are not accepted"):
        no_hub.get("org/name")  # without Hub ids, ORG/NAME can only be a path


def test_local_paths_get_one_answer_whether_they_exist_or_not(registry, tmp_path):
    listed_folder = str(tmp_path / "listed")
    answers = set()
    for path in (listed_folder, str(tmp_path / "missing"), "/etc", "~/x", "./listed", "..\\x",
                 str(tmp_path / "listed" / "config.json")):
        with pytest.raises(AccessRefused) as err:
            registry.get(path)
        answers.add(str(err.value))
    assert answers == {LOCAL_PATH_REFUSED}
    trusted = ClassifierRegistry(registry.backbone, policy=ServingPolicy(allow_local_paths=True),
                                 embedded_world=False, cache_dir=None)
    assert trusted.get(listed_folder).name == "CRoFT · tiny · test"
    with pytest.raises(AccessRefused, match="Unknown model"):
        trusted.get(str(tmp_path / "missing"))


def test_benchmarks_are_registered_names(tmp_path):
    (tmp_path / "b.json").write_text("{}")
    assert check_benchmark("shapes", {"shapes"}, ServingPolicy()) == "shapes"
    for name in (str(tmp_path / "b.json"), str(tmp_path / "none.json"), "/etc/passwd", "b.json", "~/b"):
        with pytest.raises(AccessRefused) as err:
            check_benchmark(name, {"shapes"}, ServingPolicy())
        assert str(err.value) == LOCAL_PATH_REFUSED
    with pytest.raises(AccessRefused, match=r"Unknown benchmark 'nope'; registered: \['shapes'\]"):
        check_benchmark("nope", {"shapes"}, ServingPolicy())
    with pytest.raises(AccessRefused, match="benchmark must be text"):
        check_benchmark(5, {"shapes"}, ServingPolicy())
    assert check_benchmark(str(tmp_path / "b.json"), {"shapes"}, ServingPolicy(allow_local_paths=True))


def test_files_are_confined_to_the_upload_folder(tmp_path):
    root = tmp_path / "uploads"
    (root / "h").mkdir(parents=True)
    (root / "h" / "a.png").write_bytes(b"x")
    (tmp_path / "secret.png").write_bytes(b"x")
    (root / "h" / "link.png").symlink_to(tmp_path / "secret.png")
    assert confine(root / "h" / "a.png", root) == (root / "h" / "a.png").resolve()
    for path in (tmp_path / "secret.png", tmp_path / "none.png", root / "h" / "link.png", root / "h",
                 root / "h" / ".." / ".." / "secret.png", root):
        with pytest.raises(AccessRefused) as err:
            confine(path, root)
        assert str(err.value) == NOT_AN_UPLOAD


def test_symlinks_in_data_folders_are_refused(tmp_path):
    (tmp_path / "data" / "cat").mkdir(parents=True)
    (tmp_path / "data" / "cat" / "1.png").write_bytes(b"x")
    assert check_no_symlinks(tmp_path / "data") == 2
    (tmp_path / "data" / "cat" / "loop").symlink_to(tmp_path / "data")  # the /evaluate hang
    with pytest.raises(AccessRefused, match="'data' contains a symbolic link"):
        check_no_symlinks(tmp_path / "data")
    (tmp_path / "link").symlink_to(tmp_path / "data")
    with pytest.raises(AccessRefused, match="is a symbolic link"):
        check_no_symlinks(tmp_path / "link")
    # a benchmark JSON (trusted installs) is checked before it is loaded
    (tmp_path / "b.json").write_text(json.dumps({"id": {"source": "data", "n": 3}}))
    with pytest.raises(AccessRefused, match="contains a symbolic link"):
        check_benchmark_file(tmp_path / "b.json")
    (tmp_path / "data" / "cat" / "loop").unlink()
    check_benchmark_file(tmp_path / "b.json")


def test_messages_and_names_never_show_server_paths(tmp_path):
    assert scrub_paths("cannot read /srv/app/data/x.csv or '~/a/b'") == "cannot read …/x.csv or '…/b'"
    assert scrub_paths("see https://hf.co/a/b and /classify") == "see https://hf.co/a/b and /classify"
    assert display_spec("local-dir:/srv/app/croft_core/data/synth/embedded") == "local-dir:embedded"
    assert display_spec("ViT-B-16:openai") == "ViT-B-16:openai"
    folder = _save(tmp_path, "run-7")
    assert display_name(folder) == "run-7"
    named = _save(tmp_path, "named", display_name="Trained on /home/me/data/cats")
    assert display_name(named) == "Trained on …/cats"


# ---------------------------------------------------------------------------------------------
# checkpoints vetted before allocation (library)
# ---------------------------------------------------------------------------------------------

def _peak_mb(fn) -> float:
    """Peak RSS growth (MB) while ``fn`` runs (Linux: VmHWM reset through clear_refs)."""
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_kb(os.getpid(), "VmRSS")
    fn()
    return (_status_kb(os.getpid(), "VmHWM") - before) / 1024


def _status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def test_two_tiny_files_cannot_ask_for_gigabytes(tmp_path):
    # the reported attack: the same 61 bytes uploaded as config.json and as model.safetensors
    payload = json.dumps({"head": "croft", "embed_dim": 12000, "backbone": "embedded"}).encode()
    folder = tmp_path / "hash"
    folder.mkdir()
    (folder / "config.json").write_bytes(payload)
    (folder / "model.safetensors").write_bytes(payload)

    def attack():
        with pytest.raises(CheckpointRejected, match="width 12000 but this server's backbone has 16"):
            vet_checkpoint(folder, embed_dim=16, max_classes=100)
    assert _peak_mb(attack) < 50
    (folder / "config.json").write_text(json.dumps({"head": "croft", "embed_dim": 16}))
    with pytest.raises(CheckpointRejected, match="invalid header"):
        vet_checkpoint(folder, embed_dim=16, max_classes=100)


def test_weights_must_match_their_config(tmp_path):
    good = _save(tmp_path, "good")
    config = vet_checkpoint(good, embed_dim=16, max_classes=10)
    model = load_vetted(good, config)
    assert torch.equal(model.head.image_weight, torch.eye(16))
    tip = _save(tmp_path, "tip", head="tip_adapter", num_classes=50, cache_size=4)
    with pytest.raises(CheckpointRejected, match="50 classes, more than this server's maximum of 10"):
        vet_checkpoint(tip, embed_dim=16, max_classes=10)
    lying = json.loads((good / "config.json").read_text())
    for change, message in (({"head": "clip_adapter"}, "holds other tensors"),
                            ({"cache_size": -1}, "whole number >= 0"), ({"embed_dim": "16"}, "whole number"),
                            ({"threshold": "x"}, "finite numbers"), ({"classnames": [1, 2]}, "must be text")):
        (good / "config.json").write_text(json.dumps({**lying, **change}))
        with pytest.raises(CheckpointRejected, match=message):
            vet_checkpoint(good, embed_dim=16, max_classes=10)
    (good / "config.json").write_text(json.dumps(lying))
    with open(good / "model.safetensors", "ab") as fp:
        fp.write(b"\0" * 64)
    with pytest.raises(CheckpointRejected, match="size inconsistent with its header"):
        vet_checkpoint(good, embed_dim=16, max_classes=10)
    (good / "config.json").write_text("{not json")
    with pytest.raises(CheckpointRejected, match="not valid JSON") as err:
        vet_checkpoint(good, embed_dim=16, max_classes=10)
    assert "not json" not in str(err.value)  # no file content in messages


def test_checkpoints_load_under_their_own_lock(tiny_backbone, tmp_path, monkeypatch):
    from croft_app.service import models as registry_module
    slow, fast = _save(tmp_path, "slow"), _save(tmp_path, "fast")
    reg = ClassifierRegistry(tiny_backbone, [str(slow), str(fast)], embedded_world=False, cache_dir=None)
    started, release = threading.Event(), threading.Event()
    real = registry_module.load_vetted

    def load(folder, config, device="cpu"):
        if Path(folder).name == "slow":
            started.set()
            release.wait(10)
        return real(folder, config, device)

    monkeypatch.setattr(registry_module, "load_vetted", load)
    worker = threading.Thread(target=reg.get, args=("slow",))
    worker.start()
    assert started.wait(10)
    t0 = time.perf_counter()
    assert reg.get("fast").name == "fast" and reg.get("zero-shot")  # not blocked by the slow load
    assert time.perf_counter() - t0 < 5
    release.set()
    worker.join(10)
    assert reg.get("slow") is reg.get("slow")


# ---------------------------------------------------------------------------------------------
# limits (library)
# ---------------------------------------------------------------------------------------------

def test_disk_caches_are_bounded_lru(tmp_path):
    for i in range(5):
        (tmp_path / f"{i}.bin").write_bytes(b"x" * 1000)
        os.utime(tmp_path / f"{i}.bin", (1000 + i, 1000 + i))
    os.utime(tmp_path / "0.bin", (5000, 5000))  # used last
    assert prune_lru(tmp_path, 2500) == 3000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["0.bin", "4.bin"]


def test_text_cache_of_a_classifier_stays_under_its_budget(tiny_backbone, tmp_path):
    from croft_app.service.classifier import OpenSetClassifier

    classifier = OpenSetClassifier(tiny_backbone, embedded_world=False, cache_dir=tmp_path,
                                   text_cache_bytes=3000, text_cache_size=1)
    for i in range(8):  # each new vocabulary writes a file (before: forever)
        classifier.text_features([f"class {i}", f"other {i}"])
    assert sum(p.stat().st_size for p in tmp_path.rglob("*") if p.is_file()) <= 3000


def test_freed_memory_of_a_job_goes_back_to_the_os():
    # a job's many small blocks (under the 1 MiB mmap threshold), freed in its own thread's arena
    # behind one block still in use, stayed in the process: +250 MB here before trim=True
    script = textwrap.dedent("""
        import sys, threading
        from croft_app.service.limits import return_freed_memory

        def rss_mb():
            return int(next(l for l in open("/proc/self/status") if l.startswith("VmRSS")).split()[1]) / 1024

        kept = []
        def job():
            blocks = [bytearray(64 * 1024) for _ in range(4000)]  # 250 MB in 64 kB blocks
            kept.append(blocks[-1])  # the arena's top stays in use: free() alone cannot shrink it
        thread = threading.Thread(target=job)
        thread.start()
        thread.join()
        before = rss_mb()
        assert return_freed_memory(trim=True)
        print(before - rss_mb())
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr[-2000:]
    assert float(out.stdout) > 200  # MB handed back


def test_deadline_stops_a_running_job():
    def busy():
        while True:
            sum(range(1000))

    t0 = time.perf_counter()
    with pytest.raises(JobTimeout):
        with deadline(0.3):
            busy()
    assert time.perf_counter() - t0 < 3
    with deadline(5):  # a job that ends in time is left alone, and nothing fires later
        pass
    time.sleep(0.1)


# ---------------------------------------------------------------------------------------------
# the live default app, attacked over HTTP
# ---------------------------------------------------------------------------------------------

class Live:
    """A default ``python app.py`` on 127.0.0.1 and the HTTP calls a browser (or attacker) makes."""

    def __init__(self, url: str, proc: subprocess.Popen, upload_root: Path):
        import httpx

        self.url, self.proc, self.upload_root = url, proc, upload_root
        self.http = httpx.Client(base_url=url, timeout=120)
        self.fn = {d["api_name"]: d["id"] for d in self.http.get("/config").json()["dependencies"]}

    def upload(self, name: str, data: bytes) -> str:
        r = self.http.post("/gradio_api/upload", files={"files": (name, data)})
        r.raise_for_status()
        return r.json()[0]

    @staticmethod
    def file(path: str) -> dict:
        return {"path": path, "meta": {"_type": "gradio.FileData"}}

    def join(self, event: str, data: list, session: str | None = None):
        session = session or uuid.uuid4().hex
        return session, self.http.post("/gradio_api/queue/join", json={
            "data": data, "fn_index": self.fn[event], "session_hash": session, "event_data": None,
            "trigger_id": None})

    def call(self, event: str, data: list) -> tuple[bool, object]:
        """(success, output data or error message) of one event, as the browser runs it."""
        session, r = self.join(event, data)
        assert r.status_code == 200, r.text
        with self.http.stream("GET", "/gradio_api/queue/data", params={"session_hash": session}) as s:
            for line in s.iter_lines():
                msg = json.loads(line[5:]) if line.startswith("data:") else {}
                if msg.get("msg") == "process_completed":
                    out = msg.get("output") or {}
                    return bool(msg.get("success")), out.get("data") if msg.get("success") else out.get("error")
        raise AssertionError("no result")

    def rss_kb(self, key: str = "VmRSS") -> int:
        return _status_kb(self.proc.pid, key)

    def classify_ok(self, image: str) -> dict:
        ok, out = self.call("classify", [self.file(image), "circle, square, triangle", "zero-shot", None])
        assert ok, out
        return out[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """The app with default settings, as ``python app.py`` starts it, on loopback only."""
    root = tmp_path_factory.mktemp("live")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CROFT_", "GRADIO_"))}
    env.update(GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port), GRADIO_TEMP_DIR=str(root / "gradio"),
               GRADIO_ANALYTICS_ENABLED="False", CROFT_CACHE=os.environ["CROFT_CACHE"], HF_HUB_OFFLINE="1")
    log = open(root / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    import httpx

    deadline_s = time.time() + 300
    while time.time() < deadline_s:
        assert proc.poll() is None, (root / "server.log").read_text()[-3000:]
        try:
            if httpx.get(url + "/config", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(1)
    else:
        proc.kill()
        raise AssertionError("the app did not start within 300 s")
    server = Live(url, proc, root / "gradio")
    yield server
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def _png_bytes(image: PIL.Image.Image, **kw) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **kw)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def circle(live):
    from croft_core.data.synth.world import render

    return live.upload("circle.png", _png_bytes(render("circle", "photo", np.random.default_rng(0), size=64)))


@pytest.fixture
def attack(live, circle, request):
    """Reset the server's peak RSS; afterwards check the growth and that a normal call still works."""
    Path(f"/proc/{live.proc.pid}/clear_refs").write_text("5")
    before = live.rss_kb()
    yield live
    growth_mb = (live.rss_kb("VmHWM") - before) / 1024
    print(f"\n[peak RSS growth] {request.node.name}: {growth_mb:.0f} MB")  # docs/SECURITY.md (-s)
    assert growth_mb < 300, f"peak RSS grew by {growth_mb:.0f} MB"
    assert live.classify_ok(circle)["label"] in ("circle", "square", "triangle", "unknown")


def _refused(live, event: str, data: list) -> str:
    ok, message = live.call(event, data)
    assert not ok and isinstance(message, str) and message, message
    assert str(REPO) not in message and str(Path.home()) not in message and "Traceback" not in message
    return message


@pytest.mark.slow
def test_attack_1_model_paths_are_refused_before_anything_is_read(attack, circle):
    payload = json.dumps({"head": "croft", "embed_dim": 12000, "backbone": "embedded"}).encode()
    folder = str(Path(attack.upload("config.json", payload)).parent)
    attack.upload("model.safetensors", payload)
    answers = {_refused(attack, "classify", [attack.file(circle), "a, b", model, None])
               for model in (folder, folder + "/", folder + "-missing", "~/" + Path(folder).name)}
    assert answers == {LOCAL_PATH_REFUSED}


@pytest.mark.slow
def test_attack_2_and_3_benchmark_paths_neither_hang_nor_disclose(attack, tmp_path):
    (tmp_path / "loop" / "cat").mkdir(parents=True)
    (tmp_path / "loop" / "cat" / "again").symlink_to(tmp_path / "loop")
    spec = {"name": "x", "id": {"source": str(tmp_path / "loop")}}
    uploaded = attack.upload("bench.json", json.dumps(spec).encode())
    (tmp_path / "b.csv").write_text("secret_column\nsecret_value\n")
    t0 = time.perf_counter()
    answers = {_refused(attack, "evaluate", [name, "zero-shot", 1])
               for name in (uploaded, "/etc/passwd", "/etc/hostname", "/no/such/file.json",
                            str(tmp_path / "b.csv"), str(tmp_path / "loop"), "~/.bashrc")}
    assert answers == {LOCAL_PATH_REFUSED} and time.perf_counter() - t0 < 30


@pytest.mark.slow
def test_attack_4_file_arguments_outside_the_uploads(attack, tmp_path):
    from croft_core.data.synth.world import render

    render("circle", "photo", np.random.default_rng(0), size=64).save(tmp_path / "server.png")
    answers = set()
    for path in (str(tmp_path / "server.png"), "/etc/hostname", "/no/such/image.png"):
        answers.add(_refused(attack, "classify", [{"path": path}, "a, b", "zero-shot", None]))
        answers.add(_refused(attack, "compare", [{"path": path}, "a, b", "zero-shot", "zero-shot", None,
                                     "negative labels"]))
    assert answers == {NOT_AN_UPLOAD}
    # with Gradio's meta, Gradio itself refuses anything outside its upload folder (generic error)
    for path in (str(tmp_path / "server.png"), "/no/such/image.png"):
        ok, message = attack.call("classify", [attack.file(path), "a, b", "zero-shot", None])
        assert not ok and not message


@pytest.mark.slow
def test_attack_5_small_files_that_decode_to_gigabytes(attack):
    strip = attack.upload("strip.png", _png_bytes(PIL.Image.new("RGB", (100_000, 1), (200, 10, 10))))
    assert "sides longer than 20,000 pixels" in _refused(
        attack, "classify", [attack.file(strip), "a, b", "zero-shot", None])
    ramp = (np.arange(6000 * 6000, dtype=np.uint32) % 65536).astype(np.uint16).reshape(6000, 6000)
    deep = attack.upload("deep.png", _png_bytes(PIL.Image.fromarray(ramp), compress_level=9))  # 36 MP
    ok, out = attack.call("classify", [attack.file(deep), "a, b", "zero-shot", None])
    assert ok, out
    small = (np.arange(3000 * 3000, dtype=np.uint32) % 65536).astype(np.uint16).reshape(3000, 3000)
    batch = [attack.file(attack.upload(f"b{i}.png", _png_bytes(PIL.Image.fromarray(small), compress_level=9)))
             for i in range(16)]
    ok, out = attack.call("classify_batch", [batch, "a, b", "zero-shot", None])
    assert ok, out


@pytest.mark.slow
def test_attack_6_upload_size_and_a_bounded_queue(attack):
    r = attack.http.post("/gradio_api/upload", files={"files": ("big.png", b"\0" * (11 * MB))})
    assert r.status_code == 413 and "maximum allowed size" in r.text
    config = attack.http.get("/config").json()
    assert config["max_file_size"] == 10 * MB


@pytest.mark.slow
@pytest.mark.parametrize("event, data, message", [
    ("classify", ["IMAGE", "a, b", "zero-shot", 10**400], "threshold must be a finite number"),
    ("classify", ["IMAGE", "a, b", ["zero-shot"], None], "model must be text"),
    ("classify", ["IMAGE", "a, b", {"a": 1}, None], "model must be text"),
    ("classify", ["IMAGE", 12, "zero-shot", None], "the vocabulary must be text"),
    ("evaluate", ["shapes", "zero-shot", 2**64], "seed must be a whole number from 0 to"),
    ("evaluate", [5, "zero-shot", 1], "benchmark must be text"),
    ("evaluate", ["shapes", ["x"], 1], "model must be text"),
    ("explain", [{"score": "x"}, "a, b", "zero-shot"], "not a /classify result"),
    ("compare", ["IMAGE", "a, b", "zero-shot", "/etc", None, "negative labels"], "Local paths are not accepted"),
    ("compare", ["IMAGE", "a, b", "zero-shot", "zero-shot", None, "x" * 5000], "unknown rule given; choose one of"),
    ("compare", ["IMAGE", "a, b", "zero-shot", "zero-shot", None, ["negative labels"]], "unknown rule given"),
    ("evaluate_other", ["shapes", "zero-shot", 1, "/etc"], "Local paths are not accepted"),
])
def test_attack_7_and_9_bad_values_get_clear_errors_in_every_handler(attack, circle, event, data, message):
    data = [attack.file(circle) if d == "IMAGE" else d for d in data]
    assert message in _refused(attack, event, data)


@pytest.mark.slow
def test_attack_8_no_server_path_in_the_schema_or_the_menus(attack):
    cache = os.environ["CROFT_CACHE"]
    for route in ("/config", "/gradio_api/info", "/gradio_api/openapi.json"):
        text = attack.http.get(route).text
        assert str(REPO) not in text and cache not in text, route
        assert str(Path.home()) + "/" not in text, route
    assert _refused(attack, "classify", [attack.file(attack.upload("c.png", b"x")), "a, b", "~/x", None]) \
        == LOCAL_PATH_REFUSED


def test_check_number_is_the_one_reader_of_typed_numbers():
    import numpy as np

    from croft_app.service.security import check_number, short_repr

    assert check_number(None, "x") is None and check_number("  ", "x") is None
    assert check_number(" 2.5 ", "x") == 2.5 and check_number(np.float32(1.5), "x") == 1.5
    assert check_number(np.int64(3), "x") == 3.0
    for bad in (True, "nan", "-inf", 10**400, "abc", [1], {"a": 1}, b"1"):
        with pytest.raises(ValueError, match="^say why$"):
            check_number(bad, "say why")
    assert short_repr("9" * 100) == repr("9" * 100)[:40] + "..." and short_repr([1]) == "a list"
