"""NewSessionPacing (issue 25): new sessions are admitted at a bounded rate, known ones at once.

Gradio builds a new session's state on its event loop (~17 ms for this app), so 40 new sessions
sent at once stalled every other visitor's requests behind them; the middleware spreads them out.
The clock is frozen and ``asyncio.sleep`` recorded, so the waits are exact and the tests instant.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from croft_app.service import limits
from croft_app.service.limits import NewSessionPacing


class Recorder:
    """An ASGI app that records the bodies it receives and answers 200."""

    def __init__(self):
        self.bodies: list[bytes] = []

    async def __call__(self, scope, receive, send):
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        self.bodies.append(body)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture()
def slept(monkeypatch):
    """The waits the middleware asked for, with time standing still."""
    waits: list[float] = []

    async def sleep(seconds):
        waits.append(round(seconds, 6))

    monkeypatch.setattr(limits.asyncio, "sleep", sleep)
    monkeypatch.setattr(limits.time, "monotonic", lambda: 1000.0)
    return waits


def _request(middleware, path: str, body: dict | bytes, chunked: bool = False) -> int:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    parts = [raw[:5], raw[5:]] if chunked else [raw]
    messages = [{"type": "http.request", "body": p, "more_body": i < len(parts) - 1} for i, p in enumerate(parts)]
    statuses = []

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    scope = {"type": "http", "method": "POST", "path": path, "headers": []}
    asyncio.run(middleware(scope, receive, send))
    return statuses[0]


def test_new_sessions_are_paced_and_known_ones_pass_at_once(slept):
    app = Recorder()
    pacing = NewSessionPacing(app, known=lambda s: s == "old", per_second=20, burst=2, max_wait=10)
    for k in range(5):
        assert _request(pacing, "/gradio_api/queue/join", {"session_hash": f"new{k}", "data": [k]}) == 200
    assert slept == [0.05, 0.1, 0.15]  # two in the burst, then one every 1/20 s
    for k in range(3):
        assert _request(pacing, "/gradio_api/queue/join", {"session_hash": "old", "data": [k]}) == 200
    assert slept == [0.05, 0.1, 0.15]  # a known session never waits
    # every body reaches the app unchanged, in one piece or in chunks
    assert json.loads(app.bodies[0]) == {"session_hash": "new0", "data": [0]}
    assert _request(pacing, "/gradio_api/queue/join", {"session_hash": "old", "data": "x" * 50}, chunked=True) == 200
    assert json.loads(app.bodies[-1])["data"] == "x" * 50


def test_each_call_route_request_is_a_new_session(slept):
    pacing = NewSessionPacing(Recorder(), known=lambda s: True, per_second=10, burst=1)
    for _ in range(3):
        assert _request(pacing, "/gradio_api/call/classify", {"data": []}) == 200
    assert slept == [0.1, 0.2]


def test_a_flood_past_the_longest_wait_is_refused_with_429(slept):
    app = Recorder()
    pacing = NewSessionPacing(app, known=lambda s: False, per_second=10, burst=1, max_wait=0.25)
    codes = [_request(pacing, "/gradio_api/queue/join", {"session_hash": f"s{k}"}) for k in range(6)]
    assert codes == [200, 200, 200, 429, 429, 429]  # waits 0, 0.1, 0.2; the next would be 0.3 s
    assert len(app.bodies) == 3


def test_other_requests_and_malformed_bodies_are_not_paced(slept):
    app = Recorder()
    pacing = NewSessionPacing(app, known=lambda s: False, per_second=1, burst=0)
    assert _request(pacing, "/gradio_api/queue/join", b"not json") == 200  # Gradio answers it itself
    assert _request(pacing, "/gradio_api/upload", {"session_hash": "s"}) == 200
    assert slept == [] and app.bodies[0] == b"not json"


def test_a_new_session_with_a_huge_hash_is_refused(slept):
    # Gradio accepted a 900 kB session_hash and kept the session under it (300 sessions: ~270 MB)
    app = Recorder()
    pacing = NewSessionPacing(app, known=lambda s: False, per_second=10, burst=5)
    assert _request(pacing, "/gradio_api/queue/join", {"session_hash": "x" * 257}) == 400
    assert _request(pacing, "/gradio_api/queue/join", {"session_hash": "x" * 36}) == 200
    assert len(app.bodies) == 1
