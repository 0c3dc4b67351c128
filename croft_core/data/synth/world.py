"""A deterministic procedural world of coloured shapes in four styles.

Every image is a single shape drawn from :data:`CLASSES`, in one of
:data:`COLOURS`, at a random size, position and (small) rotation, rendered in
one of four styles that act as domains (:data:`DOMAINS`):

* ``photo``    -- filled, shaded shape with a soft shadow on a plain background;
* ``sketch``   -- jittery outline strokes on white paper, no fill;
* ``cartoon``  -- thick black outline, flat fill, coloured patterned background;
* ``painting`` -- textured canvas, noisy brush-like fill, blurred edges.

Shapes are small functions returning polygons in unit coordinates (``x`` right,
``y`` down, roughly inside ``[-1, 1]``); a style turns the shape's mask into
pixels. The whole pipeline draws its randomness from one
:class:`numpy.random.Generator`, so the same seed gives the same bytes.

:func:`caption` writes web-like captions that name the exact class (90%; otherwise a coarse name
such as "a polygon"), often the colour, and the style ("a sketch of ..."); they never use a
look-alike's name, so zero-shot recognises photos of every known shape. The pretraining stream
(:data:`PRETRAIN_DOMAIN_WEIGHTS`, :data:`PRETRAIN_CLASS_WEIGHTS`) is mostly photos, so the other
styles are covariate-shifted: that, not wrong words, is the headroom for fine-tuning, as in the
paper. :func:`lexicon` lists the naming words of the captions (shipped as ``embedded/lexicon.txt``).

Beside the shapes, the world has images that show **no shape at all** (:data:`NONSHAPES`: noise,
blank canvases, stripes, checkerboards, dots, gradients, scribbles, cluttered textures and scenes of
many small objects), captioned by their names (:func:`nonshape_caption`). Pretraining sees a modest
share of them (:data:`NONSHAPE_RATE`), so "noise" or "a blank canvas" are words the model knows and
the negative-label lexicon can name what is not a shape; the benchmarks use them as far-OOD test
images only.

The first ten classes (:data:`ID_CLASSES`) are the in-distribution classes of the
``shapes`` benchmarks: they mix polygons, curved shapes and symbols, and several have a look-alike
among the other (semantic-OOD) classes, rarer in pretraining (octagon for hexagon and circle,
ellipse for circle, x mark for cross, rectangle for square).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

Polygon = tuple[np.ndarray, bool]
"""An ``(N, 2)`` array of unit-coordinate points and ``True`` if it is a hole."""

# --------------------------------------------------------------------------
# Shapes: one small polygon generator per class.
# --------------------------------------------------------------------------


def _regular(n: int, radius: float = 1.0, phase: float = -math.pi / 2) -> np.ndarray:
    """Vertices of a regular ``n``-gon (first vertex at angle ``phase``)."""
    angles = phase + 2 * math.pi * np.arange(n) / n
    return np.stack([radius * np.cos(angles), radius * np.sin(angles)], axis=1)


def _disc(cx: float = 0.0, cy: float = 0.0, r: float = 1.0, n: int = 64) -> np.ndarray:
    """A circle of radius ``r`` around ``(cx, cy)`` as an ``n``-gon."""
    return _regular(n, r, 0.0) + np.array([cx, cy])


def _pts(*xy: tuple[float, float]) -> np.ndarray:
    return np.array(xy, dtype=float)


def _plus(arm: float = 0.3) -> np.ndarray:
    """An upright plus sign with half arm width ``arm`` and extent 1."""
    a = arm
    return _pts((-a, -1), (a, -1), (a, -a), (1, -a), (1, a), (a, a),
                (a, 1), (-a, 1), (-a, a), (-1, a), (-1, -a), (-a, -a))


def _rotate(points: np.ndarray, degrees: float) -> np.ndarray:
    t = math.radians(degrees)
    rot = np.array([[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]])
    return points @ rot.T


def shape_circle() -> list[Polygon]:
    return [(_disc(), False)]


def shape_square() -> list[Polygon]:
    return [(_pts((-0.8, -0.8), (0.8, -0.8), (0.8, 0.8), (-0.8, 0.8)), False)]


def shape_triangle() -> list[Polygon]:
    return [(_regular(3) + np.array([0.0, 0.25]), False)]


def shape_star() -> list[Polygon]:
    outer, inner = _regular(5, 1.0), _regular(5, 0.42, -math.pi / 2 + math.pi / 5)
    return [(np.stack([outer, inner], axis=1).reshape(-1, 2) + np.array([0.0, 0.1]), False)]


def shape_hexagon() -> list[Polygon]:
    return [(_regular(6, 1.0, 0.0), False)]


def shape_heart() -> list[Polygon]:
    t = np.linspace(0, 2 * math.pi, 96, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = -(13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t))
    return [(np.stack([x, y + 2.5], axis=1) / 16.5, False)]


def shape_cross() -> list[Polygon]:
    return [(_plus(0.3), False)]


def shape_arrow() -> list[Polygon]:
    return [(_pts((-1, -0.25), (0.2, -0.25), (0.2, -0.65), (1, 0),
                  (0.2, 0.65), (0.2, 0.25), (-1, 0.25)), False)]


def shape_crescent() -> list[Polygon]:
    return [(_disc(), False), (_disc(0.5, -0.15, 0.85), True)]


def shape_trapezoid() -> list[Polygon]:
    return [(_pts((-1, 0.6), (1, 0.6), (0.5, -0.6), (-0.5, -0.6)), False)]


def shape_pentagon() -> list[Polygon]:
    return [(_regular(5) + np.array([0.0, 0.1]), False)]


def shape_octagon() -> list[Polygon]:
    return [(_regular(8, 1.0, math.pi / 8), False)]


def shape_diamond() -> list[Polygon]:
    return [(_pts((0, -1), (0.6, 0), (0, 1), (-0.6, 0)), False)]


def shape_ring() -> list[Polygon]:
    return [(_disc(), False), (_disc(r=0.58), True)]


def shape_ellipse() -> list[Polygon]:
    return [(_disc() * np.array([1.0, 0.82]), False)]  # a flattened circle: near-OOD for "circle"


def shape_parallelogram() -> list[Polygon]:
    return [(_pts((-1, 0.55), (0.45, 0.55), (1, -0.55), (-0.45, -0.55)), False)]


def shape_semicircle() -> list[Polygon]:
    t = np.linspace(math.pi, 2 * math.pi, 48)
    return [(np.stack([np.cos(t), np.sin(t) + 0.4], axis=1), False)]


def shape_rectangle() -> list[Polygon]:
    return [(_pts((-1, -0.55), (1, -0.55), (1, 0.55), (-1, 0.55)), False)]


def shape_kite() -> list[Polygon]:
    return [(_pts((0, -1), (0.62, -0.35), (0, 1), (-0.62, -0.35)), False)]


def shape_lightning_bolt() -> list[Polygon]:
    return [(_pts((0.15, -1), (-0.5, 0.15), (0.0, 0.15), (-0.25, 1),
                  (0.55, -0.25), (0.05, -0.25), (0.4, -1)), False)]


def shape_x_mark() -> list[Polygon]:
    return [(_rotate(_plus(0.26), 45.0) * 1.05, False)]


def shape_chevron() -> list[Polygon]:
    return [(_pts((-0.6, -1), (-0.1, -1), (0.7, 0), (-0.1, 1), (-0.6, 1), (0.2, 0)), False)]


def shape_teardrop() -> list[Polygon]:
    t = np.linspace(0, 2 * math.pi, 96, endpoint=False)
    return [(np.stack([0.8 * np.sin(t) * np.sin(t / 2), -np.cos(t)], axis=1), False)]


def shape_flower() -> list[Polygon]:
    petals = [(_disc(0.55 * math.cos(a), 0.55 * math.sin(a), 0.42, 32), False)
              for a in -math.pi / 2 + 2 * math.pi * np.arange(5) / 5]
    return petals + [(_disc(r=0.4, n=32), False)]


SHAPES: dict[str, Callable[[], list[Polygon]]] = {
    # In-distribution classes of the ``shapes`` benchmark (first ten).
    "circle": shape_circle,
    "square": shape_square,
    "triangle": shape_triangle,
    "star": shape_star,
    "hexagon": shape_hexagon,
    "heart": shape_heart,
    "cross": shape_cross,
    "arrow": shape_arrow,
    "crescent": shape_crescent,
    "trapezoid": shape_trapezoid,
    # Semantic-OOD classes (each ID class has at least one look-alike here).
    "pentagon": shape_pentagon,
    "octagon": shape_octagon,
    "diamond": shape_diamond,
    "ring": shape_ring,
    "ellipse": shape_ellipse,
    "parallelogram": shape_parallelogram,
    "semicircle": shape_semicircle,
    "rectangle": shape_rectangle,
    "kite": shape_kite,
    "lightning bolt": shape_lightning_bolt,
    "x mark": shape_x_mark,
    "chevron": shape_chevron,
    "teardrop": shape_teardrop,
    "flower": shape_flower,
}

CLASSES: tuple[str, ...] = tuple(SHAPES)
"""All shape classes; the first ten are the ID classes of the benchmark."""

ID_CLASSES: tuple[str, ...] = CLASSES[:10]
OOD_CLASSES: tuple[str, ...] = CLASSES[10:]

DOMAINS: tuple[str, ...] = ("photo", "sketch", "cartoon", "painting")

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (210, 40, 40),
    "orange": (240, 140, 30),
    "yellow": (235, 205, 40),
    "green": (50, 160, 70),
    "blue": (40, 90, 210),
    "purple": (130, 60, 180),
    "pink": (235, 120, 170),
    "brown": (130, 85, 45),
    "teal": (30, 150, 150),
    "black": (35, 35, 35),
}
"""Colour names and their base RGB values."""

MAX_ROTATION = 15.0
"""Rotations stay small so that e.g. a cross never turns into an x mark."""

# --------------------------------------------------------------------------
# Geometry -> mask.
# --------------------------------------------------------------------------


def _place(rng: np.random.Generator) -> tuple[float, float, float, float, float]:
    """Random placement: ``(scale, cx, cy, rotation_degrees, aspect)`` in unit canvas."""
    scale = float(rng.uniform(0.45, 0.82))
    room = (1.0 - scale) * 0.9
    cx, cy = (float(v) for v in rng.uniform(-room, room, size=2))
    rotation = float(rng.uniform(-MAX_ROTATION, MAX_ROTATION))
    aspect = float(rng.uniform(0.9, 1.1))
    return scale, cx, cy, rotation, aspect


def shape_mask(class_name: str, rng: np.random.Generator, canvas: int) -> Image.Image:
    """Binary ("L", 0/255) mask of a randomly placed ``class_name`` on a square canvas."""
    scale, cx, cy, rotation, aspect = _place(rng)
    half = canvas / 2.0
    mask = Image.new("L", (canvas, canvas), 0)
    draw = ImageDraw.Draw(mask)
    for points, is_hole in SHAPES[class_name]():
        pts = _rotate(points * np.array([aspect, 1.0 / aspect]), rotation)
        pts = (pts * scale + np.array([cx, cy])) * half + half
        draw.polygon([(float(x), float(y)) for x, y in pts], fill=0 if is_hole else 255)
    return mask


# --------------------------------------------------------------------------
# Styles: one function per domain, mask + colour -> RGB array (float, 0..255).
# --------------------------------------------------------------------------


def _edges(mask: Image.Image, width: int) -> np.ndarray:
    """Outline of a mask as a float array in [0, 1] of roughly ``width`` pixels."""
    k = 2 * (width // 2) + 1
    outer = np.asarray(mask.filter(ImageFilter.MaxFilter(k)), dtype=np.float32)
    inner = np.asarray(mask.filter(ImageFilter.MinFilter(k)), dtype=np.float32)
    return (outer - inner) / 255.0


def _alpha(mask: Image.Image) -> np.ndarray:
    return np.asarray(mask, dtype=np.float32)[..., None] / 255.0


def _smooth_noise(rng: np.random.Generator, canvas: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [-1, 1] of shape ``(canvas, canvas)``."""
    coarse = rng.uniform(0, 255, size=(cells, cells)).astype(np.uint8)
    img = Image.fromarray(coarse).resize((canvas, canvas), Image.Resampling.BICUBIC)
    return np.asarray(img, dtype=np.float32) / 127.5 - 1.0


