"""Image files in and out for prediction: any photo or scan to RGB uint8, atomic writes of masks, overlays and arrays."""

from __future__ import annotations

import threading
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from fcnseg.atomic import atomic_write
from fcnseg.data.palette import colorize, write_mask_png
from fcnseg.errors import DataError

# File suffixes `fcnseg predict` picks up in a folder (case-insensitive).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".gif")

# Pillow refuses images above 2 * Image.MAX_IMAGE_PIXELS (~179 MP) as "decompression bombs". Scans are
# legitimately larger, so fcnseg applies its own, explicit limit instead (about a 30000 x 30000 scan).
DEFAULT_MAX_PIXELS = 1_000_000_000

_PIL_LIMIT_LOCK = threading.Lock()


def list_images(folder: str | Path) -> list[Path]:
    """Image files under ``folder`` (recursively), sorted, hidden files and folders skipped."""
    folder = Path(folder)
    found = []
    for path in folder.rglob("*"):
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts):
            continue
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            found.append(path)
    return sorted(found)


def _to_uint8_rgb(image: Image.Image) -> np.ndarray:
    """Any Pillow mode -> RGB uint8 ``[H, W, 3]``; 16-bit and float greys are rescaled, alpha is dropped."""
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        # 16-bit PNG/TIFF scans and 32-bit greys: map 0..65535 (or 0..max for float) to 0..255.
        grey = np.asarray(image).astype(np.float64)
        top = 65535.0 if mode != "F" else max(float(grey.max(initial=0.0)), 1.0)
        if mode == "F" and top <= 1.0:
            top = 1.0
        grey = np.clip(grey / top * 255.0, 0, 255).round().astype(np.uint8)
        return np.repeat(grey[:, :, None], 3, axis=2)
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if mode != "RGB":
        # RGBA/LA: the colour channels are kept as they are (alpha dropped, not composited);
        # CMYK, YCbCr, 1, L, P: Pillow's conversions.
        image = image.convert("RGB")
    return np.asarray(image)


def read_image(path: str | Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read a photo or scan as RGB uint8 ``[H, W, 3]``, upright (EXIF orientation applied).

    Greyscale, palette, RGBA, CMYK and 16-bit inputs are converted to 8-bit RGB.

    Args:
        max_pixels: refuse images with more pixels than this (``None`` or 0: no limit). Replaces
            Pillow's decompression-bomb guard, which would refuse legitimately large scans.
    Raises:
        DataError: the file is missing, not an image, truncated, or larger than ``max_pixels``.
    """
    path = Path(path)
    try:
        with _PIL_LIMIT_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            saved = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None  # our own limit below
            try:
                image = Image.open(path)
            finally:
                Image.MAX_IMAGE_PIXELS = saved
        with image:
            width, height = image.size
            if max_pixels and width * height > max_pixels:
                raise DataError(
                    f"{path}: image is {width}x{height} = {width * height / 1e6:.0f} megapixels, more than the "
                    f"limit of {max_pixels / 1e6:.0f} megapixels; raise it with --max-pixels (0 = no limit) "
                    f"if the file is a genuine scan"
                )
            image.load()
            image = ImageOps.exif_transpose(image)
            return np.ascontiguousarray(_to_uint8_rgb(image))
    except DataError:
        raise
    except FileNotFoundError as e:
        raise DataError(f"{path}: image file not found") from e
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise DataError(f"{path}: cannot read the image ({type(e).__name__}: {e})") from e


def save_mask(mask: np.ndarray, path: str | Path, palette: np.ndarray | None = None) -> None:
    """Write a label map ``[H, W]`` (values 0..255) as a palette PNG, atomically."""
    atomic_write(path, lambda tmp: write_mask_png(mask, tmp, palette))


def overlay(image: np.ndarray, mask: np.ndarray, palette: np.ndarray | None = None, alpha: float = 0.5) -> np.ndarray:
    """Blend class colours over an RGB uint8 image ``[H, W, 3]``; label 0 (background) stays unblended.

    Returns RGB uint8 ``[H, W, 3]``. Works in row blocks so that a 6000x4000 scan needs no float copy.
    """
    out = np.empty_like(image)
    step = 512
    for y in range(0, image.shape[0], step):
        img = image[y : y + step].astype(np.float32)
        labels = mask[y : y + step]
        colours = colorize(labels, palette).astype(np.float32)
        blended = np.where((labels > 0)[..., None], (1 - alpha) * img + alpha * colours, img)
        out[y : y + step] = np.clip(blended, 0, 255).round().astype(np.uint8)
    return out


def save_rgb(image: np.ndarray, path: str | Path, quality: int = 90) -> None:
    """Write an RGB uint8 image (JPEG or PNG by suffix), atomically."""
    kwargs = {"quality": quality} if Path(path).suffix.lower() in (".jpg", ".jpeg") else {}
    atomic_write(path, lambda tmp: Image.fromarray(image).save(tmp, **kwargs))
