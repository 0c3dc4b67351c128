"""The trust boundary of a public server: what an anonymous visitor may name, and how it is checked.

A visitor of a public Space is anonymous, and every event of a Gradio app is an API (the browser
calls them), so a server built on this library never lets a visitor name something on its disk.
With the default :class:`ServingPolicy`:

- a **model** is ``"zero-shot"``, a checkpoint the operator listed (by its display name), or a Hub
  id of the form ``ORG/NAME`` (the operator can turn Hub ids off);
- a **benchmark** is a registered name;
- a **file** is an upload of the server's own upload folder (:func:`confine`).

A local filesystem path is refused with one message (:data:`LOCAL_PATH_REFUSED`) that does not
depend on whether the path exists, so errors tell nothing about the server's files. A trusted local
research install opens paths with ``CROFT_ALLOW_LOCAL_PATHS=1``. Messages shown to visitors never
carry a server path (:func:`scrub_paths`, :func:`display_spec`).
"""

from __future__ import annotations

import json
import math
import numbers
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection, Mapping

from croft_core.errors import CroftError

__all__ = ["LOCAL_PATH_REFUSED", "NOT_AN_UPLOAD", "AccessRefused", "ServingPolicy", "check_benchmark",
           "check_benchmark_file", "check_no_symlinks", "check_number", "check_text", "confine", "display_spec", "env_flag", "is_hub_id",
           "scrub_paths"]

LOCAL_PATH_REFUSED = ("Local paths are not accepted by this server: choose zero-shot, a listed model or "
                      "a Hub id (ORG/NAME), and a registered benchmark. (A trusted local install opens "
                      "paths with CROFT_ALLOW_LOCAL_PATHS=1.)")
"""The one answer to any local path, whether it exists or not."""

NOT_AN_UPLOAD = "The file is not an upload of this session; upload it again."
"""The one answer to a file argument outside the upload folder, whether it exists or not."""

MAX_NAME_CHARS = 300  # model ids, benchmark names: Hub ids are at most 96 + 1 + 96 characters

_HUB_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
_HUB_ID = re.compile(rf"{_HUB_PART}/{_HUB_PART}")
_ABSOLUTE_PATH = re.compile(r"(?<![\w/.~-])~?((?:/[^/\s'\"`,;:()\[\]{}<>]+){2,}/?)")
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


class AccessRefused(CroftError, ValueError):
    """A visitor named something the server does not serve (a path, an unlisted model, a non-upload)."""


@dataclass(frozen=True)
class ServingPolicy:
    """What a visitor may name.

    Attributes:
        allow_local_paths: accept checkpoint folders and benchmark JSON files on the server's disk
            (``CROFT_ALLOW_LOCAL_PATHS=1``; only for a trusted local install).
        allow_hub_models: accept Hub ids ``ORG/NAME`` as models (``CROFT_ALLOW_HUB_MODELS=0`` turns
            it off: then only zero-shot and the listed checkpoints).
    """

    allow_local_paths: bool = False
    allow_hub_models: bool = True

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "ServingPolicy":
        """Read ``CROFT_ALLOW_LOCAL_PATHS`` and ``CROFT_ALLOW_HUB_MODELS`` (``1/0``, ``true/false``...).

        Raises:
            ValueError: a variable set to something else; the message names it.
        """
        env = os.environ if environ is None else environ
        if "CROFT_ALLOW_ANY_MODEL" in env:
            raise ValueError("CROFT_ALLOW_ANY_MODEL was replaced: use CROFT_ALLOW_LOCAL_PATHS=1 (checkpoint "
                             "folders and benchmark JSON files) and CROFT_ALLOW_HUB_MODELS=0/1 (Hub ids)")
        return cls(allow_local_paths=env_flag("CROFT_ALLOW_LOCAL_PATHS", False, env),
                   allow_hub_models=env_flag("CROFT_ALLOW_HUB_MODELS", True, env))


