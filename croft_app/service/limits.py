"""Resource limits of a server: disk caches bounded by size, and a time cap for long jobs.

- :func:`prune_lru` keeps a cache folder under a byte budget by deleting the least recently used
  files first (last access or modification time, whichever is later), so a stream of new
  vocabularies or result files cannot fill the disk.
- :func:`return_freed_memory` makes glibc serve every allocation of 1 MiB or more with its own
  ``mmap``, so decoding a large image no longer leaves hundreds of MB in the heap after it is freed
  (glibc raises its threshold dynamically up to 32 MiB otherwise; measured: +420 MB after 300
  16-bit uploads without it, +27 MB with it); with ``trim=True`` it also returns the free pages
  of every malloc arena at once (after a training job).
- :func:`deadline` stops a job that runs longer than its cap. Python cannot kill a thread, so the
  cap raises :class:`JobTimeout` *inside* the worker thread (CPython's
  ``PyThreadState_SetAsyncExc``): the job stops at its next Python instruction, after the current
  torch operation. :class:`JobTimeout` derives from ``BaseException`` so no ``except Exception`` in
  the job swallows it.
- :class:`BodyLimit` (ASGI middleware) refuses a request body over a size limit with HTTP 413.
- :class:`NewSessionPacing` (ASGI middleware) admits requests that open a new session at a bounded
  rate: Gradio builds a session's state (the config of every component, ~17 ms for this app) on
  its event loop, so a burst of new sessions stalls every other visitor's requests behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

__all__ = ["BodyLimit", "JobTimeout", "NewSessionPacing", "deadline", "prune_lru", "return_freed_memory"]

logger = logging.getLogger(__name__)


def prune_lru(folder: str | os.PathLike, max_bytes: int) -> int:
    """Delete the least recently used files below ``folder`` until it holds at most ``max_bytes``.

    Args:
        folder: the cache folder (missing: nothing to do).
        max_bytes: the budget.

    Returns:
        The number of bytes deleted.
    """
    files = []
    for root, _, names in os.walk(folder):  # never follows links
        for name in names:
            path = os.path.join(root, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue  # deleted meanwhile by another process
            files.append((max(st.st_atime, st.st_mtime), st.st_size, path))
    total = sum(size for _, size, _ in files)
    freed = 0
    for _, size, path in sorted(files):
        if total - freed <= max_bytes:
            break
        with contextlib.suppress(OSError):
            os.unlink(path)
            freed += size
    if freed:
        for root, dirs, names in os.walk(folder, topdown=False):  # drop emptied sub-folders
            if root != os.fspath(folder) and not dirs and not names:
                with contextlib.suppress(OSError):
                    os.rmdir(root)
        logger.info("pruned %d bytes from cache %s", freed, Path(folder).name)
    return freed


_M_MMAP_THRESHOLD = -3  # mallopt parameter number (glibc malloc.h)


def return_freed_memory(threshold: int = 2**20, *, trim: bool = False) -> bool:
    """Serve allocations of ``threshold`` bytes or more by ``mmap`` (glibc), so freeing returns them.

    Args:
        threshold: the ``mmap`` threshold in bytes.
        trim: also hand back now the free pages of every malloc arena (``malloc_trim(0)``): the
            many smaller blocks a job freed (a training run's features and autograd buffers, in
            the arena of the thread that ran it) stay in the process otherwise. Call it after a
            large job ends.

    Returns:
        True when set (Linux with glibc); False elsewhere, where it is a no-op.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        done = bool(libc.mallopt(_M_MMAP_THRESHOLD, int(threshold)))
        if trim:
            libc.malloc_trim(ctypes.c_size_t(0))
        return done
    except (OSError, AttributeError):
        return False


class JobTimeout(BaseException):
    """Raised inside a job that ran past its :func:`deadline`."""


def _raise_in(thread_id: int, exc: type[BaseException] | None) -> None:
    # exc=None clears a pending asynchronous exception
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id),
                                               ctypes.py_object(exc) if exc else None)


@contextlib.contextmanager
def deadline(seconds: float | None) -> Iterator[None]:
    """Run the ``with`` body for at most ``seconds``; then :class:`JobTimeout` is raised in it.

    ``None`` or ``0`` means no cap. The exception can surface anywhere inside the ``with`` block or
    while leaving it, never after: a pending one is cleared on exit. Catch it around the ``with``.
    """
    if not seconds:
        yield
        return
    thread_id = threading.get_ident()
    lock = threading.Lock()
    state = {"inside": True, "fired": False}

    def fire() -> None:
        with lock:
            if state["inside"]:
                state["fired"] = True
                _raise_in(thread_id, JobTimeout)

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        with lock:
            state["inside"] = False
            if state["fired"]:
                _raise_in(thread_id, None)  # not yet raised: drop it, the body is over


