"""The Hugging Face Space: the bundle ``spaces/deploy.py`` builds starts on its own (the checkout not
importable), for both targets; ZeroGPU's ``spaces`` is imported before torch and every GPU
duration stays within the cap; the lexicon's embeddings ship with the bundle; the card follows
the Hub's conventions."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]

# A stand-in for the `spaces` package: refuses to be imported after torch (the real one refuses
# once CUDA is initialized, which never happens on a CPU machine, so this is the stricter check),
# and records every GPU duration, declared and asked for.
FAKE_SPACES = '''
import functools, inspect, json, os, sys
if "torch" in sys.modules:
    raise RuntimeError("CUDA has been initialized before importing the `spaces` package "
                       "(stand-in: torch was imported before spaces)")

def _write(entry):
    with open(os.environ["FAKE_SPACES_RECORD"], "a") as f:
        f.write(json.dumps(entry) + "\\n")

def GPU(task=None, *, duration=None, size=None):
    if task is None:
        return lambda f: GPU(f, duration=duration, size=size)
    _write({"declared": task.__qualname__, "duration": "dynamic" if callable(duration) else duration})
    def seconds(args, kwargs):
        return duration(*args, **kwargs) if callable(duration) else (60 if duration is None else duration)
    if inspect.isgeneratorfunction(task):
        @functools.wraps(task)
        def run_gen(*args, **kwargs):
            _write({"called": task.__qualname__, "seconds": seconds(args, kwargs)})
            yield from task(*args, **kwargs)
        return run_gen
    @functools.wraps(task)
    def run(*args, **kwargs):
        _write({"called": task.__qualname__, "seconds": seconds(args, kwargs)})
        return task(*args, **kwargs)
    return run
'''

# Runs the bundle's app.py as `python app.py` does (cwd = the bundle), and reports where the
# project's packages were imported from once the app module is loaded.
RUN_APP = '''
import runpy, sys, threading, time
def report():  # reads sys.modules only: an import here would race the main thread's
    while getattr(sys.modules.get("croft_app.ui.app"), "launch", None) is None:
        time.sleep(0.05)
    print("IMPORTED", sys.modules["croft_core"].__file__, sys.modules["croft_app"].__file__, flush=True)
threading.Thread(target=report, daemon=True).start()
sys.argv = ["app.py"]
runpy.run_path("app.py", run_name="__main__")
'''


def deploy_module():
    spec = importlib.util.spec_from_file_location("croft_spaces_deploy", REPO / "spaces" / "deploy.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def deploy():
    return deploy_module()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(bundle: Path, env_extra: dict[str, str], log: Path, timeout: float = 300) -> tuple[subprocess.Popen, str]:
    """Start the bundle's app with nothing of the checkout importable; wait for its first page."""
    import httpx

    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CROFT_", "GRADIO_", "SPACES_"))}
    env.pop("PYTHONPATH", None)
    env.update(GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port), GRADIO_ANALYTICS_ENABLED="False",
               GRADIO_TEMP_DIR=str(log.parent / "gradio"), CROFT_CACHE=str(log.parent / "cache"),
               HF_HUB_OFFLINE="1", **env_extra)
    out = open(log, "w")
    proc = subprocess.Popen([sys.executable, "-c", RUN_APP], cwd=bundle, env=env, stdout=out,
                            stderr=subprocess.STDOUT)
    url, deadline = f"http://127.0.0.1:{port}", time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the bundle's app exited ({proc.returncode}):\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(url + "/", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise AssertionError(f"the bundle did not serve its first page in {timeout} s:\n{log.read_text()[-4000:]}")


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