def env_flag(name: str, default: bool, environ: Mapping[str, str] | None = None) -> bool:
    """A boolean environment variable; unset or empty -> ``default``.

    Raises:
        ValueError: a value other than 1/0, true/false, yes/no, on/off.
    """
    raw = (os.environ if environ is None else environ).get(name, "").strip().lower()
    if not raw:
        return default
    if raw not in _TRUE + _FALSE:
        raise ValueError(f"{name} must be 1 or 0 (true/false), got {raw[:20]!r}")
    return raw in _TRUE


def check_text(value: Any, what: str, max_chars: int = MAX_NAME_CHARS) -> str:
    """A short text input (a model or benchmark name), stripped.

    Raises:
        AccessRefused: not a string, or longer than ``max_chars``.
    """
    if value is None:
        return ""
    if not isinstance(value, str):
        raise AccessRefused(f"{what} must be text (a name), got a {type(value).__name__}")
    if len(value) > max_chars:
        raise AccessRefused(f"{what} is {len(value):,} characters long; names have at most "
                            f"{max_chars} characters")
    return value.strip()


def short_repr(value: Any, limit: int = 40) -> str:
    """``repr`` of a visitor's value, cut to ``limit`` characters (messages never echo whole inputs)."""
    text = repr(value) if isinstance(value, (str, int, float)) else f"a {type(value).__name__}"
    return text if len(text) <= limit else text[:limit] + "..."


