"""Build the CRoFT Lab Space bundle and, with ``--upload``, publish it to the Hugging Face Hub.

The bundle is everything the Space runs, and nothing of the checkout besides: ``app.py``,
``croft_app/`` and ``croft_core/`` (the files git tracks), a ``requirements.txt`` for the target,
the Space card (``README.md``, rendered from ``spaces/card.md``), ``LICENSE``, and the negative-label
lexicon's embeddings for the Space's backbone (``shipped/``), computed here once so that the
Space answers "unknown" from its first request after every restart. The bundle's ``app.py`` is the
repository's with the target's backbone as the default of ``CROFT_BACKBONE``.

Two targets (``--target``):

- ``cpu`` (default): free ``cpu-basic`` hardware, the embedded model (a real CLIP is opt-in with
  ``--backbone``; on 2 CPU cores a ViT-B/16 classifies in seconds, not milliseconds, and the Lab
  offers only what the measured host finishes within its time limit), torch from the PyTorch CPU
  wheel index.
- ``zerogpu``: ZeroGPU hardware (``zero-a10g``), ViT-B-16 with OpenAI weights, the ``spaces`` package,
  Python 3.10 as ZeroGPU documents.

Usage::

    python spaces/deploy.py --out /tmp/space                                  # build only (offline)
    python spaces/deploy.py --target zerogpu --space-id USER/croft-lab --upload  # build and publish

``--upload`` needs the Hub (a token: ``hf auth login`` or ``HF_TOKEN``). The command prints the
bundle's size and the install size of its requirements measured in this environment.
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import logging
import os
import re
import shutil
import socket
import string
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger("croft.spaces")

REPO = Path(__file__).resolve().parents[1]
CARD_TEMPLATE = Path(__file__).resolve().parent / "card.md"
SPACES_PIN = "spaces==0.51.3"  # ZeroGPU's spaces.GPU; a no-op off ZeroGPU hardware
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
PACKAGED = ("app.py", "croft_app", "croft_core", "LICENSE")  # what the Space runs
SHIPPED_LEXICON = "shipped/lexicon-embeddings.safetensors"  # croft_app.ui.app.SHIPPED_LEXICON
HUB = ("huggingface.co", 443)
CUDA_DISTRIBUTIONS = re.compile(r"^(nvidia-|cuda-|triton$)")


class DeployError(RuntimeError):
    """A build or deployment that cannot proceed; the message says what to do."""


@dataclass(frozen=True)
class Target:
    """A Space configuration that holds together: hardware, Python, backbone and requirements."""

    name: str
    hardware: str  # the card's suggested_hardware and what --upload requests
    python: str
    backbone: str
    torch_lines: tuple[str, ...]  # how torch is installed (replaces the repository's torch pins)
    extra: tuple[str, ...] = ()
    notes: str = ""


TARGETS = {
    "cpu": Target("cpu", "cpu-basic", "3.10", "embedded",
                  (f"--extra-index-url {TORCH_CPU_INDEX}", "torch==2.14.1+cpu", "torchvision==0.29.1+cpu"),
                  notes="Free CPU hardware (2 vCPU, 16 GB). The embedded model answers in milliseconds; "
                        "a real CLIP (the `CROFT_BACKBONE` variable, e.g. `ViT-B-16:openai`) takes seconds "
                        "per image on 2 cores, and its Lab offers only the benchmarks that this Space, "
                        "measured at start-up, evaluates within the Lab's time limit "
                        "(`CROFT_LAB_TIME_LIMIT`); the others are listed with their estimate."),
    "zerogpu": Target("zerogpu", "zero-a10g", "3.10", "ViT-B-16:openai",
                      ("torch==2.14.1", "torchvision==0.29.1"), (SPACES_PIN,),
                      notes="ZeroGPU: a GPU slice is attached to each request for a duration computed from "
                            "its work (at most 60 s, ZeroGPU's default). Callers without a Hugging Face token "
                            "get the smallest daily GPU quota; pass `hf_token=` to `Client` for yours."),
}


# -- the files -------------------------------------------------------------------------------

def source_files() -> list[str]:
    """The packaged paths' files that git tracks (no experiments, no caches); every file of those
    paths when the checkout is not a git repository."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", *PACKAGED], cwd=REPO, capture_output=True,
                                check=True).stdout.decode().split("\0")
        files = [f for f in listed if f]
        dirty = subprocess.run(["git", "status", "--porcelain", *PACKAGED], cwd=REPO, capture_output=True,
                               check=True).stdout.decode().strip()
        if dirty:
            logger.warning("uncommitted changes are bundled as they are on disk:\n%s", dirty)
    except (OSError, subprocess.CalledProcessError):
        files = []
    if "app.py" not in files:  # not a git checkout (or nothing committed yet): take the folders
        files = [p for p in ("app.py", "LICENSE") if (REPO / p).is_file()]
        files += [str(p.relative_to(REPO)) for package in ("croft_app", "croft_core")
                  for p in sorted((REPO / package).rglob("*"))
                  if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"]
    return [f for f in files if (REPO / f).is_file()]  # a tracked file deleted on disk is not bundled


def space_requirements(target: Target) -> str:
    """The repository's pins with torch installed as the target needs, plus the target's extras."""
    lines = (REPO / "requirements.txt").read_text().splitlines()
    pins = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")
            and not re.match(r"^(torch|torchvision)\b", line.strip())]
    return "\n".join([f"# CRoFT Lab Space ({target.name}): generated by spaces/deploy.py",
                      *target.torch_lines, *pins, *target.extra]) + "\n"


