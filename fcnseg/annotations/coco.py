"""COCO: instances JSON (polygons, RLE) or panoptic JSON + PNGs read into items with class-index label maps; label maps written as instances JSON.

Classes: background is 0, then the category names sorted alphabetically (case-insensitive), whatever
their ids, or in the order of a class file (see :mod:`fcnseg.annotations.class_list`; a category
named ``background`` is label 0). Crowd regions (``iscrowd: 1``) become the ignore label 255.
Instances overlap by ``ImportOptions.overlap`` (see :func:`fcnseg.annotations.raster.paint_order`).
Panoptic: every pixel belongs to one segment (``id = R + 256 G + 256^2 B`` in the PNG); id 0 (void)
and crowd segments become 255.
"""

from __future__ import annotations

import json
from collections import defaultdict
from functools import partial
from pathlib import Path

import numpy as np

from fcnseg.data.classes import IGNORE_INDEX
from fcnseg.annotations.class_list import clean_name, import_classes, special_label
from fcnseg.annotations.writing import (
    ExportOptions,
    LabelledImage,
    bounding_box,
    class_masks,
    label_name,
    polygon_pieces,
    rounded,
)
from fcnseg.annotations.items import Export, ImportOptions, Item, SkippedItem
from fcnseg.annotations.raster import Bitmap, Drawing, Polygon, Shape, draw_shapes
from fcnseg.data.scan import Problem
from fcnseg.errors import DataError
from fcnseg.files import plural, read_text, write_json
from fcnseg.images import read_image


def find_json(src: Path) -> Path:
    """The COCO JSON: ``src`` itself, or the one ``*.json`` in the folder ``src`` or its ``annotations/``.

    Raises:
        DataError: no JSON, or several to choose from.
    """
    if src.is_file():
        return src
    if not src.is_dir():
        raise DataError("no such file or folder; expected a COCO JSON file", path=src)
    for folder in (src, src / "annotations"):
        found = sorted(folder.glob("*.json"))
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            names = ", ".join(p.name for p in found[:5])
            raise DataError(f"holds {len(found)} JSON files ({names}); name the one to import", path=folder)
    raise DataError("holds no COCO JSON file (looked in it and in annotations/)", path=src)


def load_json(path: Path) -> dict:
    """The parsed COCO JSON, checked for its three lists.

    Raises:
        DataError: not JSON, or not a dict with lists ``images``, ``annotations`` and ``categories``.
    """
    text = read_text(path, what="COCO JSON")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"cannot be read as JSON ({type(e).__name__}: {e})", path=path) from e
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in ("images", "annotations", "categories")):
        found = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise DataError(f"expected a COCO JSON with lists 'images', 'annotations' and 'categories'; found {found}", path=path)
    return data


def category_classes(categories: list, path: Path, class_file: Path | None = None):
    """Class list and ``category id -> class index`` from COCO ``categories``, in the class order of every
    import (:mod:`fcnseg.annotations.class_list`: background 0, the names sorted; or ``class_file``'s)."""
    where = str(path)
    by_id: dict[int, str] = {}
    for number, category in enumerate(categories):
        if not isinstance(category, dict) or not is_id(category.get("id")):
            raise DataError(f"categories[{number}] has no integer 'id'", path=path)
        if category["id"] in by_id:
            raise DataError(f"category id {category['id']} is listed twice", path=path)
        name = clean_name(category.get("name"), f"{where}: category {category['id']}")
        twin = next((cid for cid, other in by_id.items() if other == name and special_label(name) is None), None)
        if twin is not None:
            raise DataError(f"category name {name!r} is listed twice (ids {twin} and {category['id']}); expected unique names", path=path)
        by_id[category["id"]] = name
    classes, by_name = import_classes(by_id.values(), class_file, where=where)
    return classes, {category_id: by_name[name] for category_id, name in by_id.items()}


