"""Image loading for the backbones (PIL + numpy; no torch)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from rshash import RshashError


def load_image(path: str | Path, size: int) -> np.ndarray:
    """Read an image as float32 [3, size, size] RGB in [0, 1].

    Any mode PIL reads (grayscale, RGBA, palette, CMYK, 16-bit grayscale)
    becomes RGB; alpha is dropped. The whole image is resized to size x size
    with bilinear filtering and no crop: aerial tiles have no centre.
    """
    try:
        with Image.open(path) as img:
            if img.mode.startswith("I;16"):  # 16-bit grayscale: keep the top 8 bits
                img = Image.fromarray((np.asarray(img, dtype=np.uint16) >> 8).astype(np.uint8))
            rgb = img.convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
            array = np.asarray(rgb, dtype=np.float32)
    # PIL reports corrupt data with many exception types (OSError, SyntaxError,
    # ValueError, EOFError, DecompressionBombError, ...): name the file for all.
    except Exception as exc:
        raise RshashError(f"cannot read image {path}: {type(exc).__name__}: {exc}") from exc
    return np.ascontiguousarray(array.transpose(2, 0, 1) / np.float32(255))