def _example_image(bundle: Path) -> Path:
    from croft_core.data.synth.world import render
    import numpy as np

    path = bundle.parent / "circle.png"
    render("circle", "photo", np.random.default_rng(0), size=64).save(path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("target", ["cpu", "zerogpu"])
def test_the_bundle_starts_on_its_own_and_classifies(deploy, target, tiny_spec, tmp_path):
    """Build the bundle, start it from its own folder with the checkout not importable (no
    PYTHONPATH, cwd the bundle), wait for the first page, classify through gradio_client. The
    ZeroGPU target runs with SPACES_ZERO_GPU=true and the stand-in ``spaces`` package."""
    from gradio_client import Client, handle_file

    # cpu: the target's own backbone (embedded); zerogpu: a tiny one (ViT-B-16 cannot be downloaded here)
    backbone = None if target == "cpu" else tiny_spec
    bundle = deploy.assemble(tmp_path / "space", target=target, backbone=backbone, space_id="someone/croft-lab")
    env = {}
    record = tmp_path / "gpu.jsonl"
    if target == "zerogpu":
        fake = tmp_path / "fake" / "spaces"
        fake.mkdir(parents=True)
        (fake / "__init__.py").write_text(FAKE_SPACES)
        env = {"SPACES_ZERO_GPU": "true", "PYTHONPATH": str(fake.parent), "FAKE_SPACES_RECORD": str(record)}
    log = tmp_path / "server.log"
    proc, url = _start(bundle, env, log)
    try:
        client = Client(url, verbose=False)
        result = client.predict(handle_file(str(_example_image(bundle))), "shapes", "zero-shot", None,
                                api_name="/classify")
        assert result["label"] in ("circle", "unknown") or result["label"] in result["probabilities"]
        if target == "cpu":
            check_the_api_page(client)
    finally:
        _stop(proc)
    text = log.read_text()
    imported = [line.split()[1:] for line in text.splitlines() if line.startswith("IMPORTED")]
    assert imported, text[-3000:]
    for path in imported[0]:  # the bundle's packages, not the checkout (nor the editable install)
        assert Path(path).resolve().is_relative_to(bundle.resolve()), (path, bundle)
    if target == "zerogpu":
        entries = [json.loads(line) for line in record.read_text().splitlines()]
        declared = {e["declared"]: e["duration"] for e in entries if "declared" in e}
        assert {"Handlers.classify", "Handlers.evaluate", "TrainHandlers._train_on_gpu"} <= set(declared)
        called = [e["seconds"] for e in entries if "called" in e]
        assert called, "the stand-in spaces.GPU never ran /classify"
        cap = 60  # ZeroGPU's default duration: croft_app.ui.zerogpu.CALL_CAP
        assert all(d == "dynamic" or d <= cap for d in declared.values()), declared
        assert all(0 < s <= cap for s in called), called


def check_the_api_page(client) -> None:
    """The API page of a launched app teaches calls that work: plain-text descriptions, typed
    parameters, examples that run offline, a clear message for a path string."""
    from gradio_client import handle_file

    info = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert set(info) == {"/classify", "/evaluate", "/finetune"}
    for name, endpoint in info.items():
        assert "``" not in endpoint["description"] and endpoint["description"], name
    params = {(name, p["parameter_name"]): p for name, e in info.items() for p in e["parameters"]}
    assert params[("/classify", "threshold")]["python_type"]["type"] == "float | None"
    assert params[("/evaluate", "benchmark")]["python_type"]["type"] == "str"
    assert params[("/finetune", "data")]["example_input"] == "shapes"
    example = params[("/classify", "image")]["example_input"]
    assert "github" not in example["url"]  # no photo downloaded from the web
    result = client.predict(handle_file(example["url"]), "shapes", "zero-shot", 0.5, api_name="/classify")
    assert result["threshold"] == 0.5 and result["label"]  # the example and a float threshold run
    with pytest.raises(Exception, match="handle_file"):
        client.predict("circle.png", "shapes", "zero-shot", None, api_name="/classify")


def test_zerogpu_is_imported_before_torch(tmp_path):
    """``croft_app.ui.app`` imports ``spaces`` before torch: with the stand-in (which refuses to be
    imported after torch) the module imports, and ``spaces.GPU`` is the decorator in use."""
    fake = tmp_path / "spaces"
    fake.mkdir()
    (fake / "__init__.py").write_text(FAKE_SPACES)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=f"{tmp_path}{os.pathsep}{REPO}", SPACES_ZERO_GPU="true",
               FAKE_SPACES_RECORD=str(tmp_path / "gpu.jsonl"))
    code = ("import croft_app.ui.app as a, spaces; from croft_app.ui import zerogpu; "
            "print(zerogpu.GPU is spaces.GPU, zerogpu.ZERO_GPU)")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["True", "True"]


