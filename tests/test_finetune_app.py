"""The Train tab's ``/finetune`` through ``gradio_client``, then ``/classify`` with the returned model.

The demo is built here from the Train tab and a ``/classify`` that asks a
:class:`~croft_app.service.sessions.SessionRegistry` with the caller's session, as the app will once the
Train tab is hooked into ``app.py`` (served on 127.0.0.1 only).
"""

from __future__ import annotations

import zipfile

import gradio as gr
import numpy as np
import pytest

from croft_core.data.images import load_image
from croft_app.service.models import ClassifierRegistry
from croft_app.service.sessions import SessionRegistry
from croft_app.service.trainproc import TrainingProcess
from tests.test_finetune import CLASSES, _png, make_zip

gr_client = pytest.importorskip("gradio_client")


def build_demo(backbone, cache_dir, trainer=None):
    from croft_app.ui.train import TrainHandlers, train_tab

    registry = SessionRegistry(ClassifierRegistry(backbone, cache_dir=cache_dir))
    h = TrainHandlers(backbone, registry, cache_dir=cache_dir, trainer=trainer)

    def classify(image, vocabulary: str, model: str, request: gr.Request = None) -> dict:
        classifier = registry.get(model, getattr(request, "session_hash", None))
        path = image["path"] if isinstance(image, dict) else image
        (pred,) = classifier.classify([load_image(path)], [c.strip() for c in vocabulary.split(",")], None)
        return {"model": classifier.name, **pred.to_dict()}

    with gr.Blocks() as demo:
        with gr.Tab("Classify"):
            image = gr.File(label="image")
            vocabulary = gr.Textbox(label="vocabulary")
            model = gr.Dropdown(label="model", choices=registry.names(), allow_custom_value=True)
            out = gr.JSON(label="result")
            gr.Button().click(classify, [image, vocabulary, model], out, api_name="classify", preprocess=False)
        with gr.Tab("Train"):
            train_tab(h, model_menus=[model])
    demo.queue()
    return demo, h


@pytest.fixture(scope="module")
def served(tiny_backbone, tmp_path_factory):
    # the jobs train in a child process, as in the app (croft_app.service.trainproc)
    trainer = TrainingProcess(tiny_backbone.spec, threads=1)
    demo, h = build_demo(tiny_backbone, tmp_path_factory.mktemp("cache"), trainer)
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", quiet=True)
    yield demo.local_url, h
    demo.server.force_exit = True
    demo.close()
    trainer.close()


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("files")
    make_zip(d / "my-data.zip", per_class=6)
    (d / "circle.png").write_bytes(_png("circle", 99))
    with zipfile.ZipFile(d / "evil.zip", "w") as zf:
        zf.writestr("circle/0.png", _png("circle"))
        zf.writestr("../../evil.png", _png("square"))
    return d


def test_finetune_on_an_upload_then_classify_in_the_same_session(served, files):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    url, _ = served
    client = Client(url, verbose=False)
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert [p["parameter_name"] for p in api["/finetune"]["parameters"]] == ["data", "method", "shots",
                                                                            "seed", "steps"]
    out = client.predict(handle_file(str(files / "my-data.zip")), "croft", 4, 1, 4, api_name="/finetune")
    assert out["model"] == "CRoFT · my-data · 4-shot"
    assert len(out["history"]) >= 1 and out["results"]["classes"] == list(CLASSES)
    assert 0 <= out["results"]["val_accuracy"] <= 1 and out["results"]["threshold"]["value"] is not None
    pred = client.predict(handle_file(str(files / "circle.png")), ", ".join(CLASSES), out["model"],
                          api_name="/classify")
    assert pred["model"] == out["model"] and pred["threshold_source"]
    other = Client(url, verbose=False)  # another session does not see it
    with pytest.raises(AppError):
        other.predict(handle_file(str(files / "circle.png")), ", ".join(CLASSES), out["model"],
                      api_name="/classify")
    with pytest.raises(AppError, match="outside the upload folder"):
        client.predict(handle_file(str(files / "evil.zip")), "croft", 4, 1, 4, api_name="/finetune")
    with pytest.raises(AppError, match="Unknown benchmark"):
        client.predict("nope", "croft", 4, 1, 4, api_name="/finetune")
    with pytest.raises(AppError, match="steps must be"):
        client.predict(handle_file(str(files / "my-data.zip")), "croft", 4, 1, 10**7, api_name="/finetune")
    with pytest.raises(AppError, match="not an upload"):
        client.predict({"path": str(files / "my-data.zip")}, "croft", 4, 1, 4, api_name="/finetune")
    again = client.predict(handle_file(str(files / "my-data.zip")), "croft", 4, 1, 4, api_name="/finetune")
    assert again["model"] == "CRoFT · my-data · 4-shot (2)"