def _library():
    """Make the checkout's croft_core importable (the deploy command runs from a checkout)."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))


def hub_model_id(backbone: str) -> str | None:
    """The Hub repo open_clip loads the backbone's weights from (None: no Hub weights)."""
    _library()
    from croft_core.heads.checkpoint import base_model_id

    return base_model_id(backbone)


def render_card(target: Target, backbone: str, space_id: str | None, checkpoints: list[str]) -> str:
    """The Space card: front matter for the target, ids only from the arguments (no placeholders)."""
    weights = hub_model_id(backbone)
    models = [m for m in (*checkpoints, weights) if m]
    front = "".join(f"\n  - {m}" for m in models)
    front = f"models:{front}\n" if models else ""
    if weights:
        front += (f"# the backbone's weights are downloaded when the Space is built, not at the first request\n"
                  f"preload_from_hub:\n  - {weights} open_clip_model.safetensors,open_clip_config.json\n")
    client = f'"{space_id}"' if space_id else '"http://127.0.0.1:7860/"  # or the Space id, USER/NAME'
    token = ', hf_token="hf_..."' if target.name == "zerogpu" else ""
    return string.Template(CARD_TEMPLATE.read_text()).substitute(
        python=target.python, hardware=target.hardware, models=front, backbone=backbone,
        client=client, token=token, notes=target.notes, target=target.name)


def bundle_app(backbone: str) -> str:
    """The repository's ``app.py`` with ``backbone`` as the default of ``CROFT_BACKBONE``."""
    text = (REPO / "app.py").read_text()
    head, sep, rest = text.partition("\nimport logging\n")
    if not sep:
        raise DeployError("app.py no longer starts its imports with `import logging`; update bundle_app")
    default = (f"\nimport os\n\nos.environ.setdefault(\"CROFT_BACKBONE\", {backbone!r})  "
               f"# this Space's backbone (spaces/deploy.py); a Space variable overrides it\n")
    return head + default + sep + rest


def ship_lexicon(backbone_spec: str, out: Path) -> Path:
    """Encode the backbone's negative-label lexicon once and write it into the bundle."""
    _library()
    from croft_core.clip.backbones import load_backbone
    from croft_core.ood.negatives import lexicon_path, read_lexicon, save_lexicon_embeddings

    try:
        backbone = load_backbone(backbone_spec)
    except Exception as err:  # weights not cached here: say what to do
        raise DeployError(f"cannot load backbone {backbone_spec!r} to encode its lexicon ({err}); run "
                          f"this where its weights are cached, or pass --no-lexicon (the Space then "
                          f"encodes it after each restart)") from err
    lexicon = read_lexicon(lexicon_path(backbone))
    logger.info("encoding the %d-word lexicon of %s (once, here)", len(lexicon), backbone_spec)
    return save_lexicon_embeddings(backbone, lexicon, out / SHIPPED_LEXICON)


