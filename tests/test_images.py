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

from croft_core.data.images import ImageError, ImageLimits, decoding_cost, load_image

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
    PIL.Image.new("F", (300, 300)).save(tmp_path / "f.tiff")  # 360 kB decoded (x1.5 in libtiff)
    PIL.Image.new("L", (300, 300)).save(tmp_path / "l.png")  # 90 kB decoded
    limits = ImageLimits(decoded_bytes=600_000)  # both also cost their 360 kB RGB result
    with pytest.raises(ImageError, match=r"needs 1 MB once decoded.*CROFT_MAX_IMAGE_MB"):
        load_image(tmp_path / "f.tiff", limits=limits)
    assert load_image(tmp_path / "l.png", limits=limits).size == (300, 300)


def test_limits_from_the_environment(monkeypatch):
    monkeypatch.setenv("CROFT_MAX_IMAGE_SIDE", "500")
    monkeypatch.setenv("CROFT_MAX_IMAGE_MB", "2")
    assert ImageLimits.from_env() == ImageLimits(side=500, decoded_bytes=2 * 2**20)
    monkeypatch.setenv("CROFT_MAX_IMAGE_MB", "-1")
    with pytest.raises(ValueError, match="CROFT_MAX_IMAGE_MB must be a positive number"):
        ImageLimits.from_env()


# -- every decoder bounded before it allocates (issue 25) --------------------------------------


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """Small files that declare large images, in every format PIL decodes for the app."""
    d = tmp_path_factory.mktemp("hostile")
    PIL.Image.new("RGB", (6300, 6300), (40, 90, 200)).save(d / "huge.webp", lossless=True, quality=0, method=0)
    PIL.Image.new("RGBA", (4500, 4500), (40, 90, 200, 128)).save(d / "rgba.png", compress_level=1)
    PIL.Image.new("LA", (4500, 4500), (40, 128)).save(d / "la.png", compress_level=1)
    frames = [PIL.Image.new("RGBA", (4000, 4000), (i, 0, 0, 255)) for i in range(3)]
    frames[0].save(d / "anim.png", save_all=True, append_images=frames[1:], compress_level=1)
    pages = [PIL.Image.new("RGB", (4800, 4800), (1, 2, 3)), PIL.Image.new("RGB", (8, 8))]
    pages[0].save(d / "pages.tiff", save_all=True, append_images=pages[1:], compression="tiff_deflate")
    PIL.Image.new("P", (6300, 6300), 3).save(d / "palette.gif")
    PIL.Image.new("RGB", (2500, 2500), (40, 90, 200)).save(d / "ok.webp", lossless=True, quality=0, method=0)
    PIL.Image.new("RGB", (64, 64)).save(d / "image.ppm")
    return d


def test_a_38_byte_webp_declaring_40_megapixels_is_refused_from_its_header(hostile):
    # before: 6300x6300 = 39.7 MP passed the pixel limit, and libwebp's decoder held ~4 full-size
    # RGBA buffers: +608 MB for one request of 38 bytes
    assert (hostile / "huge.webp").stat().st_size < 100
    with pytest.raises(ImageError, match=r"6300x6300, mode RGB\) needs 686 MB once decoded, over the limit "
                                         r"of 128 MB \(CROFT_MAX_IMAGE_MB\)"):
        load_image(hostile / "huge.webp")
    assert load_image(hostile / "ok.webp").size == (1250, 1250)  # 2500x2500 fits


@pytest.mark.parametrize("name", ["rgba.png", "la.png", "anim.png", "pages.tiff"])
def test_alpha_modes_frames_and_pages_are_costed_before_decoding(hostile, name):
    # before: accepted (a 6300x6300 RGBA or LA PNG peaked at +307 MB: shrinking premultiplies a
    # copy; libtiff decodes through strip buffers)
    with pytest.raises(ImageError, match="MB once decoded, over the limit of 128 MB"):
        load_image(hostile / name)


def test_the_cost_counts_what_the_decoder_keeps():
    assert decoding_cost(1000, 1000, "RGB", "WEBP") > 4 * 4e6  # libwebp: two canvases and a copy
    assert decoding_cost(1000, 1000, "RGBA", "PNG") > decoding_cost(1000, 1000, "RGB", "PNG")
    assert decoding_cost(4000, 4000, "RGBA", "PNG") > 2 * 4 * 16e6  # premultiplied copy to shrink
    assert decoding_cost(4000, 4000, "P", "GIF") < 64e6  # a palette image is subsampled as is


def test_formats_that_cannot_be_bounded_are_not_opened(hostile):
    # before: every PIL plugin (PPM, EPS, PSD, ICO ...) parsed visitors' files
    assert PIL.Image.open(hostile / "image.ppm").format == "PPM"
    with pytest.raises(ImageError, match="not an image file in a format this server accepts"):
        load_image(hostile / "image.ppm")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ok.webp", "palette.gif"])
def test_accepted_hostile_images_stay_under_150_mb(hostile, name):
    # before: the 6300x6300 palette GIF was converted to RGB at full size (+194 MB)
    result = _peak(hostile / name)
    assert result["mode"] == "RGB" and result["peak_mb"] < 150, result