def _jitter_colour(rgb: tuple[int, int, int], rng: np.random.Generator, amount: float) -> np.ndarray:
    return np.clip(np.array(rgb, dtype=np.float32) + rng.normal(0, amount, size=3), 0, 255)


def style_photo(mask: Image.Image, rgb: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """Filled shape, lit by a linear gradient, soft shadow, plain light background."""
    c = mask.size[0]
    bg = np.full((c, c, 3), rng.uniform(205, 245), dtype=np.float32) + rng.normal(0, 6, size=3)
    shift = int(rng.integers(2, 6))
    shadow = mask.transform(mask.size, Image.Transform.AFFINE, (1, 0, -shift, 0, 1, -shift))
    shadow = _alpha(shadow.filter(ImageFilter.GaussianBlur(3)))
    bg = bg * (1.0 - 0.35 * shadow)
    yy, xx = np.mgrid[0:c, 0:c].astype(np.float32) / c - 0.5
    angle = rng.uniform(0, 2 * math.pi)
    light = 1.0 + 0.45 * (math.cos(angle) * xx + math.sin(angle) * yy)
    fill = _jitter_colour(rgb, rng, 8)[None, None, :] * light[..., None] + 12.0
    a = _alpha(mask)
    return bg * (1 - a) + fill * a


def style_sketch(mask: Image.Image, rgb: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """Two jittery pencil outlines on off-white paper, no fill."""
    c = mask.size[0]
    paper = np.full((c, c, 3), rng.uniform(240, 255), dtype=np.float32)
    paper += rng.normal(0, 3, size=(c, c, 1))
    pencil = 0.35 * np.array(rgb, dtype=np.float32) + 0.65 * 40.0
    ink = np.zeros((c, c), dtype=np.float32)
    for strength in (1.0, 0.55):
        dx, dy = (int(v) for v in rng.integers(-2, 3, size=2))
        moved = mask.transform(mask.size, Image.Transform.AFFINE, (1, 0, dx, 0, 1, dy))
        ink = np.maximum(ink, strength * _edges(moved, int(rng.integers(2, 4))))
    ink = ink[..., None] * rng.uniform(0.75, 1.0)
    return paper * (1 - ink) + pencil * ink


def _pattern(rng: np.random.Generator, canvas: int) -> np.ndarray:
    """Stripes or dots in two random pastel colours."""
    colours = rng.uniform(150, 255, size=(2, 3)).astype(np.float32)
    yy, xx = np.mgrid[0:canvas, 0:canvas].astype(np.float32)
    period = float(rng.uniform(10, 22))
    if rng.random() < 0.5:
        direction = rng.uniform(0, math.pi)
        phase = (math.cos(direction) * xx + math.sin(direction) * yy) / period
        which = (np.floor(phase) % 2).astype(np.float32)
    else:
        u, v = (xx % period) / period - 0.5, (yy % period) / period - 0.5
        which = ((u * u + v * v) < 0.09).astype(np.float32)
    return colours[0] * (1 - which[..., None]) + colours[1] * which[..., None]


def style_cartoon(mask: Image.Image, rgb: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """Flat fill with a thick black outline over a coloured patterned background."""
    c = mask.size[0]
    bg = _pattern(rng, c)
    width = int(rng.integers(3, 6)) * 2 + 1
    outline = _alpha(mask.filter(ImageFilter.MaxFilter(width)))
    img = bg * (1 - outline) + 20.0 * outline
    inner = _alpha(mask.filter(ImageFilter.MinFilter(3)))
    fill = _jitter_colour(rgb, rng, 4)[None, None, :]
    return img * (1 - inner) + fill * inner


def style_painting(mask: Image.Image, rgb: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """Textured canvas, noisy brush-like fill, blurred edges."""
    c = mask.size[0]
    canvas_rgb = rng.uniform(120, 230, size=3).astype(np.float32)
    bg = canvas_rgb + 35.0 * _smooth_noise(rng, c, 6)[..., None] + rng.normal(0, 10, size=(c, c, 1))
    brush = 40.0 * _smooth_noise(rng, c, 10)[..., None] + rng.normal(0, 14, size=(c, c, 3))
    fill = _jitter_colour(rgb, rng, 25)[None, None, :] + brush
    soft = mask.filter(ImageFilter.GaussianBlur(float(rng.uniform(1.5, 4.0))))
    a = _alpha(soft) * rng.uniform(0.75, 0.95)
    img = bg * (1 - a) + fill * a
    img = np.clip(img, 0, 255).astype(np.uint8)
    blurred = Image.fromarray(img).filter(ImageFilter.GaussianBlur(float(rng.uniform(0.8, 1.8))))
    return np.asarray(blurred, dtype=np.float32) + rng.normal(0, 8, size=(c, c, 3))


STYLES: dict[str, Callable[[Image.Image, tuple[int, int, int], np.random.Generator], np.ndarray]] = {
    "photo": style_photo,
    "sketch": style_sketch,
    "cartoon": style_cartoon,
    "painting": style_painting,
}

SUPERSAMPLE = 2
"""Images are drawn at twice the requested size and downsampled (anti-aliasing)."""


def render(
    class_name: str,
    domain: str,
    rng: np.random.Generator,
    size: int = 64,
    colour: str | None = None,
) -> Image.Image:
    """Render one ``class_name`` shape in ``domain`` style as an RGB image of ``size``².

    ``colour`` is one of :data:`COLOURS`; if ``None`` it is drawn from ``rng``.
    The result depends only on the arguments and the state of ``rng``.
    """
    if class_name not in SHAPES:
        raise KeyError(f"unknown shape class {class_name!r}; expected one of {CLASSES}")
    if domain not in STYLES:
        raise KeyError(f"unknown domain {domain!r}; expected one of {DOMAINS}")
    if colour is None:
        colour = random_colour(rng)
    canvas = size * SUPERSAMPLE
    mask = shape_mask(class_name, rng, canvas)
    pixels = STYLES[domain](mask, COLOURS[colour], rng)
    img = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="RGB")
    return img.resize((size, size), Image.Resampling.BOX)


def random_colour(rng: np.random.Generator) -> str:
    """A colour name drawn uniformly from :data:`COLOURS`."""
    names = tuple(COLOURS)
    return names[int(rng.integers(len(names)))]


# --------------------------------------------------------------------------
# Captions: the exact name most of the time, a coarse one sometimes.
# --------------------------------------------------------------------------

_ROUND = ("curved shape", "round shape", "rounded shape")
_POLY = ("polygon", "shape with straight edges", "geometric shape")
_FOUR = ("four-sided shape", "quadrilateral", "polygon")
_SYMBOL = ("symbol", "sign", "icon")
_POINTY = ("pointy shape", "spiky shape")

COARSE: dict[str, tuple[str, ...]] = {
    "circle": _ROUND,
    "square": _FOUR,
    "triangle": _POLY + _POINTY,
    "star": _POINTY + _SYMBOL,
    "hexagon": _POLY,
    "heart": _ROUND + _SYMBOL,
    "cross": _SYMBOL,
    "arrow": _SYMBOL + _POINTY,
    "crescent": _ROUND,
    "trapezoid": _FOUR,
    "pentagon": _POLY,
    "octagon": _POLY,
    "diamond": _FOUR + _POINTY,
    "ring": _ROUND,
    "ellipse": _ROUND,
    "parallelogram": _FOUR,
    "semicircle": _ROUND,
    "rectangle": _FOUR,
    "kite": _FOUR + _POINTY,
    "lightning bolt": _SYMBOL + _POINTY,
    "x mark": _SYMBOL,
    "chevron": _SYMBOL + _POINTY,
    "teardrop": _ROUND,
    "flower": _ROUND + _SYMBOL,
}
"""Coarse, web-caption-like names of each class."""

NAME_RATE = 0.9
"""How often a caption names the exact class (otherwise a coarse name from :data:`COARSE`).

Every class, ID or not, is named by its own word: captions never use a look-alike's name, so a
photo of any known shape is named correctly zero-shot. The headroom for fine-tuning comes from the
styles (see :data:`PRETRAIN_DOMAIN_WEIGHTS`), not from wrong words.
"""

TEMPLATES: dict[str, tuple[str, ...]] = {
    "photo": ("a photo of {a}.", "{a}.", "a picture of {a}.", "a close-up photo of {a}.",
              "{a} on a plain background.", "a photo showing {a}."),
    "sketch": ("a sketch of {a}.", "a pencil drawing of {a}.", "a line drawing of {a}.",
               "a doodle of {a}."),
    "cartoon": ("a cartoon of {a}.", "a clipart of {a}.", "an illustration of {a}.",
                "a cartoon {n}."),
    "painting": ("a painting of {a}.", "an oil painting of {a}.", "a watercolour of {a}.",
                 "an artwork of {a}."),
}
"""Caption templates per domain: ``{a}`` is "a/an + noun phrase", ``{n}`` the bare phrase."""

MISNAMES: dict[str, tuple[float, tuple[str, ...]]] = {}
"""Empty: captions no longer use look-alike names (kept so older importers keep working)."""

COLOUR_RATE: dict[str, float] = {"photo": 0.5, "sketch": 0.1, "cartoon": 0.3, "painting": 0.2}
"""How often a caption names the colour, per style."""

PRETRAIN_CLASS_WEIGHTS: tuple[float, ...] = tuple(
    (1.0 if c in ID_CLASSES else 0.5) / (len(ID_CLASSES) + 0.5 * len(OOD_CLASSES)) for c in CLASSES)
"""Class mix of the pretraining stream over :data:`CLASSES`: the unseen shapes are rarer concepts
(half as frequent as an ID class), so their look-alikes among the ID classes stay close to them."""

PRETRAIN_DOMAIN_WEIGHTS: tuple[float, ...] = (0.85, 0.05, 0.05, 0.05)
"""Style mix of the pretraining stream over :data:`DOMAINS`: mostly photos, as web data is.

The other styles are seen rarely, so they are covariate-shifted for the pretrained model: it knows
the shapes but recognises them worse in sketches, cartoons and paintings.
"""


def _with_article(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" or phrase.startswith("x ") else "a ") + phrase


def caption_name(class_name: str, rng: np.random.Generator) -> str:
    """The noun a caption uses for ``class_name``: its exact name, sometimes a coarse one."""
    if rng.random() < NAME_RATE:
        return class_name
    coarse = COARSE[class_name]
    return coarse[int(rng.integers(len(coarse)))]


def caption(class_name: str, domain: str, colour: str, rng: np.random.Generator) -> str:
    """A web-like caption for a ``colour`` ``class_name`` rendered in ``domain`` style."""
    noun = caption_name(class_name, rng)
    phrase = f"{colour} {noun}" if rng.random() < COLOUR_RATE[domain] else noun
    templates = TEMPLATES[domain]
    template = templates[int(rng.integers(len(templates)))]
    return template.format(a=_with_article(phrase), n=phrase)


def lexicon() -> tuple[str, ...]:
    """Every word or phrase the pretraining captions use to name a thing, first-seen order.

    The class names (ID and unseen), the coarse names of :data:`COARSE`, then the names of the
    non-shape kinds (:data:`NONSHAPE_NAMES`); the shipped
    ``embedded/lexicon.txt`` is this list, one entry per line.
    """
    coarse = [name for names in COARSE.values() for name in names]
    nonshape = [name for names in NONSHAPE_NAMES.values() for name in names]
    return tuple(dict.fromkeys([*CLASSES, *coarse, *nonshape]))


# --------------------------------------------------------------------------
# Non-shapes: images that show no shape at all (noise, blank canvases, patterns, clutter).
# --------------------------------------------------------------------------


def _two_colours(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0, 255, size=(2, 3)).astype(np.float32)


def _mix(which: np.ndarray, colours: np.ndarray) -> np.ndarray:
    return colours[0] * (1 - which[..., None]) + colours[1] * which[..., None]


def nonshape_noise(rng: np.random.Generator, c: int) -> np.ndarray:
    """Pixel noise: uniform or Gaussian, colour or grey, fine or blocky."""
    block = int(rng.choice([1, 1, 2, 4, 8]))
    n = c // block
    channels = 3 if rng.random() < 0.6 else 1
    if rng.random() < 0.5:
        px = rng.uniform(0, 255, size=(n, n, channels))
    else:
        px = rng.normal(rng.uniform(60, 200), rng.uniform(20, 70), size=(n, n, channels))
    px = np.repeat(np.repeat(px, block, axis=0), block, axis=1)
    return np.broadcast_to(px, (c, c, 3)).astype(np.float32)


def nonshape_blank(rng: np.random.Generator, c: int) -> np.ndarray:
    """A blank or near-blank canvas: one flat colour, sometimes a faint grain or vignette."""
    base = rng.uniform(0, 255) if rng.random() < 0.5 else rng.uniform(0, 255, size=3)
    img = np.zeros((c, c, 3), dtype=np.float32) + np.asarray(base, dtype=np.float32)
    if rng.random() < 0.5:
        img += rng.normal(0, rng.uniform(1, 6), size=(c, c, 1))
    if rng.random() < 0.3:
        yy, xx = np.mgrid[0:c, 0:c].astype(np.float32) / c - 0.5
        img *= (1.0 - rng.uniform(0.1, 0.4) * (xx * xx + yy * yy))[..., None]
    return img


def nonshape_stripes(rng: np.random.Generator, c: int) -> np.ndarray:
    """Straight stripes of two colours at a random angle and period."""
    yy, xx = np.mgrid[0:c, 0:c].astype(np.float32)
    direction = rng.uniform(0, math.pi)
    period = float(rng.uniform(6, 40))
    phase = (math.cos(direction) * xx + math.sin(direction) * yy) / period + rng.uniform(0, 1)
    which = (np.floor(phase) % 2).astype(np.float32)
    return _mix(which, _two_colours(rng))


def nonshape_checks(rng: np.random.Generator, c: int) -> np.ndarray:
    """A checkerboard of two colours, sometimes slightly rotated."""
    pts = np.mgrid[0:c, 0:c].astype(np.float32).reshape(2, -1).T
    pts = _rotate(pts - c / 2, float(rng.uniform(-20, 20))) + c / 2
    period = float(rng.uniform(8, 40))
    which = ((np.floor(pts[:, 0] / period) + np.floor(pts[:, 1] / period)) % 2).reshape(c, c)
    return _mix(which.astype(np.float32), _two_colours(rng))


def nonshape_dots(rng: np.random.Generator, c: int) -> np.ndarray:
    """Polka dots on a grid or many dots scattered at random."""
    colours = _two_colours(rng)
    img = Image.fromarray(np.broadcast_to(colours[0], (c, c, 3)).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    radius = float(rng.uniform(2, 8))
    if rng.random() < 0.5:
        period = radius * rng.uniform(2.5, 4.0)
        centres = [(x, y) for x in np.arange(period / 2, c, period) for y in np.arange(period / 2, c, period)]
    else:
        centres = [tuple(p) for p in rng.uniform(0, c, size=(int(rng.integers(40, 160)), 2))]
    fill = tuple(int(v) for v in colours[1])
    for x, y in centres:
        draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=fill)
    return np.asarray(img, dtype=np.float32)


def nonshape_gradient(rng: np.random.Generator, c: int) -> np.ndarray:
    """A smooth linear or radial gradient between two colours."""
    yy, xx = np.mgrid[0:c, 0:c].astype(np.float32) / c - 0.5
    if rng.random() < 0.6:
        angle = rng.uniform(0, 2 * math.pi)
        t = math.cos(angle) * xx + math.sin(angle) * yy + 0.5
    else:
        cx, cy = rng.uniform(-0.5, 0.5, size=2)
        t = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2) * 1.4
    return _mix(np.clip(t, 0, 1).astype(np.float32), _two_colours(rng))


def nonshape_scribble(rng: np.random.Generator, c: int) -> np.ndarray:
    """Random wandering pen strokes on paper."""
    img = Image.new("RGB", (c, c), tuple(int(v) for v in rng.uniform(200, 255, size=3)))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(1, 5))):
        steps = rng.normal(0, c * 0.07, size=(int(rng.integers(8, 30)), 2))
        pts = np.clip(rng.uniform(0.25 * c, 0.75 * c, size=2) + np.cumsum(steps, axis=0), 0, c - 1)
        colour = tuple(int(v) for v in rng.uniform(0, 160, size=3))
        draw.line([tuple(p) for p in pts], fill=colour, width=int(rng.integers(1, 5)))
    return np.asarray(img, dtype=np.float32)


def nonshape_texture(rng: np.random.Generator, c: int) -> np.ndarray:
    """A cluttered texture: several octaves of coloured smooth noise."""
    img = np.zeros((c, c, 3), dtype=np.float32) + rng.uniform(60, 200, size=3).astype(np.float32)
    for cells in (4, 8, 16, 32):
        img += rng.uniform(15, 45) * np.stack([_smooth_noise(rng, c, cells) for _ in range(3)], axis=-1)
    return img + rng.normal(0, 6, size=(c, c, 3))


def nonshape_clutter(rng: np.random.Generator, c: int) -> np.ndarray:
    """A scene of many small random objects: blobs, boxes and lines in random colours."""
    img = Image.new("RGB", (c, c), tuple(int(v) for v in rng.uniform(80, 255, size=3)))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(20, 60))):
        x, y = rng.uniform(0, c, size=2)
        w, h = rng.uniform(2, c * 0.09, size=2)
        fill = tuple(int(v) for v in rng.uniform(0, 255, size=3))
        kind = rng.random()
        if kind < 0.4:
            draw.ellipse([x, y, x + w, y + h], fill=fill)
        elif kind < 0.8:
            draw.rectangle([x, y, x + w, y + h], fill=fill)
        else:
            draw.line([x, y, x + rng.uniform(-15, 15), y + rng.uniform(-15, 15)], fill=fill, width=2)
    return np.asarray(img, dtype=np.float32)


