"""Image files in: the one reader (any photo or scan to upright RGB uint8) and the one lister; RGB files out.

Training, evaluation, the data scan and prediction all read through :func:`read_image`, so a phone
JPEG with an EXIF orientation is seen the same way (upright) when it is trained on, scored and predicted.
"""

from __future__ import annotations

import io
import os
import threading
import warnings
from pathlib import Path
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from fcnseg.errors import DataError
from fcnseg.files import atomic_write

# Image file suffixes picked up in a folder, by every command and data set (case-insensitive).
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".gif")

# Pillow refuses images above 2 * Image.MAX_IMAGE_PIXELS (~179 MP) as "decompression bombs". Scans are
# legitimately larger, so fcnseg applies its own, explicit limit instead (about a 30000 x 30000 scan).
DEFAULT_MAX_PIXELS = 1_000_000_000

_PIL_LIMIT_LOCK = threading.Lock()

# What read_image reads: a file's path, or its bytes (or a binary file object) already in memory.
ImageSource = str | Path | bytes | bytearray | memoryview | BinaryIO


def is_image_file(name: str | Path) -> bool:
    """True for a visible file name with an image suffix (``IMAGE_SUFFIXES``)."""
    name = Path(name).name
    return not name.startswith(".") and Path(name).suffix.lower() in IMAGE_SUFFIXES


def list_images(folder: str | Path, recursive: bool = True) -> list[Path]:
    """Image files in ``folder`` (and below it when ``recursive``), sorted; hidden files and folders skipped.

    Raises:
        DataError: ``folder`` does not exist or is not a folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError("no such folder" if not folder.exists() else "not a folder", path=folder)
    if not recursive:
        with os.scandir(folder) as entries:  # one listing, not one stat per name
            return sorted(Path(e.path) for e in entries if is_image_file(e.name) and e.is_file())
    found = []
    for path in folder.rglob("*"):
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts[:-1]):
            continue
        if is_image_file(path.name) and path.is_file():
            found.append(path)
    return sorted(found)


def images_by_stem(folder: str | Path) -> dict[str, Path]:
    """File stem -> path for the image files directly in ``folder`` (the first by name on a clash); ``{}`` if absent."""
    if not Path(folder).is_dir():
        return {}
    found: dict[str, Path] = {}
    for path in list_images(folder, recursive=False):
        found.setdefault(path.stem, path)
    return found


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


class ImageTooLargeError(DataError):
    """The image has more pixels than the limit (a :class:`DataError`, so callers that catch that see it too)."""


def open_image(path: Path | BinaryIO, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open (lazily) with fcnseg's pixel limit in place of Pillow's decompression-bomb guard.

    Every reader of pictures goes through it (images here; mask PNGs in :mod:`fcnseg.data.palette` and
    the importers), so that a file whose header claims 40000 x 40000 pixels is refused before it is decoded.
    Raises:
        ImageTooLargeError: more pixels than ``max_pixels`` (``None`` or 0: no limit).
        OSError, ValueError, SyntaxError: Pillow cannot open the file (the caller words them).
    """
    with _PIL_LIMIT_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        saved = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None  # our own limit below
        try:
            image = Image.open(path)
        finally:
            Image.MAX_IMAGE_PIXELS = saved
    width, height = image.size
    if max_pixels and width * height > max_pixels:
        image.close()
        raise ImageTooLargeError(
            f"image is {width}x{height} = {width * height / 1e6:.0f} megapixels, more than the "
            f"limit of {max_pixels / 1e6:.0f} megapixels; raise it with --max-pixels (0 = no limit) "
            f"if the file is a genuine scan",
            path=path if isinstance(path, Path) else getattr(path, "name", None),
        )
    return image


def _read_error(path: Path | BinaryIO, e: Exception) -> DataError:
    if not isinstance(path, Path):  # bytes in memory: only emptiness can be told apart
        size = path.seek(0, io.SEEK_END)
        name = getattr(path, "name", None)
        if size == 0:
            return DataError("empty file (0 bytes)", path=name)
        if isinstance(e, UnidentifiedImageError):  # its message would show the object's repr, not a name
            return DataError("not an image file (no image format Pillow reads starts this way)", path=name)
        return DataError(f"cannot read the image ({type(e).__name__}: {e})", path=name)
    if isinstance(e, FileNotFoundError):
        return DataError("image file not found", path=path)
    if isinstance(e, IsADirectoryError):
        return DataError("is a folder, not an image file", path=path)
    try:
        if path.stat().st_size == 0:
            return DataError("empty file (0 bytes)", path=path)
    except OSError:
        pass
    return DataError(f"cannot read the image ({type(e).__name__}: {e})", path=path)


def read_image(path: ImageSource, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read a photo or scan as RGB uint8 ``[H, W, 3]``, upright (EXIF orientation applied).

    Greyscale, palette, RGBA, CMYK and 16-bit inputs are converted to 8-bit RGB.

    Args:
        path: the file's path, or its contents in memory (bytes or a binary file object, e.g. an
            upload); errors about in-memory contents name the object's ``.name`` if it has one.
        max_pixels: refuse images with more pixels than this (``None`` or 0: no limit). Replaces
            Pillow's decompression-bomb guard, which would refuse legitimately large scans.
    Raises:
        ImageTooLargeError: more pixels than ``max_pixels`` (a DataError).
        DataError: the file is missing, empty, not an image or truncated.
    """
    if isinstance(path, (bytes, bytearray, memoryview)):
        path = io.BytesIO(path)
    path = path if hasattr(path, "read") else Path(path)
    try:
        with open_image(path, max_pixels) as image:
            image.load()
            image = ImageOps.exif_transpose(image)
            return np.array(_to_uint8_rgb(image))  # writable and contiguous, for torch.from_numpy
    except DataError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise _read_error(path, e) from e


def image_size(path: str | Path, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[int, int]:
    """``(height, width)`` of the image as :func:`read_image` returns it (EXIF orientation applied).

    Decodes the whole file, so that a truncated one is found here rather than mid-training.
    Raises:
        DataError: as :func:`read_image`.
    """
    path = Path(path)
    try:
        with open_image(path, max_pixels) as image:
            image.load()
            width, height = image.size
            orientation = image.getexif().get(0x0112, 1)  # EXIF Orientation
    except DataError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise _read_error(path, e) from e
    # Orientations 5-8 turn the picture by 90 degrees: read_image returns it with sides swapped.
    return (width, height) if orientation in (5, 6, 7, 8) else (height, width)


def save_rgb(image: np.ndarray, path: str | Path, quality: int = 90) -> None:
    """Write an RGB uint8 image (JPEG or PNG by suffix), atomically."""
    kwargs = {"quality": quality} if Path(path).suffix.lower() in (".jpg", ".jpeg") else {}
    atomic_write(path, lambda tmp: Image.fromarray(image).save(tmp, **kwargs))
