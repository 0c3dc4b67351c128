"""Train jobs in a child process (issue 25): the same model as in a thread, events, Stop, a dead child."""

from __future__ import annotations

import os
import signal
import time

import pytest
import torch

from croft_app.service.finetune import FinetuneLimits, FinetuneRequest, FinetuneStopped, finetune
from croft_app.service.trainproc import TrainerDied, TrainingProcess
from croft_app.service.uploads import extract_zip
from croft_app.service.userdata import upload_data
from tests.test_finetune import make_zip


@pytest.fixture(scope="module")
def trainer(tiny_spec):
    process = TrainingProcess(tiny_spec, threads=1)
    yield process
    process.close()


@pytest.fixture
def zip_data(tmp_path):
    up = extract_zip(make_zip(tmp_path / "my-data.zip"), tmp_path / "imgs")
    data = upload_data(up, "my-data", shots=4, seed=1, max_images=2000, max_classes=100)
    yield data
    data.cleanup()


def _run(trainer, data, request, tmp_path, flag=None):
    events = list(trainer.run(data, request, limits=FinetuneLimits(), cache_dir=tmp_path / "cache",
                              stop_flag=str(flag or tmp_path / "no-stop")))
    assert events[-1]["stage"] == "done"
    return events[:-1], events[-1]["result"]


@pytest.mark.parametrize("method", ["croft", "coop"])
def test_the_process_trains_the_model_a_thread_trains(trainer, tiny_backbone, zip_data, tmp_path, method,
                                                      monkeypatch):
    request = FinetuneRequest(method=method, steps=6, views=1, batch_size=4)
    here = finetune(tiny_backbone, zip_data, request, cache_dir=tmp_path / "cache-here")
    import croft_app.service.finetune as in_this_process

    monkeypatch.setattr(in_this_process, "finetune", lambda *a, **k: pytest.fail("trained in this process"))
    events, result = _run(trainer, zip_data, request, tmp_path)
    assert trainer.pid not in (None, os.getpid())
    assert [e["epoch"] for e in events if e["stage"] == "epoch"] == [row["epoch"] for row in here.history]
    assert any(e["stage"] == "extract" for e in events)
    assert result.name == here.name and result.results["val_accuracy"] == here.results["val_accuracy"]
    assert result.model.config.threshold == pytest.approx(here.model.config.threshold, abs=1e-4)
    theirs, ours = result.model.state_dict(), here.model.state_dict()
    assert theirs.keys() == ours.keys()
    for key in ours:  # the weights themselves, not only the numbers reported about them
        torch.testing.assert_close(theirs[key], ours[key], atol=1e-4, rtol=1e-4)
    assert [r["loss"] for r in result.history] == pytest.approx([r["loss"] for r in here.history], abs=1e-4)


def test_stop_reaches_the_process_and_its_error_is_raised_here(trainer, zip_data, tmp_path):
    flag = tmp_path / "stop"
    flag.touch()  # pressed before the run began: nothing is kept
    with pytest.raises(FinetuneStopped, match="stopped"):
        _run(trainer, zip_data, FinetuneRequest(steps=4, views=1), tmp_path, flag)
    _, result = _run(trainer, zip_data, FinetuneRequest(steps=2, views=1, batch_size=4), tmp_path)
    assert result.history  # the same process trains the next job


def test_a_dead_process_fails_the_job_plainly_and_the_next_job_gets_a_new_one(trainer, zip_data, tmp_path):
    _run(trainer, zip_data, FinetuneRequest(steps=2, views=1, batch_size=4), tmp_path)
    first = trainer.pid
    run = trainer.run(zip_data, FinetuneRequest(steps=3000, views=1, batch_size=4), limits=FinetuneLimits(),
                      cache_dir=tmp_path / "cache", stop_flag=str(tmp_path / "no-stop"))
    assert next(run)["stage"] in ("tick", "extract", "epoch")
    os.kill(first, signal.SIGKILL)
    with pytest.raises(TrainerDied, match="ended during the run"):
        for _ in run:
            pass
    _, result = _run(trainer, zip_data, FinetuneRequest(steps=2, views=1, batch_size=4), tmp_path)
    assert result.history and trainer.pid != first


