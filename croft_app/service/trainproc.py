"""Training jobs in a child process of lower CPU priority (issue 25).

A Train job run in a thread of the server shares the server's GIL and cores with every visitor's
request: during a warm flood of small ``/finetune`` jobs another visitor's ``/classify`` took 4-5x
its idle time (``bench/soak.py``). :class:`TrainingProcess` runs :func:`~croft_app.service.finetune.finetune`
in one long-lived child process instead: its own interpreter (no GIL shared with the requests), its
own backbone, a ``nice`` of 10 (the kernel runs the server's threads first when both want a core)
and few torch threads.

- The child is started on the first job, loads the backbone from its ``SPEC`` once, and then runs
  one job at a time (the app's :class:`~croft_app.service.sessions.TrainingQueue` already admits
  one at a time).
- A job's data goes to the child as a recipe (:class:`~croft_app.service.userdata.DataRecipe`:
  a benchmark's name, an upload's checked paths), so that reading a benchmark and decoding and
  checking each uploaded image happen in the child too; a Hub dataset's data is read in the
  server (with the visitor's credentials) and sent as it is (its rows are memory-mapped Arrow
  files). Both go pickled over a private socket pair. The job's events come back as they happen. The trained weights come back as safetensors bytes, rebuilt
  here with :class:`~croft_core.heads.checkpoint.CroftModel` and loaded strictly: no tensor is
  unpickled.
- Stop and the time cap reach the child as they reach a thread: through the job's stop-flag file
  and the limits it gets.
- If the child dies (killed, out of memory), the job fails with a plain error and the next job
  starts a new child. A job whose caller left is drained (its stop flag is set by the caller)
  before the next job is sent.

Only for a backbone on the CPU: on a GPU, and on ZeroGPU (where ``spaces.GPU`` runs the job in a
process of its own), the job stays in a thread (:func:`croft_app.service.sessions.stream_job`).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, replace
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Iterator

from croft_core.errors import CroftError

__all__ = ["TrainingProcess", "TrainerDied"]

logger = logging.getLogger(__name__)

FD_VARIABLE = "CROFT_TRAINER_FD"  # the child's end of the socket pair (an inherited descriptor)
LOCK_SECONDS = 10.0  # a second job waits this long for the first (the app's queue admits one at a time)
DRAIN_SECONDS = 60.0  # how long a left job may take to see its stop flag before the child is replaced


class TrainerDied(CroftError, RuntimeError):
    """The training process ended in the middle of a job."""


def _nothing() -> None:
    return None


class TrainingProcess:
    """One child process that runs training jobs for this server (see the module docstring).

    Args:
        spec: the backbone's ``SPEC`` (the child loads it itself).
        nice: added to the child's niceness (0-19; higher runs later when cores are contended).
        threads: torch's intra-op threads in the child (``None``: half the cores, at least one).
        idle_seconds: the child ends after this long without a job (torch and the backbone of its
            own: ~0.5 GB allocated, ~0.9 GB resident); the next job starts a new one (~5 s).
    """

    def __init__(self, spec: str, *, nice: int = 10, threads: int | None = None, idle_seconds: float = 600.0):
        self.spec, self.nice, self.idle_seconds = spec, int(nice), float(idle_seconds)
        self.threads = threads or max(1, (os.cpu_count() or 2) // 2)
        self._proc: subprocess.Popen | None = None
        self._conn: Connection | None = None
        self._lock = threading.Lock()  # one job at a time
        self._jobs = 0
        self._unfinished: int | None = None  # the job whose caller left before its end
        self._last_job = 0.0  # time.monotonic() at the end of the last job

    # -- the child ----------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def _alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _start(self) -> None:
        ours, theirs = socket.socketpair()
        # the folder that holds croft_app comes first on the child's path: the server may run from
        # another working directory (``python /srv/app.py``) without the package installed
        root = str(Path(__file__).resolve().parents[2])
        path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
        env = {**os.environ, FD_VARIABLE: str(theirs.fileno()), "PYTHONPATH": path}
        try:
            self._proc = subprocess.Popen([sys.executable, "-m", "croft_app.service.trainproc"], env=env,
                                          pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL)
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self._conn = Connection(ours.detach())
        self._conn.send({"spec": self.spec, "nice": self.nice, "threads": self.threads})
        self._unfinished = None
        logger.info("training process %d started (nice +%d, %d torch threads)", self._proc.pid, self.nice,
                    self.threads)

    def close(self) -> None:
        """End the child (the next job starts a new one)."""
        if self._conn is not None:
            self._conn.close()
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
        self._proc = self._conn = None

    def _recv(self, poll: float) -> Any:
        """The child's next message, ``None`` after ``poll`` seconds of silence.

        Raises:
            TrainerDied: the child ended (its socket closed).
        """
        try:
            if not self._conn.poll(poll):
                if not self._alive():
                    raise EOFError
                return None
            return self._conn.recv()
        except (EOFError, OSError):
            code = self._proc.poll() if self._proc is not None else None
            self.close()
            raise TrainerDied(f"the training process ended during the run (exit code {code}); nothing "
                              f"was kept, and the next run starts a new one") from None

    def _drain(self) -> None:
        """Wait for the end of a job whose caller left; replace the child if it takes too long."""
        job, waited = self._unfinished, 0.0
        while self._unfinished is not None and waited < DRAIN_SECONDS:
            try:
                message = self._recv(0.5)
            except TrainerDied:  # it died meanwhile: the next job starts a new one, and is not failed for it
                self._unfinished = None
                return
            waited += 0.5 if message is None else 0.0
            if message is not None and message[0] == job and message[1] in ("done", "error"):
                self._unfinished = None
        if self._unfinished is not None:
            logger.warning("training job %s did not stop within %.0f s; the process is replaced", job,
                           DRAIN_SECONDS)
            self.close()

    # -- a job --------------------------------------------------------------------------------
    def run(self, data, request, *, limits, cache_dir, stop_flag: str, deadline: float | None = None,
            poll: float = 0.2) -> Iterator[dict[str, Any]]:
        """Run ``finetune(backbone, data, request, ...)`` in the child; yield its events (and
        ``{"stage": "tick"}`` every ``poll`` seconds of silence), then ``{"stage": "done", "result":
        FinetuneResult}``. The child's error is raised here; so is :class:`TrainerDied`.

        ``data``: a :class:`~croft_app.service.userdata.TrainingData`, or a recipe that builds one
        (:class:`~croft_app.service.userdata.DataRecipe`), built and cleaned up in the child.
        ``deadline``: the job's end on ``time.monotonic()`` (one clock for all processes on Linux);
        the training gets what is left of it once the data is built (default: ``limits.max_seconds``).
        """
        if not self._lock.acquire(timeout=LOCK_SECONDS):
            raise CroftError("the training process is busy with another run; try again in a minute")
        try:
            if self._unfinished is not None and self._alive():
                self._drain()
            if not self._alive():
                self.close()
                self._start()
            self._jobs += 1
            job = self._jobs
            sent = data if callable(data) else replace(data, cleanup=_nothing)  # the caller cleans up its own
            self._conn.send((job, sent, request, limits, None if cache_dir is None else str(cache_dir),
                             str(stop_flag), deadline))
            self._unfinished = job
            while True:
                message = self._recv(poll)
                if message is None:
                    yield {"stage": "tick"}
                    continue
                if message[0] != job:
                    continue  # a late word of a job whose caller left
                kind, payload = message[1], message[2]
                if kind == "event":
                    yield payload
                    continue
                self._unfinished = None
                if kind == "error":
                    raise payload
                yield {"stage": "done", "result": _result(payload)}
                return
        finally:
            self._last_job = time.monotonic()
            self._lock.release()
            self._schedule_idle_end()

    def _schedule_idle_end(self) -> None:
        timer = threading.Timer(self.idle_seconds + 0.1, self._end_if_idle)
        timer.daemon = True
        timer.start()

    def _end_if_idle(self) -> None:
        """End the child if no job ran for ``idle_seconds`` (called by a timer after each job)."""
        if not self._lock.acquire(blocking=False):
            return  # a job runs: it schedules its own check when it ends
        try:
            if self._proc is not None and time.monotonic() - self._last_job >= self.idle_seconds:
                logger.info("training process %d ended after %.0f s without a job", self._proc.pid,
                            self.idle_seconds)
                self.close()
        finally:
            self._lock.release()


def _result(payload: dict[str, Any]):
    """A :class:`~croft_app.service.finetune.FinetuneResult` from the child's message."""
    from safetensors.torch import load as load_tensors

    from croft_app.service.finetune import FinetuneResult
    from croft_core.heads.checkpoint import CroftModel

    model = CroftModel(payload["config"])
    model.load_state_dict(load_tensors(payload["weights"]), strict=True)
    return FinetuneResult(model.eval(), payload["name"], payload["history"], payload["results"],
                          payload["card"], payload["skipped"])


