"""Fine-tuning for visitors: zip checks, data sources, the run (progress, stop, limits), the outputs."""

from __future__ import annotations

import io
import json
import stat
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from croft_core.errors import CroftError, HubError
from croft_app.service.finetune import (FinetuneError, FinetuneLimits, FinetuneRequest, FinetuneStopped,
                                 display_name, finetune, push_finetuned, save_checkpoint, train_config,
                                 zip_checkpoint)
from croft_app.service.sessions import (ModelTooLarge, QueueFull, SessionModels, TrainingQueue, held_bytes,
                                       stream_job)
from croft_app.service.uploads import UploadError, UploadLimits, extract_zip, inspect_zip, labelled_images
from croft_app.service.userdata import DataError, benchmark_data, holdout_rows, hub_data, upload_data
from tests.datagen import make_image, tiny_benchmark

CLASSES = ("circle", "square", "triangle")


def _png(name: str, seed: int = 0) -> bytes:
    buf = io.BytesIO()
    make_image(name, 0, np.random.default_rng(seed)).save(buf, "PNG")
    return buf.getvalue()


def make_zip(path: Path, per_class: int = 6, classes=CLASSES, top: str = "my-data", extra=()) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for c in classes:
            for i in range(per_class):
                zf.writestr(f"{top}/{c}/{i}.png" if top else f"{c}/{i}.png", _png(c, i))
        for name, data in extra:
            zf.writestr(name, data)
    return path


@pytest.fixture
def good_zip(tmp_path):
    return make_zip(tmp_path / "my-data.zip", extra=[("my-data/notes.txt", b"hello"),
                                                      ("my-data/circle/broken.png", b"not a png")])


# ---- zip checks --------------------------------------------------------------------------------

def test_zip_of_class_folders_is_extracted_with_skips_reported(good_zip, tmp_path):
    up = extract_zip(good_zip, tmp_path / "out")
    assert up.classnames == CLASSES and len(up.items) == 18
    assert {n for n, _ in up.skipped} == {"my-data/notes.txt", "my-data/circle/broken.png"}
    assert "not an image" in up.skipped_summary()
    assert all(Path(it.path).is_relative_to(tmp_path / "out") for it in up.items)
    up.cleanup()
    assert not (tmp_path / "out").exists()


def _raw_zip(path: Path, infos_and_data) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for c in CLASSES[:2]:
            zf.writestr(f"{c}/0.png", _png(c))
        for info, data in infos_and_data:
            zf.writestr(info, data)
    return path


@pytest.mark.parametrize("name", ["../evil.png", "/etc/evil.png", "a/../../evil.png", "C:/evil.png",
                                  "a\\..\\..\\evil.png"])
def test_path_traversal_is_refused_before_extraction(tmp_path, name):
    z = _raw_zip(tmp_path / "t.zip", [(zipfile.ZipInfo(name), _png("circle"))])
    with pytest.raises(UploadError, match="outside the upload folder"):
        extract_zip(z, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "evil.png").exists()


