"""Assemble the CRoFT Lab Space and upload it to the Hugging Face Hub.

The Space is this repository's ``app.py`` and ``croft_core/`` (library, vocabulary presets, the
embedded model; the files git tracks), a ``requirements.txt`` with the repository's pins plus ``spaces`` (ZeroGPU's
``spaces.GPU``, which ``app.py`` uses when it is installed), and ``spaces/README.md`` as the Space
card (front matter: SDK, pinned Gradio version, hardware, models). The Space runs a real CLIP by
default: the ``CROFT_BACKBONE`` Space variable is set to ``ViT-B-16:openai``.

Configuration is by environment variable (no command-line flags)::

    CROFT_SPACE_ID=USER/croft-lab python spaces/deploy.py            # assemble + upload
    CROFT_SPACE_DRY_RUN=1 python spaces/deploy.py                    # assemble only, print the folder

- ``CROFT_SPACE_ID`` (required to upload): the Space repo id, ``USER/NAME``.
- ``CROFT_SPACE_BACKBONE`` (default ``ViT-B-16:openai``): the Space's ``CROFT_BACKBONE``.
- ``CROFT_SPACE_CHECKPOINTS`` (default empty): the Space's ``CROFT_CHECKPOINTS`` (Hub ids).
- ``CROFT_SPACE_PRIVATE`` (``1``/``0``, default ``0``), ``HF_TOKEN`` (default: the logged-in token).
- ``CROFT_SPACE_DRY_RUN`` (``1``): build the folder and stop (works offline).

Offline (no network, or ``HF_HUB_OFFLINE=1``) an upload fails at once with a message saying so.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

logger = logging.getLogger("croft.spaces")

REPO = Path(__file__).resolve().parents[1]
SPACE_CARD = Path(__file__).resolve().parent / "README.md"
SPACES_PIN = "spaces==0.51.3"  # ZeroGPU helper; spaces.GPU is a no-op off ZeroGPU hardware
DEFAULT_BACKBONE = "ViT-B-16:openai"  # the official CRoFT backbone
HUB = ("huggingface.co", 443)


class DeployError(RuntimeError):
    """A deployment that cannot proceed; the message says what to do."""


def _flag(name: str, default: str = "0") -> bool:
    return os.environ.get(name, default).strip().lower() in ("1", "true", "yes")


def space_requirements() -> str:
    """The repository's pinned requirements plus ``spaces``."""
    lines = (REPO / "requirements.txt").read_text().splitlines()
    pins = [line for line in lines if line.strip() and not line.lstrip().startswith("#")]
    return "\n".join(["# CRoFT Lab Space: the repository's pins plus the ZeroGPU helper.", *pins,
                      SPACES_PIN]) + "\n"


PACKAGED = ("app.py", "croft_app", "croft_core")  # what the Space runs


def source_files() -> list[str]:
    """``app.py``, ``croft_app/`` and ``croft_core/``: the files git tracks (no local experiments, no caches);
    every file of those paths when the checkout is not a git repository."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", *PACKAGED], cwd=REPO,
                                capture_output=True, check=True).stdout.decode().split("\0")
        files = [f for f in listed if f]
        dirty = subprocess.run(["git", "status", "--porcelain", *PACKAGED], cwd=REPO,
                               capture_output=True, check=True).stdout.decode().strip()
        if dirty:
            logger.warning("uncommitted changes are deployed as they are on disk:\n%s", dirty)
    except (OSError, subprocess.CalledProcessError):
        files = []
    if "app.py" not in files:  # not a git checkout (or nothing committed yet): take the folders
        files = ["app.py"] + [str(p.relative_to(REPO)) for package in PACKAGED[1:]
                              for p in sorted((REPO / package).rglob("*"))
                              if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"]
    return files


def assemble(out: str | Path | None = None) -> Path:
    """Write the Space folder (app, library, requirements, card); returns its path.

    Args:
        out: an empty or missing folder; default: a new temporary folder.
    """
    out = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="croft-space-"))
    out.mkdir(parents=True, exist_ok=True)
    if any(out.iterdir()):
        raise DeployError(f"{out} is not empty; give an empty or new folder")
    for relative in source_files():
        (out / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / relative, out / relative)
    (out / "requirements.txt").write_text(space_requirements())
    shutil.copy2(SPACE_CARD, out / "README.md")
    return out


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the Hub can be reached (``HF_HUB_OFFLINE=1`` counts as unreachable)."""
    import huggingface_hub.constants as hf_constants

    if hf_constants.HF_HUB_OFFLINE:
        return False
    try:
        socket.create_connection(HUB, timeout=timeout).close()
        return True
    except OSError:
        return False


def deploy(space_id: str, *, backbone: str = DEFAULT_BACKBONE, checkpoints: str = "",
           private: bool = False, token: str | None = None) -> str:
    """Create (or update) the Space, set its variables and upload the assembled folder.

    Args:
        space_id: ``USER/NAME`` of the Space.
        backbone: the Space's ``CROFT_BACKBONE`` variable.
        checkpoints: the Space's ``CROFT_CHECKPOINTS`` variable (comma-separated Hub ids); empty
            leaves it unset.
        private: create the Space as private.
        token: Hub token (default: the logged-in one).

    Returns:
        The URL of the upload commit.

    Raises:
        DeployError: a bad id, offline, or the Hub refused; the message says what to do.
    """
    if space_id.count("/") != 1 or not all(space_id.split("/")):
        raise DeployError(f"CROFT_SPACE_ID must look like USER/NAME, got {space_id!r}")
    if not hub_reachable():
        raise DeployError("cannot deploy: the Hugging Face Hub is unreachable (offline, or "
                          "HF_HUB_OFFLINE=1). Run this on a machine with internet access after "
                          "`hf auth login`, or set CROFT_SPACE_DRY_RUN=1 to only assemble the folder.")
    from huggingface_hub import HfApi

    folder = assemble()
    api = HfApi(token=token)
    try:
        api.create_repo(space_id, repo_type="space", space_sdk="gradio", private=private,
                        exist_ok=True)
        api.add_space_variable(space_id, "CROFT_BACKBONE", backbone,
                               description="open_clip backbone SPEC of the app")
        if checkpoints:
            api.add_space_variable(space_id, "CROFT_CHECKPOINTS", checkpoints,
                                   description="checkpoint Hub ids offered in the model menus")
        info = api.upload_folder(folder_path=str(folder), repo_id=space_id, repo_type="space",
                                 commit_message="Deploy CRoFT Lab")
    except Exception as err:  # auth, quota, network: one clear line
        raise DeployError(f"could not deploy {space_id}: {err}") from err
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return str(getattr(info, "commit_url", info))


def main() -> int:
    """Entry point: configuration from the environment (see the module docstring)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        if _flag("CROFT_SPACE_DRY_RUN"):
            logger.info("assembled the Space in %s (dry run: nothing uploaded)", assemble())
            return 0
        space_id = os.environ.get("CROFT_SPACE_ID", "").strip()
        if not space_id:
            raise DeployError("set CROFT_SPACE_ID=USER/NAME (or CROFT_SPACE_DRY_RUN=1 to only "
                              "assemble the folder)")
        url = deploy(space_id, backbone=os.environ.get("CROFT_SPACE_BACKBONE", DEFAULT_BACKBONE),
                     checkpoints=os.environ.get("CROFT_SPACE_CHECKPOINTS", "").strip(),
                     private=_flag("CROFT_SPACE_PRIVATE"), token=os.environ.get("HF_TOKEN") or None)
    except DeployError as err:
        logger.error("%s", err)
        return 1
    logger.info("deployed: %s", url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