def test_a_prompt_learner_trained_in_the_process_classifies_with_this_backbone(served, files):
    # the process sends the weights back; a prompt head needs this process's text tower attached
    from gradio_client import Client, handle_file

    url, h = served
    client = Client(url, verbose=False)
    out = client.predict(handle_file(str(files / "my-data.zip")), "coop", 4, 1, 4, api_name="/finetune")
    assert h.trainer.pid is not None and out["model"].startswith("CoOp")
    pred = client.predict(handle_file(str(files / "circle.png")), ", ".join(CLASSES), out["model"],
                          api_name="/classify")
    assert pred["model"] == out["model"] and pred["label"] in (*CLASSES, "unknown")


def test_train_stream_shows_progress_curves_and_a_download(served, files, monkeypatch):
    _, h = served
    import croft_app.ui.train

    payload = {"path": str(files / "my-data.zip"), "orig_name": "my-data.zip"}
    # the file is not an upload here
    monkeypatch.setattr(h, "upload_path", lambda p: p["path"] if isinstance(p, dict) else p, raising=False)
    outs = list(h.train_stream("zip of class folders", None, payload, None, "", "", "croft", 4, 1,
                               None, None, None, 6, request=None))
    statuses = [o[0] for o in outs]
    assert any("Encoding images" in s for s in statuses) and any("epoch 1 of" in s for s in statuses)
    curves = [o[1] for o in outs if hasattr(o[1], "data")]
    assert curves and [t.name for t in curves[-1].data] == ["loss"]
    final = outs[-1]
    assert "is ready" in final[0] and final[5] == "CRoFT · my-data · 4-shot"  # a session of its own
    assert zipfile.ZipFile(final[4]).namelist()[0].endswith(("config.json", "model.safetensors", "README.md"))
    assert croft_app.ui.train._menu_update(h, final[5], None)["value"] == final[5]


@pytest.mark.slow
def test_finetune_on_shapes_then_classify(served, files):
    from gradio_client import Client, handle_file

    url, _ = served
    client = Client(url, verbose=False)
    out = client.predict("shapes", "croft", 2, 1, 4, api_name="/finetune")
    assert out["model"] == "CRoFT · shapes · 2-shot" and out["results"]["data"]["source"] == "benchmark"
    pred = client.predict(handle_file(str(files / "circle.png")), "circle, square, star", out["model"],
                          api_name="/classify")
    assert pred["label"] in ("circle", "square", "star", "unknown")
    assert np.isfinite(pred["score"])


def test_live_curves_are_drawn_once_then_sent_as_new_points_only(served, files, monkeypatch):
    """Issue 23 (3): a curve redraw per epoch blocked the browser (a 400-epoch run could not be
    stopped), and the whole curves were re-sent on every update (its size grew with the run). The
    stream now sends at most two updates a second; the curves whole once (the first epoch), then
    only the epochs since the previous update, each once and in order; the final curves reach the
    last epoch with at most MAX_POINTS points."""
    import json
    import time

    from croft_app.ui.train import MAX_POINTS, UPDATE_SECONDS

    _, h = served
    payload = {"path": str(files / "my-data.zip"), "orig_name": "my-data.zip"}
    monkeypatch.setattr(h, "upload_path", lambda p: p["path"] if isinstance(p, dict) else p, raising=False)
    t0 = time.monotonic()
    outs = list(h.train_stream("zip of class folders", None, payload, None, "", "", "croft", 4, 1,
                               None, None, None, 600, request=None))
    elapsed = time.monotonic() - t0
    epochs = outs[-1][3]["epochs_done"]
    live = [o for o in outs[:-1] if str(o[0]).startswith("Training: epoch")]
    assert epochs > 50 and 3 <= len(live) <= elapsed / UPDATE_SECONDS + 2, (epochs, len(live), elapsed)
    assert [hasattr(o[1], "data") for o in live] == [True] + [False] * (len(live) - 1)  # drawn once
    drawn = list(live[0][1].data[0].x)
    live = live[:1] + [(*o[:6], json.loads(o[6])) for o in live[1:]]  # the new points, sent as JSON text
    for o in live[1:]:
        new = [e for e, _ in o[6]["loss"]]
        assert new and new[0] == drawn[-1] + 1 and new == list(range(new[0], new[0] + len(new))), (drawn[-1], new)
        assert f"epoch {new[-1]} of" in o[0]  # up to the epoch the status names, not beyond
        assert o[6]["run"] == live[1][6]["run"] and len(o[6]["val_accuracy"]) <= len(new)
        drawn += new
    assert len({o[6]["run"] for o in live[1:]}) == 1
    last = outs[-1][1].data[0]  # more epochs than MAX_POINTS: the curves come whole, thinned
    assert epochs > MAX_POINTS and len(last.x) <= MAX_POINTS + 1 and last.x[-1] == epochs