class BodyLimit:
    """ASGI middleware: refuse a request whose body is larger than ``max_bytes`` with HTTP 413.

    A declared ``Content-Length`` over the limit is refused before a byte is read; a body sent
    without one (chunked) is counted while the app reads it and cut off past the limit (the app
    sees the client leave; the client gets the 413). Paths starting with one of ``exempt`` -- the
    file upload route, which streams each file to disk and has its own per-file limit -- pass.
    Nothing a visitor sends can then make one request hold more than ``max_bytes`` of JSON.
    """

    def __init__(self, app, max_bytes: int, exempt: tuple[str, ...] = ()):
        self.app, self.max_bytes, self.exempt = app, int(max_bytes), tuple(exempt)

    async def _refuse(self, send) -> None:
        body = f"request body over {self.max_bytes:,} bytes (CROFT_MAX_BODY_SIZE)".encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope.get("path", "").startswith(self.exempt):
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            await self._refuse(send)
            return
        state = {"read": 0, "over": False, "started": False}

        async def counted_receive():
            if state["over"]:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                state["read"] += len(message.get("body", b""))
                if state["read"] > self.max_bytes:
                    state["over"] = True
                    return {"type": "http.disconnect"}
            return message

        async def tracked_send(message):
            if not state["over"]:  # the app's answer to a cut-off body is replaced by the 413
                state["started"] = state["started"] or message["type"] == "http.response.start"
                await send(message)

        await self.app(scope, counted_receive, tracked_send)
        if state["over"] and not state["started"]:
            await self._refuse(send)


class NewSessionPacing:
    """ASGI middleware: requests that open a new session are admitted at most ``per_second`` a
    second (bursts of ``burst``); requests of a known session pass at once.

    Why: Gradio creates a session's state on its event loop when the session's first request joins
    the queue (the config of every component: ~17 ms for this app's 127 blocks on a free core). 40
    new sessions sent at once by one client held the loop for most of a second, and every other
    visitor's request waited behind them (the other client's ``/classify`` calls made during that
    burst took seconds in ``bench/soak.py``'s warm Train flood; docs/SECURITY.md). Paced, the loop spends at most ``per_second`` x 17 ms a
    second on new sessions, and a flood only delays other *new* sessions.

    A new session is a ``POST .../queue/join`` whose ``session_hash`` ``known`` does not know, or a
    ``POST .../call/<api>`` (each call is a session of its own). A request that would wait longer
    than ``max_wait`` seconds, or finds ``max_waiting`` requests waiting, gets HTTP 429 at once.
    The body is read here (it is small: :class:`BodyLimit` runs first) and handed on unchanged. A
    new session's ``session_hash`` longer than :data:`MAX_SESSION_HASH` gets HTTP 400: Gradio keeps
    every session's state under its hash, up to the session capacity, so 1 MB hashes would hold
    300 MB.
    """

    def __init__(self, app, known: Callable[[str], bool], per_second: float = 4.0, burst: int = 5,
                 max_wait: float = 10.0, max_waiting: int = 256):
        self.app, self.known = app, known
        self.per_second, self.burst, self.max_wait, self.max_waiting = float(per_second), burst, max_wait, max_waiting
        self._tokens, self._stamp, self._waiting = float(burst), time.monotonic(), 0

    def _delay(self) -> float | None:
        """Take a token: the seconds to wait for it, or None when it is too far off (refuse)."""
        now = time.monotonic()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.per_second)
        self._stamp = now
        wait = max(0.0, (1.0 - self._tokens) / self.per_second)
        if wait > self.max_wait or (wait and self._waiting >= self.max_waiting):
            return None
        self._tokens -= 1.0  # may go below zero: the requests after it wait longer
        return wait

    async def _refuse(self, send) -> None:
        await _plain(send, 429, b"too many new sessions right now; try again in a few seconds",
                     [(b"retry-after", b"5")])

    async def _is_new(self, scope, receive) -> tuple[bool | str, Callable]:
        """Whether the request opens a session ("too long" for a new one whose hash is over the limit),
        and the ``receive`` to hand on (body replayed)."""
        path = scope.get("path", "")
        if scope["type"] != "http" or scope.get("method") != "POST":
            return False, receive
        if "/call/" in path:
            return True, receive
        if not path.endswith("/queue/join"):
            return False, receive
        chunks, more = [], True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return False, _replay([message], receive)
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        try:
            session = json.loads(body).get("session_hash")
        except (ValueError, AttributeError):
            session = None  # Gradio answers a malformed body itself
        new = isinstance(session, str) and not self.known(session)
        if new and len(session) > MAX_SESSION_HASH:  # a session is kept under its hash: no 1 MB keys
            new = "too long"
        return new, _replay([{"type": "http.request", "body": body, "more_body": False}], receive)

    async def __call__(self, scope, receive, send) -> None:
        new, receive = await self._is_new(scope, receive)
        if new == "too long":
            await _plain(send, 400, b"session_hash longer than 256 characters")
            return
        if new:
            wait = self._delay()
            if wait is None:
                await self._refuse(send)
                return
            if wait:
                self._waiting += 1
                try:
                    await asyncio.sleep(wait)
                finally:
                    self._waiting -= 1
        await self.app(scope, receive, send)


MAX_SESSION_HASH = 256  # Gradio's own hashes have 11 characters, gradio_client's 36


async def _plain(send, status: int, body: bytes, headers: list | None = None) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode()),
                            *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


def _replay(messages: list[dict], receive) -> Callable:
    """A ``receive`` that returns ``messages`` first, then reads on from ``receive``."""
    pending = list(messages)

    async def replayed():
        return pending.pop(0) if pending else await receive()
    return replayed
