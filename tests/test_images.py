"""Images from strangers cost bounded memory: limits from the header, reduced decoding, no big copies.

Peak memory is measured in a fresh subprocess (``ru_maxrss`` after minus before the load), because
PIL's buffers are invisible to ``tracemalloc``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import PIL.Image
import pytest

from croft_core.data.images import ImageError, ImageLimits, load_image

PEAK = textwrap.dedent("""
    import json, resource, sys
    from croft_core.data.images import load_image
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    image = load_image(sys.argv[1])
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"size": image.size, "mode": image.mode, "peak_mb": (after - before) / 1024}))
""")


def _peak(path, **env) -> dict:
    out = subprocess.run([sys.executable, "-c", PEAK, str(path)], capture_output=True, text=True,
                         env={**os.environ, **env}, timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def big_images(tmp_path_factory):
    d = tmp_path_factory.mktemp("big")
    PIL.Image.new("RGB", (100_000, 1), (200, 10, 10)).save(d / "strip.png")  # 375 bytes
    ramp = (np.arange(4000 * 4000, dtype=np.uint32) % 65536).astype(np.uint16).reshape(4000, 4000)
    PIL.Image.fromarray(ramp).save(d / "gray16.png", compress_level=1)
    PIL.Image.fromarray(ramp.astype(np.float32) / 65535).save(d / "float.tiff")
    noise = np.random.default_rng(0).integers(0, 255, (3000, 4000, 3), dtype=np.uint8)
    PIL.Image.fromarray(noise).save(d / "photo.jpg", quality=80)
    return d


@pytest.mark.slow
def test_an_elongated_strip_is_cropped_not_resized_to_gigabytes(big_images):
    # before: the 100000x1 strip became a 22400000x224 image in CLIP's resize (+1.6 GB)
    result = _peak(big_images / "strip.png", CROFT_MAX_IMAGE_SIDE="200000")
    assert result["size"] == [4, 1] and result["peak_mb"] < 50
    with pytest.raises(ImageError, match="sides longer than 20,000 pixels are refused"):
        load_image(big_images / "strip.png")


@pytest.mark.slow
@pytest.mark.parametrize("name, limit_mb", [("gray16.png", 100), ("float.tiff", 120), ("photo.jpg", 40)])
def test_large_images_are_decoded_within_bounded_memory(big_images, name, limit_mb):
    # before: 16-bit and float images were scaled through float64 copies of the full image
    result = _peak(big_images / name)
    assert result["mode"] == "RGB" and min(result["size"]) >= 1024
    assert result["peak_mb"] < limit_mb, result


def test_shrunk_images_keep_their_content(big_images):
    image = load_image(big_images / "gray16.png")
    assert image.size == (1333, 1333)  # 4000 // 3
    assert image.getpixel((0, 0))[0] < 20  # nearest subsampling of a ramp that starts at 0
    pixels = np.asarray(PIL.Image.open(big_images / "photo.jpg").reduce(2))
    shrunk = np.asarray(load_image(big_images / "photo.jpg")).astype(int)
    assert shrunk.shape[:2] == (1500, 2000)  # JPEG draft at 1/2 scale
    assert abs(shrunk.mean() - pixels.mean()) < 2


def test_decoded_size_limit_counts_bytes_per_pixel(tmp_path):
    PIL.Image.new("F", (300, 300)).save(tmp_path / "f.tiff")  # 360 kB decoded
    PIL.Image.new("L", (300, 300)).save(tmp_path / "l.png")  # 90 kB decoded
    limits = ImageLimits(decoded_bytes=200_000)
    with pytest.raises(ImageError, match=r"needs 0 MB once decoded.*CROFT_MAX_IMAGE_MB"):
        load_image(tmp_path / "f.tiff", limits=limits)
    assert load_image(tmp_path / "l.png", limits=limits).size == (300, 300)


def test_limits_from_the_environment(monkeypatch):
    monkeypatch.setenv("CROFT_MAX_IMAGE_SIDE", "500")
    monkeypatch.setenv("CROFT_MAX_IMAGE_MB", "2")
    assert ImageLimits.from_env() == ImageLimits(side=500, decoded_bytes=2 * 2**20)
    monkeypatch.setenv("CROFT_MAX_IMAGE_MB", "-1")
    with pytest.raises(ValueError, match="CROFT_MAX_IMAGE_MB must be a positive number"):
        ImageLimits.from_env()
