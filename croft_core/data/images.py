"""Loading user images safely: any common format and mode in, an RGB PIL image out, memory bounded.

The app and the library accept images from strangers, so :func:`load_image` is strict about what
can go wrong and explicit about what it fixes:

- **Rejected** with an :class:`ImageError` (a ``ValueError``) whose message says what to do: a
  missing file, a file that is not an image in one of :data:`FORMATS` (PNG, JPEG, WebP, GIF, BMP,
  TIFF: formats whose decoding cost can be bounded; PIL's other plugins -- EPS, PSD, ICO, ... --
  are never even asked to parse the file), a truncated or corrupt image (the whole image is
  decoded before it is accepted), and a *decompression bomb* — an image whose header announces more
  than ``max_pixels`` pixels, a side longer than ``max_side``, or a decoding cost over
  ``max_bytes``: the memory the decoder, the shrinking and the conversion to RGB will hold at once
  (:func:`decoding_cost`: bytes per pixel of the mode x the copies the format's decoder keeps — a
  lossless WebP of 38 bytes that declares 6300x6300 pixels costs 4 full-size RGBA buffers in
  libwebp and PIL — plus the premultiplied copy of alpha images and the RGB result).
  All of it is checked from the header, **before** any pixel is decoded, so a 50-kB PNG that claims
  10^10 pixels costs nothing. Only the first frame of an animated GIF, APNG or WebP, or the first
  page of a TIFF, is decoded; the size PIL reports is the canvas every frame is drawn on.
- **Bounded in memory**: JPEGs are decoded at a reduced scale (``draft``) when they are much larger
  than :data:`WORK_SIDE`; other formats are decoded, then shrunk by an integer factor (``reduce``)
  before any conversion, and 16-bit data is subsampled as a view. Very elongated images are
  centre-cropped to an aspect ratio of :data:`MAX_ASPECT` — CLIP's preprocessing keeps only the
  centre square, and a 100000x1 strip would otherwise be resized to 22400000x224.
- **Converted** to 8-bit RGB: grayscale (``1``, ``L``), palette (``P``), alpha modes (``LA``,
  ``RGBA``, ``PA``: composited on white, what a viewer shows), ``CMYK``, ``YCbCr``, 16-bit and
  32-bit integer (``I;16*``, ``I``: scaled from their bit depth), floating point (``F``), EXIF
  rotations, and the first frame of animated or multi-page files.
- **Accepted as is:** tiny images (a 1x1 image is valid; the CLIP preprocessing upscales it).

The limits default to :data:`DEFAULT_MAX_PIXELS`, :data:`DEFAULT_MAX_SIDE` and
:data:`DEFAULT_MAX_BYTES`, and can be set with the ``CROFT_MAX_PIXELS``, ``CROFT_MAX_IMAGE_SIDE`` and
``CROFT_MAX_IMAGE_MB`` environment variables or per call.
"""

from __future__ import annotations

import io
import logging
import os
import struct
import warnings
import zlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Union

import numpy as np
import PIL.Image
import PIL.ImageOps

from croft_core.errors import CroftError

__all__ = ["DEFAULT_MAX_BYTES", "DEFAULT_MAX_PIXELS", "DEFAULT_MAX_SIDE", "FORMATS", "ImageError",
           "ImageLimits", "ImageSource", "decoding_cost", "default_max_pixels", "load_image", "to_rgb"]

logger = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 40_000_000  # 40 MP: larger than any phone photo, far below a bomb
"""Default pixel limit (width x height) of :func:`load_image`; ``CROFT_MAX_PIXELS`` overrides it."""
DEFAULT_MAX_SIDE = 20_000  # longest side; ``CROFT_MAX_IMAGE_SIDE`` overrides it
DEFAULT_MAX_BYTES = 128 * 2**20  # memory to decode one image (decoding_cost); ``CROFT_MAX_IMAGE_MB``
WORK_SIDE = 1024  # large images are shrunk to a shorter side of at least this before conversion
MAX_ASPECT = 4  # longer side / shorter side kept; CLIP's centre crop uses the centre square only

ImageSource = Union[str, os.PathLike, bytes, bytearray, PIL.Image.Image, np.ndarray, io.IOBase]

