"""Checkpoints from strangers: checked against the backbone before a byte of weights is allocated.

A checkpoint folder (``config.json`` + ``model.safetensors``, see :class:`~croft_core.heads.checkpoint.CroftModel`)
tells the server how large its matrices are. Trusting it lets two tiny files ask for gigabytes (a
config with ``embed_dim`` 12000 makes three 12000 x 12000 matrices). :func:`vet_checkpoint` reads
only the config and the safetensors *header* and refuses, with a :class:`CheckpointRejected`, a
config that does not fit the server's backbone (``embed_dim``), a class or cache count over the
limit, and weights whose names, shapes, dtypes or byte sizes differ from what the config implies
(the expected tensors are built on torch's ``meta`` device, which allocates nothing).
:func:`load_vetted` then loads the weights strictly. :func:`fetch_hub_checkpoint` does the same for
a Hub repo, checking file sizes before downloading, with the token of whom it fetches for (a
visitor's id never with the operator's: :mod:`croft_app.service.credentials`).

:func:`display_name` gives the name a model is shown by: the name in its config or model card,
else the folder name, never a path.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import struct
from pathlib import Path
from typing import Any

import torch

from croft_core.errors import CroftError, HubError
from croft_core.heads.checkpoint import CroftModel, HeadConfig, build_head
from croft_app.service.credentials import VISITOR, HubAccess, hub_access
from croft_app.service.security import is_hub_id, scrub_paths

__all__ = ["CheckpointRejected", "MAX_CONFIG_BYTES", "display_name", "fetch_hub_checkpoint",
           "load_vetted", "vet_checkpoint"]

logger = logging.getLogger(__name__)

MAX_CONFIG_BYTES = 4 * 2**20  # config.json: class names, templates, ID scores, metrics
MAX_HEADER_BYTES = 2**20  # safetensors JSON header: a few tensor descriptions
MAX_CACHE_ENTRIES = 100_000  # Tip-Adapter cache rows (shots x classes)
MAX_LIST_ITEMS = 100_000  # class names, templates, ID scores
MAX_DISPLAY_CHARS = 80
_DTYPES = {"F32": (torch.float32, 4), "F16": (torch.float16, 2), "BF16": (torch.bfloat16, 2),
           "F64": (torch.float64, 8)}


class CheckpointRejected(CroftError, ValueError):
    """A checkpoint that this server will not load; the message says why (never a path or content)."""


def _read_config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    if not path.is_file() or not (folder / "model.safetensors").is_file():
        raise CheckpointRejected("not a CRoFT checkpoint: config.json and model.safetensors are needed")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise CheckpointRejected(f"config.json is larger than {MAX_CONFIG_BYTES // 2**20} MB")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise CheckpointRejected("config.json is not valid JSON") from None
    if not isinstance(data, dict):
        raise CheckpointRejected("config.json must hold a JSON object")
    return data


def _check_config(data: dict[str, Any], embed_dim: int, max_classes: int) -> HeadConfig:
    try:
        config = HeadConfig.from_dict(data)
    except (TypeError, ValueError):
        raise CheckpointRejected("config.json has fields of the wrong type") from None
    ints = {"embed_dim": config.embed_dim, "num_classes": config.num_classes,
            "cache_size": config.cache_size, "adapter_reduction": config.adapter_reduction}
    for key, value in ints.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise CheckpointRejected(f"config.json: {key} must be a whole number >= 0")
    if config.head != "zeroshot" and config.embed_dim != embed_dim:
        raise CheckpointRejected(f"the checkpoint has width {config.embed_dim} but this server's backbone "
                                 f"has {embed_dim}; it belongs to another backbone")
    if config.num_classes > max_classes:
        raise CheckpointRejected(f"the checkpoint has {config.num_classes} classes, more than this "
                                 f"server's maximum of {max_classes}")
    if config.cache_size > MAX_CACHE_ENTRIES or config.adapter_reduction < 1:
        raise CheckpointRejected("config.json: cache_size or adapter_reduction out of range")
    for key in ("classnames", "templates", "id_scores"):
        if len(getattr(config, key)) > MAX_LIST_ITEMS:
            raise CheckpointRejected(f"config.json: {key} has more than {MAX_LIST_ITEMS:,} entries")
    if not all(isinstance(c, str) for c in config.classnames + config.templates):
        raise CheckpointRejected("config.json: classnames and templates must be text")
    numbers = [config.logit_scale, config.image_ratio, config.text_ratio, *config.id_scores]
    numbers += [] if config.threshold is None else [config.threshold]
    if not all(isinstance(x, (int, float)) and math.isfinite(x) for x in numbers):
        raise CheckpointRejected("config.json: scales, ratios, thresholds and scores must be finite numbers")
    return config


def _expected_tensors(config: HeadConfig) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
    try:
        with torch.device("meta"):  # shapes only: nothing is allocated
            head = build_head(config)
    except (ValueError, TypeError, RuntimeError) as err:
        raise CheckpointRejected(f"config.json does not describe a valid head ({err})") from None
    return {f"head.{k}": (tuple(v.shape), v.dtype) for k, v in head.state_dict().items()}


def _read_header(path: Path) -> tuple[dict[str, Any], int]:
    size = path.stat().st_size
    with open(path, "rb") as fp:
        raw = fp.read(8)
        if len(raw) < 8:
            raise CheckpointRejected("model.safetensors is not a safetensors file")
        (length,) = struct.unpack("<Q", raw)
        if length > min(MAX_HEADER_BYTES, size - 8):
            raise CheckpointRejected("model.safetensors has an invalid header")
        try:
            header = json.loads(fp.read(length).decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise CheckpointRejected("model.safetensors has an invalid header") from None
    if not isinstance(header, dict):
        raise CheckpointRejected("model.safetensors has an invalid header")
    header.pop("__metadata__", None)
    return header, size - 8 - length


def _check_weights(path: Path, config: HeadConfig) -> None:
    header, data_bytes = _read_header(path)
    expected = _expected_tensors(config)
    if set(header) != set(expected):
        raise CheckpointRejected(f"model.safetensors holds other tensors than a {config.head} head "
                                 f"needs; it does not match its config.json")
    total = 0
    for name, (shape, _) in expected.items():
        info = header[name]
        dtype = _DTYPES.get(info.get("dtype")) if isinstance(info, dict) else None
        if dtype is None or list(info.get("shape", [])) != list(shape):
            raise CheckpointRejected(f"tensor {name!r} of model.safetensors does not match config.json "
                                     f"(expected shape {list(shape)}, a float dtype)")
        offsets = info.get("data_offsets")
        valid = (isinstance(offsets, list) and len(offsets) == 2
                 and all(isinstance(o, int) and not isinstance(o, bool) for o in offsets))
        begin, end = offsets if valid else (0, -1)
        if end - begin != math.prod(shape) * dtype[1]:
            raise CheckpointRejected(f"tensor {name!r} of model.safetensors has the wrong byte size")
        total += end - begin
    if total != data_bytes:
        raise CheckpointRejected("model.safetensors has a size inconsistent with its header")


def vet_checkpoint(folder: str | os.PathLike, *, embed_dim: int, max_classes: int) -> HeadConfig:
    """Check a checkpoint folder against the backbone without loading its weights.

    Args:
        folder: ``config.json`` + ``model.safetensors``.
        embed_dim: the server backbone's width.
        max_classes: the largest class count accepted.

    Returns:
        The checkpoint's :class:`HeadConfig`.

    Raises:
        CheckpointRejected: see the module docstring.
    """
    folder = Path(folder)
    config = _check_config(_read_config(folder), embed_dim, max_classes)
    _check_weights(folder / "model.safetensors", config)
    return config


def load_vetted(folder: str | os.PathLike, config: HeadConfig, device: str | torch.device = "cpu") -> CroftModel:
    """Build the model of a vetted ``config`` and load its weights strictly (safetensors only)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    model = CroftModel(config)
    try:
        state = load_file(str(Path(folder) / "model.safetensors"), device=str(device))
        model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
    except (SafetensorError, RuntimeError, OSError):
        raise CheckpointRejected("model.safetensors could not be read; re-save the checkpoint") from None
    return model.to(device).eval()


