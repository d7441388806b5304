"""CVAT's two exports of an image task, read into items with label maps and written from label maps:
"Segmentation mask 1.1" and "CVAT for images 1.1".

Segmentation mask 1.1 (``cvat-mask``; images in JPEGImages/ when exported with them, else ``--images``)::

    labelmap.txt                       # label:R,G,B:parts:actions  (optional: PASCAL VOC's labels if absent)
    ImageSets/Segmentation/<subset>.txt  # image names without extension
    SegmentationClass/<name>.png       # RGB (or palette) mask in the labelmap colours
    JPEGImages/<name>.jpg

Classes: background is 0 (the labelmap's ``background`` line, else colour 0,0,0 as CVAT draws
it), then the other labels sorted alphabetically (case-insensitive), or in the order of a class file
(see :mod:`fcnseg.annotations.class_list`); each keeps its labelmap colour. Colours not in the
labelmap are reported and become 255.

CVAT for images 1.1 (``cvat-xml``; images in images/ when exported with them, else ``--images``)::

    annotations.xml    # <meta> with the task's labels, then <image name= width= height=> with its shapes
    images/<name>

Shapes with an area are drawn: ``box`` (``xtl ytl xbr ybr``, turned by ``rotation`` degrees),
``polygon`` (``points="x1,y1;x2,y2;..."``), ``ellipse`` (``cx cy rx ry``) and ``mask`` (``rle`` run
lengths alternating 0s and 1s, starting with 0s, row by row over the box ``left top width height``).
``polyline``, ``points``, ``cuboid``, ``skeleton`` and ``tag`` cover no area: counted and left out.
Overlaps: ``order`` paints by ``z_order``, then document order. Classes: the task's labels and those
the shapes use, in the class order of every import (:mod:`fcnseg.annotations.class_list`).
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ElementTree
from collections import Counter
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from fcnseg.annotations.class_list import BACKGROUND, BACKGROUND_NAMES, clean_name, import_classes
from fcnseg.annotations.items import Export, ImportOptions, Item, SkippedItem
from fcnseg.annotations.raster import Bitmap, Drawing, Ellipse, Polygon, Rectangle, Shape, draw_shapes
from fcnseg.annotations.writing import ExportOptions, LabelledImage, bounding_box, class_masks, label_name, polygon_pieces, rounded
from fcnseg.data.base import read_split_file
from fcnseg.data.classes import IGNORE_INDEX, VOC_CLASSES, ClassInfo
from fcnseg.data.palette import IGNORE_COLOUR, voc_palette
from fcnseg.data.scan import Problem
from fcnseg.errors import DataError
from fcnseg.files import atomic_write, atomic_write_text, plural, read_text
from fcnseg.images import images_by_stem, open_image

LABELMAP, MASK_DIR, IMAGE_DIR, LIST_DIR = "labelmap.txt", "SegmentationClass", "JPEGImages", "ImageSets/Segmentation"
ANNOTATIONS = "annotations.xml"
AREA_TAGS = ("box", "polygon", "ellipse", "mask")
IGNORED_TAGS = ("polyline", "points", "cuboid", "skeleton", "tag")  # no area: nothing to paint

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


# CVAT for images 1.1 (annotations.xml)


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
        draw = partial(_draw_xml, list(image), index, overlap=options.overlap, name=stem, path=str(path))
        items.append(Item(stem, path, folder / file_name.replace("\\", "/"), _xml_size(image), draw))
    class_map = {f"label {name}": i for name, i in sorted(index.items(), key=lambda kv: (kv[1], kv[0]))}
    return Export(classes, items, class_map, findings)


def _add_name(names: set, name, path: Path, findings: list[Problem], report: bool = True) -> None:
    try:
        names.add(clean_name(name, str(path)))
    except DataError as e:
        if report:
            findings.append(Problem("labels", str(path), "bad_annotation", f"{e.reason}; label left out"))


def _xml_size(image: ElementTree.Element) -> tuple[int, int] | None:
    try:
        return int(image.get("height", "")), int(image.get("width", ""))
    except ValueError:
        return None


def _draw_xml(elements: list, index: dict[str, int], height: int, width: int, *, overlap: str, name: str, path: str) -> Drawing:
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
            geometry = _xml_geometry(element)
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


def _xml_number(element: ElementTree.Element, key: str) -> float:
    value = float(element.get(key, "nan"))
    if not math.isfinite(value):
        raise ValueError(f"attribute {key!r} is {element.get(key)!r}; expected a number")
    return value


def _xml_geometry(element: ElementTree.Element):
    tag = element.tag
    if tag == "polygon":
        pairs = [pair.split(",") for pair in (element.get("points") or "").split(";") if pair.strip()]
        if any(len(pair) != 2 for pair in pairs):
            raise ValueError(f"points {element.get('points')!r:.80} are not 'x,y' pairs separated by ';'")
        return Polygon.from_points([[(float(x), float(y)) for x, y in pairs]])
    if tag == "box":
        x0, y0, x1, y1 = (_xml_number(element, key) for key in ("xtl", "ytl", "xbr", "ybr"))
        rotation = float(element.get("rotation", "0"))
        if rotation % 360 == 0:
            return Rectangle(x0, y0, x1, y1)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        cos, sin = math.cos(math.radians(rotation)), math.sin(math.radians(rotation))
        corners = [(x - cx, y - cy) for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1))]
        return Polygon.from_points([[(cx + dx * cos - dy * sin, cy + dx * sin + dy * cos) for dx, dy in corners]])
    if tag == "ellipse":
        return Ellipse(*(_xml_number(element, key) for key in ("cx", "cy", "rx", "ry")), float(element.get("rotation", "0")))
    # mask: run lengths over its box, row by row, starting with 0s
    left, top, box_width, box_height = (int(_xml_number(element, key)) for key in ("left", "top", "width", "height"))
    counts = [int(v) for v in (element.get("rle") or "").split(",") if v.strip()]
    if box_width <= 0 or box_height <= 0 or any(c < 0 for c in counts) or sum(counts) != box_width * box_height:
        raise ValueError(f"mask runs cover {sum(counts)} pixels; expected its box {box_width} x {box_height} = {box_width * box_height}")
    values = np.zeros(len(counts), dtype=bool)
    values[1::2] = True
    return Bitmap(np.repeat(values, counts).reshape(box_height, box_width), top=top, left=left)


# Writers


def write_cvat_xml(images: list[LabelledImage], class_names: list[str], out: Path, options: ExportOptions) -> list[Path]:
    """Write ``out/annotations.xml`` in CVAT for images 1.1, the file CVAT's "Upload annotations" reads.

    Polygons (default): one ``<polygon>`` per region, ``z_order`` in painting order; a hole is a
    ``background`` polygon above its region and below what it holds. Masks: one ``<mask>`` per class
    (CVAT's run lengths over the class's bounding box). Image names are the relative names.
    """
    root = ElementTree.Element("annotations")
    ElementTree.SubElement(root, "version").text = "1.1"
    task = ElementTree.SubElement(ElementTree.SubElement(root, "meta"), "task")
    ElementTree.SubElement(task, "name").text = "fcnseg"
    ElementTree.SubElement(task, "size").text = str(len(images))
    ElementTree.SubElement(task, "mode").text = "annotation"
    labels_element = ElementTree.SubElement(task, "labels")
    colours = _colours(class_names)
    uses_background = False
    image_elements = []
    for image_id, image in enumerate(images):
        labels = image.load()
        height, width = labels.shape
        element = ElementTree.Element("image", id=str(image_id), name=(options.image_prefix or "") + image.name,
                                      width=str(width), height=str(height))
        if (options.shapes or "polygon") == "mask":
            for label, mask in class_masks(labels):
                top, left, bottom, right = bounding_box(mask)
                box = mask[top:bottom, left:right].ravel()
                change = np.flatnonzero(box[1:] != box[:-1]) + 1
                counts = np.diff(np.concatenate([[0], change, [box.size]])).tolist()
                if box[0]:
                    counts.insert(0, 0)  # runs start with 0s
                ElementTree.SubElement(element, "mask", label=class_names[label], source="auto", occluded="0",
                                       rle=", ".join(map(str, counts)), left=str(left), top=str(top),
                                       width=str(right - left), height=str(bottom - top), z_order="0")
        else:
            for z, piece in enumerate(polygon_pieces(labels, options)):
                uses_background |= piece.label == 0
                points = ";".join(f"{x},{y}" for x, y in rounded(piece.ring))
                ElementTree.SubElement(element, "polygon", label=label_name(class_names, piece.label), source="auto",
                                       occluded="0", points=points, z_order=str(z))
        image_elements.append(element)
    names = ([label_name(class_names, 0)] if uses_background else []) + list(class_names[1:])
    for name in names:
        label = ElementTree.SubElement(labels_element, "label")
        ElementTree.SubElement(label, "name").text = name
        ElementTree.SubElement(label, "color").text = colours.get(name, "#000000")
        ElementTree.SubElement(label, "type").text = "any"
        ElementTree.SubElement(label, "attributes")
    root.extend(image_elements)
    ElementTree.indent(root)
    target = out / ANNOTATIONS
    atomic_write_text('<?xml version="1.0" encoding="utf-8"?>\n' + ElementTree.tostring(root, encoding="unicode") + "\n", target)
    return [target]


def _colours(class_names: list[str]) -> dict[str, str]:
    palette = voc_palette(256)
    return {name: "#{:02x}{:02x}{:02x}".format(*palette[i]) for i, name in enumerate(class_names)}


def write_cvat_mask(images: list[LabelledImage], class_names: list[str], out: Path, options: ExportOptions) -> list[Path]:
    """Write a CVAT "Segmentation mask 1.1" folder: ``labelmap.txt``, ``SegmentationClass/<name>.png`` (the label
    map in the labelmap's colours, every pixel as it is) and ``ImageSets/Segmentation/default.txt``.

    Unlabelled pixels (255) are written in the VOC ignore colour, which fcnseg's import reads back as 255.
    """
    palette = voc_palette(256)
    lines = [f"{label_name(class_names, 0)}:0,0,0::"]
    lines += [f"{name}:{','.join(str(int(v)) for v in palette[i])}::" for i, name in enumerate(class_names) if i > 0]
    atomic_write_text("# label:color_rgb:parts:actions\n" + "\n".join(lines) + "\n", out / LABELMAP)
    colours = np.zeros((256, 3), dtype=np.uint8)
    colours[1 : len(class_names)] = palette[1 : len(class_names)]
    colours[IGNORE_INDEX] = IGNORE_COLOUR
    written = [out / LABELMAP]
    for image in images:
        target = out / MASK_DIR / f"{image.stem}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        rgb = colours[image.load().astype(np.uint8)]
        atomic_write(target, lambda tmp, rgb=rgb: Image.fromarray(rgb).save(tmp, format="PNG"))
        written.append(target)
    listing = out / LIST_DIR / "default.txt"
    listing.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text("".join(f"{image.stem}\n" for image in images), listing)
    return written + [listing]