def read_coco(src: Path, options: ImportOptions) -> Export:
    """Read a COCO instances or panoptic export (panoptic when annotations carry ``segments_info``)."""
    path = find_json(src)
    data = load_json(path)
    classes, index = category_classes(data["categories"], path, options.classes)
    class_map = {f"category {cid}": i for cid, i in index.items()}
    findings: list[Problem] = []
    images = _image_records(data["images"], path, findings)
    panoptic = any(isinstance(a, dict) and "segments_info" in a for a in data["annotations"])
    folders = _image_folders(path, options.images)
    if panoptic:
        masks = options.masks or path.with_suffix("")
        items = _panoptic_items(data["annotations"], images, index, path, masks, folders, findings)
    else:
        items = _instance_items(data["annotations"], images, index, path, folders, options.overlap, findings)
    return Export(classes, items, class_map, findings)


def _image_folders(path: Path, images: Path | None) -> list[Path]:
    """Where file names are looked up: ``--images``, else beside the JSON, in images/ beside it, or above
    it in images/ or in the folder its name ends with (``annotations/instances_val2017.json`` -> ``val2017/``)."""
    if images is not None:
        return [images]
    above = path.parent.parent
    return [path.parent, path.parent / "images", above / "images", above / path.stem.split("_")[-1], above]


def _find_image(file_name: str, folders: list[Path]) -> Path:
    relative = Path(file_name.replace("\\", "/"))
    for folder in folders:
        if (folder / relative).is_file():
            return folder / relative
    return folders[0] / relative  # reported as missing there


def _image_records(records: list, path: Path, findings: list[Problem]) -> dict[int, dict]:
    images: dict[int, dict] = {}
    for number, record in enumerate(records):
        if not isinstance(record, dict) or not isinstance(record.get("id"), int) or not isinstance(record.get("file_name"), str):
            findings.append(Problem(f"images[{number}]", str(path), "unreadable_annotation",
                                    f"images[{number}] needs an integer 'id' and a 'file_name'; skipped"))
            continue
        if record["id"] in images:
            findings.append(Problem(Path(record["file_name"]).stem, str(path), "duplicate_name",
                                    f"image id {record['id']} is listed twice ({images[record['id']]['file_name']} "
                                    f"and {record['file_name']}); only the first is imported"))
            continue
        images[record["id"]] = record
    return images


def _declared_size(record: dict) -> tuple[int, int] | None:
    height, width = record.get("height"), record.get("width")
    return (height, width) if isinstance(height, int) and isinstance(width, int) else None


def is_id(value) -> bool:
    """True for a COCO id: an integer (not a bool, not a list of them)."""
    return isinstance(value, int) and not isinstance(value, bool)


def annotation_name(annotation, number: int) -> str:
    """How reports name ``annotations[number]``: ``annotation 17`` by its id, else by its place in the list."""
    ident = annotation.get("id") if isinstance(annotation, dict) else None
    return f"annotation {ident}" if is_id(ident) else f"annotations[{number}]"


def _instance_items(annotations, images, index, path, folders, overlap, findings) -> list[Item]:
    by_image: dict[int, list[tuple[int, dict]]] = defaultdict(list)
    for number, annotation in enumerate(annotations):
        what = annotation_name(annotation, number)
        if not isinstance(annotation, dict):
            findings.append(Problem(what, str(path), "bad_annotation",
                                    f"{what} is {type(annotation).__name__} {annotation!r:.60}; expected an object; skipped"))
            continue
        image_id = annotation.get("image_id")
        if not is_id(image_id):
            findings.append(Problem(what, str(path), "bad_annotation",
                                    f"{what}: image_id {image_id!r:.60} is not an integer; skipped"))
            continue
        if image_id not in images:
            findings.append(Problem(str(image_id), str(path), "unknown_image",
                                    f"{what} refers to image id {image_id!r}, which 'images' does not list; skipped"))
            continue
        by_image[image_id].append((number, annotation))
    items = []
    for image_id, record in images.items():
        name = Path(record["file_name"]).stem
        draw = partial(_draw_instances, by_image.get(image_id, []), index, overlap=overlap, name=name, path=str(path))
        items.append(Item(name, path, _find_image(record["file_name"], folders), _declared_size(record), draw))
    return items