def test_gpu_durations_follow_the_work():
    from croft_app.ui import zerogpu

    assert zerogpu.classify_seconds(1, 10) < zerogpu.classify_seconds(64, 10) <= zerogpu.CALL_CAP
    assert zerogpu.classify_seconds(10_000, 10_000) == zerogpu.CALL_CAP
    assert zerogpu.train_seconds(200, 700) < zerogpu.train_seconds(2000, 700)
    assert zerogpu.lab_seconds(4000) <= zerogpu.CALL_CAP


def test_zerogpu_refuses_work_that_does_not_fit(monkeypatch):
    from croft_app.ui import zerogpu

    monkeypatch.setattr(zerogpu, "ZERO_GPU", True)
    with pytest.raises(zerogpu.GpuBudgetError, match="fewer shots, views or steps"):
        zerogpu.train_seconds(5000, 100_000)
    with pytest.raises(zerogpu.GpuBudgetError, match="croft evaluate"):
        zerogpu.lab_seconds(1_000_000)
    monkeypatch.setattr(zerogpu, "ZERO_GPU", False)  # elsewhere there is no call to fit in
    assert zerogpu.train_seconds(5000, 100_000) == zerogpu.CALL_CAP


# ---------------------------------------------------------------------------------------------
# the lexicon ships with the bundle
# ---------------------------------------------------------------------------------------------

def test_shipped_lexicon_answers_from_the_first_request(tiny_backbone, tmp_path, monkeypatch):
    """A NegativeRules given the shipped embeddings is ready at once (even where it would encode in
    the background) and never encodes the lexicon."""
    import croft_core.ood.negatives as negatives
    from croft_app.service.decision import NegativeRules
    from croft_core.ood.negatives import lexicon_path, read_lexicon, save_lexicon_embeddings

    path = save_lexicon_embeddings(tiny_backbone, read_lexicon(lexicon_path(tiny_backbone)), tmp_path / "lex.safetensors")

    def no_encoding(*args, **kwargs):
        raise AssertionError("the lexicon was encoded although its embeddings were shipped")

    monkeypatch.setattr(negatives, "encode_lexicon", no_encoding)
    rules = NegativeRules(tiny_backbone, None, background=True, shipped=path)
    assert rules.status.ready
    assert rules.get("zero-shot", ["circle", "square"]) is not None
    without = NegativeRules(tiny_backbone, None, background=True)
    assert not without.status.ready  # what a restart without them looks like


def test_shipped_lexicon_of_other_weights_is_not_used(tiny_backbone, tmp_path):
    """Embeddings computed with other weights under the same name (a retrained model folder) are
    caught by re-encoding a few words, and the lexicon is encoded as usual."""
    from conftest import write_tiny_model
    from croft_core.clip.backbones import load_backbone
    from croft_core.ood.negatives import load_lexicon_embeddings, lexicon_path, read_lexicon, save_lexicon_embeddings

    lexicon = read_lexicon(lexicon_path(tiny_backbone))
    good = save_lexicon_embeddings(tiny_backbone, lexicon, tmp_path / "good.safetensors")
    fresh = negatives_of(tiny_backbone, lexicon)  # before loading: loading keeps the shipped ones in memory
    assert torch.allclose(load_lexicon_embeddings(tiny_backbone, lexicon, good).cpu(), fresh, atol=1e-5)
    other = load_backbone(write_tiny_model(tmp_path / Path(tiny_backbone.spec.removeprefix("local-dir:")).name,
                                           seed=1))
    assert other.spec != tiny_backbone.spec
    bad = save_lexicon_embeddings(other, lexicon, tmp_path / "other.safetensors")
    assert load_lexicon_embeddings(tiny_backbone, lexicon, bad) is None  # same folder name, other weights
    assert load_lexicon_embeddings(tiny_backbone, lexicon, tmp_path / "missing.safetensors") is None


