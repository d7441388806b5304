"""Label-map colours and PNG I/O: the VOC palette, colourising and overlays, and reading palette, grey or RGB masks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from fcnseg.data.classes import IGNORE_INDEX, ClassInfo
from fcnseg.errors import DataError
from fcnseg.files import atomic_write, plural
from fcnseg.images import open_image

IGNORE_COLOUR = (224, 224, 192)  # the colour VOC's palette gives to label 255


def voc_palette(num_entries: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map (``VOCdevkit/VOCcode/VOClabelcolormap.m``) as uint8 ``[num_entries, 3]``.

    Entry ``i`` spreads the bits of ``i`` over the high bits of R, G and B; entry 255 is the
    cream-coloured ignore border ``(224, 224, 192)``.
    """
    palette = np.zeros((num_entries, 3), dtype=np.uint8)
    for i in range(num_entries):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette[i] = (r, g, b)
    return palette


def palette_for(info: ClassInfo | None) -> np.ndarray:
    """A 256-entry uint8 ``[256, 3]`` palette: the class file's colours if it has them, else VOC's."""
    palette = voc_palette(256)
    if info is not None and info.colours is not None:
        palette[: info.num_classes] = np.asarray(info.colours, dtype=np.uint8)
        palette[IGNORE_INDEX] = IGNORE_COLOUR
    return palette


def colorize(mask: np.ndarray, palette: np.ndarray | None = None) -> np.ndarray:
    """Integer label map ``[H, W]`` (values 0..255) -> RGB uint8 ``[H, W, 3]`` through ``palette``."""
    palette = voc_palette(256) if palette is None else palette
    return palette[np.asarray(mask).astype(np.int64) & 255]


def write_mask_png(mask: np.ndarray, path: str | Path, palette: np.ndarray | None = None) -> None:
    """Save an integer label map ``[H, W]`` with values 0..255 as a palette ("P" mode) PNG, as VOC does."""
    mask = np.asarray(mask)
    if mask.min(initial=0) < 0 or mask.max(initial=0) > 255:
        raise DataError(f"{path}: label values must lie in 0..255 to fit a palette PNG, found {mask.min()}..{mask.max()}")
    image = Image.fromarray(mask.astype(np.uint8), mode="P")
    image.putpalette((voc_palette(256) if palette is None else palette).astype(np.uint8).flatten().tolist())
    atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))


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


def read_mask_png(path: str | Path, colours: tuple[tuple[int, int, int], ...] | None = None) -> np.ndarray:
    """Read a label PNG as int64 ``[H, W]``.

    Palette ("P") PNGs give their indices (VOC's ``SegmentationClass``), grey PNGs their values.
    RGB PNGs are mapped through ``colours`` (index i has colour ``colours[i]``, the VOC ignore colour
    maps to 255); an RGB mask without colours, or with a colour not in the list, is an error.

    Raises:
        ImageTooLargeError: more pixels than images may have (``fcnseg.images.DEFAULT_MAX_PIXELS``), a DataError.
        DataError: the file is missing, empty ("empty file (0 bytes)", as for images) or cannot be
            decoded; the mode is not P/L/I/RGB; or an RGB mask cannot be mapped.
    """
    path = Path(path)
    try:
        with open_image(path) as image:  # the pixel limit of images: a header claiming 40000 x 40000 is refused
            image.load()
            mode = image.mode
            if mode in ("P", "L", "I", "I;16"):
                return np.asarray(image).astype(np.int64)
            if mode not in ("RGB", "RGBA"):
                raise DataError(f"mask PNG mode is {mode}; expected a palette, grey or RGB PNG", path=path)
            rgb = np.asarray(image.convert("RGB"))
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise _read_error(path, e) from e
    if colours is None:
        raise DataError("mask is an RGB PNG but the class file gives no colours to map it by", path=path)
    codes = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    table = {(r << 16) | (g << 8) | b: i for i, (r, g, b) in enumerate(colours)}
    r, g, b = IGNORE_COLOUR
    table.setdefault((r << 16) | (g << 8) | b, IGNORE_INDEX)
    unique, inverse = np.unique(codes, return_inverse=True)
    unknown = [int(u) for u in unique if int(u) not in table]
    if unknown:
        shown = ", ".join(f"({u >> 16}, {(u >> 8) & 255}, {u & 255})" for u in unknown[:5])
        raise DataError(f"{plural(len(unknown), 'colour')} not in the class file, e.g. {shown}", path=path)
    return np.array([table[int(u)] for u in unique], dtype=np.int64)[inverse].reshape(codes.shape)


def _read_error(path: Path, e: Exception) -> DataError:
    """A mask that cannot be opened, worded as :func:`fcnseg.images.read_image` words an image."""
    if isinstance(e, FileNotFoundError):
        return DataError("mask file not found", path=path)
    if isinstance(e, IsADirectoryError):
        return DataError("is a folder, not a mask file", path=path)
    try:
        if path.stat().st_size == 0:
            return DataError("empty file (0 bytes)", path=path)
    except OSError:
        pass
    return DataError(f"cannot read the mask ({type(e).__name__}: {e})", path=path)