def _draw_instances(annotations, index, height, width, *, overlap, name, path) -> Drawing:
    findings: list[Problem] = []
    shapes: list[Shape] = []
    for number, annotation in annotations:
        ident = annotation_name(annotation, number)
        category = annotation.get("category_id")
        if not is_id(category):
            findings.append(Problem(name, path, "bad_annotation",
                                    f"{ident}: category_id {category!r:.60} is not an integer; skipped"))
            continue
        if category not in index:
            findings.append(Problem(name, path, "unknown_category",
                                    f"{ident}: category id {category!r} is not in 'categories'; skipped"))
            continue
        label = IGNORE_INDEX if annotation.get("iscrowd") else index[category]
        what = f"{ident} (category {category}{', crowd' if label == IGNORE_INDEX else ''})"
        try:
            geometry = _geometry(annotation.get("segmentation"), height, width)
        except (ValueError, TypeError) as e:  # TypeError: numpy meeting nested objects where numbers belong
            findings.append(Problem(name, path, "bad_shape", f"{what}: {e}; skipped"))
            continue
        shapes.append(Shape(geometry, label, what))
    drawing = draw_shapes(shapes, height, width, overlap=overlap, name=name, path=path)
    drawing.findings[:0] = findings
    return drawing


def _geometry(segmentation, height: int, width: int):
    """Polygon (list of flat rings) or Bitmap (RLE, compressed or not) from a COCO ``segmentation``."""
    if isinstance(segmentation, list):
        if not segmentation:
            raise ValueError("no segmentation (an empty polygon list; a box alone is not a mask)")
        return Polygon.from_flat(segmentation)
    if isinstance(segmentation, dict):
        return Bitmap(decode_rle(segmentation, height, width))
    raise ValueError(f"segmentation is {type(segmentation).__name__}; expected polygons or an RLE")


def decode_rle(rle: dict, height: int, width: int) -> np.ndarray:
    """A COCO RLE (``counts`` a string: compressed, or a list: uncompressed) -> bool ``[height, width]``.

    The runs alternate 0s and 1s, starting with 0s, over the pixels in column-major order; they must
    cover the image exactly (pycocotools' own decoder leaves the rest of a short mask uninitialised).
    Raises:
        ValueError: its ``size`` is not ``[height, width]``, its counts are not run lengths, or they do
            not add up to ``height * width``.
    """
    size, counts = rle.get("size"), rle.get("counts")
    if not isinstance(size, (list, tuple)) or [v for v in size] != [height, width]:
        raise ValueError(f"RLE size is {size!r:.60}; expected the image's [height, width] = [{height}, {width}]")
    if isinstance(counts, list):
        if not all(is_id(c) and c >= 0 for c in counts):
            raise ValueError("uncompressed RLE counts must be run lengths (integers >= 0)")
        kind = "uncompressed"
    elif isinstance(counts, (str, bytes)):
        counts, kind = rle_string_counts(counts), "compressed"
    else:
        raise ValueError(f"RLE counts is {type(counts).__name__}; expected a string or a list of run lengths")
    total = sum(counts)
    if total != height * width:
        raise ValueError(f"{kind} RLE runs cover {total} pixels; expected {height} x {width} = {height * width}")
    values = np.zeros(len(counts), dtype=bool)
    values[1::2] = True  # runs alternate 0s and 1s, starting with 0s
    flat = np.repeat(values, np.asarray(counts, dtype=np.int64))
    return np.ascontiguousarray(flat.reshape(width, height).T)  # column-major runs -> [height, width]


