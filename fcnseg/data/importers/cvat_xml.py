"""CVAT "CVAT for images 1.1" exports: annotations.xml (boxes, polygons, ellipses, masks per image) -> items with label maps.

Layout (CVAT's export, unzipped; the images are in images/ when exported with them, else ``--images``)::

    annotations.xml    # <meta> with the task's labels, then <image name= width= height=> with its shapes
    images/<name>

Shapes with an area are drawn: ``box`` (``xtl ytl xbr ybr``, turned by ``rotation`` degrees),
``polygon`` (``points="x1,y1;x2,y2;..."``), ``ellipse`` (``cx cy rx ry``) and ``mask`` (``rle`` run
lengths alternating 0s and 1s, starting with 0s, row by row over the box ``left top width height``).
``polyline``, ``points``, ``cuboid``, ``skeleton`` and ``tag`` cover no area: counted and left out.
Overlaps: ``order`` paints by ``z_order``, then document order. Classes: the task's labels and those
the shapes use, in the class order of every import (:mod:`fcnseg.data.importers.class_list`).
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ElementTree
from collections import Counter
from functools import partial
from pathlib import Path

import numpy as np

from fcnseg.data.importers.class_list import clean_name, import_classes
from fcnseg.data.importers.items import Export, ImportOptions, Item
from fcnseg.data.importers.raster import Bitmap, Drawing, Ellipse, Polygon, Rectangle, Shape, draw_shapes
from fcnseg.data.scan import Problem
from fcnseg.errors import DataError
from fcnseg.files import plural, read_text

ANNOTATIONS = "annotations.xml"
AREA_TAGS = ("box", "polygon", "ellipse", "mask")
IGNORED_TAGS = ("polyline", "points", "cuboid", "skeleton", "tag")  # no area: nothing to paint


def find_xml(src: Path) -> Path:
    """``src`` itself, or ``src/annotations.xml``.

    Raises:
        DataError: neither exists.
    """
    if src.is_file():
        return src
    if (src / ANNOTATIONS).is_file():
        return src / ANNOTATIONS
    raise DataError(f"expected a CVAT for images 1.1 {ANNOTATIONS} (the file, or the unzipped export holding it)", path=src)


def load_xml(path: Path) -> ElementTree.Element:
    """The parsed XML's root ``<annotations>``.

    Raises:
        DataError: not UTF-8, not XML, or not a CVAT for images export.
    """
    text = read_text(path, what="CVAT XML")
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError as e:
        raise DataError(f"cannot be read as XML ({e})", path=path) from e
    if root.tag != "annotations":
        raise DataError(f"expected a CVAT for images 1.1 XML (root <annotations>), found <{root.tag}>", path=path)
    return root


def read_cvat_xml(src: Path, options: ImportOptions) -> Export:
    """Read a CVAT for images 1.1 export (the XML, or the unzipped folder holding it)."""
    path = find_xml(src)
    root = load_xml(path)
    findings: list[Problem] = []
    names = set()
    for where in ("meta/task/labels/label", "meta/project/labels/label", "meta/job/labels/label"):
        for label in root.iterfind(where):
            _add_name(names, label.findtext("name"), path, findings)
    for element in root.iterfind("image/*"):
        if element.tag in AREA_TAGS:
            _add_name(names, element.get("label"), path, findings, report=False)
    classes, index = import_classes(names, options.classes, where=str(path))
    folder = options.images or (path.parent / "images" if (path.parent / "images").is_dir() else path.parent)
    items = []
    for number, image in enumerate(root.iterfind("image")):
        file_name = image.get("name")
        if not file_name:
            findings.append(Problem(f"image[{number}]", str(path), "unreadable_annotation",
                                    f"<image> number {number} has no name; skipped"))
            continue
        stem = Path(file_name).stem
        draw = partial(_draw, list(image), index, overlap=options.overlap, name=stem, path=str(path))
        items.append(Item(stem, path, folder / file_name.replace("\\", "/"), _declared_size(image), draw))
    class_map = {f"label {name}": i for name, i in sorted(index.items(), key=lambda kv: (kv[1], kv[0]))}
    return Export(classes, items, class_map, findings)


def _add_name(names: set, name, path: Path, findings: list[Problem], report: bool = True) -> None:
    try:
        names.add(clean_name(name, str(path)))
    except DataError as e:
        if report:
            findings.append(Problem("labels", str(path), "bad_annotation", f"{e.reason}; label left out"))


def _declared_size(image: ElementTree.Element) -> tuple[int, int] | None:
    try:
        return int(image.get("height", "")), int(image.get("width", ""))
    except ValueError:
        return None


def _draw(elements: list, index: dict[str, int], height: int, width: int, *, overlap: str, name: str, path: str) -> Drawing:
    findings: list[Problem] = []
    drawable: list[tuple[int, Shape]] = []
    ignored: Counter = Counter()
    for number, element in enumerate(elements):
        what = f"{element.tag} {number} ({element.get('label')!r})"
        if element.tag in IGNORED_TAGS:
            ignored[element.tag] += 1
            continue
        if element.tag not in AREA_TAGS:
            continue  # attributes and other children of <image> that are not shapes
        try:
            label = clean_name(element.get("label"), what)
        except DataError as e:
            findings.append(Problem(name, path, "bad_shape", f"{e}; skipped"))
            continue
        try:
            geometry = _geometry(element)
            z_order = int(element.get("z_order", "0"))
        except (ValueError, TypeError) as e:
            findings.append(Problem(name, path, "bad_shape", f"{what}: {e}; skipped"))
            continue
        drawable.append((z_order, Shape(geometry, index[label], what)))
    if overlap == "order":
        drawable.sort(key=lambda pair: pair[0])  # stable: equal z_order keeps document order
    drawing = draw_shapes([shape for _, shape in drawable], height, width, overlap=overlap, name=name, path=path)
    drawing.findings[:0] = findings
    if ignored:
        listed = ", ".join(f"{n} {tag}" for tag, n in ignored.items())
        drawing.findings.append(Problem(name, path, "ignored_shape", f"{plural(sum(ignored.values()), 'shape')} without area left out ({listed})"))
    return drawing


def _number(element: ElementTree.Element, key: str) -> float:
    value = float(element.get(key, "nan"))
    if not math.isfinite(value):
        raise ValueError(f"attribute {key!r} is {element.get(key)!r}; expected a number")
    return value


def _geometry(element: ElementTree.Element):
    tag = element.tag
    if tag == "polygon":
        pairs = [pair.split(",") for pair in (element.get("points") or "").split(";") if pair.strip()]
        if any(len(pair) != 2 for pair in pairs):
            raise ValueError(f"points {element.get('points')!r:.80} are not 'x,y' pairs separated by ';'")
        return Polygon.from_points([[(float(x), float(y)) for x, y in pairs]])
    if tag == "box":
        x0, y0, x1, y1 = (_number(element, key) for key in ("xtl", "ytl", "xbr", "ybr"))
        rotation = float(element.get("rotation", "0"))
        if rotation % 360 == 0:
            return Rectangle(x0, y0, x1, y1)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        cos, sin = math.cos(math.radians(rotation)), math.sin(math.radians(rotation))
        corners = [(x - cx, y - cy) for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1))]
        return Polygon.from_points([[(cx + dx * cos - dy * sin, cy + dx * sin + dy * cos) for dx, dy in corners]])
    if tag == "ellipse":
        return Ellipse(*(_number(element, key) for key in ("cx", "cy", "rx", "ry")), float(element.get("rotation", "0")))
    # mask: run lengths over its box, row by row, starting with 0s
    left, top, box_width, box_height = (int(_number(element, key)) for key in ("left", "top", "width", "height"))
    counts = [int(v) for v in (element.get("rle") or "").split(",") if v.strip()]
    if box_width <= 0 or box_height <= 0 or any(c < 0 for c in counts) or sum(counts) != box_width * box_height:
        raise ValueError(f"mask runs cover {sum(counts)} pixels; expected its box {box_width} x {box_height} = {box_width * box_height}")
    values = np.zeros(len(counts), dtype=bool)
    values[1::2] = True
    return Bitmap(np.repeat(values, counts).reshape(box_height, box_width), top=top, left=left)
