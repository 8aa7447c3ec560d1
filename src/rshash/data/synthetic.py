"""The ``demo`` dataset: synthetic aerial-like tiles, generated offline.

Each class is a pair (object shape, ground texture): five shapes (disc,
square, triangle, ring, cross) x two textures (oriented stripes, speckle)
give ten classes. Colours, the number, size and position of the objects,
the stripe angle and the noise vary at random per image and are shared by
all classes, so the nuisance factors dominate an unsupervised embedding
while a supervised hash can learn the class factors.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SHAPES = ("disc", "square", "triangle", "ring", "cross")
TEXTURES = ("stripes", "speckle")


def class_names(n_classes: int) -> list[str]:
    return [f"{SHAPES[c % len(SHAPES)]}_{TEXTURES[(c // len(SHAPES)) % len(TEXTURES)]}"
            for c in range(n_classes)]


def _random_colour(rng) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(30, 226, size=3))


def _ground(rng, texture: str, size: int) -> np.ndarray:
    base = np.array(_random_colour(rng), dtype=np.float32)
    other = np.array(_random_colour(rng), dtype=np.float32)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    if texture == "stripes":
        angle = rng.uniform(0, np.pi)
        period = rng.uniform(6, 14)
        t = 0.5 + 0.5 * np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period)
    else:
        t = (rng.random((size // 4, size // 4)) > 0.5).astype(np.float32)
        t = np.kron(t, np.ones((4, 4), np.float32))[:size, :size]
    img = base * (1 - t[..., None]) + other * t[..., None]
    return img


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
            pts = [(-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1), (-w, 1),
                   (-w, w), (-1, w), (-1, -w), (-w, -w)]
        c, s = np.cos(angle), np.sin(angle)
        draw.polygon([(cx + r * (x * c - y * s), cy + r * (x * s + y * c)) for x, y in pts],
                     fill=colour)


def render(label: int, rng: np.random.Generator, size: int = 96, noise: float = 25.0) -> Image.Image:
    """One tile of class ``label``."""
    shape = SHAPES[label % len(SHAPES)]
    texture = TEXTURES[(label // len(SHAPES)) % len(TEXTURES)]
    img = Image.fromarray(np.clip(_ground(rng, texture, size), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    colour = _random_colour(rng)
    for _ in range(int(rng.integers(1, 4))):
        r = rng.uniform(0.08, 0.2) * size
        cx, cy = rng.uniform(r, size - r, size=2)
        _draw_shape(draw, shape, cx, cy, r, colour, rng.uniform(0, 2 * np.pi))
    img = img.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0, 1.5))))
    arr = np.asarray(img, dtype=np.float32) + rng.normal(0, noise, size=(size, size, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def generate(out_dir: str | Path, n_classes: int = 10, per_class: int = 30, size: int = 96,
             seed: int = 0, noise: float = 25.0) -> Path:
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