NONSHAPES: dict[str, Callable[[np.random.Generator, int], np.ndarray]] = {
    "noise": nonshape_noise,
    "blank canvas": nonshape_blank,
    "stripes": nonshape_stripes,
    "checkerboard": nonshape_checks,
    "dots": nonshape_dots,
    "gradient": nonshape_gradient,
    "scribble": nonshape_scribble,
    "texture": nonshape_texture,
    "clutter": nonshape_clutter,
}
"""Kinds of images that show no shape at all, by their name. They are the world's far-OOD: seen in
pretraining (:data:`NONSHAPE_RATE`) with captions that name them, never a class of a benchmark."""

NONSHAPE_KINDS: tuple[str, ...] = tuple(NONSHAPES)

NONSHAPE_NAMES: dict[str, tuple[str, ...]] = {
    "noise": ("noise", "random noise", "static"),
    "blank canvas": ("blank canvas", "blank image", "empty canvas"),
    "stripes": ("stripes", "striped pattern"),
    "checkerboard": ("checkerboard", "checkered pattern"),
    "dots": ("dots", "polka dots", "dotted pattern"),
    "gradient": ("gradient", "colour gradient"),
    "scribble": ("scribble", "scribbles"),
    "texture": ("texture", "blotchy texture"),
    "clutter": ("clutter", "many small objects"),
}
"""The words a caption uses for each non-shape kind (the first is its name)."""