def assemble(out: str | Path | None = None, *, target: str = "cpu", backbone: str | None = None,
             space_id: str | None = None, checkpoints: list[str] | None = None, lexicon: bool = True) -> Path:
    """Write the Space bundle; returns its folder.

    Args:
        out: an empty or missing folder (default: a new temporary folder).
        target: a key of :data:`TARGETS`.
        backbone: the Space's backbone (default: the target's).
        space_id: the Space's ``USER/NAME`` (the card's API example); None for a local bundle.
        checkpoints: checkpoint Hub ids the Space lists (the card's ``models``).
        lexicon: encode and ship the lexicon's embeddings (needs the backbone's weights here).
    """
    if target not in TARGETS:
        raise DeployError(f"unknown target {target!r}; choose one of {sorted(TARGETS)}")
    spec = TARGETS[target]
    backbone = backbone or spec.backbone
    out = Path(out) if out is not None else Path(tempfile.mkdtemp(prefix="croft-space-"))
    out.mkdir(parents=True, exist_ok=True)
    if any(out.iterdir()):
        raise DeployError(f"{out} is not empty; give an empty or new folder")
    for relative in source_files():
        (out / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / relative, out / relative)
    (out / "app.py").write_text(bundle_app(backbone))
    (out / "requirements.txt").write_text(space_requirements(spec))
    (out / "README.md").write_text(render_card(spec, backbone, space_id, list(checkpoints or [])))
    if lexicon:
        ship_lexicon(backbone, out)
    return out


# -- sizes -----------------------------------------------------------------------------------

def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _requirement_names(text: str) -> list[str]:
    return [re.split(r"[=<>!~\[; ]", line.strip(), maxsplit=1)[0] for line in text.splitlines()
            if line.strip() and not line.lstrip().startswith(("#", "-"))]


def install_bytes(requirements: str) -> dict[str, int]:
    """Installed size, in this environment, of the requirements and everything they depend on:
    ``{"total", "cuda", "torch", "missing"}`` (CUDA libraries apart; ``missing``: distributions not
    installed here, not counted)."""
    seen: dict[str, int] = {}
    missing, todo = 0, _requirement_names(requirements)
    while todo:
        name = re.sub(r"[-_.]+", "-", todo.pop()).lower()
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            seen[name], missing = 0, missing + 1
            continue
        seen[name] = sum(f.locate().stat().st_size for f in dist.files or [] if f.locate().is_file())
        for req in dist.requires or []:
            if "extra ==" not in req and not _marker_false(req):
                todo.append(re.split(r"[=<>!~\[; (]", req, maxsplit=1)[0])
    cuda = sum(v for k, v in seen.items() if CUDA_DISTRIBUTIONS.match(k))
    return {"total": sum(seen.values()), "cuda": cuda, "torch": seen.get("torch", 0), "missing": missing}


def _marker_false(requirement: str) -> bool:
    from packaging.requirements import Requirement

    try:
        marker = Requirement(requirement).marker
    except Exception:  # noqa: BLE001 - an unparsable requirement counts
        return False
    return marker is not None and not marker.evaluate({"extra": ""})


