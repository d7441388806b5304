"""labelme: one JSON per image (polygons, rectangles, circles, masks) read into items with label maps; label maps written as such JSONs.

Classes: background 0, then the labels of shapes with an area sorted alphabetically (case-insensitive),
or a class file (``ImportOptions.classes``) fixing the order (see :mod:`fcnseg.annotations.class_list`).
Labels ``_background_``/``background`` paint 0 and ``__ignore__`` paints 255, as in
labelme's labels.txt. Lines, points and line strips cover no area: they are counted and left out.
The image is the JSON's embedded ``imageData`` when present (as labelme itself reads it), else
``imagePath`` relative to the JSON.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import os
from collections import Counter
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from fcnseg.annotations.class_list import clean_name, import_classes
from fcnseg.annotations.writing import ExportOptions, LabelledImage, bounding_box, class_masks, label_name, polygon_pieces, rounded
from fcnseg.annotations.items import Export, ImportOptions, Item
from fcnseg.annotations.raster import (
    Bitmap,
    Circle,
    Drawing,
    Polygon,
    Rectangle,
    Shape,
    draw_shapes,
)
from fcnseg.data.scan import Problem
from fcnseg.errors import DataError
from fcnseg.files import atomic_write_text, plural, read_text, write_json
from fcnseg.images import open_image

AREA_TYPES = ("polygon", "rectangle", "oriented_rectangle", "circle", "mask")
IGNORED_TYPES = ("line", "linestrip", "point", "points")  # no area: nothing to paint


def list_json(src: Path) -> list[Path]:
    """``src`` itself, or every ``*.json`` under the folder ``src`` (hidden folders skipped), sorted.

    Raises:
        DataError: ``src`` does not exist or holds no JSON file.
    """
    if src.is_file():
        return [src]
    if not src.is_dir():
        raise DataError("no such file or folder; expected a folder of labelme JSON files", path=src)
    found = sorted(p for p in src.rglob("*.json") if not any(part.startswith(".") for part in p.relative_to(src).parts))
    if not found:
        raise DataError("holds no labelme JSON file", path=src)
    return found


def read_labelme(src: Path, options: ImportOptions) -> Export:
    """Read a folder of labelme JSON files (or one file)."""
    findings: list[Problem] = []
    parsed: list[tuple[Path, dict]] = []
    for path in list_json(src):
        data = _load(path, findings)
        if data is not None:
            parsed.append((path, data))
    classes, index = import_classes(_area_labels(parsed), options.classes, where=str(src))
    items = []
    for path, data in parsed:
        draw = partial(_draw, data["shapes"], index, overlap=options.overlap, name=path.stem, path=str(path))
        items.append(Item(path.stem, path, _image_of(path, data), _declared_size(data), draw))
    class_map = {f"label {name}": i for name, i in sorted(index.items(), key=lambda kv: (kv[1], kv[0]))}
    return Export(classes, items, class_map, findings)


def _load(path: Path, findings: list[Problem]) -> dict | None:
    """The JSON without its imageData (kept as a flag; read again when the image is written)."""
    try:
        data = json.loads(read_text(path, what="labelme JSON"))
    except DataError as e:
        findings.append(Problem(path.stem, str(path), "unreadable_annotation", e.reason))
        return None
    except json.JSONDecodeError as e:
        findings.append(Problem(path.stem, str(path), "unreadable_annotation", f"cannot be read as JSON ({type(e).__name__}: {e})"))
        return None
    if not isinstance(data, dict) or not isinstance(data.get("shapes"), list):
        findings.append(Problem(path.stem, str(path), "unreadable_annotation", "expected a labelme JSON with a list 'shapes'"))
        return None
    data["imageData"] = bool(data.get("imageData"))
    return data


def _area_labels(parsed: list[tuple[Path, dict]]) -> set[str]:
    """The labels of the shapes that cover an area (a label drawn only as lines or points has no pixels: no class)."""
    labels = set()
    for path, data in parsed:
        for shape in data["shapes"]:
            if not isinstance(shape, dict) or (shape.get("shape_type") or "polygon") not in AREA_TYPES:
                continue
            try:
                labels.add(clean_name(shape.get("label"), str(path)))
            except DataError:
                continue  # reported as a bad shape when drawn
    return labels


def _image_of(path: Path, data: dict):
    if data["imageData"]:
        return partial(_embedded_image, path)
    image_path = data.get("imagePath")
    if isinstance(image_path, str) and image_path:
        return path.parent / image_path.replace("\\", "/")  # labelme on Windows writes backslashes
    return None


def _embedded_image(path: Path) -> bytes:
    """The bytes of the image file embedded (base64) in a labelme JSON's imageData."""
    try:
        return base64.b64decode(json.loads(read_text(path, what="labelme JSON"))["imageData"], validate=True)
    except (binascii.Error, ValueError, TypeError) as e:
        raise DataError(f"imageData is not base64 ({e})", path=path) from e


def _declared_size(data: dict) -> tuple[int, int] | None:
    height, width = data.get("imageHeight"), data.get("imageWidth")
    return (height, width) if isinstance(height, int) and isinstance(width, int) else None


