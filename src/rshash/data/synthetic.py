"""The ``demo`` dataset: synthetic aerial-like tiles, generated offline.

Class ``c`` is a pair (ground texture ``TEXTURES[c % 10]``, object shape
``SHAPES[(c + c // 10) % 5]``): ten textures (stripes, checker board, dot
lattice, speckle, concentric rings, grid, blobs, fine speckle, waves,
gradient) and five shapes (disc, square, triangle, ring, cross), so up to 50
classes, each pair once. The first ten differ in texture (and the demo sets
use those); from the eleventh on, classes that share a texture differ only in
their shape, a harder set (``benchmarks/convergence.py --classes 30``). A
texture keeps its orientation and period within its class; everything else is
a nuisance drawn at random per image and shared by all classes: the two ground
colours and the object colour, the texture's phase, the number, size, position
and rotation of the objects, a blur and pixel noise. The random colours dominate an
unsupervised embedding of ImageNet features (``lsh`` at 16 bits stays near
0.45 mAP@all) while a supervised hash learns texture and shape (``milan`` at
32 bits above 0.9); ``noise`` sets how hard it is.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SHAPES = ("disc", "square", "triangle", "ring", "cross")
TEXTURES = (
    "stripes",
    "checker",
    "dots",
    "speckle",
    "rings",
    "grid",
    "blobs",
    "finespeckle",
    "waves",
    "gradient",
)
MAX_CLASSES = len(TEXTURES) * len(SHAPES)
_ANGLE = 0.3  # texture orientation (radians), the same for every class
_PERIOD = 10.0  # texture period (pixels at 96 px), scaled with the tile size


def class_names(n_classes: int) -> list[str]:
    if not 2 <= n_classes <= MAX_CLASSES:
        raise ValueError(f"synthetic n_classes must be 2..{MAX_CLASSES}, got {n_classes}")
    return [f"{_shape(c)}_{_texture(c)}" for c in range(n_classes)]


def _texture(label: int) -> str:
    return TEXTURES[label % len(TEXTURES)]


def _shape(label: int) -> str:
    # block b = label // 10 shifts the shape by b: over the five blocks each texture
    # meets each shape once; block 0 is the original ten classes (shape label % 5)
    return SHAPES[(label + label // len(TEXTURES)) % len(SHAPES)]


def _random_colour(rng) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(30, 226, size=3))


def _pattern(rng, texture: str, size: int) -> np.ndarray:
    """A (size, size) pattern in [0, 1]; only its phase is random."""
    period = _PERIOD * size / 96
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    u0, v0 = rng.uniform(0, 4 * period, size=2)
    u = xx * np.cos(_ANGLE) + yy * np.sin(_ANGLE) + u0
    v = -xx * np.sin(_ANGLE) + yy * np.cos(_ANGLE) + v0
    if texture == "stripes":
        t = np.sin(2 * np.pi * u / period) > 0
    elif texture == "checker":
        t = (np.floor(u / (0.8 * period)) + np.floor(v / (0.8 * period))) % 2 > 0
    elif texture == "dots":
        p = 1.2 * period
        t = (u % p - p / 2) ** 2 + (v % p - p / 2) ** 2 < (0.3 * period) ** 2
    elif texture in ("speckle", "finespeckle"):
        cell = max(1, round(0.6 * period)) if texture == "speckle" else 1
        n = -(-size // cell)
        t = np.kron(rng.random((n, n)) > 0.5, np.ones((cell, cell), bool))[:size, :size]
    elif texture == "rings":
        cx, cy = rng.uniform(0, size, size=2)
        t = np.sin(2 * np.pi * np.hypot(xx - cx, yy - cy) / period) > 0
    elif texture == "grid":
        p = 1.4 * period
        t = (u % p < 0.25 * period) | (v % p < 0.25 * period)
    elif texture == "blobs":
        coarse = Image.fromarray((rng.random((6, 6)) * 255).astype(np.uint8))
        t = np.asarray(coarse.resize((size, size), Image.BICUBIC), np.float32) > 127.5
    elif texture == "waves":
        t = (
            np.sin(
                2
                * np.pi
                * (u + 0.4 * period * np.sin(2 * np.pi * v / (1.6 * period)))
                / (1.2 * period)
            )
            > 0
        )
    else:  # gradient
        return (u - u.min()) / (np.ptp(u) + 1e-6)
    return t.astype(np.float32)


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx, cy, r, colour, angle):
    box = [cx - r, cy - r, cx + r, cy + r]
    if shape == "disc":
        draw.ellipse(box, fill=colour)
    elif shape == "ring":
        draw.ellipse(box, outline=colour, width=max(2, int(r / 3)))
    else:
        if shape == "square":
            pts = [(-1, -1), (1, -1), (1, 1), (-1, 1)]
        elif shape == "triangle":
            pts = [(0, -1.2), (1.1, 0.9), (-1.1, 0.9)]
        else:  # cross
            w = 0.35
            pts = [
                (-w, -1),
                (w, -1),
                (w, -w),
                (1, -w),
                (1, w),
                (w, w),
                (w, 1),
                (-w, 1),
                (-w, w),
                (-1, w),
                (-1, -w),
                (-w, -w),
            ]
        c, s = np.cos(angle), np.sin(angle)
        draw.polygon(
            [(cx + r * (x * c - y * s), cy + r * (x * s + y * c)) for x, y in pts], fill=colour
        )


def render(
    label: int, rng: np.random.Generator, size: int = 96, noise: float = 15.0
) -> Image.Image:
    """One tile of class ``label``."""
    t = _pattern(rng, _texture(label), size)[..., None]
    base = np.array(_random_colour(rng), np.float32)
    other = 255 - base  # a contrasting second colour keeps the texture visible
    img = Image.fromarray(np.clip(base * (1 - t) + other * t, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    colour = _random_colour(rng)
    for _ in range(int(rng.integers(1, 4))):
        r = rng.uniform(0.08, 0.2) * size
        cx, cy = rng.uniform(r, size - r, size=2)
        _draw_shape(draw, _shape(label), cx, cy, r, colour, rng.uniform(0, 2 * np.pi))
    img = img.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0, 0.5))))
    arr = np.asarray(img, dtype=np.float32) + rng.normal(0, noise, size=(size, size, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def generate(
    out_dir: str | Path,
    n_classes: int = 10,
    per_class: int = 50,
    size: int = 96,
    seed: int = 0,
    noise: float = 15.0,
) -> Path:
    """Write ``out_dir/<class>/<class>_NN.png``; the same seed gives the same files."""
    out_dir = Path(out_dir)
    names = class_names(n_classes)
    for label, name in enumerate(names):
        folder = out_dir / name
        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng([seed, label])
        for i in range(per_class):
            render(label, rng, size=size, noise=noise).save(folder / f"{name}_{i:02d}.png")
    return out_dir