NONSHAPE_TEMPLATES: tuple[str, ...] = (
    "{n}.", "a photo of {n}.", "a photo of {a}.", "an image of {n}.", "a picture of {a}.",
    "just {n}.", "{n}, no shape.")
"""Caption templates of a non-shape image (``{a}`` with an article, ``{n}`` bare)."""

NONSHAPE_RATE = 0.1
"""Share of non-shape images in the pretraining stream."""


def render_nonshape(kind: str, rng: np.random.Generator, size: int = 64) -> Image.Image:
    """Render one non-shape image of ``kind`` (one of :data:`NONSHAPE_KINDS`) as an RGB ``size``² image."""
    if kind not in NONSHAPES:
        raise KeyError(f"unknown non-shape kind {kind!r}; expected one of {NONSHAPE_KINDS}")
    pixels = NONSHAPES[kind](rng, size * SUPERSAMPLE)
    img = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="RGB")
    return img.resize((size, size), Image.Resampling.BOX)


def nonshape_caption(kind: str, rng: np.random.Generator) -> str:
    """A caption naming the non-shape ``kind`` ("stripes.", "a photo of random noise.")."""
    names = NONSHAPE_NAMES[kind]
    name = names[int(rng.integers(len(names)))]
    template = NONSHAPE_TEMPLATES[int(rng.integers(len(NONSHAPE_TEMPLATES)))]
    return template.format(a=_with_article(name), n=name)


