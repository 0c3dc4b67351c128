"""Loading user images safely: any common format and mode in, an RGB PIL image out.

The app and the library accept images from strangers, so :func:`load_image` is strict about what
can go wrong and explicit about what it fixes:

- **Rejected** with an :class:`ImageError` (a ``ValueError``) whose message says what to do: a
  missing file, a file that is not an image, a truncated or corrupt image (the whole image is
  decoded before it is accepted), and a *decompression bomb* — an image whose header announces more
  than ``max_pixels`` pixels. The size is checked from the header, **before** any pixel is decoded,
  so a 50-kB PNG that claims 10^10 pixels costs nothing.
- **Converted** to 8-bit RGB: grayscale (``1``, ``L``), palette (``P``), alpha modes (``LA``,
  ``RGBA``, ``PA``: composited on white, what a viewer shows), ``CMYK``, ``YCbCr``, 16-bit and
  32-bit integer (``I;16*``, ``I``: scaled from their bit depth), floating point (``F``), EXIF
  rotations, and the first frame of animated or multi-page files.
- **Accepted as is:** tiny images (a 1x1 image is valid; the CLIP preprocessing upscales it).

The pixel limit defaults to :data:`DEFAULT_MAX_PIXELS` and can be set with the ``CROFT_MAX_PIXELS``
environment variable or per call.
"""

from __future__ import annotations

import io
import logging
import os
import struct
import warnings
import zlib
from pathlib import Path
from typing import Any, Union

import numpy as np
import PIL.Image
import PIL.ImageOps

__all__ = ["DEFAULT_MAX_PIXELS", "ImageError", "ImageSource", "default_max_pixels", "load_image",
           "to_rgb"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 40_000_000  # 40 MP: larger than any phone photo, far below a bomb
"""Default pixel limit (width x height) of :func:`load_image`; ``CROFT_MAX_PIXELS`` overrides it."""

ImageSource = Union[str, os.PathLike, bytes, bytearray, PIL.Image.Image, np.ndarray, io.IOBase]

_ALPHA_MODES = ("LA", "La", "RGBA", "RGBa", "PA")
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error, IndexError)


class ImageError(ValueError):
    """An input that cannot be used as an image; the message says why and what to do."""


def default_max_pixels() -> int:
    """The pixel limit from ``CROFT_MAX_PIXELS`` (e.g. ``40000000`` or ``4e7``), else the default.

    Raises:
        ValueError: the variable is set but is not a positive number.
    """
    raw = os.environ.get("CROFT_MAX_PIXELS", "").strip()
    if not raw:
        return DEFAULT_MAX_PIXELS
    try:
        value = int(float(raw))
    except ValueError:
        value = 0
    if value <= 0:
        raise ValueError(f"CROFT_MAX_PIXELS must be a positive number of pixels (e.g. 40000000), "
                         f"got {raw!r}")
    return value


def _describe(source: Any) -> str:
    if isinstance(source, (str, os.PathLike)):
        return f"'{Path(source).name}'"
    return "the upload"


def _check_size(width: int, height: int, max_pixels: int, what: str) -> None:
    if width * height > max_pixels:
        raise ImageError(f"{what} is {width}x{height} = {width * height:,} pixels, over the limit "
                         f"of {max_pixels:,} pixels (a possible decompression bomb); resize it, or "
                         f"raise CROFT_MAX_PIXELS if you trust the file")
    if width < 1 or height < 1:
        raise ImageError(f"{what} has no pixels ({width}x{height}); upload a real image")


def _scale_to_uint8(arr: np.ndarray) -> np.ndarray:
    """Map integer or float pixel values of any range to uint8, keeping their meaning.

    uint8 passes through; other integers are scaled from their bit depth (16-bit: /257);
    floats in [0, 1] are multiplied by 255; anything else is min-max normalised.
    """
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.integer):
        lo, hi = int(arr.min(initial=0)), int(arr.max(initial=0))
        if lo >= 0 and hi <= 255:
            return arr.astype(np.uint8)
        if lo >= 0 and hi <= 65535:  # 16-bit data (PNG I;16, or 16-bit values stored in mode I)
            return np.round(arr.astype(np.float64) / 257.0).astype(np.uint8)
    arr = arr.astype(np.float64)
    finite = np.isfinite(arr)
    if not finite.any():
        raise ImageError("the image holds no finite pixel values; upload a real image")
    arr = np.where(finite, arr, 0.0)
    lo, hi = float(arr.min()), float(arr.max())
    if lo >= 0.0 and hi <= 1.0:
        return np.round(arr * 255.0).astype(np.uint8)
    if hi <= lo:
        return np.zeros(arr.shape, dtype=np.uint8)
    return np.round((arr - lo) / (hi - lo) * 255.0).astype(np.uint8)


def _from_array(arr: np.ndarray) -> PIL.Image.Image:
    """``[H, W]``, ``[H, W, 1|3|4]`` arrays of any numeric dtype -> PIL image (L, RGB or RGBA)."""
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise ImageError(f"an image array must be [H, W], [H, W, 3] or [H, W, 4], got shape "
                         f"{tuple(arr.shape)}")
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
        raise ImageError(f"an image array must hold numbers, got dtype {arr.dtype}")
    return PIL.Image.fromarray(np.ascontiguousarray(_scale_to_uint8(arr)))  # L, RGB or RGBA