_ALPHA_MODES = ("LA", "La", "RGBA", "RGBa", "PA")
FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")
"""The formats :func:`load_image` opens (JPEG includes MPO, the multi-picture JPEG of cameras)."""
# Full-size buffers a format's decoder holds at once, besides PIL's image: libwebp's animation
# decoder keeps two RGBA canvases and PIL copies the frame out as bytes (measured: a 6300x6300
# WebP peaks at 3.8x its RGBA size); libtiff decodes through strip buffers (1.4x measured).
_DECODER_COPIES = {"WEBP": 4.0, "TIFF": 1.5}
_OVERHEAD = 8  # 1/8 more for the decoder's own state, zlib windows, the file's chunks
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error, IndexError)


class ImageError(CroftError, ValueError):
    """An input that cannot be used as an image; the message says why and what to do."""


def env_number(name: str, default: float, unit: str, example: str, scale: int = 1, kind=int) -> Any:
    """A positive number from the environment variable ``name`` (``default`` when unset), times
    ``scale``, as ``kind``; anything else is a ValueError naming the variable and an example."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not 0 < value < 1e15:
        raise ValueError(f"{name} must be a positive number of {unit} (e.g. {example}), got {raw[:20]!r}")
    return kind(value * scale)


def default_max_pixels() -> int:
    """The pixel limit from ``CROFT_MAX_PIXELS`` (e.g. ``40000000`` or ``4e7``), else the default.

    Raises:
        ValueError: the variable is set but is not a positive number.
    """
    return env_number("CROFT_MAX_PIXELS", DEFAULT_MAX_PIXELS, "pixels", "40000000")


@dataclass(frozen=True)
class ImageLimits:
    """What :func:`load_image` accepts: ``pixels`` (width x height), ``side`` (longest side, pixels)
    and ``decoded_bytes`` (pixels x bytes per pixel of the file's mode)."""

    pixels: int = DEFAULT_MAX_PIXELS
    side: int = DEFAULT_MAX_SIDE
    decoded_bytes: int = DEFAULT_MAX_BYTES

    @classmethod
    def from_env(cls) -> "ImageLimits":
        """``CROFT_MAX_PIXELS``, ``CROFT_MAX_IMAGE_SIDE``, ``CROFT_MAX_IMAGE_MB`` or the defaults.

        Raises:
            ValueError: a variable set to something that is not a positive number.
        """
        return cls(default_max_pixels(),
                   env_number("CROFT_MAX_IMAGE_SIDE", DEFAULT_MAX_SIDE, "pixels", "20000"),
                   env_number("CROFT_MAX_IMAGE_MB", DEFAULT_MAX_BYTES, "megabytes", "192", scale=2**20))


def _describe(source: Any) -> str:
    if isinstance(source, (str, os.PathLike)):
        return f"'{Path(source).name}'"
    return "the upload"


_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}  # else 4


def _check_size(width: int, height: int, mode: str, limits: ImageLimits, what: str,
                cost: int | None = None) -> None:
    if width * height > limits.pixels:
        raise ImageError(f"{what} is {width}x{height} = {width * height:,} pixels, over the limit "
                         f"of {limits.pixels:,} pixels (a possible decompression bomb); resize it, or "
                         f"raise CROFT_MAX_PIXELS if you trust the file")
    if width < 1 or height < 1:
        raise ImageError(f"{what} has no pixels ({width}x{height}); upload a real image")
    if max(width, height) > limits.side:
        raise ImageError(f"{what} is {width}x{height} pixels; sides longer than {limits.side:,} pixels "
                         f"are refused (CROFT_MAX_IMAGE_SIDE); resize it")
    decoded = width * height * _BYTES_PER_PIXEL.get(mode, 4) if cost is None else cost
    if decoded > limits.decoded_bytes:
        raise ImageError(f"{what} ({width}x{height}, mode {mode}) needs {decoded / 2**20:,.0f} MB once "
                         f"decoded, over the limit of {limits.decoded_bytes / 2**20:,.0f} MB "
                         f"(CROFT_MAX_IMAGE_MB); resize it, or save it as an 8-bit PNG or JPEG")


def _shrunk_size(width: int, height: int) -> tuple[int, int]:
    """The size :func:`_shrink` makes of a ``width`` x ``height`` image (crop, then reduce)."""
    short, long_ = min(width, height), min(max(width, height), MAX_ASPECT * min(width, height))
    factor = _shrink_factor(short, long_)
    return short // factor, long_ // factor