def sample_nonshape(rng: np.random.Generator, size: int = 64) -> tuple[Image.Image, str, str]:
    """Draw one ``(image, caption, kind)`` non-shape example, the kind uniform over :data:`NONSHAPE_KINDS`."""
    kind = NONSHAPE_KINDS[int(rng.integers(len(NONSHAPE_KINDS)))]
    image = render_nonshape(kind, rng, size)
    return image, nonshape_caption(kind, rng), kind


def sample(
    rng: np.random.Generator,
    size: int = 64,
    class_name: str | None = None,
    domain: str | None = None,
    domain_weights: tuple[float, ...] | None = None,
    class_weights: tuple[float, ...] | None = None,
) -> tuple[Image.Image, str, str, str, str]:
    """Draw one ``(image, caption, class_name, domain, colour)`` example from the world.

    ``domain_weights`` / ``class_weights`` are probabilities over :data:`DOMAINS` / :data:`CLASSES`;
    ``None`` draws uniformly.
    """
    if class_name is None:
        class_name = (CLASSES[int(rng.integers(len(CLASSES)))] if class_weights is None
                      else CLASSES[int(rng.choice(len(CLASSES), p=class_weights))])
    if domain is None:
        domain = DOMAINS[int(rng.choice(len(DOMAINS), p=domain_weights))]
    colour = random_colour(rng)
    image = render(class_name, domain, rng, size=size, colour=colour)
    return image, caption(class_name, domain, colour, rng), class_name, domain, colour
