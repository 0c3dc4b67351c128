"""No confused deputy (issue 24): a visitor's Hub ids never travel with the operator's token.

A recording stand-in for the Hub (a threading ``http.server`` on 127.0.0.1, set as the Hub endpoint)
serves a public dataset and a public model, refuses its private repositories to anyone without the
operator's token, and records the ``Authorization`` header of every request. The operator's token
is set as ``HF_TOKEN``; visitor requests go through the real service functions
(:func:`~croft_app.service.userdata.hub_data` for Train and ``/finetune``,
:class:`~croft_app.service.models.ClassifierRegistry` for Classify, Compare and the Lab), and an
operator-configured checkpoint (``CROFT_CHECKPOINTS``) shows the stand-in does see the token when
it is sent.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np
import pytest

from croft_app.service.credentials import OPERATOR, VISITOR, HubAccess, hub_access, hub_dataset_path
from croft_app.service.models import ClassifierRegistry
from croft_app.service.security import AccessRefused
from croft_app.service.userdata import DataError, hub_data
from croft_app.service.vetting import CheckpointRejected, fetch_hub_checkpoint
from croft_core.errors import HubError
from tests.test_finetune import make_image
from tests.test_security import _save

OPERATOR_TOKEN = "hf_operatorSECRET0123456789"
SHA = "0123456789abcdef0123456789abcdef01234567"
CLASSES = ("circle", "square")


# ---------------------------------------------------------------------------------------------
# the stand-in Hub
class StandInHub:
    """Repositories ``(kind, repo_id) -> files``; private ones answer 401 without the operator's token."""

    def __init__(self):
        self.repos: dict[tuple[str, str], dict[str, bytes]] = {}
        self.private: set[tuple[str, str]] = set()
        self.gated: set[tuple[str, str]] = set()  # info for anyone, files for the operator only
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Authorization)
        self._lock = threading.Lock()

    def add(self, kind: str, repo_id: str, files: dict[str, bytes], private: bool = False,
            gated: bool = False) -> None:
        self.repos[(kind, repo_id)] = files
        if private:
            self.private.add((kind, repo_id))
        if gated:
            self.gated.add((kind, repo_id))

    def record(self, method: str, path: str, auth: str | None) -> None:
        with self._lock:
            self.requests.append((method, path, auth))

    def seen(self, repo_id: str) -> list[tuple[str, str, str | None]]:
        return [r for r in self.requests if repo_id in unquote(r[1])]


_API = re.compile(r"/api/(models|datasets)/([^/]+/[^/]+?)(?:/(revision|tree|paths-info)/([^/]+)(/.*)?)?$")
_RESOLVE = re.compile(r"/(datasets/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")


def _handler(hub: StandInHub):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # quiet
            pass

        def _answer(self, status: int, body: bytes = b"", headers: dict | None = None) -> None:
            self.send_response(status)
            for key, value in {"Content-Length": str(len(body)), **(headers or {})}.items():
                self.send_header(key, value)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, data) -> None:
            self._answer(200, json.dumps(data).encode(), {"Content-Type": "application/json"})

        def _repo(self, kind: str, repo_id: str) -> dict[str, bytes] | None:
            files = hub.repos.get((kind, repo_id))
            authorized = self.headers.get("Authorization") == f"Bearer {OPERATOR_TOKEN}"
            if files is None or ((kind, repo_id) in hub.private and not authorized):
                status = 401 if (kind, repo_id) in hub.private else 404
                self._answer(status, b'{"error": "Repository not found"}',
                             {"X-Error-Code": "RepoNotFound", "Content-Type": "application/json"})
                return None
            return files

        def _serve(self) -> None:
            path = unquote(urlsplit(self.path).path)
            hub.record(self.command, self.path, self.headers.get("Authorization"))
            if self.command == "POST":
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
            api, resolve = _API.match(path), _RESOLVE.match(path)
            if api:
                kind, repo_id, what, _, sub = api.groups()
                files = self._repo(kind, repo_id)
                if files is not None:
                    self._api(repo_id, files, what, (sub or "").strip("/"))
            elif resolve:
                kind = "datasets" if resolve.group(1) else "models"
                files = self._repo(kind, resolve.group(2))
                gated = (kind, resolve.group(2)) in hub.gated
                if gated and self.headers.get("Authorization") != f"Bearer {OPERATOR_TOKEN}":
                    self._answer(401, b'{"error": "Access to this repo is restricted"}',
                                 {"X-Error-Code": "GatedRepo", "Content-Type": "application/json"})
                elif files is not None:
                    self._file(files, resolve.group(4))
            else:
                self._answer(404, b"{}", {"Content-Type": "application/json"})

        def _api(self, repo_id: str, files: dict[str, bytes], what: str | None, sub: str) -> None:
            entries = [{"type": "file", "path": n, "size": len(b), "oid": hashlib.sha1(b).hexdigest()}
                       for n, b in sorted(files.items())]
            if what is None or what == "revision":
                self._json({"id": repo_id, "sha": SHA, "private": False, "tags": [], "cardData": {},
                            "siblings": [{"rfilename": n, "size": len(b)} for n, b in sorted(files.items())]})
            elif what == "tree":
                dirs = {n.rsplit("/", 1)[0] for n in files if "/" in n}
                if sub:
                    entries = [e for e in entries if e["path"].startswith(sub + "/")]
                else:
                    entries = [e for e in entries if "/" not in e["path"]]
                    entries += [{"type": "directory", "path": d, "oid": SHA} for d in sorted(dirs)]
                self._json(entries)
            else:  # paths-info
                self._json(entries)

        def _file(self, files: dict[str, bytes], name: str) -> None:
            if name not in files:
                self._answer(404, b'{"error": "Entry not found"}', {"X-Error-Code": "EntryNotFound"})
                return
            body = files[name]
            self._answer(200, body, {"X-Repo-Commit": SHA, "ETag": f'"{hashlib.sha256(body).hexdigest()}"',
                                     "Content-Type": "application/octet-stream"})

        do_GET = do_HEAD = do_POST = _serve

    return Handler


