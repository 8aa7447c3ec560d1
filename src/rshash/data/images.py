"""Image loading for the backbones (PIL + numpy; no torch).

One decoder, :func:`decode`, serves both the manifest step (which checks
every file cheaply before the heavy extraction job) and extraction, so a
file the manifest accepted is a file extraction can read. What is converted
and what is refused is listed in README ("Bad inputs").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from rshash import RshashError

# Smaller tiles carry almost nothing once resized to a backbone's input
# (224 px and up): refuse them rather than hash upsampled blur.
MIN_SIDE = 16


class TooLarge(RshashError):
    """An image over the pixel limit a caller gave (checked on the header)."""


def decode(path: str | Path, max_pixels: int | None = None) -> Image.Image:
    """Read the whole file and return it as an RGB PIL image.

    Grayscale, palette, CMYK, YCbCr and RGBA/LA become RGB (alpha is
    dropped); 16-bit and 32-bit integer grayscale keep their top 8 of 16
    bits. Refused with an RshashError naming the file: empty, truncated or
    non-image files, multi-page files, floating-point or other modes without
    a clear RGB meaning, images under MIN_SIDE pixels a side, and images over
    PIL's decompression-bomb limit (Image.MAX_IMAGE_PIXELS x 2) or, when given,
    over ``max_pixels`` (checked on the header, before any pixel is decoded: an
    upload to ``rshash serve`` gets a far lower limit than an archive).
    """
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise RshashError(f"cannot read image {path}: empty file (0 bytes)")
        with Image.open(path) as img:
            _check_shape(path, img)
            if max_pixels is not None and img.size[0] * img.size[1] > max_pixels:
                raise TooLarge(
                    f"cannot read image {path}: {img.size[0]}x{img.size[1]} pixels, "
                    f"more than the limit of {max_pixels} pixels"
                )
            img.load()  # decodes everything: a truncated file fails here
            return _to_rgb(path, img)
    except RshashError:
        raise
    # PIL reports corrupt data with many exception types (OSError, SyntaxError,
    # ValueError, EOFError, DecompressionBombError, ...): name the file for all.
    except Exception as exc:
        raise RshashError(f"cannot read image {path}: {type(exc).__name__}: {exc}") from exc


def _check_shape(path: Path, img: Image.Image) -> None:
    frames = getattr(img, "n_frames", 1)
    if frames > 1:
        raise RshashError(
            f"cannot read image {path}: {frames} pages/frames; expected one "
            "image per file (split multi-page TIFFs into single images)"
        )
    if min(img.size) < MIN_SIDE:
        raise RshashError(
            f"cannot read image {path}: {img.size[0]}x{img.size[1]} pixels, "
            f"smaller than {MIN_SIDE} px a side"
        )


def _to_rgb(path: Path, img: Image.Image) -> Image.Image:
    if img.mode.startswith("I;16") or img.mode == "I":  # 16-bit grayscale: top 8 bits
        values = np.clip(np.asarray(img, dtype=np.int64), 0, 65535) >> 8
        return Image.fromarray(values.astype(np.uint8)).convert("RGB")
    if img.mode in (
        "1",
        "L",
        "LA",
        "P",
        "PA",
        "RGB",
        "RGBA",
        "RGBX",
        "CMYK",
        "YCbCr",
        "La",
        "RGBa",
    ):
        return img.convert("RGB")
    raise RshashError(
        f"cannot read image {path}: pixel mode {img.mode!r} has no RGB "
        "meaning (expected 8/16-bit grayscale, palette, RGB(A) or CMYK)"
    )


def check_image(path: str | Path) -> None:
    """Raise RshashError naming ``path`` if extraction could not read it."""
    decode(path)


def load_image(path: str | Path | np.ndarray, size: int) -> np.ndarray:
    """Read an image as float32 [3, size, size] RGB in [0, 1].

    The whole image is resized to size x size with bilinear filtering and
    no crop: aerial tiles have no centre. ``path`` may also be the pixels
    themselves, uint8 (h, w, 3) (a chip of a scene, rshash.archive.scenes):
    resized exactly as the same pixels read from a file.
    """
    if isinstance(path, np.ndarray):
        rgb = Image.fromarray(np.ascontiguousarray(path, np.uint8), "RGB")
    else:
        rgb = decode(path)
    rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
    array = np.asarray(rgb, dtype=np.float32)
    return np.ascontiguousarray(array.transpose(2, 0, 1) / np.float32(255))