@pytest.mark.parametrize("epochs", [50, 500])
def test_the_result_brings_the_last_points_or_the_thinned_whole_curves(served, monkeypatch, epochs):
    # up to MAX_POINTS epochs the drawn curves get their last epochs with the result (redrawing both
    # cost the page ~0.2 s at the end of every run); more epochs come whole, thinned to MAX_POINTS
    import json

    import croft_app.ui.train as train

    _, h = served
    rows = [{"stage": "epoch", "epoch": e, "epochs": epochs, "loss": 1 / e, "val_accuracy": 0.5}
            for e in range(1, epochs + 1)]
    done = {"stage": "done", "result": {"model": "m", "history": rows, "folder": "/nonexistent/x",
                                        "results": {"epochs_done": epochs}, "skipped": []}}
    monkeypatch.setattr(h, "run_events", lambda *a, **k: iter(rows + [done]))
    monkeypatch.setattr(train, "zip_checkpoint", lambda folder, dest: dest)
    monkeypatch.setattr(train, "_done_text", lambda out: "ready")
    outs = list(h.train_stream("benchmark", "shapes", None, None, "", "", "croft", 4, 1, None, None, None, 10,
                               request=None))
    first = [o for o in outs if hasattr(o[1], "data")][0][1].data[0]  # drawn at the first epoch
    assert list(first.x) == [1]
    if epochs <= train.MAX_POINTS:
        assert not hasattr(outs[-1][1], "data") and not hasattr(outs[-1][2], "data")
        last = json.loads(outs[-1][6])
        assert [e for e, _ in last["loss"]] == list(range(2, epochs + 1)) == [e for e, _ in last["val_accuracy"]]
    else:
        final = outs[-1][1].data[0]
        assert len(final.x) <= train.MAX_POINTS + 1 and final.x[0] == 1 and final.x[-1] == epochs


def test_stop_and_the_queue_position(served, files, monkeypatch):
    from croft_app.service.finetune import FinetuneRequest, FinetuneStopped

    _, h = served
    monkeypatch.setattr(h, "upload_path", lambda p: p, raising=False)
    req = FinetuneRequest(shots=4, steps=400, views=1, batch_size=4)
    events = h.run_events("zip of class folders", str(files / "my-data.zip"), "", req, "s1")
    for event in events:
        if event["stage"] == "epoch":
            h.stop(request=type("R", (), {"session_hash": "s1"})())
            break
    done = [e for e in events if e["stage"] == "done"][0]["result"]
    assert done["results"]["stopped"] and done["results"]["epochs_done"] < 100
    ticket = h.queue.join()  # another job holds the queue
    try:
        waiting = h.run_events("zip of class folders", str(files / "my-data.zip"), "", req, "s2")
        assert next(waiting) == {"stage": "queued", "position": 1}
        h.stop(request=type("R", (), {"session_hash": "s2"})())
        with pytest.raises(FinetuneStopped, match="cancelled while it waited"):
            list(waiting)
    finally:
        h.queue.leave(ticket)
    assert len(h.queue) == 0


def test_api_data_as_a_hub_id_fails_fast_offline(served):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    client = Client(served[0], verbose=False)
    with pytest.raises(AppError, match="org/no-such-dataset"):
        client.predict("org/no-such-dataset", "croft", 4, 1, 4, api_name="/finetune")