def _parquet() -> bytes:
    """A tiny image dataset (two classes, four images each) as the Hub stores one: parquet."""
    import datasets

    labels = [i % 2 for i in range(8)]
    images = [make_image(CLASSES[y], 0, np.random.default_rng(i)) for i, y in enumerate(labels)]
    features = datasets.Features({"image": datasets.Image(),
                                  "label": datasets.ClassLabel(names=list(CLASSES))})
    buf = io.BytesIO()
    datasets.Dataset.from_dict({"image": images, "label": labels}, features=features).to_parquet(buf)
    return buf.getvalue()


def _checkpoint(tmp_path: Path, name: str) -> dict[str, bytes]:
    folder = _save(tmp_path, name)
    return {f: (folder / f).read_bytes() for f in ("config.json", "model.safetensors")}


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """The stand-in Hub as the endpoint of huggingface_hub and datasets, online, with the operator's
    ``HF_TOKEN`` set and empty caches (both libraries read these settings at import)."""
    import datasets
    import huggingface_hub.constants as hc

    stand_in = StandInHub()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(stand_in))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("HF_TOKEN", OPERATOR_TOKEN)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    for key, value in {"ENDPOINT": endpoint, "HF_HUB_OFFLINE": False,
                       "HUGGINGFACE_CO_URL_TEMPLATE": endpoint + "/{repo_id}/resolve/{revision}/{filename}",
                       "HF_HUB_CACHE": str(tmp_path / "hub-cache")}.items():
        monkeypatch.setattr(hc, key, value)
    for key, value in {"HF_ENDPOINT": endpoint, "HF_HUB_OFFLINE": False, "HF_DATASETS_OFFLINE": False,
                       "HUB_DATASETS_URL": endpoint + "/datasets/{repo_id}/resolve/{revision}/{path}",
                       "HF_DATASETS_CACHE": tmp_path / "datasets-cache"}.items():
        monkeypatch.setattr(datasets.config, key, value)
    yield stand_in
    server.shutdown()
    server.server_close()


def _tokens(requests) -> set[str | None]:
    return {auth for _, _, auth in requests}


TRAIN = dict(shots=2, seed=1, max_images=100, max_classes=10)
PARQUET = "data/train-00000-of-00001.parquet"


# ---------------------------------------------------------------------------------------------
# one place decides
def test_hub_access_gives_visitors_no_token_and_the_operator_the_default():
    assert hub_access(VISITOR) == HubAccess(VISITOR, False)
    assert hub_access(VISITOR, "  ") == HubAccess(VISITOR, False)
    mine = hub_access(VISITOR, " hf_mine ")
    assert mine.token == "hf_mine" and "hf_mine" not in repr(mine)  # never in a log line
    assert hub_access(OPERATOR) == HubAccess(OPERATOR, None)  # huggingface_hub's default: HF_TOKEN
    with pytest.raises(ValueError, match="operator's token"):
        hub_access(OPERATOR, "hf_visitor")
    with pytest.raises(ValueError, match="caller must be"):
        hub_access("admin")
    assert hub_dataset_path("org/name") == "hf://datasets/org/name"
    for bad in ("scratch", "/etc/x", "../x/y", "org/name/x", "org/name.git"):
        with pytest.raises(AccessRefused, match="not a Hub id"):
            hub_dataset_path(bad)


# ---------------------------------------------------------------------------------------------
# the stand-in Hub
def test_a_visitors_hub_dataset_never_carries_the_operators_token(hub):
    from croft_core.data.sources import load_split

    hub.add("datasets", "stubowner/public-data", {PARQUET: _parquet()})
    hub.add("datasets", "stubowner/private-data", {PARQUET: _parquet()}, private=True)
    data = hub_data("stubowner/public-data", **TRAIN)  # Train and /finetune call this
    assert data.classnames == CLASSES and len(data.train) == 4 and data.train.image(0).size[0] > 0
    with pytest.raises(HubError, match="'stubowner/private-data'"):
        hub_data("stubowner/private-data", **TRAIN)
    assert hub.seen("stubowner/public-data") and hub.seen("stubowner/private-data")
    assert _tokens(hub.requests) == {None}, "a visitor's request reached the Hub with a token"
    # the operator's own call does carry HF_TOKEN (so the assertion above can fail) ...
    _, names = load_split(hub_dataset_path("stubowner/private-data"))
    assert names == list(CLASSES) and f"Bearer {OPERATOR_TOKEN}" in _tokens(hub.requests)
    # ... and what it cached is not served to a visitor: the Hub is asked first, without a token
    hub.requests.clear()
    with pytest.raises(HubError, match="'stubowner/private-data'"):
        hub_data("stubowner/private-data", **TRAIN)
    assert hub.requests and _tokens(hub.requests) == {None}
    data = hub_data("stubowner/private-data", **TRAIN, token=OPERATOR_TOKEN)  # a visitor's own token
    assert data.classnames == CLASSES