def test_shipped_lexicon_spares_the_labs_mining_an_encoding(tiny_backbone, tmp_path, monkeypatch):
    """A Lab job mines negatives with ``encode_lexicon``: once the shipped embeddings are loaded it
    finds them in memory instead of encoding the lexicon again (a real CLIP's ~20k words were
    minutes of CPU inside the Lab's time limit)."""
    from collections import OrderedDict

    from croft_core.ood import negatives
    from croft_core.ood.negatives import encode_lexicon, load_lexicon_embeddings, lexicon_path, read_lexicon

    lexicon = read_lexicon(lexicon_path(tiny_backbone))
    path = negatives.save_lexicon_embeddings(tiny_backbone, lexicon, tmp_path / "lexicon.safetensors")
    monkeypatch.setattr(negatives, "_memo", OrderedDict())  # a fresh process
    shipped = load_lexicon_embeddings(tiny_backbone, lexicon, path)

    def no_encoding(*args, **kwargs):
        raise AssertionError("the lexicon was encoded again")

    monkeypatch.setattr(negatives, "build_text_classifier", no_encoding)
    assert encode_lexicon(tiny_backbone, read_lexicon(lexicon_path(tiny_backbone)), cache_dir=None) is shipped


def negatives_of(backbone, lexicon) -> torch.Tensor:
    from croft_core.ood.negatives import encode_lexicon

    return encode_lexicon(backbone, lexicon, cache_dir=None).cpu()


def test_the_bundle_ships_the_lexicon_the_app_loads(deploy, tiny_spec, tmp_path):
    from croft_app.ui import app as ui

    bundle = deploy.assemble(tmp_path / "space", target="zerogpu", backbone=tiny_spec)
    shipped = bundle / deploy.SHIPPED_LEXICON
    assert shipped.is_file()
    assert ui.SHIPPED_LEXICON == deploy.SHIPPED_LEXICON  # where the app looks, relative to the bundle
    assert f"os.environ.setdefault(\"CROFT_BACKBONE\", {tiny_spec!r})" in (bundle / "app.py").read_text()


# ---------------------------------------------------------------------------------------------
# the bundle's files and cards
# ---------------------------------------------------------------------------------------------

def _front(card: str) -> str:
    return card.split("---")[1]


@pytest.mark.parametrize("target,hardware,torch_line", [
    ("cpu", "cpu-basic", "torch==2.14.1+cpu"), ("zerogpu", "zero-a10g", "torch==2.14.1")])
def test_each_target_has_its_card_and_requirements(deploy, target, hardware, torch_line, tmp_path):
    bundle = deploy.assemble(tmp_path / "space", target=target, space_id="someone/croft-lab", lexicon=False)
    assert (bundle / "app.py").is_file() and (bundle / "croft_app" / "ui" / "zerogpu.py").is_file()
    assert (bundle / "croft_core" / "data" / "vocab" / "cifar10.txt").is_file()
    assert (bundle / "LICENSE").read_text().startswith("MIT License")
    assert not list(bundle.rglob("__pycache__"))
    card = (bundle / "README.md").read_text()
    front = _front(card)
    for line in ("sdk: gradio", "sdk_version: 6.31.0", "app_file: app.py", 'python_version: "3.10"',
                 f"suggested_hardware: {hardware}", "license: mit"):
        assert line in front, line
    assert 'Client("someone/croft-lab"' in card and "$" not in card  # every template field filled
    assert "croft-lab/croft-vit-b16" not in card  # no placeholder ids
    requirements = (bundle / "requirements.txt").read_text().splitlines()
    assert torch_line in requirements and "gradio==6.31.0" in requirements
    assert (deploy.SPACES_PIN in requirements) == (target == "zerogpu")
    if target == "cpu":
        assert f"--extra-index-url {deploy.TORCH_CPU_INDEX}" in requirements
        assert "models:" not in front  # the embedded model is no Hub repo
    else:
        assert "  - timm/vit_base_patch16_clip_224.openai\n" in front and "preload_from_hub:" in front
    with pytest.raises(deploy.DeployError, match="not empty"):
        deploy.assemble(bundle, target=target, lexicon=False)