@pytest.mark.parametrize("shots, seed, steps, match", [
    ("abc", 1, 4, "shots must be a whole number, e.g. 16, or empty for 16; got 'abc'"),
    (2.5, 1, 4, "shots must be a whole number"),
    (4, "nan", 4, "seed must be a whole number"),
    (4, 1, 10**400, "steps must be a whole number"),
    (4, 1, "9" * 5000, "steps must be a whole number, .*'9{30}"),  # the message cuts a long value
    (4, [1], 4, "seed must be a whole number, .* got a list"),
    (4, True, 4, "seed must be a whole number"),
])
def test_api_refuses_hostile_numbers_and_keeps_serving(served, shots, seed, steps, match):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    client = Client(served[0], verbose=False)
    with pytest.raises(AppError, match=match) as err:
        client.predict("tiny", "croft", shots, seed, steps, api_name="/finetune")
    assert len(str(err.value)) < 300  # never the whole input echoed back
    assert client.view_api(print_info=False, return_format="dict")["named_endpoints"]  # still serving


def test_advanced_numbers_are_checked_before_a_run(served):
    _, h = served
    for value in ("nan", "inf", "1e400", "fast", [0.1]):
        with pytest.raises(ValueError, match="learning rate must be a finite number, or empty for the method's default"):
            h._request("croft", 4, 1, 4, lr=value)
    assert h._request("croft", "", None, " ", lambda1="5", lr=" ").lambda1 == 5.0



def test_a_failed_run_shows_one_badge_on_the_status_that_says_why(tiny_backbone, tmp_path):
    """Not one "Error" box per output (curves, results, zip, name): the run's progress and its
    failure badge sit on the status line, which the failure event then fills with the reason."""
    demo, _ = build_demo(tiny_backbone, tmp_path)
    fns = {getattr(f.fn, "__name__", ""): f for f in demo.fns.values()}
    run, failure = fns["train_stream"], fns["train_stream_failed"]
    assert [c._id for c in run.show_progress_on] == [c._id for c in failure.outputs]


# -- one visitor cannot lock everyone out (issue 25) -------------------------------------------


class _Req:
    def __init__(self, session):
        self.session_hash = session


def test_finetune_keeps_its_checkpoint_for_push(served, files, monkeypatch):
    # before: /finetune returned from inside the job's generator, which closed it and deleted the
    # checkpoint folder it had just kept: a Push after an API run always failed
    _, h = served
    monkeypatch.setattr(h, "upload_path", lambda p: p["path"], raising=False)
    out = h.finetune({"path": str(files / "my-data.zip")}, "croft", 4, 1, 4, request=_Req("push-me"))
    assert out["model"].startswith("CRoFT")
    assert (h._folders["push-me"] / "checkpoint" / "model.safetensors").is_file()
    assert "push-me" not in h._jobs and not list((h.cache_dir / "stop").iterdir())


def test_a_second_job_of_a_session_is_refused_and_does_not_cancel_the_first(served, files, monkeypatch):
    # before: the second job queued behind the first; when it was dropped it set the session's stop
    # flag, and the first job stopped
    from croft_app.service.finetune import FinetuneRequest
    from croft_app.service.sessions import QueueFull

    _, h = served
    monkeypatch.setattr(h, "upload_path", lambda p: p, raising=False)
    req = FinetuneRequest(shots=4, steps=8, views=1, batch_size=4)
    first = h.run_events("zip of class folders", str(files / "my-data.zip"), "", req, "one")
    assert next(first)["stage"] == "data"
    second = h.run_events("zip of class folders", str(files / "my-data.zip"), "", req, "one")
    with pytest.raises(QueueFull, match="this session has a training job already"):
        next(second)
    done = [e for e in first if e["stage"] == "done"][0]["result"]
    assert not done["results"]["stopped"]
    assert len(h.queue) == 0 and "one" not in h._jobs


def test_stop_writes_nothing_without_a_job(served):
    # before: every Stop (outside the queue) wrote one file per session, never deleted
    _, h = served
    stops = h.cache_dir / "stop"
    before = set(stops.iterdir()) if stops.exists() else set()
    for k in range(50):
        assert h.stop(request=_Req(f"nobody-{k}")) == "No training job of yours is running."
    assert (set(stops.iterdir()) if stops.exists() else set()) == before