def _draw(shapes: list, index: dict[str, int], height: int, width: int, *, overlap: str, name: str, path: str) -> Drawing:
    findings: list[Problem] = []
    drawable: list[Shape] = []
    ignored: Counter = Counter()
    for number, shape in enumerate(shapes):
        kind = (shape.get("shape_type") if isinstance(shape, dict) else None) or "polygon"  # labelme < 4 left it empty
        label = shape.get("label") if isinstance(shape, dict) else None
        what = f"shape {number} ({kind} {label!r})"
        if kind in IGNORED_TYPES:
            ignored[kind] += 1
            continue
        if kind not in AREA_TYPES:
            findings.append(Problem(name, path, "bad_shape", f"{what}: unknown shape_type {kind!r}; expected one of {', '.join(AREA_TYPES + IGNORED_TYPES)}; skipped"))
            continue
        try:
            cleaned = clean_name(label, what)
        except DataError as e:
            findings.append(Problem(name, path, "bad_shape", f"{e}; skipped"))
            continue
        if cleaned not in index:
            findings.append(Problem(name, path, "unknown_category", f"{what}: label {cleaned!r} is not in the class file; skipped"))
            continue
        try:
            geometry = _geometry(kind, shape)
        except DataError as e:  # a mask PNG beyond the pixel limit
            findings.append(Problem(name, path, "bad_shape", f"{what}: mask {e.reason}; skipped"))
            continue
        except (ValueError, TypeError, KeyError, OSError, SyntaxError, Image.DecompressionBombError) as e:
            findings.append(Problem(name, path, "bad_shape", f"{what}: {e}; skipped"))
            continue
        drawable.append(Shape(geometry, index[cleaned], what))
    drawing = draw_shapes(drawable, height, width, overlap=overlap, name=name, path=path)
    drawing.findings[:0] = findings
    if ignored:
        listed = ", ".join(f"{n} {kind}" for kind, n in ignored.items())
        drawing.findings.append(Problem(name, path, "ignored_shape", f"{plural(sum(ignored.values()), 'shape')} without area left out ({listed})"))
    return drawing


def _points(shape: dict, count: int | None = None) -> np.ndarray:
    points = np.asarray(shape.get("points"), dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 2 or not np.isfinite(points).all():
        raise ValueError(f"points must be [x, y] pairs of numbers, found {shape.get('points')!r:.80}")
    if count is not None and len(points) != count:
        raise ValueError(f"has {len(points)} points; expected {count}")
    return points


def _geometry(kind: str, shape: dict):
    if kind in ("polygon", "oriented_rectangle"):
        return Polygon.from_points([_points(shape)])
    if kind == "rectangle":
        points = _points(shape)  # two corners (labelme); any more: their bounding box
        if len(points) < 2:
            raise ValueError(f"has {plural(len(points), 'point')}; expected 2 corners")
        (x0, y0), (x1, y1) = points.min(0), points.max(0)
        return Rectangle(x0, y0, x1, y1)
    if kind == "circle":
        (cx, cy), (px, py) = _points(shape, 2)  # centre, a point on the circle
        return Circle(cx, cy, math.hypot(px - cx, py - cy))
    # mask: a base64 PNG of the box between two corners, pixel-aligned at the first (labelme truncates to ints)
    (x0, y0), _ = _points(shape, 2)
    encoded = shape.get("mask")
    if not isinstance(encoded, str) or not encoded:
        raise ValueError("a mask shape without its 'mask' PNG")
    with open_image(io.BytesIO(base64.b64decode(encoded))) as picture:  # the pixel limit of images
        bitmap = np.asarray(picture.convert("L")) > 0
    return Bitmap(bitmap, top=int(y0), left=int(x0))


LABELME_VERSION = "5.5.0"  # the file version written (labelme reads files of older and newer versions)


def write_labelme(images: list[LabelledImage], class_names: list[str], out: Path, options: ExportOptions) -> list[Path]:
    """Write ``out/<name>.json`` per image (labelme's own file, ``imagePath`` relative to it) and ``out/labels.txt``.

    Polygons (default): one ``polygon`` shape per region; a hole is a polygon labelled ``_background_``
    listed after its region, so that labelme's z-order (later on top) and fcnseg's import both paint it
    over the region. Masks: one ``mask`` shape per class (a PNG of its bounding box, labelme 5.3 and later).
    ``labels.txt`` (``__ignore__``, ``_background_``, then the classes) is labelme's ``--labels`` file and
    fcnseg import's ``--classes``.
    """
    written = []
    for image in images:
        labels = image.load()
        height, width = labels.shape
        target = out / f"{image.stem}.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        relative = os.path.relpath(image.image.absolute(), target.parent.absolute()).replace("\\", "/")
        document = {
            "version": LABELME_VERSION,
            "flags": {},
            "shapes": _labelme_shapes(labels, class_names, options),
            "imagePath": relative,
            "imageData": None,
            "imageHeight": height,
            "imageWidth": width,
        }
        write_json(document, target)
        written.append(target)
    names = ["__ignore__", "_background_"] + list(class_names[1:])
    atomic_write_text("".join(f"{name}\n" for name in names), out / "labels.txt")
    return written + [out / "labels.txt"]


def _labelme_shapes(labels: np.ndarray, class_names: list[str], options: ExportOptions) -> list[dict]:
    def shape(label: int, points, shape_type: str, **extra) -> dict:
        return {"label": label_name(class_names, label, "_background_"), "points": points, "group_id": None,
                "description": "", "shape_type": shape_type, "flags": {}, **extra}

    if (options.shapes or "polygon") == "mask":
        shapes = []
        for label, mask in class_masks(labels):
            top, left, bottom, right = bounding_box(mask)
            buffer = io.BytesIO()
            Image.fromarray(mask[top:bottom, left:right]).save(buffer, format="PNG")  # mode 1
            encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
            shapes.append(shape(label, [[left, top], [right - 1, bottom - 1]], "mask", mask=encoded))
        return shapes
    return [shape(piece.label, rounded(piece.ring), "polygon") for piece in polygon_pieces(labels, options)]