def test_a_job_whose_caller_left_is_stopped_before_the_next_one_runs(trainer, zip_data, tmp_path):
    flag = tmp_path / "left"
    run = trainer.run(zip_data, FinetuneRequest(steps=3000, views=1, batch_size=4), limits=FinetuneLimits(),
                      cache_dir=tmp_path / "cache", stop_flag=str(flag))
    while next(run)["stage"] != "epoch":
        pass
    run.close()  # the visitor left: the app sets the job's stop flag
    flag.touch()
    t0 = time.monotonic()
    events, result = _run(trainer, zip_data, FinetuneRequest(steps=2, views=1, batch_size=4), tmp_path)
    assert result.history and len(result.history) == len([e for e in events if e["stage"] == "epoch"])
    assert time.monotonic() - t0 < 30  # the old job stopped at its next epoch, it did not run 3000 steps


def test_a_recipe_is_built_checked_and_cleaned_up_in_the_process(trainer, tmp_path, monkeypatch):
    # the images of an upload are decoded and checked in the child, not in the server
    import croft_app.service.uploads as in_this_process
    from croft_app.service.finetune import StopCheck
    from croft_app.service.userdata import DataRecipe

    monkeypatch.setattr(in_this_process, "extract_zip", lambda *a, **k: pytest.fail("checked in this process"))
    zipped, work = make_zip(tmp_path / "my-data.zip"), tmp_path / "images"
    recipe = DataRecipe("zip", str(zipped), shots=4, seed=1, max_images=2000, max_classes=100, name="my-data",
                        work=str(work), check=StopCheck(str(tmp_path / "no-stop"), time.monotonic() + 60, 60))
    _, result = _run(trainer, recipe, FinetuneRequest(steps=2, views=1, batch_size=4), tmp_path)
    assert result.name == "CRoFT · my-data · 4-shot" and result.results["data"]["train_images"] > 0
    assert not work.exists()  # the extracted images went with the job
    stopped = DataRecipe("zip", str(zipped), shots=4, seed=1, max_images=2000, max_classes=100, name="my-data",
                         work=str(work), check=StopCheck(str(tmp_path / "no-stop"), time.monotonic() - 1, 60))
    with pytest.raises(FinetuneStopped, match="time limit .* while the data was being checked"):
        _run(trainer, stopped, FinetuneRequest(steps=2, views=1, batch_size=4), tmp_path)


def test_the_process_ends_when_idle_and_the_next_job_starts_a_new_one(tiny_spec, zip_data, tmp_path):
    # the child holds ~0.5 GB of its own (torch, the backbone): not kept for a server nobody trains on
    process = TrainingProcess(tiny_spec, threads=1, idle_seconds=0.5)
    try:
        _run(process, zip_data, FinetuneRequest(steps=2, views=1, batch_size=4), tmp_path)
        first = process.pid
        deadline = time.monotonic() + 10
        while process.pid is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert process.pid is None and not os.path.exists(f"/proc/{first}")
        _, result = _run(process, zip_data, FinetuneRequest(steps=2, views=1, batch_size=4), tmp_path)
        assert result.history and process.pid not in (None, first)
    finally:
        process.close()


def test_the_child_finds_the_package_from_any_working_directory(tiny_spec, monkeypatch, tmp_path):
    # a server started as `python /srv/app.py` from another folder, without the package installed
    import subprocess
    from pathlib import Path

    import croft_app

    seen = {}

    def popen(args, env, **kwargs):
        seen.update(args=args, env=env)
        raise OSError("not started in this test")

    monkeypatch.setattr(subprocess, "Popen", popen)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OSError, match="not started"):
        TrainingProcess(tiny_spec)._start()
    assert seen["args"][1:] == ["-m", "croft_app.service.trainproc"]
    assert seen["env"]["PYTHONPATH"].split(os.pathsep)[0] == str(Path(croft_app.__file__).resolve().parents[1])


def test_a_left_job_whose_process_died_does_not_fail_the_next_job(trainer, zip_data, tmp_path):
    run = trainer.run(zip_data, FinetuneRequest(steps=3000, views=1, batch_size=4), limits=FinetuneLimits(),
                      cache_dir=tmp_path / "cache", stop_flag=str(tmp_path / "left"))
    while next(run)["stage"] != "epoch":
        pass
    run.close()  # the visitor left ...
    os.kill(trainer.pid, signal.SIGKILL)  # ... and the process died before it saw the stop flag
    _, result = _run(trainer, zip_data, FinetuneRequest(steps=2, views=1, batch_size=4), tmp_path)
    assert result.history
