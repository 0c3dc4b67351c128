"""Read a Hub dataset's metadata (never its images) into the record :mod:`.hub_check` compares.

1. The Hub API (``HfApi.dataset_info``): the commit the revision resolves to, the gate, the licence.
2. ``datasets.load_dataset_builder`` at that revision: configurations, splits with row counts and
   features, as the card's metadata states them (no data file is downloaded).
3. Where the card has no features (webdataset repositories), the dataset viewer's ``/info`` for the
   same configuration; it describes the viewer's own conversion of the latest revision, so its row
   counts are not compared when it says the conversion is partial.
"""

from __future__ import annotations

import logging
from typing import Any

import datasets
import httpx
from datasets.exceptions import DatasetNotFoundError

from croft_core.data.benchmarks.hub_sources import HubSource
from croft_core.data.sources import DatasetUnavailableError
from croft_core.offline import hub_unreachable_reason

logger = logging.getLogger(__name__)

VIEWER_INFO = "https://datasets-server.huggingface.co/info"
_TIMEOUT_S = 30


def require_hub() -> None:
    """Raise :class:`~croft_core.data.sources.DatasetUnavailableError` at once when the Hub cannot be reached."""
    reason = hub_unreachable_reason()
    if reason is not None:
        raise DatasetUnavailableError(
            f"check-sources reads the Hugging Face Hub's metadata, but the Hub cannot be reached: "
            f"{reason}. Run it on a machine with network access (without HF_HUB_OFFLINE=1); nothing "
            "was checked."
        )


def fetch_hub_metadata(source: HubSource) -> dict[str, Any]:
    """The metadata record of one source (see :mod:`croft_core.data.benchmarks.hub_check`)."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    record: dict[str, Any] = {"repo_id": source.repo_id, "revision": source.revision, "sha": None,
                              "access": "ok", "gated": False, "license": None, "configs": {}}
    try:
        info = HfApi().dataset_info(source.repo_id, revision=source.revision, timeout=_TIMEOUT_S)
    except GatedRepoError:
        return {**record, "access": "gated", "gated": True}
    except (RepositoryNotFoundError, RevisionNotFoundError) as e:
        return {**record, "access": "missing", "error": type(e).__name__}
    card = info.card_data.to_dict() if info.card_data is not None else {}
    record.update(sha=info.sha, gated=info.gated or False, license=card.get("license"))
    try:
        builder = datasets.load_dataset_builder(source.repo_id, source.config_name, revision=source.revision)
    except DatasetNotFoundError as e:
        access = "gated" if info.gated else "missing"
        return {**record, "access": access, "error": str(e).splitlines()[0]}
    config = builder.config.name
    features = builder.info.features.to_dict() if builder.info.features else None
    splits = {name: s.num_examples or None for name, s in (builder.info.splits or {}).items()} or None
    record["configs"][config] = {"splits": splits, "features": features, "partial": False}
    if features is None:
        record["configs"][config] = _viewer_info(source.repo_id, config) or record["configs"][config]
    return record


def _viewer_info(repo_id: str, config: str) -> dict[str, Any] | None:
    """The dataset viewer's description of one configuration, or None when it has none."""
    from huggingface_hub import get_session

    try:
        response = get_session().get(VIEWER_INFO, params={"dataset": repo_id, "config": config},
                                     timeout=_TIMEOUT_S)
        response.raise_for_status()
        body = response.json()
    except (OSError, ValueError, httpx.HTTPError) as e:  # the viewer is optional: unknowns stay unknown
        logger.info("No viewer metadata for %s (%s): %s", repo_id, config, e)
        return None
    info = body.get("dataset_info") or {}
    splits = {name: s.get("num_examples") for name, s in (info.get("splits") or {}).items()} or None
    return {"splits": splits, "features": info.get("features"), "partial": bool(body.get("partial"))}