def check_number(value: Any, message: str) -> float | None:
    """A number a visitor typed or sent, as a finite float; ``None`` or blank text -> ``None``.

    Raises:
        ValueError(message): a bool, anything but a real number or text, text that is no number,
            or a value that is not finite or too large for a float (``10**400``).
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, str)):
        raise ValueError(message)
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(message) from None
    if not math.isfinite(number):
        raise ValueError(message)
    return number


def is_hub_id(text: str) -> bool:
    """``ORG/NAME`` with Hub-valid parts (letters, digits, ``._-``, no ``..`` or ``--``, at most 96
    characters each, not ending in ``.git``: the Hub's grammar), nothing else."""
    return (bool(_HUB_ID.fullmatch(text)) and ".." not in text and "--" not in text
            and not text.endswith(".git"))


def confine(path: str | os.PathLike, root: str | os.PathLike) -> Path:
    """The real path of a regular file that lies inside ``root`` (symlinks resolved first).

    Args:
        path: the file a request names.
        root: the folder it must be inside (the server's upload folder).

    Returns:
        The resolved path.

    Raises:
        AccessRefused: :data:`NOT_AN_UPLOAD` for anything outside ``root``, missing, or not a regular
            file (one message, so the answer tells nothing about the server's files).
    """
    try:
        real = Path(os.path.realpath(os.fspath(path)))
        base = Path(os.path.realpath(os.fspath(root)))
        inside = real != base and real.is_relative_to(base)
        regular = inside and stat.S_ISREG(os.stat(real).st_mode)
    except (OSError, ValueError, TypeError):
        regular = False
    if not regular:
        raise AccessRefused(NOT_AN_UPLOAD)
    return real


def check_no_symlinks(folder: str | os.PathLike, max_entries: int = 1_000_000) -> int:
    """Walk ``folder`` without following links; refuse symlinks and over-large trees.

    Args:
        folder: a dataset folder about to be read.
        max_entries: most files and folders walked before giving up.

    Returns:
        The number of entries walked.

    Raises:
        AccessRefused: ``folder`` is or contains a symbolic link, or has more than ``max_entries``
            entries (the message names the folder only by its last component).
    """
    stack, seen = [os.fspath(folder)], 0
    if os.path.islink(stack[0]):
        raise AccessRefused(f"the data folder {Path(stack[0]).name!r} is a symbolic link; links are not "
                            f"followed")
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                seen += 1
                if entry.is_symlink():
                    raise AccessRefused(f"the data folder {Path(folder).name!r} contains a symbolic "
                                        f"link; links are not followed, copy the files instead")
                if seen > max_entries:
                    raise AccessRefused(f"the data folder {Path(folder).name!r} has more than "
                                        f"{max_entries:,} entries")
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
    return seen


def scrub_paths(text: str) -> str:
    """Replace every absolute path of two or more components in a message by ``…/<last component>``
    (``~/x/y`` too). URLs (``https://host/path``) and endpoint names (``/classify``) are kept.
    """
    def short(match: re.Match) -> str:
        name = match.group(1).rstrip("/.").rsplit("/", 1)[-1]
        return f"…/{name}" if name else "…"

    return _ABSOLUTE_PATH.sub(short, str(text))


def display_spec(spec: str) -> str:
    """A backbone SPEC fit to show: ``local-dir:/srv/x/model`` -> ``local-dir:model``; others as is."""
    if spec.startswith("local-dir:"):
        return "local-dir:" + (Path(spec.removeprefix("local-dir:").rstrip("/")).name or "model")
    return spec


def check_benchmark(name: Any, registered: Collection[str], policy: ServingPolicy) -> str:
    """The benchmark a visitor named: a registered name, or (trusted installs only) a JSON path.

    Raises:
        AccessRefused: not text, a path when the policy refuses paths (:data:`LOCAL_PATH_REFUSED`,
            whether it exists or not), or an unknown name.
    """
    name = check_text(name, "benchmark")
    if name in registered or policy.allow_local_paths:
        return name
    if any(c in name for c in "/\\~") or name.startswith(".") or name.lower().endswith(".json"):
        raise AccessRefused(LOCAL_PATH_REFUSED)
    raise AccessRefused(f"Unknown benchmark {name[:100]!r}; registered: {sorted(registered)}.")


def check_benchmark_file(path: str | os.PathLike, max_bytes: int = 2**20,
                         max_entries: int = 1_000_000) -> None:
    """Before a benchmark JSON (trusted installs only) is loaded: every folder it names is walked
    without following links, and refused if it holds a symbolic link (a loop would hang the walk).

    Folders are the JSON's string values that name an existing directory, as given or relative to
    the JSON file's folder.

    Raises:
        AccessRefused: the file is over ``max_bytes``, or a folder it names holds a link or more
            than ``max_entries`` entries.
    """
    path = Path(path)
    if path.is_file() and path.stat().st_size > max_bytes:
        raise AccessRefused(f"the benchmark file {path.name!r} is larger than {max_bytes // 1024} kB")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return  # not readable as JSON: the loader reports it
    stack, strings = [data], []
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str) and 0 < len(item) < 4096:
            strings.append(item)
    for text in strings:
        for folder in {Path(text), path.parent / text}:
            if folder.is_dir() or folder.is_symlink():
                check_no_symlinks(folder, max_entries)


def file_path(payload: Any, upload_root: str | os.PathLike) -> str | None:
    """The local path of an uploaded file, which must lie in Gradio's upload folder.

    Gradio passes a file as a path or a FileData dict (``{"path", "meta": {"_type":
    "gradio.FileData"}}``, or a gallery item ``{"image": FileData}``). Gradio checks that a FileData
    *with* ``meta`` was uploaded; a dict without it is passed through unchecked, so it is refused
    here, and every path is confined to the upload folder (one message, whether it exists or not).
    """
    if payload is None or payload == "":
        return None
    if isinstance(payload, dict) and isinstance(payload.get("image"), dict):  # gallery item
        payload = payload["image"]
    if isinstance(payload, dict):
        meta = payload.get("meta")
        if not isinstance(meta, dict) or meta.get("_type") != "gradio.FileData":
            raise AccessRefused(NOT_AN_UPLOAD)
        payload = payload.get("path")
    if not isinstance(payload, str) or not payload:
        raise AccessRefused("cannot read the uploaded file; upload an image file")
    return str(confine(payload, upload_root))