def to_rgb(image: PIL.Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> PIL.Image.Image:
    """Convert a decoded PIL image of any mode to 8-bit RGB.

    Args:
        image: a loaded PIL image.
        background: colour that transparent pixels are composited on (white, as viewers show).

    Returns:
        An ``RGB`` image of the same size (the input itself when it already is RGB).

    Raises:
        ImageError: a mode that cannot be converted.
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        mode = image.mode
        if mode == "RGB":
            return image
    if mode in _ALPHA_MODES:
        rgba = image.convert("RGBA")
        canvas = PIL.Image.new("RGBA", rgba.size, background + (255,))
        return PIL.Image.alpha_composite(canvas, rgba).convert("RGB")
    if mode.startswith("I") or mode == "F":  # I;16, I;16B, I;16L, I;16N, I, F
        return _from_array(np.asarray(image)).convert("RGB")
    try:
        return image.convert("RGB")  # 1, L, CMYK, YCbCr, HSV, ...
    except (ValueError, OSError) as err:
        raise ImageError(f"cannot convert an image in mode {mode!r} to RGB ({err}); save it as an "
                         f"8-bit RGB PNG or JPEG") from err


def load_image(source: ImageSource, *, max_pixels: int | None = None) -> PIL.Image.Image:
    """Open, validate and decode an image into 8-bit RGB.

    Args:
        source: a file path, raw file bytes, a binary file object, a PIL image or a numpy array
            (``[H, W]``, ``[H, W, 3]`` or ``[H, W, 4]``; uint8, uint16, bool or float).
        max_pixels: largest accepted ``width * height``; ``None`` = :func:`default_max_pixels`.

    Returns:
        A fully decoded ``RGB`` PIL image (no open file handle behind it).

    Raises:
        ImageError: missing file, not an image, truncated/corrupt data, more pixels than
            ``max_pixels``, or an unsupported array shape or mode; the message says what to do.
    """
    limit = default_max_pixels() if max_pixels is None else int(max_pixels)
    if limit <= 0:
        raise ValueError(f"max_pixels must be positive, got {max_pixels}")
    if source is None:
        raise ImageError("no image given; upload an image file")
    if isinstance(source, np.ndarray):
        height, width = source.shape[:2] if source.ndim >= 2 else (0, 0)
        _check_size(int(width), int(height), limit, "the image array")
        return to_rgb(_from_array(source))
    if isinstance(source, PIL.Image.Image):
        _check_size(*source.size, limit, "the image")
        try:
            source.load()
        except _DECODE_ERRORS as err:
            raise ImageError(f"the image is truncated or corrupt ({err}); re-export it") from err
        return to_rgb(PIL.ImageOps.exif_transpose(source))

    what = _describe(source)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise ImageError(f"image file {what} does not exist; upload the file again")
        if path.stat().st_size == 0:
            raise ImageError(f"{what} is an empty file; upload a real image")
        fp: Any = open(path, "rb")
    elif isinstance(source, (bytes, bytearray)):
        if not source:
            raise ImageError("the upload is empty; upload a real image")
        fp = io.BytesIO(bytes(source))
    elif hasattr(source, "read"):
        fp = source
    else:
        raise ImageError(f"cannot read an image from a {type(source).__name__}; pass a file path, "
                         f"bytes, a PIL image or a numpy array")

    with fp:
        try:
            with warnings.catch_warnings():
                # PIL warns from MAX_IMAGE_PIXELS on; our own limit below decides instead.
                warnings.simplefilter("ignore", PIL.Image.DecompressionBombWarning)
                image = PIL.Image.open(fp)  # lazy: reads the header only
        except PIL.Image.DecompressionBombError as err:
            raise ImageError(f"{what} announces more pixels than allowed ({err}); this looks like "
                             f"a decompression bomb; resize the image") from err
        except PIL.UnidentifiedImageError as err:
            raise ImageError(f"{what} is not an image file (PIL could not identify it); upload a "
                             f"PNG, JPEG, WebP, GIF, BMP or TIFF image") from err
        except _DECODE_ERRORS as err:
            raise ImageError(f"{what} could not be opened as an image ({err}); upload a PNG, "
                             f"JPEG, WebP, GIF, BMP or TIFF image") from err
        _check_size(*image.size, limit, what)  # before any pixel is decoded
        try:
            if getattr(image, "n_frames", 1) > 1:
                image.seek(0)  # animated / multi-page: the first frame
            image.load()  # full decode: truncated or corrupt data fails here
            image = PIL.ImageOps.exif_transpose(image)
        except _DECODE_ERRORS as err:
            raise ImageError(f"{what} is truncated or corrupt ({err}); re-export or re-upload "
                             f"the image") from err
    rgb = to_rgb(image)
    logger.debug("loaded %s: %s %s -> RGB", what, image.mode, image.size)
    return rgb