def test_a_gated_dataset_the_operator_cached_is_not_served_to_a_visitor(hub):
    from croft_core.data.sources import load_split

    hub.add("datasets", "stubowner/gated-data", {PARQUET: _parquet()}, gated=True)
    _, names = load_split(hub_dataset_path("stubowner/gated-data"))  # the operator's call: cached
    assert names == list(CLASSES) and f"Bearer {OPERATOR_TOKEN}" in _tokens(hub.requests)
    hub.requests.clear()
    with pytest.raises(HubError, match="'stubowner/gated-data'"):
        hub_data("stubowner/gated-data", **TRAIN)  # its info is public, its files are not
    assert hub.requests and _tokens(hub.requests) == {None}


def test_a_visitors_hub_model_never_carries_the_operators_token(hub, tiny_backbone, tmp_path):
    hub.add("models", "stubowner/public-model", _checkpoint(tmp_path, "public"))
    hub.add("models", "stubowner/private-model", _checkpoint(tmp_path, "private"), private=True)
    listed = ClassifierRegistry(tiny_backbone, ["stubowner/private-model"], embedded_world=False,
                                cache_dir=None)  # CROFT_CHECKPOINTS: the operator's own
    assert listed.get("stubowner/public-model").name == "stubowner/public-model"  # Classify, Compare, Lab
    assert hub.seen("stubowner/public-model") and _tokens(hub.requests) == {None}
    assert listed.get("stubowner/private-model").name == "stubowner/private-model"
    assert _tokens(hub.seen("stubowner/private-model")) == {f"Bearer {OPERATOR_TOKEN}"}
    hub.requests.clear()
    unlisted = ClassifierRegistry(tiny_backbone, embedded_world=False, cache_dir=None)
    with pytest.raises(CheckpointRejected, match="'stubowner/private-model' could not be fetched"):
        unlisted.get("stubowner/private-model")  # cached by the operator's call: still refused
    assert hub.requests and _tokens(hub.requests) == {None}


def test_a_visitors_hub_id_is_refused_while_the_hub_cannot_answer(hub, tiny_backbone, tmp_path, monkeypatch):
    import datasets
    import huggingface_hub.constants as hc

    hub.add("models", "stubowner/public-model", _checkpoint(tmp_path, "public"))
    fetch_hub_checkpoint("stubowner/public-model", max_weight_bytes=2**20)  # now in the cache
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    hub.requests.clear()
    with pytest.raises(CheckpointRejected, match="unreachable from this server.*HF_HUB_OFFLINE"):
        fetch_hub_checkpoint("stubowner/public-model", max_weight_bytes=2**20)
    with pytest.raises(HubError, match="'stubowner/public-data' cannot be checked on the Hub"):
        hub_data("stubowner/public-data", **TRAIN)
    folder = fetch_hub_checkpoint("stubowner/public-model", max_weight_bytes=2**20,
                                  access=hub_access(OPERATOR))  # the operator's cache is the operator's
    assert (folder / "config.json").is_file() and hub.requests == []


def test_a_local_folder_named_like_a_hub_id_is_never_read(hub, tmp_path, monkeypatch, tiny_backbone):
    monkeypatch.chdir(tmp_path)
    for c in ("secret_a", "secret_b"):  # the server's own data, in its working directory
        folder = tmp_path / "scratch" / "privdata" / c
        folder.mkdir(parents=True)
        for i in range(4):
            make_image("circle", 0, np.random.default_rng(i)).save(folder / f"{i}.png")
    _save(tmp_path / "scratch", "privmodel")
    with pytest.raises(HubError, match="'scratch/privdata' cannot be read"):
        hub_data("scratch/privdata", **TRAIN)  # no such dataset on the Hub
    with pytest.raises(CheckpointRejected, match="could not be fetched"):
        ClassifierRegistry(tiny_backbone, embedded_world=False, cache_dir=None).get("scratch/privmodel")
    hub.add("datasets", "scratch/privdata", {PARQUET: _parquet()})  # now the Hub has one of that name
    data = hub_data("scratch/privdata", **TRAIN)
    assert data.classnames == CLASSES, "the local folder was read instead of the Hub dataset"
    assert all("secret" not in name for name in data.classnames)
    with pytest.raises(DataError, match="not a Hub dataset id"):
        hub_data("./scratch/privdata", **TRAIN)