def rle_string_counts(text: str | bytes) -> list[int]:
    """The run lengths of a compressed COCO RLE string (pycocotools' ``rleFrString``, written out).

    Each run is a little-endian number in 5-bit groups, one character each (``chr(48 + group)``, bit 5
    set while more groups follow, bit 4 of the last the sign); from the third run on, it is stored as
    the difference to the run two before.

    Raises:
        ValueError: a character outside ``'0'..'o'``, a number cut off at the end, or a negative run.
    """
    data = text.encode("utf-8") if isinstance(text, str) else bytes(text)  # non-ASCII: bytes >= 128, refused below
    counts: list[int] = []
    position = 0
    while position < len(data):
        value, shift, more = 0, 0, True
        while more:
            if position >= len(data):
                raise ValueError("compressed RLE counts end in the middle of a run length")
            group = data[position] - 48
            if not 0 <= group < 64:
                raise ValueError(f"compressed RLE counts hold {chr(data[position])!r} at {position}; expected characters '0'..'o'")
            value |= (group & 0x1F) << shift
            more = bool(group & 0x20)
            position += 1
            shift += 5
            if not more and group & 0x10:
                value -= 1 << shift  # sign-extend
        if len(counts) > 2:
            value += counts[-2]
        if value < 0:
            raise ValueError(f"compressed RLE run {len(counts)} has the negative length {value}")
        counts.append(value)
    return counts


def _panoptic_items(annotations, images, index, path, masks, folders, findings) -> list[Item]:
    by_image: dict[int, dict] = {}
    for number, annotation in enumerate(annotations):
        image_id = annotation.get("image_id") if isinstance(annotation, dict) else None
        if not is_id(image_id):
            findings.append(Problem(f"annotations[{number}]", str(path), "bad_annotation",
                                    f"annotations[{number}]: image_id {image_id!r:.60} is not an integer; skipped"))
            continue
        if image_id not in images:
            findings.append(Problem(str(image_id), str(path), "unknown_image",
                                    f"annotations[{number}] refers to image id {image_id!r}, which 'images' does not list; skipped"))
            continue
        by_image[image_id] = annotation
    items = []
    for image_id, record in images.items():
        name = Path(record["file_name"]).stem
        annotation = by_image.get(image_id)
        draw = partial(_draw_panoptic, annotation, index, masks, name=name, path=path)
        items.append(Item(name, path, _find_image(record["file_name"], folders), _declared_size(record), draw))
    return items


def _draw_panoptic(annotation, index, masks: Path, height, width, *, name, path: Path) -> Drawing:
    if annotation is None:
        raise SkippedItem("missing_mask", f"no panoptic annotation for image {name}", path=path)
    png = masks / str(annotation.get("file_name", f"{name}.png"))
    if not png.is_file():
        raise SkippedItem("missing_mask", f"panoptic PNG not found (image {name})", path=png)
    try:
        rgb = read_image(png).astype(np.int64)  # [H, W, 3]
    except DataError as e:
        raise SkippedItem("unreadable_mask", e.reason, path=png) from e
    if rgb.shape[:2] != (height, width):
        raise SkippedItem("size_mismatch", f"panoptic PNG is {rgb.shape[1]}x{rgb.shape[0]} but its image is {width}x{height}", path=png)
    ids = rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]  # COCO panoptic: id = R + 256 G + 256^2 B
    findings: list[Problem] = []
    label_of = {0: IGNORE_INDEX}  # id 0: void, unlabelled pixels
    segments = annotation.get("segments_info")
    for number, segment in enumerate(segments if isinstance(segments, list) else []):
        if not isinstance(segment, dict) or not is_id(segment.get("id")) or not is_id(segment.get("category_id")):
            findings.append(Problem(name, str(path), "bad_annotation",
                                    f"segments_info[{number}] {segment!r:.80} needs an integer 'id' and 'category_id'; "
                                    "skipped (its pixels set to 255)"))
            continue
        category = segment.get("category_id")
        if category not in index:
            findings.append(Problem(name, str(path), "unknown_category",
                                    f"segment {segment.get('id')}: category id {category!r} is not in 'categories'; its pixels set to 255"))
            label_of[segment.get("id")] = IGNORE_INDEX
            continue
        label_of[segment.get("id")] = IGNORE_INDEX if segment.get("iscrowd") else index[category]
    unique, inverse = np.unique(ids, return_inverse=True)
    unknown = [int(u) for u in unique if int(u) not in label_of]
    if unknown:
        shown = ", ".join(str(u) for u in unknown[:5])
        findings.append(Problem(name, str(png), "unknown_segment",
                                f"{plural(len(unknown), 'segment id')} in the PNG {'has' if len(unknown) == 1 else 'have'} no segments_info entry (e.g. {shown}); their pixels set to 255"))
    table = np.array([label_of.get(int(u), IGNORE_INDEX) for u in unique], dtype=np.uint8)
    return Drawing(table[inverse].reshape(height, width), findings)


