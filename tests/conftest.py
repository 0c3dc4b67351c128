"""Shared fixtures: offline, CPU-only, tiny open_clip models written as `local-dir:` folders."""

from __future__ import annotations

import json
import os
import tempfile

# Offline and CPU before anything imports huggingface_hub / torch.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("CROFT_CACHE", tempfile.mkdtemp(prefix="croft-test-cache-"))
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

import pytest  # noqa: E402
import torch  # noqa: E402

TINY_MODEL_CFG = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 16, "patch_size": 8, "width": 32, "layers": 1, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 1},
}


def pytest_addoption(parser):
    parser.addoption("--network", action="store_true", help="run tests that need the internet")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--network"):
        return
    skip = pytest.mark.skip(reason="needs the internet; pass --network to run")
    for item in items:
        if "network" in item.keywords:
            item.add_marker(skip)


TINY_LEXICON_WORDS = 300


def write_tiny_model(path, seed: int = 0, lexicon: bool = True) -> str:
    """Write a tiny random open_clip model as a `local-dir:` folder; returns the SPEC.

    With ``lexicon``, the folder gets its own small ``lexicon.txt`` (negative labels), so tests do
    not encode timm's 20k-word lexicon; pass False to test that fallback.
    """
    import open_clip
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = open_clip.model.CLIP(**TINY_MODEL_CFG)
    (path / "open_clip_config.json").write_text(json.dumps({
        "model_cfg": TINY_MODEL_CFG,
        "preprocess_cfg": {"mean": list(OPENAI_DATASET_MEAN), "std": list(OPENAI_DATASET_STD)}}))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(path / "open_clip_model.safetensors"))
    if lexicon:
        (path / "lexicon.txt").write_text("".join(f"object {i}\n" for i in range(TINY_LEXICON_WORDS)))
    return f"local-dir:{path}"


@pytest.fixture(scope="session")
def tiny_spec(tmp_path_factory) -> str:
    return write_tiny_model(tmp_path_factory.mktemp("tiny_clip"))


@pytest.fixture(scope="session")
def tiny_backbone(tiny_spec):
    from croft_core.clip.backbones import load_backbone

    return load_backbone(tiny_spec)