def test_the_time_cap_and_stop_cover_the_data_checks(tiny_backbone, files, tmp_path, monkeypatch):
    # before: 2,000 references to one slow image were checked for 842 s, outside the 600 s cap and
    # deaf to Stop; the queue was held meanwhile
    import time

    import croft_app.service.uploads as uploads
    from croft_app.service.finetune import FinetuneLimits, FinetuneRequest, FinetuneStopped
    from croft_app.ui.train import TrainHandlers

    real = uploads._usable
    monkeypatch.setattr(uploads, "_usable", lambda path, limits: time.sleep(0.05) or real(path, limits))
    registry = SessionRegistry(ClassifierRegistry(tiny_backbone, cache_dir=tmp_path))
    h = TrainHandlers(tiny_backbone, registry, cache_dir=tmp_path, limits=FinetuneLimits(max_seconds=1.0))
    h.upload_path = lambda p: p
    images = [str(files / f"{k}.png") for k in range(200)]  # 200 files: 10 s of checks
    for k in range(200):
        (files / f"{k}.png").write_bytes((files / "circle.png").read_bytes())
    labels = ",".join(["circle", "square"] * 100)
    req = FinetuneRequest(shots=4, steps=4, views=1, batch_size=4)
    t0 = time.monotonic()
    with pytest.raises(FinetuneStopped, match=r"reached the time limit \(1 s\) while the data was being checked"):
        list(h.run_events("labelled images", images, labels, req, "slow"))
    assert time.monotonic() - t0 < 5 and len(h.queue) == 0
    h.limits = FinetuneLimits()
    events = h.run_events("labelled images", images, labels, req, "stopped")
    assert next(events)["stage"] == "data"
    h.stop(request=_Req("stopped"))
    t0 = time.monotonic()
    with pytest.raises(FinetuneStopped, match="was stopped while the data was being checked"):
        next(events)
    assert time.monotonic() - t0 < 1


def test_file_counts_are_refused_before_any_per_file_work(served, monkeypatch):
    # before: 100,000 file references were each resolved (27 s) before the count was checked
    _, h = served
    calls = []
    monkeypatch.setattr(h, "upload_path", lambda p: calls.append(p), raising=False)
    with pytest.raises(gr.Error, match="100,000 images; at most 2,000 per training run"):
        h._data("labelled images", [{"path": "x.png"}] * 100_000, "", 4, 1, h.cache_dir)
    assert calls == []


def test_training_requests_never_wait_in_the_shared_queue(tiny_backbone, tmp_path):
    # before: the Train events allowed 9 at once, as many as the training queue holds, so its
    # refusal never fired: 40 cheap /finetune calls filled the shared 32-slot queue (HTTP 503 for all)
    demo, h = build_demo(tiny_backbone, tmp_path)
    train_fns = [fn for fn in demo.fns.values() if fn.concurrency_id == "train"]
    assert len(train_fns) == 2 and all(fn.concurrency_limit is None for fn in train_fns)


def test_a_finished_job_hands_its_freed_memory_back(tiny_backbone, files, tmp_path, monkeypatch):
    # before: a run's features and autograd buffers, freed in the training thread's malloc arena,
    # stayed in the server process after the job (what a Train flood left held)
    import croft_app.ui.train as train
    from croft_app.service.finetune import FinetuneLimits, FinetuneRequest, FinetuneStopped

    trims = []
    monkeypatch.setattr(train, "return_freed_memory", lambda **kw: trims.append(kw) or True)
    h = train.TrainHandlers(tiny_backbone, SessionRegistry(ClassifierRegistry(tiny_backbone, cache_dir=tmp_path)),
                            cache_dir=tmp_path)
    h.upload_path = lambda p: p
    req = FinetuneRequest(shots=4, steps=4, views=1, batch_size=4)
    events = list(h.run_events("zip of class folders", str(files / "my-data.zip"), "", req, "done"))
    assert events[-1]["stage"] == "done" and trims == [{"trim": True}]
    h.limits = FinetuneLimits(max_seconds=1e-6)  # stopped by the time cap: trimmed all the same
    with pytest.raises(FinetuneStopped):
        list(h.run_events("zip of class folders", str(files / "my-data.zip"), "", req, "stopped"))
    assert trims == [{"trim": True}] * 2