def test_symlink_is_refused(tmp_path):
    info = zipfile.ZipInfo("circle/link.png")
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    z = _raw_zip(tmp_path / "t.zip", [(info, "/etc/passwd")])
    with pytest.raises(UploadError, match="symbolic link"):
        extract_zip(z, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_zip_bomb_and_sizes_are_refused(tmp_path):
    bomb = tmp_path / "bomb.zip"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for c in CLASSES[:2]:
            zf.writestr(f"{c}/0.png", _png(c))
        zf.writestr("circle/big.png", b"\0" * (20 * 2**20))  # 20 MB of zeros: ~20 kB compressed
    assert bomb.stat().st_size < 2**20
    with pytest.raises(UploadError, match="zip bomb"):
        inspect_zip(bomb)
    with pytest.raises(UploadError, match="per image"):
        inspect_zip(bomb, UploadLimits(max_file_bytes=2**20))
    with pytest.raises(UploadError, match="unpacks to more than"):
        inspect_zip(bomb, UploadLimits(max_total_bytes=2**20, max_ratio=1e9))
    with pytest.raises(UploadError, match="upload at most"):
        inspect_zip(bomb, UploadLimits(max_zip_bytes=1000))


def test_a_header_that_lies_about_sizes_is_caught_while_streaming(tmp_path, monkeypatch):
    z = make_zip(tmp_path / "z.zip", per_class=2)
    import croft_app.service.uploads as uploads

    real = uploads._copy_bounded
    monkeypatch.setattr(uploads, "_copy_bounded", lambda src, dst, budget: real(src, dst, 10))
    with pytest.raises(UploadError, match="more than its header announces"):
        extract_zip(z, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def _understate_sizes(path: Path, by: int) -> None:
    """Rewrite every entry's uncompressed size, in its local header and the central directory, as
    ``by`` bytes less than the truth (a zip made by hand to under-state its size)."""
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
    for info in infos:
        local = info.header_offset
        data[local + 22:local + 26] = struct.pack("<I", info.file_size - by)
    start = 0
    while (start := data.find(b"PK\x01\x02", start)) >= 0:
        size = struct.unpack("<I", data[start + 24:start + 28])[0]
        data[start + 24:start + 28] = struct.pack("<I", size - by)
        start += 4
    path.write_bytes(bytes(data))


def test_a_zip_that_under_states_its_sizes_gets_a_clear_message(tmp_path, caplog):
    # before: zipfile's BadZipFile ("Bad CRC-32") reached the visitor as the generic error, and
    # the server log as a traceback
    z = make_zip(tmp_path / "z.zip", per_class=2)
    _understate_sizes(z, by=10)
    with pytest.raises(UploadError, match=r"is damaged or does not match what the zip's header says about "
                                          r"it \(BadZipFile\); zip the class folders again"):
        extract_zip(z, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_data_checks_call_back_before_each_image_and_can_stop(good_zip, tmp_path):
    calls = []

    def check():
        calls.append(1)
        if len(calls) == 3:
            raise FinetuneStopped("stopped")

    with pytest.raises(FinetuneStopped):
        extract_zip(good_zip, tmp_path / "out", check=check)
    assert len(calls) == 3 and not (tmp_path / "out").exists()
    (tmp_path / "a.png").write_bytes(_png("circle"))
    (tmp_path / "b.png").write_bytes(_png("square"))
    pairs = [(tmp_path / "a.png", "circle"), (tmp_path / "b.png", "square")] * 3
    calls.clear()
    up = labelled_images(pairs, check=lambda: calls.append(1))
    assert len(calls) == 6 and len(up.items) == 6  # each file decoded once however often it is named


def test_too_many_files_and_images_are_refused(tmp_path):
    z = make_zip(tmp_path / "z.zip", per_class=5)
    with pytest.raises(UploadError, match="entries"):
        inspect_zip(z, UploadLimits(max_entries=10))
    with pytest.raises(UploadError, match="at most 12 per training run"):
        inspect_zip(z, UploadLimits(max_images=12))
    with pytest.raises(UploadError, match="at most 2 per run"):
        extract_zip(z, tmp_path / "out", UploadLimits(max_classes=2))


def test_one_class_and_an_empty_class_are_refused(tmp_path):
    with pytest.raises(UploadError, match="only the class 'circle'"):
        extract_zip(make_zip(tmp_path / "one.zip", classes=("circle",)), tmp_path / "o1")
    empty = make_zip(tmp_path / "empty.zip", top="")
    with zipfile.ZipFile(empty, "a") as zf:
        zf.writestr("star/", b"")
        zf.writestr("star/readme.txt", b"no images here")
    with pytest.raises(UploadError, match=r"\['star'\].*no usable image"):
        extract_zip(empty, tmp_path / "o2")
    broken = make_zip(tmp_path / "broken.zip", classes=("circle", "square"), top="")
    with zipfile.ZipFile(broken, "a") as zf:
        zf.writestr("star/0.png", b"not a png")
    with pytest.raises(UploadError, match=r"\['star'\].*no usable image"):
        extract_zip(broken, tmp_path / "o3")
    assert not (tmp_path / "o3").exists()  # nothing kept half-done
    with pytest.raises(UploadError, match="not a readable zip"):
        (tmp_path / "x.zip").write_bytes(b"PK nothing")
        extract_zip(tmp_path / "x.zip", tmp_path / "o4")


def test_labelled_images(tmp_path):
    paths = []
    for i, c in enumerate(["circle", "square", "circle", "square"]):
        (tmp_path / f"{i}.png").write_bytes(_png(c, i))
        paths.append((tmp_path / f"{i}.png", c))
    up = labelled_images(paths)
    assert up.classnames == ("circle", "square") and [it.label for it in up.items] == [0, 1, 0, 1]
    with pytest.raises(UploadError, match="needs a label"):
        labelled_images(paths[:3] + [(paths[3][0], " ")])
    with pytest.raises(UploadError, match="at least two classes"):
        labelled_images([(p, "circle") for p, _ in paths])


# ---- data sources ------------------------------------------------------------------------------

def test_holdout_is_seeded_stratified_and_disjoint():
    labels = np.repeat(np.arange(3), [10, 5, 1])
    train, val = holdout_rows(labels, seed=1)
    assert set(train).isdisjoint(val) and sorted(train + val) == list(range(16))
    assert np.bincount(labels[val], minlength=3).tolist() == [2, 1, 0]
    assert holdout_rows(labels, seed=1) == (train, val) and holdout_rows(labels, seed=2) != (train, val)


def test_upload_source_splits_and_samples(good_zip, tmp_path):
    up = extract_zip(good_zip, tmp_path / "out")
    data = upload_data(up, "my-data", shots=2, seed=1, max_images=2000, max_classes=100)
    assert data.classnames == CLASSES and data.val_source == "held out"
    assert np.bincount(data.train.labels).tolist() == [2, 2, 2] and len(data.val) == 3
    assert set(data.train.ids).isdisjoint(data.val.ids)
    with pytest.raises(DataError, match="at most 5 per run"):
        upload_data(up, "my-data", shots=2, seed=1, max_images=5, max_classes=100)


def test_benchmark_source(tmp_path):
    bench = tiny_benchmark(tmp_path / "data")
    data = benchmark_data(bench, shots=2, seed=1, max_images=2000, max_classes=100)
    assert data.kind == "benchmark" and data.classnames == tuple(bench.classnames)
    assert len(data.train) == 2 * len(bench.classnames) and len(data.val) > 0
    with pytest.raises(DataError, match="classes; at most 2"):
        benchmark_data(bench, shots=2, seed=1, max_images=2000, max_classes=2)


def test_hub_source_fails_fast_and_clearly_offline():
    with pytest.raises(DataError, match="not a Hub dataset id"):
        hub_data("/etc/passwd", shots=2, seed=1, max_images=100, max_classes=10)
    with pytest.raises(HubError, match="org/no-such-dataset"):
        hub_data("org/no-such-dataset", shots=2, seed=1, max_images=100, max_classes=10)


def test_hub_source_missing_label_column(tmp_path, monkeypatch):
    import datasets

    import croft_core.data.sources as data_mod
    from croft_app.service import userdata

    ds = datasets.Dataset.from_dict({"image": [make_image("circle", 0, np.random.default_rng(0))] * 2,
                                     "text": ["a", "b"]}, features=datasets.Features(
        {"image": datasets.Image(), "text": datasets.Value("string")}))
    monkeypatch.setattr(data_mod, "_load_hub", lambda *a, **k: ds)
    monkeypatch.setattr(userdata, "_check_hub_access", lambda *a: None)  # the Hub said yes
    with pytest.raises(DataError, match=r"Column\(s\) \['label'\] not found"):
        hub_data("org/ds", shots=2, seed=1, max_images=100, max_classes=10)


# ---- the run -----------------------------------------------------------------------------------

@pytest.fixture
def zip_data(good_zip, tmp_path):
    up = extract_zip(good_zip, tmp_path / "imgs")
    return upload_data(up, "my-data", shots=4, seed=1, max_images=2000, max_classes=100)


def test_finetune_reports_progress_and_gives_a_calibrated_named_model(tiny_backbone, zip_data, tmp_path):
    events = []
    r = finetune(tiny_backbone, zip_data, FinetuneRequest(steps=6, views=2, batch_size=4),
                 cache_dir=tmp_path / "cache", on_event=events.append)
    extract = [e["fraction"] for e in events if e["stage"] == "extract"]
    epochs = [e for e in events if e["stage"] == "epoch"]
    assert extract == sorted(extract) and extract[-1] == 1.0
    assert len(epochs) == len(r.history) == 2 and {"loss", "val_accuracy"} <= set(epochs[0])
    assert r.name == "CRoFT · my-data · 4-shot" and r.model.config.threshold is not None
    assert r.results["val_n"] == len(zip_data.val) and not r.results["stopped"]
    assert r.results["train_config"]["max_steps"] == 6
    folder = save_checkpoint(r, tmp_path / "ckpt")
    assert json.loads((folder / "config.json").read_text())["display_name"] == r.name
    card = (folder / "README.md").read_text()
    for text in ("model_name:", "upload `my-data`", "lambda1=5.0", "lr=0.002", "Validation: accuracy"):
        assert text in card
    from croft_app.service.vetting import display_name as shown, load_vetted, vet_checkpoint

    assert shown(folder) == r.name
    load_vetted(folder, vet_checkpoint(folder, embed_dim=tiny_backbone.embed_dim, max_classes=10))
    z = zip_checkpoint(folder, tmp_path / "m.zip")
    assert sorted(Path(n).name for n in zipfile.ZipFile(z).namelist()) == ["README.md", "config.json",
                                                                          "model.safetensors"]


def test_features_are_cached_by_content(tiny_backbone, zip_data, tmp_path, monkeypatch):
    req = FinetuneRequest(steps=2, views=1, batch_size=4)
    finetune(tiny_backbone, zip_data, req, cache_dir=tmp_path / "cache")
    import croft_core.clip.features as features

    monkeypatch.setattr(features, "encode_split", lambda *a, **k: pytest.fail("encoded again"))
    finetune(tiny_backbone, zip_data, req, cache_dir=tmp_path / "cache")


def test_stop_keeps_the_best_epoch_so_far(tiny_backbone, zip_data, monkeypatch):
    import importlib

    tr = importlib.import_module("croft_core.runs.train")  # the package re-exports `train` itself
    accs = iter([0.3, 0.9, 0.5, 0.2, 0.1, 0.1])
    real_select = tr._select

    def select(run, row, model, val_set, text):
        real_select(run, row, model, val_set, text)
        row["val_accuracy"] = next(accs)  # a scripted validation curve: best at epoch 2
        run.best_score, run.best_epoch = max((r["val_accuracy"], i + 1) for i, r in enumerate(run.history))
        if run.best_epoch == len(run.history):
            run.best_state = {k: v.clone() for k, v in model.state_dict().items()}
            best.clear(), best.update(run.best_state)

    best: dict = {}
    monkeypatch.setattr(tr, "_select", select)
    stop_after = {"n": 0}

    def on_event(e):
        stop_after["n"] += e["stage"] == "epoch"

    r = finetune(tiny_backbone, zip_data, FinetuneRequest(steps=40, views=1, batch_size=4),
                 on_event=on_event, should_stop=lambda: stop_after["n"] >= 3)
    assert r.results["stopped"] and r.results["stop_reason"] == "user"
    assert len(r.history) == 3 and r.results["best_epoch"] == 2 and r.results["val_accuracy"] == 0.9
    for k, v in r.model.state_dict().items():
        torch.testing.assert_close(v, best[k])
    assert "Stopped early" in r.card


def test_stop_before_training_keeps_nothing(tiny_backbone, zip_data):
    with pytest.raises(FinetuneStopped, match="nothing was kept"):
        finetune(tiny_backbone, zip_data, FinetuneRequest(steps=4, views=1), should_stop=lambda: True)


def test_wall_time_cap_ends_the_run_cleanly(tiny_backbone, zip_data, monkeypatch):
    import croft_app.service.finetune as ft

    clock = {"t": 0.0}
    monkeypatch.setattr(ft.time, "monotonic", lambda: clock["t"])
    r = finetune(tiny_backbone, zip_data, FinetuneRequest(steps=40, views=1, batch_size=4),
                 limits=FinetuneLimits(max_seconds=100),
                 on_event=lambda e: clock.update(t=clock["t"] + (60 if e["stage"] == "epoch" else 0)))
    assert r.results["stopped"] and r.results["stop_reason"] == "time" and len(r.history) == 2


@pytest.mark.parametrize("change, match", [
    (dict(method="zeroshot"), "unknown method"), (dict(steps=10**6), "steps must be"),
    (dict(shots=0), "shots must be"), (dict(lr=float("nan")), "lr must be"),
    (dict(lambda2=-1.0), "lambda2 must be"), (dict(seed=1.5), "seed must be")])
def test_bad_requests_and_limits(change, match):
    with pytest.raises(FinetuneError, match=match):
        FinetuneRequest(**change).checked(FinetuneLimits())
    assert isinstance(FinetuneError("x"), CroftError)


def test_steps_set_the_schedule():
    cfg = train_config(FinetuneRequest(steps=50), n_train=160)  # 5 steps per epoch
    assert (cfg.epochs, cfg.max_steps, cfg.warmup_epochs) == (10, 50, 1)
    assert train_config(FinetuneRequest(steps=3), n_train=8).warmup_epochs == 0


def test_display_name_never_shows_a_path():
    assert display_name("croft_clean", "/srv/data/<x>", 16) == "CRoFT (clean) · /srv/data/ x · 16-shot"


def test_push_uses_the_token_and_never_leaks_it(tiny_backbone, zip_data, tmp_path, monkeypatch, caplog):
    r = finetune(tiny_backbone, zip_data, FinetuneRequest(steps=2, views=1, batch_size=4))
    folder = save_checkpoint(r, tmp_path / "ckpt")
    with pytest.raises(FinetuneError, match="ORG/NAME"):
        push_finetuned(folder, "../x", "hf_secret")
    with pytest.raises(FinetuneError, match="token"):
        push_finetuned(folder, "me/model", "")
    for bad in ("hf_sec\nret", "hf_sec\r\nX-Evil: 1", "hf secret", "hf_secret\x00"):
        # before: "Illegal header value b'Bearer hf_sec\\nret'" came back, the token in it
        with pytest.raises(FinetuneError, match="characters a Hugging Face token never has") as err:
            push_finetuned(folder, "me/model", bad)
        assert "sec" not in str(err.value)
    with pytest.raises(HubError, match="HF_HUB_OFFLINE") as err:
        push_finetuned(folder, "me/model", "hf_secret")
    assert "hf_secret" not in str(err.value) and str(tmp_path) not in str(err.value)
    import huggingface_hub
    import huggingface_hub.constants as hc

    calls = []

    class FakeApi:
        def __init__(self, token=None):
            calls.append(("token", token))

        def create_repo(self, repo_id, **kw):
            calls.append(("repo", repo_id))

        def create_commit(self, repo_id, operations, **kw):
            calls.append(("commit", sorted(op.path_in_repo for op in operations)))
            card = next(op for op in operations if op.path_in_repo == "README.md")
            calls.append(("card", card.path_or_fileobj.decode()))
            return type("Info", (), {"commit_url": f"https://hf.co/{repo_id}/commit/1"})()

    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    with caplog.at_level("DEBUG"):
        url = push_finetuned(folder, "me/model", "hf_secret")
    assert url.startswith("https://hf.co/me/model")
    assert ("token", "hf_secret") in calls and ("commit", ["README.md", "config.json", "model.safetensors"]) in calls
    assert sum(k == "commit" for k, _ in calls) == 1  # card and weights in one commit
    card = next(c for k, c in calls if k == "card")
    assert "Fine-tuning: CRoFT" in card and 'from_pretrained("me/model")' in card
    assert "hf_secret" not in caplog.text


# ---- sessions and the queue --------------------------------------------------------------------

def test_session_models_are_bounded_and_expire():
    now = {"t": 0.0}
    store = SessionModels(max_per_session=2, ttl_seconds=10, clock=lambda: now["t"])
    m = object()
    assert store.add("a", "M", m) == "M" and store.add("a", "M", m) == "M (2)"
    store.add("a", "N", m)
    assert store.names("a") == ["M (2)", "N"] and store.names("b") == []
    assert store.get("b", "N") is None  # another session never sees it
    now["t"] = 11
    assert store.names("a") == []


def test_session_models_are_bounded_in_bytes_least_recently_used_first():
    # before: only counts bounded them (3 per session, 200 sessions): 600 models of a real backbone's
    # width (a CRoFT head of ViT-B/16: 3 MB), and their classifiers' caches, could be kept for an hour
    now = {"t": 0.0}
    kb4 = 32 * 32 * 4  # a Linear(32, 32) holds 4 kB
    store = SessionModels(max_bytes=3 * kb4, clock=lambda: now["t"])
    for k, session in enumerate("abc"):
        now["t"] = k
        store.add(session, "M", torch.nn.Linear(32, 32, bias=False))
    assert store.nbytes == 3 * kb4 and all(store.names(s) == ["M"] for s in "abc")
    now["t"] = 3
    store.get("a", "M")  # "a" is used again: "b" is now the least recently used
    now["t"] = 4
    store.add("d", "M", torch.nn.Linear(32, 32, bias=False))
    assert store.names("b") == [] and store.names("a") == store.names("c") == store.names("d") == ["M"]
    assert store.nbytes == 3 * kb4
    # a classifier's cached text features count once it has them (its next use)
    entry = store.get("a", "M")
    entry.classifier = type("Classifier", (), {"_text": {("x",): torch.zeros(32, 32)}, "_references": {}})()
    now["t"] = 5
    store.get("a", "M")
    assert store.names("c") == [] and store.nbytes == 3 * kb4  # "c" (least recent) made room
    with pytest.raises(ModelTooLarge, match="CROFT_SESSION_MODELS_MB"):
        store.add("e", "big", torch.nn.Linear(64, 64, bias=False))
    assert store.names("e") == [] and store.names("d") == ["M"]


def test_a_kept_model_holds_its_weights_only(tiny_backbone, zip_data):
    # what a session keeps of a run: its parameters and buffers; never the training features, the
    # optimizer's state, the history or the backbone's weights (a prompt head's text tower is the
    # backbone's, shared)
    import gc
    import types

    from croft_core.clip.features import FeatureSet

    def tensors_reachable(root) -> dict[int, int]:
        seen, stack, found = set(), [root], {}
        while stack:
            obj = stack.pop()
            if id(obj) in seen or isinstance(obj, (type, types.ModuleType, types.FunctionType)):
                continue
            seen.add(id(obj))
            if isinstance(obj, torch.Tensor):
                found[obj.untyped_storage().data_ptr()] = obj.untyped_storage().nbytes()
            elif isinstance(obj, (FeatureSet, torch.optim.Optimizer)):
                raise AssertionError(f"the kept model reaches a {type(obj).__name__}")
            else:
                stack.extend(gc.get_referents(obj))
        return found

    backbone = tensors_reachable(tiny_backbone)
    for method in ("croft", "tip_adapter", "coop"):
        r = finetune(tiny_backbone, zip_data, FinetuneRequest(method=method, steps=4, views=1, batch_size=4))
        own = {p: n for p, n in tensors_reachable(r.model).items() if p not in backbone}
        weights = sum(t.untyped_storage().nbytes() for t in [*r.model.parameters(), *r.model.buffers()])
        assert sum(own.values()) == weights == held_bytes(r.model), method
        del r
        gc.collect()
        assert not [o for o in gc.get_objects() if type(o) is FeatureSet], method


def test_queue_runs_one_job_at_a_time_and_shows_positions():
    import threading

    q = TrainingQueue(max_waiting=1)
    seen, release = [], threading.Event()

    def first():
        with q.slot():
            release.wait(5)

    t = threading.Thread(target=first)
    t.start()
    while len(q) == 0:
        pass

    def second():
        with q.slot(on_wait=seen.append, poll=0.01):
            seen.append("ran")

    t2 = threading.Thread(target=second)
    t2.start()
    while not seen:
        pass
    with pytest.raises(QueueFull):
        with q.slot():
            pass
    release.set()
    t.join(), t2.join()
    assert seen[0] == 1 and seen[-1] == "ran"


def test_stream_job_yields_events_then_the_result_or_the_error():
    events = list(stream_job(lambda emit: (emit({"stage": "a"}), 42)[1]))
    assert [e["stage"] for e in events if e["stage"] != "tick"] == ["a", "done"] and events[-1]["result"] == 42
    with pytest.raises(DataError, match="boom"):
        list(stream_job(lambda emit: (_ for _ in ()).throw(DataError("boom"))))


def test_hub_dataset_too_large_is_refused_before_download(monkeypatch):
    import huggingface_hub

    import croft_core.offline as offline

    class Info:
        siblings = [type("F", (), {"size": 3 * 2**30})()]

    monkeypatch.setattr(offline, "hub_unreachable_reason", lambda: None)
    monkeypatch.setattr(huggingface_hub, "HfApi", lambda: type("A", (), {
        "dataset_info": lambda self, *a, **k: Info()})())
    with pytest.raises(DataError, match="3.0 GB"):
        hub_data("org/huge", shots=2, seed=1, max_images=100, max_classes=10)


def test_limits_from_the_environment(monkeypatch):
    from croft_app.service.finetune import FinetuneLimits

    monkeypatch.setenv("CROFT_TRAIN_MAX_SECONDS", "30")
    assert FinetuneLimits.from_env().max_seconds == 30.0
    monkeypatch.setenv("CROFT_TRAIN_MAX_STEPS", "lots")
    with pytest.raises(ValueError, match="CROFT_TRAIN_MAX_STEPS must be a positive number of steps"):
        FinetuneLimits.from_env()


@pytest.mark.parametrize("method, label", [("coop", "CoOp"), ("cocoop", "CoCoOp"), ("locoop", "LoCoOp")])
def test_prompt_learners_fine_tune_in_the_app(tiny_backbone, zip_data, method, label):
    r = finetune(tiny_backbone, zip_data, FinetuneRequest(method=method, steps=4, views=1, batch_size=4))
    assert r.name.startswith(f"{label} · ") and r.model.config.threshold is not None
    assert r.history and all(np.isfinite(row["loss"]) for row in r.history)
    assert "head.ctx" in r.model.state_dict() and len(r.model.state_dict()) <= 6  # never the backbone


def test_finetune_results_name_the_split_the_threshold_was_fitted_on(tiny_backbone, zip_data, tmp_path, monkeypatch):
    """The results' ``threshold`` names the split calibrate() was given (role, name, size), not a
    hand-written "val": moved to another split, the record follows it."""
    from croft_app.service import finetune as ft

    used, real = [], ft.calibrate
    monkeypatch.setattr(ft, "calibrate", lambda model, text, split, **kw: used.append(split) or real(model, text, split, **kw))
    request = FinetuneRequest(steps=2, views=1, batch_size=4)
    thr = finetune(tiny_backbone, zip_data, request, cache_dir=tmp_path / "cache").results["threshold"]
    assert (thr["fitted_on"], thr["fitted_on_split"], thr["n"]) == ("val", used[0].name, len(zip_data.val))
    assert used[0].name == "my-data val"
    monkeypatch.setattr(ft, "CALIBRATION_ROLE", "train")
    used.clear()
    thr = finetune(tiny_backbone, zip_data, request, cache_dir=tmp_path / "cache").results["threshold"]
    assert (thr["fitted_on"], thr["fitted_on_split"]) == ("train", "my-data train") and used[0].name == "my-data train"