def test_deploy_command_builds_offline_and_refuses_to_upload(deploy, tmp_path, caplog):
    caplog.set_level("INFO", logger="croft.spaces")
    assert deploy.main(["--out", str(tmp_path / "a"), "--no-lexicon"]) == 0
    assert "bundle" in caplog.text and "expected install size (cpu)" in caplog.text
    assert deploy.main(["--out", str(tmp_path / "b"), "--no-lexicon", "--upload"]) == 1
    assert "USER/NAME" in caplog.text
    assert deploy.main(["--out", str(tmp_path / "c"), "--no-lexicon", "--upload", "--space-id", "someone/x"]) == 1
    assert "unreachable" in caplog.text  # tests run with HF_HUB_OFFLINE=1
    with pytest.raises(deploy.DeployError, match="unknown target"):
        deploy.assemble(tmp_path / "d", target="tpu")


def test_the_space_card_lists_the_checkpoints_it_was_given(deploy):
    card = deploy.render_card(deploy.TARGETS["zerogpu"], "ViT-B-16:openai", "me/lab", ["me/croft-head"])
    front = _front(card)
    assert "models:\n  - me/croft-head\n  - timm/vit_base_patch16_clip_224.openai\n" in front
    assert 'Client("me/lab", hf_token=' in card


def test_checkpoint_card_follows_hub_conventions():
    """license, base_model (the Hub repo open_clip loads ViT-B-16:openai from), pipeline_tag,
    datasets, tags and model-index generated from the results JSON; a working install line."""
    import yaml
    from huggingface_hub import ModelCard
    from croft_core.heads.checkpoint import HeadConfig, render_model_card

    config = HeadConfig(backbone="ViT-B-16:openai", classnames=("cat", "dog"), threshold=1.0,
                        metrics={"id_accuracy": 0.9})
    results = {"benchmark": "org/pets", "id": {"name": "test", "accuracy": 0.91234},
               "covariate": [{"name": "sketch", "accuracy": 0.5}],
               "semantic_all": {"energy": {"auroc": 0.8, "fpr95": 0.4}}}
    card = render_model_card(config, "me/pets-croft", results)
    front = yaml.safe_load(card.split("---")[1])
    assert front["license"] == "mit" and front["pipeline_tag"] == "zero-shot-image-classification"
    assert front["base_model"] == "timm/vit_base_patch16_clip_224.openai"
    assert front["datasets"] == ["org/pets"] and "croft" in front["tags"]
    (index,) = front["model-index"]
    metrics = {m["name"]: m["value"] for m in index["results"][0]["metrics"]}
    assert metrics["ID accuracy (test)"] == 0.9123 and metrics["covariate-shift accuracy (sketch)"] == 0.5
    assert index["results"][0]["dataset"]["name"] == "org/pets"
    assert len(metrics) == 4
    assert 'pip install .' in card and "croft-lab" in card and 'from_pretrained("me/pets-croft")' in card
    assert ModelCard(card).data.base_model == "timm/vit_base_patch16_clip_224.openai"
    local = yaml.safe_load(render_model_card(HeadConfig(backbone="embedded"), None).split("---")[1])
    assert "base_model" not in local and "model-index" not in local  # no Hub weights, no results
    assert local["license"] == "mit"


def test_a_pushed_run_card_carries_its_results_as_model_index(tmp_path):
    """``croft push`` of a training run's folder renders the card again with its results.json."""
    import yaml
    from croft_core.heads.checkpoint import CroftModel, HeadConfig
    from croft_core.heads.hub import card_for_repo

    folder = CroftModel(HeadConfig(head="croft", embed_dim=8, backbone="ViT-B-16:openai",
                                   classnames=("a", "b"))).save(tmp_path / "run")
    assert "model-index" not in (folder / "README.md").read_text()  # saved before the results exist
    (folder / "results.json").write_text(json.dumps({
        "benchmark": "shapes", "id": {"name": "photo", "accuracy": 0.75}, "covariate": [],
        "semantic_all": {"energy": {"auroc": 0.9, "fpr95": 0.3}}}))
    front = yaml.safe_load(card_for_repo(folder, "me/run").split("---")[1])
    metrics = front["model-index"][0]["results"][0]["metrics"]
    assert [m["value"] for m in metrics] == [0.75, 0.9, 0.3]
    assert front["model-index"][0]["results"][0]["dataset"]["name"] == "shapes"
    assert "datasets" not in front  # "shapes" is rendered locally, no Hub dataset