def decoding_cost(width: int, height: int, mode: str, format: str | None) -> int:
    """Bytes :func:`load_image` holds at its peak for an image of this header, decoded in full.

    The decoder's buffers (bytes per pixel of ``mode`` x the copies ``format``'s decoder keeps),
    the premultiplied copy PIL makes to shrink an image with alpha, and the conversion of the
    shrunk image to RGB (alpha and palette images through an RGBA copy).
    """
    pixels = width * height
    decode = int(pixels * _BYTES_PER_PIXEL.get(mode, 4) * _DECODER_COPIES.get(format or "", 1.0))
    w, h = _shrunk_size(width, height)
    alpha = mode in _ALPHA_MODES or mode == "P"
    shrink = pixels * 4 if mode in _ALPHA_MODES and (w, h) != (min(width, height), max(width, height)) else 0
    return decode + decode // _OVERHEAD + shrink + w * h * 4 * (2 if alpha else 1)


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
            return ((arr.astype(np.uint32) + 128) // 257).astype(np.uint8)  # = round(x / 257)
    arr = arr.astype(np.float32)
    finite = np.isfinite(arr)
    if not finite.any():
        raise ImageError("the image holds no finite pixel values; upload a real image")
    arr = np.where(finite, arr, np.float32(0.0))
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
    if mode in _ALPHA_MODES:  # pasted on an RGB canvas through its alpha: one full-size copy
        rgba = image if mode in ("RGBA", "LA") else image.convert("RGBA")
        canvas = PIL.Image.new("RGB", rgba.size, background)
        canvas.paste(rgba.convert("RGBA") if mode == "LA" else rgba, (0, 0), rgba)
        return canvas
    if mode.startswith("I") or mode == "F":  # I;16, I;16B, I;16L, I;16N, I, F
        return _from_array(np.asarray(image)).convert("RGB")
    try:
        return image.convert("RGB")  # 1, L, CMYK, YCbCr, HSV, ...
    except (ValueError, OSError) as err:
        raise ImageError(f"cannot convert an image in mode {mode!r} to RGB ({err}); save it as an "
                         f"8-bit RGB PNG or JPEG") from err


def _shrink_factor(width: int, height: int) -> int:
    """Integer factor that keeps the shorter side at least :data:`WORK_SIDE` (1 = keep the size)."""
    return max(1, min(width, height) // WORK_SIDE)


def _crop_aspect(image: PIL.Image.Image) -> PIL.Image.Image:
    """Centre-crop the longer side to :data:`MAX_ASPECT` times the shorter one (no-op otherwise)."""
    w, h = image.size
    if max(w, h) <= MAX_ASPECT * min(w, h):
        return image
    if w > h:
        left = (w - MAX_ASPECT * h) // 2
        return image.crop((left, 0, left + MAX_ASPECT * h, h))
    top = (h - MAX_ASPECT * w) // 2
    return image.crop((0, top, w, top + MAX_ASPECT * w))


def _shrink(image: PIL.Image.Image) -> PIL.Image.Image:
    """A decoded image cropped to :data:`MAX_ASPECT` and shrunk by an integer factor, cheaply.

    16-bit modes cannot be ``reduce``d by PIL: they are subsampled (nearest) and then scaled to
    8-bit, so no full-size copy in a wider type is ever made.
    """
    image = _crop_aspect(image)
    factor = _shrink_factor(*image.size)
    if image.mode.startswith("I;16"):
        if factor > 1:
            w, h = image.size
            image = image.resize((w // factor, h // factor), PIL.Image.Resampling.NEAREST)
        return _from_array(np.asarray(image))
    if factor > 1:
        w, h = image.size
        if image.mode == "P":  # no reduce: subsample, keeping the palette (no full-size RGB copy)
            return image.resize((w // factor, h // factor), PIL.Image.Resampling.NEAREST)
        if image.mode == "1":
            image = image.convert("L")
        image = image.reduce(factor)
    return image


def _open(source: ImageSource, what: str) -> tuple[Any, bool]:
    """A binary file object for a path, bytes or a file object (and whether to close it)."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise ImageError(f"image file {what} does not exist; upload the file again")
        if path.stat().st_size == 0:
            raise ImageError(f"{what} is an empty file; upload a real image")
        return open(path, "rb"), True
    if isinstance(source, (bytes, bytearray)):
        if not source:
            raise ImageError("the upload is empty; upload a real image")
        return io.BytesIO(bytes(source)), True
    if hasattr(source, "read"):
        return source, False
    raise ImageError(f"cannot read an image from a {type(source).__name__}; pass a file path, "
                     f"bytes, a PIL image or a numpy array")


def _decode(fp: Any, limits: ImageLimits, what: str) -> PIL.Image.Image:
    """Header, limits, reduced-scale decoding (JPEG ``draft``), full decode, shrink, EXIF rotation."""
    try:
        with warnings.catch_warnings():
            # PIL warns from MAX_IMAGE_PIXELS on; our own limits below decide instead.
            warnings.simplefilter("ignore", PIL.Image.DecompressionBombWarning)
            PIL.Image.init()  # register every plugin, so that ``formats`` can name them
            image = PIL.Image.open(fp, formats=FORMATS)  # lazy: reads the header only
    except PIL.Image.DecompressionBombError as err:
        raise ImageError(f"{what} announces more pixels than allowed; this looks like a "
                         f"decompression bomb; resize the image") from err
    except PIL.UnidentifiedImageError as err:
        raise ImageError(f"{what} is not an image file in a format this server accepts; upload a "
                         f"PNG, JPEG, WebP, GIF, BMP or TIFF image") from err
    except _DECODE_ERRORS as err:
        raise ImageError(f"{what} could not be opened as an image; upload a PNG, JPEG, WebP, GIF, "
                         f"BMP or TIFF image") from err
    _check_size(*image.size, image.mode, limits, what, cost=0)  # pixels and sides, from the header
    try:
        factor = _shrink_factor(*image.size)
        if factor > 1 and image.format in ("JPEG", "MPO"):  # decode at 1/2, 1/4 or 1/8 scale
            image.draft(image.mode, (image.size[0] // factor, image.size[1] // factor))
        # the memory to decode, from the header (after draft: the size JPEG will decode at)
        _check_size(*image.size, image.mode, limits, what,
                    cost=decoding_cost(*image.size, image.mode, image.format))
        image.load()  # full decode: truncated or corrupt data fails here
        return PIL.ImageOps.exif_transpose(_shrink(image))
    except ImageError:
        raise
    except _DECODE_ERRORS as err:
        raise ImageError(f"{what} is truncated or corrupt; re-export or re-upload the image") from err


def load_image(source: ImageSource, *, max_pixels: int | None = None,
               limits: ImageLimits | None = None) -> PIL.Image.Image:
    """Open, validate and decode an image into 8-bit RGB, within bounded memory.

    Args:
        source: a file path, raw file bytes, a binary file object, a PIL image or a numpy array
            (``[H, W]``, ``[H, W, 3]`` or ``[H, W, 4]``; uint8, uint16, bool or float).
        max_pixels: largest accepted ``width * height`` (overrides ``limits.pixels``).
        limits: pixel, side and decoded-size limits; ``None`` = :meth:`ImageLimits.from_env`.

    Returns:
        A fully decoded ``RGB`` PIL image (no open file handle behind it); images much larger than
        :data:`WORK_SIDE` come back shrunk by an integer factor, and elongated ones centre-cropped to
        :data:`MAX_ASPECT`.

    Raises:
        ImageError: missing file, not an image, truncated/corrupt data, over a limit, or an
            unsupported array shape or mode; the message says what to do.
    """
    limits = ImageLimits.from_env() if limits is None else limits
    if max_pixels is not None:
        if int(max_pixels) <= 0:
            raise ValueError(f"max_pixels must be positive, got {max_pixels}")
        limits = replace(limits, pixels=int(max_pixels))
    if source is None:
        raise ImageError("no image given; upload an image file")
    if isinstance(source, np.ndarray):
        height, width = source.shape[:2] if source.ndim >= 2 else (0, 0)
        _check_size(int(width), int(height), "L", limits, "the image array")
        return to_rgb(_from_array(source))
    if isinstance(source, PIL.Image.Image):
        _check_size(*source.size, source.mode, limits, "the image")
        try:
            source.load()
        except _DECODE_ERRORS as err:
            raise ImageError("the image is truncated or corrupt; re-export it") from err
        return to_rgb(PIL.ImageOps.exif_transpose(_shrink(source)))
    what = _describe(source)
    fp, close = _open(source, what)
    try:
        image = _decode(fp, limits, what)
    finally:
        if close:
            fp.close()
    rgb = to_rgb(image)
    logger.debug("loaded %s: %s %s -> RGB", what, image.mode, image.size)
    return rgb