def fetch_hub_checkpoint(repo_id: str, *, max_weight_bytes: int, access: HubAccess | None = None) -> Path:
    """Download ``config.json`` and ``model.safetensors`` of a Hub repo, sizes checked first.

    Args:
        repo_id: a Hub id ``ORG/NAME``.
        max_weight_bytes: the largest ``model.safetensors`` accepted.
        access: whom the download is for (:func:`~croft_app.service.credentials.hub_access`);
            default: a visitor without a token. A visitor's files are asked of the Hub with the
            visitor's credentials before any download, because ``hf_hub_download`` answers a refused
            request from the server's cache (which holds what the operator's token fetched); while
            the Hub is unreachable a visitor's id is refused.

    Returns:
        The local snapshot folder (Hugging Face cache).

    Raises:
        CheckpointRejected: not a Hub id, a file too large, missing, or the Hub unreachable.
    """
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_download, hf_hub_url
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    access = access or hub_access(VISITOR)
    if not is_hub_id(repo_id):
        raise CheckpointRejected(f"{repo_id[:100]!r} is not a Hub id ORG/NAME")
    try:
        access.require_hub(f"model {repo_id!r}", hint="; choose zero-shot or a model this server lists")
    except HubError as err:
        raise CheckpointRejected(str(err)) from None
    limits = {"config.json": MAX_CONFIG_BYTES, "model.safetensors": max_weight_bytes}
    paths = {}
    try:
        for name, limit in limits.items():
            if not constants.HF_HUB_OFFLINE:
                size = get_hf_file_metadata(hf_hub_url(repo_id, name), token=access.token).size
                if size is None or size > limit:
                    raise CheckpointRejected(f"{name} of {repo_id} is larger than this server accepts")
            paths[name] = Path(hf_hub_download(repo_id, name, token=access.token))
    except LocalEntryNotFoundError:
        raise CheckpointRejected(f"model {repo_id!r} is not in this server's cache and the Hub is "
                                 f"unreachable (offline)") from None
    except (HfHubHTTPError, OSError, ValueError) as err:
        if isinstance(err, CheckpointRejected):
            raise
        raise CheckpointRejected(f"model {repo_id!r} could not be fetched from the Hub "
                                 f"({type(err).__name__})") from None
    if paths["config.json"].parent != paths["model.safetensors"].parent:
        raise CheckpointRejected(f"model {repo_id!r} changed while it was downloaded; try again")
    return paths["config.json"].parent


