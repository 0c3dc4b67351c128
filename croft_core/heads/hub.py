"""Checkpoints on the Hugging Face Hub: pull (folder or repo id) and push (with the model card).

A checkpoint folder is what :meth:`CroftModel.save` writes: ``config.json``, ``model.safetensors``
and ``README.md`` (model card); training runs add ``results.json``, ``history.json`` and the split
``manifest.json``, which are uploaded too. The frozen backbone is never uploaded.
"""

from __future__ import annotations

import logging
from pathlib import Path

from croft_core.errors import CroftError, HubError
from croft_core.heads.checkpoint import CARD_REPO_PLACEHOLDER, CroftModel, read_checkpoint_config, render_model_card

logger = logging.getLogger(__name__)

_NOT_UPLOADED = ("train_state*", "*.tmp")  # resume state and partial writes stay local


class CheckpointNotFoundError(CroftError, FileNotFoundError):
    """A checkpoint folder or Hub repo that does not exist or cannot be reached."""


def load_model(path_or_repo_id: str | Path, device: str = "cpu") -> CroftModel:
    """Load a :class:`CroftModel` from a local checkpoint folder or a Hub repo id.

    Raises:
        CheckpointNotFoundError: the folder lacks ``config.json``/``model.safetensors``, or the repo
            is not cached and the Hub is unreachable (offline); the message says what to do.
        ValueError: weights that do not match the config.
    """
    source = str(path_or_repo_id)
    path = Path(source).expanduser()
    if path.is_dir():
        missing = [n for n in ("config.json", "model.safetensors") if not (path / n).is_file()]
        if missing:
            raise CheckpointNotFoundError(f"{path} is not a CRoFT checkpoint folder: missing "
                                          f"{', '.join(missing)} (write one with `croft train`)")
        return CroftModel.from_pretrained(str(path), map_location=str(device))
    if path.suffix or source.startswith((".", "/", "~")) or source.count("/") != 1:
        raise CheckpointNotFoundError(f"checkpoint {source!r} is neither an existing folder nor a "
                                      f"Hub repo id of the form USER/NAME")
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return CroftModel.from_pretrained(source, map_location=str(device))
    except LocalEntryNotFoundError as err:
        raise CheckpointNotFoundError(
            f"checkpoint {source!r} is not in the local Hub cache and the Hub is unreachable "
            f"(offline or HF_HUB_OFFLINE=1); download it once with internet access or pass a "
            f"local folder") from err
    except (HfHubHTTPError, OSError) as err:
        raise CheckpointNotFoundError(f"could not fetch checkpoint {source!r} from the Hub: {err}") from err


def push_checkpoint(folder: str | Path, repo_id: str, *, private: bool = False,
                    token: str | None = None, commit_message: str = "Upload CRoFT checkpoint") -> str:
    """Upload a checkpoint folder to ``repo_id`` (created if needed) in one commit; returns its URL.

    The model card is written for ``repo_id`` (:func:`card_for_repo`) in the same commit; the
    folder itself is not changed. Resume state (``train_state*``) is not uploaded.

    Raises:
        CheckpointNotFoundError: ``folder`` is not a checkpoint folder.
        HubError: offline, or the Hub refused the upload (the message carries the reason).
    """
    import huggingface_hub
    import huggingface_hub.constants as hf_constants
    from huggingface_hub import CommitOperationAdd
    from huggingface_hub.errors import HFValidationError, HTTPError

    folder = Path(folder)
    if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
        raise CheckpointNotFoundError(f"{folder} is not a CRoFT checkpoint folder (config.json and "
                                      f"model.safetensors expected)")
    if hf_constants.HF_HUB_OFFLINE:
        raise HubError("cannot push: HF_HUB_OFFLINE=1 is set; unset it on a machine with "
                       "internet access and log in with `hf auth login` or pass --token")
    operations = [CommitOperationAdd("README.md", card_for_repo(folder, repo_id).encode())]
    operations += [CommitOperationAdd(rel, str(folder / rel)) for rel in _files_to_upload(folder)]
    api = huggingface_hub.HfApi(token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        info = api.create_commit(repo_id, operations=operations, commit_message=commit_message,
                                 repo_type="model")
    except (HTTPError, OSError, HFValidationError) as err:  # network, auth, refused, bad repo id
        raise HubError(f"could not push {folder} to {repo_id}: {err}") from err
    return str(getattr(info, "commit_url", info))


def card_for_repo(folder: str | Path, repo_id: str) -> str:
    """The folder's model card with ``repo_id`` where the local card has the placeholder.

    A training run's folder (a ``results.json`` of :func:`croft_core.runs.evaluate.evaluate`) gets
    its card rendered again with the results as ``model-index``; a card without the placeholder
    (none, or one written by an older version with a local path as the repo) is rendered again
    from ``config.json``.
    """
    import json

    path = Path(folder) / "README.md"
    card = path.read_text(encoding="utf-8") if path.is_file() else ""
    results_file = Path(folder) / "results.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else None
    if isinstance(results, dict) and isinstance(results.get("id"), dict):
        return render_model_card(read_checkpoint_config(folder), repo_id, results)
    if CARD_REPO_PLACEHOLDER in card:
        return card.replace(CARD_REPO_PLACEHOLDER, repo_id)
    return render_model_card(read_checkpoint_config(folder), repo_id)


def _files_to_upload(folder: Path) -> list[str]:
    """Paths (relative, POSIX) of the folder's files except the card and local-only state."""
    from fnmatch import fnmatch

    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    return [f for f in files if f != "README.md" and not any(fnmatch(Path(f).name, pat)
                                                             for pat in _NOT_UPLOADED)]