def size_report(folder: Path, target: str) -> str:
    """The bundle's size and the install size of its requirements, in words."""
    gb = 1024 ** 3
    sizes = install_bytes((folder / "requirements.txt").read_text())
    bundle = folder_bytes(folder) / 1024 ** 2
    if target == "cpu":
        rest = (sizes["total"] - sizes["cuda"]) / gb
        install = (f"{rest:.2f} GB without the CUDA libraries, the CPU wheel's target; measured here with "
                   f"torch's CUDA build ({sizes['torch'] / gb:.2f} GB of it), an upper bound for the CPU wheel, "
                   f"which cannot be downloaded offline")
    else:
        install = (f"{sizes['total'] / gb:.2f} GB, {sizes['cuda'] / gb:.2f} GB of it CUDA libraries "
                   f"(torch's CUDA build as installed here)")
    missing = f"; {sizes['missing']} requirement(s) not installed here, not counted" if sizes["missing"] else ""
    return f"bundle {bundle:.1f} MB; expected install size ({target}) {install}{missing}"


# -- the Hub ---------------------------------------------------------------------------------

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


def check_space_id(space_id: str | None) -> str:
    if not space_id or space_id.count("/") != 1 or not all(space_id.split("/")):
        raise DeployError(f"--space-id must look like USER/NAME, got {space_id!r}")
    return space_id


def upload(folder: Path, space_id: str, *, target: str, backbone: str, checkpoints: list[str],
           private: bool = False, token: str | None = None) -> str:
    """Create (or update) the Space with the target's hardware and upload the bundle; returns the
    commit URL.

    Raises:
        DeployError: offline, or the Hub refused; the message says what to do.
    """
    check_space_id(space_id)
    if not hub_reachable():
        raise DeployError("cannot upload: the Hugging Face Hub is unreachable (offline, or HF_HUB_OFFLINE=1). "
                          "Run this on a machine with internet access after `hf auth login`, or drop "
                          "--upload to only build the bundle.")
    from huggingface_hub import HfApi

    api, hardware = HfApi(token=token), TARGETS[target].hardware
    try:
        api.create_repo(space_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True,
                        space_hardware=hardware)
        api.request_space_hardware(space_id, hardware)
        api.add_space_variable(space_id, "CROFT_BACKBONE", backbone, description="open_clip backbone SPEC")
        if checkpoints:
            api.add_space_variable(space_id, "CROFT_CHECKPOINTS", ",".join(checkpoints),
                                   description="checkpoint Hub ids offered in the model menus")
        info = api.upload_folder(folder_path=str(folder), repo_id=space_id, repo_type="space",
                                 commit_message=f"Deploy CRoFT Lab ({target})")
    except Exception as err:  # auth, quota, hardware not allowed, network: one clear line
        raise DeployError(f"could not deploy {space_id}: {err}") from err
    return str(getattr(info, "commit_url", info))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, help="write the bundle here (an empty or new folder); "
                   "default: a temporary folder")
    p.add_argument("--target", choices=sorted(TARGETS), default="cpu", help="Space hardware (default cpu)")
    p.add_argument("--backbone", help="the Space's backbone SPEC (default: the target's)")
    p.add_argument("--space-id", help="USER/NAME of the Space (the card's API example; needed by --upload)")
    p.add_argument("--checkpoints", default="", help="comma-separated checkpoint Hub ids the Space lists")
    p.add_argument("--no-lexicon", action="store_true", help="do not ship the lexicon's embeddings")
    p.add_argument("--upload", action="store_true", help="create or update the Space and upload the bundle")
    p.add_argument("--private", action="store_true", help="create the Space as private")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Build the bundle (and upload it with ``--upload``); 0 on success, 1 with a message."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    checkpoints = [c.strip() for c in args.checkpoints.split(",") if c.strip()]
    backbone = args.backbone or TARGETS[args.target].backbone
    try:
        if args.upload:
            check_space_id(args.space_id)
        folder = assemble(args.out, target=args.target, backbone=backbone, space_id=args.space_id,
                          checkpoints=checkpoints, lexicon=not args.no_lexicon)
        logger.info("built the %s Space bundle in %s", args.target, folder)
        logger.info("%s", size_report(folder, args.target))
        if args.upload:
            url = upload(folder, args.space_id, target=args.target, backbone=backbone, checkpoints=checkpoints,
                         private=args.private, token=os.environ.get("HF_TOKEN") or None)
            logger.info("deployed: %s", url)
    except DeployError as err:
        logger.error("%s", err)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