def _card_name(folder: Path) -> str | None:
    card = folder / "README.md"
    if not card.is_file() or card.stat().st_size > MAX_CONFIG_BYTES:
        return None
    text = card.read_text(encoding="utf-8", errors="replace")
    front = re.match(r"---\n(.*?)\n---", text, re.S)
    match = front and re.search(r"^(?:model_name|display_name):\s*[\"']?(.+?)[\"']?\s*$", front.group(1), re.M)
    return match.group(1) if match else None


def display_name(folder: str | os.PathLike, config: dict[str, Any] | None = None) -> str:
    """The name a checkpoint folder is shown by: ``display_name`` / ``name`` in its config, or
    ``model_name`` / ``display_name`` in its model card's front matter, else the folder's name.

    Never a path: absolute paths inside a name are shortened, and the result is at most
    :data:`MAX_DISPLAY_CHARS` characters.
    """
    folder = Path(folder)
    if config is None:
        try:
            config = _read_config(folder)
        except (CheckpointRejected, OSError):
            config = {}
    names = [config.get("display_name"), config.get("name"), _card_name(folder)]
    name = next((n.strip() for n in names if isinstance(n, str) and n.strip()), None)
    name = scrub_paths(name) if name else (folder.resolve().name or "checkpoint")
    return " ".join(name.split())[:MAX_DISPLAY_CHARS]