def encode_rle(mask: np.ndarray) -> dict:
    """bool ``[H, W]`` -> a compressed COCO RLE ``{"size": [H, W], "counts": str}`` (the inverse of :func:`decode_rle`).

    The runs alternate 0s and 1s, starting with 0s, over the pixels in column-major order, and are
    written as :func:`rle_string_counts` reads them (pycocotools' ``rleToString``, written out).
    """
    mask = np.asarray(mask, dtype=bool)
    height, width = mask.shape
    flat = mask.T.ravel()  # column-major
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat.size and flat[0]:
        counts.insert(0, 0)  # the runs start with 0s
    text = []
    for i, count in enumerate(counts):
        value = count - counts[i - 2] if i > 2 else count
        more = True
        while more:
            group = value & 0x1F
            value >>= 5  # arithmetic shift: a negative difference ends at -1
            more = value != -1 if group & 0x10 else value != 0
            text.append(chr(48 + (group | (0x20 if more else 0))))
    return {"size": [height, width], "counts": "".join(text)}


def write_coco(images: list[LabelledImage], class_names: list[str], out: Path, options: ExportOptions) -> list[Path]:
    """Write ``out/annotations.json``: a COCO instances file of the label maps, one annotation per shape.

    Polygons (default): one annotation per region (COCO polygons have no holes: a hole is an annotation of
    category ``background``, id 0, painted over its region and under what it holds, the order of fcnseg's
    importers and of COCO tools that paint larger objects first). Masks: one compressed-RLE annotation per
    class present. Category ids are the class indices; ``file_name`` the image's relative name.
    """
    categories = {i: name for i, name in enumerate(class_names) if i > 0}
    records, annotations = [], []
    for image_id, image in enumerate(images, start=1):
        labels = image.load()
        height, width = labels.shape
        records.append({"id": image_id, "file_name": (options.image_prefix or "") + image.name,
                        "height": height, "width": width})
        for label, segmentation, box, area in _coco_shapes(labels, options):
            if label == 0:
                categories[0] = label_name(class_names, 0)
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": label,
                                "segmentation": segmentation, "area": area, "bbox": box, "iscrowd": 0})
    document = {
        "info": {"description": "label maps written by fcnseg", "version": "1.0"},
        "licenses": [],
        "images": records,
        "annotations": annotations,
        "categories": [{"id": i, "name": categories[i], "supercategory": ""} for i in sorted(categories)],
    }
    target = out / "annotations.json"
    write_json(document, target)
    return [target]


def _coco_shapes(labels: np.ndarray, options: ExportOptions):
    """``(label, segmentation, bbox, area)`` per annotation, in painting order."""
    if (options.shapes or "polygon") == "mask":
        for label, mask in class_masks(labels):
            top, left, bottom, right = bounding_box(mask)
            yield label, encode_rle(mask), [left, top, right - left, bottom - top], int(mask.sum())
        return
    for piece in polygon_pieces(labels, options):
        x, y = piece.ring[:, 0], piece.ring[:, 1]
        box = [_json_number(x.min()), _json_number(y.min()), _json_number(x.max() - x.min()), _json_number(y.max() - y.min())]
        flat = [value for point in rounded(piece.ring) for value in point]
        yield piece.label, [flat], box, round(piece.area, 2)


def _json_number(value) -> float | int:
    return int(value) if float(value).is_integer() else float(value)
