"""CVAT "Segmentation mask 1.1" exports: labelmap.txt + SegmentationClass/*.png (colours) -> items with class-index label maps.

Layout (CVAT's export; the images are in JPEGImages/ when exported with them, else ``--images``)::

    labelmap.txt                       # label:R,G,B:parts:actions  (optional: PASCAL VOC's labels if absent)
    ImageSets/Segmentation/<subset>.txt  # image names without extension
    SegmentationClass/<name>.png       # RGB (or palette) mask in the labelmap colours
    JPEGImages/<name>.jpg

Classes: background is 0 (the labelmap's ``background`` line, else colour 0,0,0 as CVAT draws
it), then the other labels sorted alphabetically (case-insensitive), or in the order of a class file
(see :mod:`fcnseg.data.importers.class_list`); each keeps its labelmap colour. Colours not in the
labelmap are reported and become 255.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from fcnseg.data.base import read_split_file
from fcnseg.data.classes import IGNORE_INDEX, VOC_CLASSES, ClassInfo
from fcnseg.data.importers.class_list import BACKGROUND, BACKGROUND_NAMES, clean_name, import_classes
from fcnseg.data.importers.items import Export, ImportOptions, Item, SkippedItem
from fcnseg.data.importers.raster import Drawing
from fcnseg.data.palette import IGNORE_COLOUR, voc_palette
from fcnseg.data.scan import Problem
from fcnseg.errors import DataError
from fcnseg.files import plural, read_text
from fcnseg.images import images_by_stem, open_image

LABELMAP, MASK_DIR, IMAGE_DIR, LIST_DIR = "labelmap.txt", "SegmentationClass", "JPEGImages", "ImageSets/Segmentation"

Colour = tuple[int, int, int]


def read_labelmap(path: Path) -> list[tuple[str, Colour]]:
    """``(name, (R, G, B))`` per line of a CVAT labelmap.txt (``name:R,G,B:parts:actions``), in file order.

    Raises:
        DataError: a line without a colour of three numbers 0..255, or a colour used twice.
    """
    lines = read_text(path, what="CVAT labelmap").splitlines()
    entries: list[tuple[str, Colour]] = []
    seen: dict[Colour, str] = {}
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split(":")
        try:
            colour = tuple(int(v) for v in fields[1].split(","))
        except (IndexError, ValueError):
            colour = ()
        if len(colour) != 3 or not all(0 <= v <= 255 for v in colour):
            raise DataError(f"line {number}: expected 'name:R,G,B::' with R, G, B in 0..255, found {line!r}", path=path)
        name = clean_name(fields[0], f"{path}:{number}")
        if colour in seen:
            raise DataError(f"line {number}: colour {colour} of {name!r} is also the colour of {seen[colour]!r}", path=path)
        seen[colour] = name  # type: ignore[index]
        entries.append((name, colour))  # type: ignore[arg-type]
    return entries


def labelmap_classes(
    entries: list[tuple[str, Colour]], where: str, class_file: Path | None = None
) -> tuple[ClassInfo, list[int]]:
    """Classes in the class order of every import (background 0, the names sorted; or ``class_file``'s),
    with the labelmap's colours, and per labelmap line its class index."""
    background = next((i for i, (name, _) in enumerate(entries) if name in BACKGROUND_NAMES), None)
    if background is None:
        taken = next((name for name, colour in entries if colour == (0, 0, 0)), None)
        if taken is not None:
            raise DataError(f"{where}: no background line, and 0,0,0 (CVAT's background colour) is the colour of {taken!r}")
    colours = {name: colour for name, colour in entries}
    colours[BACKGROUND] = (0, 0, 0) if background is None else entries[background][1]
    classes, index = import_classes([name for name, _ in entries], class_file, where=where, colours=colours)
    return classes, [index[name] for name, _ in entries]


def list_names(root: Path) -> list[str]:
    """Image names: the union of ImageSets/Segmentation/*.txt in order, else every SegmentationClass PNG."""
    lists = sorted((root / LIST_DIR).glob("*.txt")) if (root / LIST_DIR).is_dir() else []
    names: dict[str, None] = {}
    for path in lists:
        for name in read_split_file(path):
            names.setdefault(name, None)
    if lists:
        return list(names)
    return sorted(str(p.relative_to(root / MASK_DIR).with_suffix("")) for p in (root / MASK_DIR).rglob("*.png"))


def read_cvat(src: Path, options: ImportOptions) -> Export:
    """Read a CVAT Segmentation mask 1.1 export folder (unzipped)."""
    if not (src / MASK_DIR).is_dir():
        raise DataError(f"expected a CVAT 'Segmentation mask 1.1' export with {MASK_DIR}/ (and labelmap.txt)", path=src)
    if (src / LABELMAP).is_file():
        entries = read_labelmap(src / LABELMAP)
        where = str(src / LABELMAP)
    else:  # CVAT: "labelmap.txt - optional, required for non-Pascal VOC labels"
        palette = voc_palette(len(VOC_CLASSES))
        entries = [(name, tuple(int(v) for v in palette[i])) for i, name in enumerate(VOC_CLASSES)]
        where = f"{src} (no {LABELMAP}: the PASCAL VOC labels)"
    classes, line_index = labelmap_classes(entries, where, options.classes)
    table = {_code(colour): line_index[i] for i, (_, colour) in enumerate(entries)}
    background = next((colour for name, colour in entries if name in BACKGROUND_NAMES), (0, 0, 0))
    table.setdefault(_code(background), 0)  # no background line: CVAT's black background
    table.setdefault(_code(IGNORE_COLOUR), IGNORE_INDEX)
    class_map = {f"colour {r},{g},{b}": i for (_, (r, g, b)), i in zip(entries, line_index)}
    image_dir = options.images or src / IMAGE_DIR
    listings: dict[Path, dict[str, Path]] = {}
    items = []
    for name in list_names(src):
        folder = (image_dir / name).parent
        if folder not in listings:
            listings[folder] = images_by_stem(folder)
        stem = Path(name).name
        image = listings[folder].get(stem, folder / f"{stem}.jpg")
        mask = src / MASK_DIR / f"{name}.png"
        draw = partial(_draw, mask, table, line_index, name=stem)
        items.append(Item(stem, mask, image, None, draw))
    return Export(classes, items, class_map, [])


def _code(colour) -> int:
    r, g, b = (int(v) for v in colour)
    return (r << 16) | (g << 8) | b


def _draw(mask_path: Path, table: dict[int, int], line_index: list[int], height: int, width: int, *, name: str) -> Drawing:
    if not mask_path.is_file():
        raise SkippedItem("missing_mask", f"mask PNG not found for image {name}", path=mask_path)
    try:
        with open_image(mask_path) as picture:  # the pixel limit of images
            picture.load()
            mode = picture.mode
            values = np.asarray(picture.convert("RGB") if mode in ("P", "RGB", "RGBA", "PA", "LA") else picture)
    except DataError as e:
        raise SkippedItem("unreadable_mask", e.reason, path=mask_path) from e
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise SkippedItem("unreadable_mask", f"cannot be read ({type(e).__name__}: {e})", path=mask_path) from e
    if values.shape[:2] != (height, width):
        raise SkippedItem("size_mismatch", f"mask is {values.shape[1]}x{values.shape[0]} but its image is {width}x{height}", path=mask_path)
    findings: list[Problem] = []
    if values.ndim == 3:  # colours, as CVAT writes them
        codes = (values[..., 0].astype(np.int64) << 16) | (values[..., 1].astype(np.int64) << 8) | values[..., 2]
        unique, inverse, counts = np.unique(codes, return_inverse=True, return_counts=True)
        unknown = [(int(u), int(n)) for u, n in zip(unique, counts) if int(u) not in table]
        if unknown:
            shown = ", ".join(f"({u >> 16},{(u >> 8) & 255},{u & 255}) x{n}" for u, n in unknown[:5])
            findings.append(Problem(name, str(mask_path), "unknown_colour",
                                    f"{plural(len(unknown), 'colour')} not in the labelmap ({shown} pixels); those pixels set to 255"))
        lookup = np.array([table.get(int(u), IGNORE_INDEX) for u in unique], dtype=np.uint8)
    else:  # a one-channel mask: values are labelmap line numbers (0-based)
        unique, inverse = np.unique(values.astype(np.int64), return_inverse=True)
        unknown = [int(u) for u in unique if not (0 <= u < len(line_index)) and u != IGNORE_INDEX]
        if unknown:
            shown = ", ".join(str(u) for u in unknown[:5])
            findings.append(Problem(name, str(mask_path), "unknown_colour",
                                    f"values {shown} are not labelmap lines 0..{len(line_index) - 1}; those pixels set to 255"))
        lookup = np.array([line_index[u] if 0 <= u < len(line_index) else IGNORE_INDEX for u in unique], dtype=np.uint8)
    return Drawing(lookup[inverse].reshape(height, width), findings)