def _message(result) -> dict[str, Any]:
    from safetensors.torch import save as save_tensors

    state = {k: v.detach().cpu().contiguous() for k, v in result.model.state_dict().items()}
    return {"config": asdict(result.model.config), "weights": save_tensors(state), "name": result.name,
            "history": result.history, "results": result.results, "card": result.card,
            "skipped": result.skipped}


def _picklable(err: BaseException) -> BaseException:
    """``err`` if it survives pickling, else a :class:`CroftError` with its message."""
    import pickle

    try:
        pickle.loads(pickle.dumps(err))
        return err
    except Exception:  # noqa: BLE001 -- any exception must reach the parent as something
        return CroftError(f"{type(err).__name__}: {err}")


def serve(conn: Connection) -> None:
    """The child: load the backbone, then run jobs until the parent closes the socket."""
    import torch

    from croft_core.clip.backbones import load_backbone

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server's Ctrl-C: the parent closes the socket
    setup = conn.recv()
    os.nice(setup["nice"])
    torch.set_num_threads(setup["threads"])
    backbone = load_backbone(setup["spec"], device="cpu")
    try:
        while True:
            job, data, request, limits, cache_dir, stop_flag, deadline = conn.recv()
            conn.send(_job(backbone, conn, job, data, request, limits, cache_dir, stop_flag, deadline))
    except (EOFError, OSError, _ServerGone):  # the server closed the socket or ended
        return


class _ServerGone(Exception):
    """The child lost its socket to the server in the middle of a job."""


def _job(backbone, conn: Connection, job: int, data, request, limits, cache_dir, stop_flag: str,
         deadline: float | None) -> tuple:
    """One job in the child: build the data if given a recipe, train, answer with the result or
    the error (a lost socket is raised: the server is gone)."""
    from croft_app.service.finetune import finetune

    built = None
    try:
        if callable(data):
            data = built = data()
        if deadline is not None:
            limits = replace(limits, max_seconds=max(deadline - time.monotonic(), 0.0))

        def emit(event: dict) -> None:
            try:
                conn.send((job, "event", event))
            except OSError as err:
                raise _ServerGone from err

        result = finetune(backbone, data, request, limits=limits, cache_dir=cache_dir, on_event=emit,
                          should_stop=lambda: os.path.exists(stop_flag))
        return job, "done", _message(result)
    except _ServerGone:
        raise
    except Exception as err:  # noqa: BLE001 -- reported to the parent, raised there
        return job, "error", _picklable(err)
    finally:
        if built is not None:
            built.cleanup()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s[train]: %(message)s")
    serve(Connection(int(os.environ[FD_VARIABLE])))
