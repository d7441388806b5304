"""Label Studio: a JSON export of image tasks read into items with label maps; label maps written as tasks with predictions.

Read (``fcnseg import label-studio EXPORT.json OUT``): per task its first annotation that was not
cancelled, else its first prediction; results of type ``brushlabels`` (the brush RLE of
:mod:`fcnseg.annotations.brush_rle`), ``polygonlabels``, ``rectanglelabels`` and ``ellipselabels``
(coordinates in percent of ``original_width`` and ``original_height``) are drawn; key points,
choices and text cover no area and are left out. The image is the task's ``data.image`` (or its one
string value): ``/data/local-files/?d=PATH`` is looked up as PATH under ``--images`` (Label Studio's
document root), an upload (``/data/upload/3/1a2b3c4d-photo.jpg``) or a URL by its file name there
(with and without Label Studio's 8-character upload prefix), any other string as a path under it.
``--images`` defaults to the JSON's folder.

Written (``fcnseg predict --save-annotations label-studio``): ``tasks.json``, a list of tasks to import
into Label Studio, each ``{"data": {"image": URL}, "predictions": [...]}`` (pre-annotations), and
``label_config.xml``, a labelling config with the model's classes.
"""

from __future__ import annotations

import json
import math
import re
import secrets
from collections import Counter
from functools import partial
from pathlib import Path, PurePosixPath
from urllib.parse import parse_qs, unquote, urlparse
from xml.sax.saxutils import quoteattr

import numpy as np

from fcnseg.annotations.brush_rle import BrushRleError, decode_mask, encode_mask
from fcnseg.annotations.class_list import clean_name, import_classes
from fcnseg.annotations.items import Export, ImportOptions, Item
from fcnseg.annotations.raster import Bitmap, Drawing, Ellipse, Polygon, Rectangle, Shape, draw_shapes
from fcnseg.annotations.writing import ExportOptions, LabelledImage, class_masks, label_name, polygon_pieces
from fcnseg.data.palette import voc_palette
from fcnseg.data.scan import Problem
from fcnseg.errors import DataError
from fcnseg.files import atomic_write_text, plural, read_text, write_json

AREA_TYPES = ("brushlabels", "polygonlabels", "rectanglelabels", "ellipselabels")
LOCAL_FILES = "/data/local-files/"
UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-")  # Label Studio renames an upload 1a2b3c4d-photo.jpg
DEFAULT_IMAGE_PREFIX = LOCAL_FILES + "?d="
BRUSH_FROM, POLYGON_FROM, TO_NAME = "tag", "label", "image"  # the names in Label Studio's own templates


# Reading


def find_export(src: Path) -> Path:
    """``src`` itself, or the one ``*.json`` in the folder ``src``.

    Raises:
        DataError: no JSON, or several.
    """
    if src.is_file():
        return src
    found = sorted(src.glob("*.json")) if src.is_dir() else []
    if len(found) != 1:
        what = "no such file or folder" if not src.exists() else f"holds {plural(len(found), 'JSON file')}"
        raise DataError(f"{what}; expected a Label Studio JSON export (a list of tasks), or a folder holding one", path=src)
    return found[0]


def read_label_studio(src: Path, options: ImportOptions) -> Export:
    """Read a Label Studio JSON export (``[{"data": ..., "annotations": [...], "predictions": [...]}, ...]``)."""
    path = find_export(src)
    try:
        tasks = json.loads(read_text(path, what="Label Studio JSON"))
    except json.JSONDecodeError as e:
        raise DataError(f"cannot be read as JSON ({e})", path=path) from e
    if isinstance(tasks, dict):
        tasks = [tasks]
    if not isinstance(tasks, list):
        raise DataError(f"expected a list of tasks, found {type(tasks).__name__}", path=path)
    findings: list[Problem] = []
    chosen: list[tuple[str, dict, list]] = []
    for number, task in enumerate(tasks):
        where = f"task {task.get('id', number)}" if isinstance(task, dict) else f"tasks[{number}]"
        results = _results(task)
        reference = _image_reference(task)
        if results is None or reference is None:
            findings.append(Problem(where, str(path), "unreadable_annotation",
                                    f"{where}: expected {{'data': {{'image': ...}}, 'annotations' or 'predictions': [{{'result': [...]}}]}}; skipped"))
            continue
        chosen.append((reference, task, results))
    names = set()
    for _, _, results in chosen:
        for result in results:
            name = _label_of(result)
            if name is not None:
                try:
                    names.add(clean_name(name, str(path)))
                except DataError:
                    pass  # reported as a bad shape when drawn
    classes, index = import_classes(names, options.classes, where=str(path))
    folder = options.images or path.parent
    items = []
    for reference, task, results in chosen:
        image = resolve_image(reference, folder)
        name = UPLOAD_PREFIX.sub("", image.stem) if "/data/upload/" in reference else image.stem
        draw = partial(_draw, results, index, overlap=options.overlap, name=name, path=str(path))
        items.append(Item(name, path, image, _declared_size(results), draw))
    class_map = {f"label {name}": i for name, i in sorted(index.items(), key=lambda kv: (kv[1], kv[0]))}
    return Export(classes, items, class_map, findings)


def _results(task) -> list | None:
    """The results of the task's first annotation not cancelled, else of its first prediction."""
    if not isinstance(task, dict):
        return None
    for key in ("annotations", "predictions"):
        for entry in task.get(key) or []:
            if isinstance(entry, dict) and not entry.get("was_cancelled") and isinstance(entry.get("result"), list):
                return entry["result"]
    return None


def _image_reference(task: dict) -> str | None:
    data = task.get("data")
    if not isinstance(data, dict):
        return None
    if isinstance(data.get("image"), str):
        return data["image"]
    strings = [v for v in data.values() if isinstance(v, str)]
    return strings[0] if len(strings) == 1 else None


def local_files_path(reference: str) -> str | None:
    """PATH of a ``/data/local-files/?d=PATH`` reference (any host in front), else None."""
    parsed = urlparse(reference)
    if parsed.path.rstrip("/") + "/" != LOCAL_FILES:
        return None
    values = parse_qs(parsed.query).get("d")
    return values[0] if values else None


def resolve_image(reference: str, folder: Path) -> Path:
    """The local file a task's image reference names, looked up under ``folder`` (see the module's docstring).

    A name that is not found is returned as it would be, so that the import reports it as missing.
    """
    local = local_files_path(reference)
    if local is not None:
        candidates = [folder / local, folder / PurePosixPath(local).name]
    else:
        parsed = urlparse(reference)
        if parsed.scheme in ("http", "https") or reference.startswith("/data/"):
            base = PurePosixPath(unquote(parsed.path)).name
            candidates = [folder / base, folder / UPLOAD_PREFIX.sub("", base)]
        else:
            candidates = [folder / unquote(reference), folder / PurePosixPath(unquote(reference)).name]
    return next((c for c in candidates if c.is_file()), candidates[0])


def _label_of(result) -> str | None:
    if not isinstance(result, dict) or str(result.get("type", "")).lower() not in AREA_TYPES:
        return None
    names = (result.get("value") or {}).get(result["type"].lower())
    return names[0] if isinstance(names, list) and names else None


def _declared_size(results: list) -> tuple[int, int] | None:
    for result in results:
        if isinstance(result, dict) and isinstance(result.get("original_height"), int) and isinstance(result.get("original_width"), int):
            return result["original_height"], result["original_width"]
    return None


def _draw(results: list, index: dict[str, int], height: int, width: int, *, overlap: str, name: str, path: str) -> Drawing:
    findings: list[Problem] = []
    shapes: list[Shape] = []
    ignored: Counter = Counter()
    for number, result in enumerate(results):
        kind = str(result.get("type", "")).lower() if isinstance(result, dict) else ""
        what = f"result {number} ({kind or 'no type'})"
        if kind not in AREA_TYPES:
            ignored[kind or "untyped"] += 1
            continue
        label = _label_of(result)
        try:
            cleaned = clean_name(label, what)
        except DataError as e:
            findings.append(Problem(name, path, "bad_shape", f"{e}; skipped"))
            continue
        try:
            geometry = _geometry(kind, result.get("value") or {}, height, width)
        except (BrushRleError, ValueError, TypeError, KeyError) as e:
            findings.append(Problem(name, path, "bad_shape", f"{what} {cleaned!r}: {e}; skipped"))
            continue
        shapes.append(Shape(geometry, index[cleaned], f"{what} {cleaned!r}"))
    drawing = draw_shapes(shapes, height, width, overlap=overlap, name=name, path=path)
    drawing.findings[:0] = findings
    if ignored:
        listed = ", ".join(f"{n} {kind}" for kind, n in ignored.items())
        drawing.findings.append(Problem(name, path, "ignored_shape", f"{plural(sum(ignored.values()), 'result')} without area left out ({listed})"))
    return drawing


def _geometry(kind: str, value: dict, height: int, width: int):
    sx, sy = width / 100, height / 100  # percent -> pixels
    if kind == "brushlabels":
        if value.get("format", "rle") != "rle":
            raise ValueError(f"brush format {value.get('format')!r}; expected 'rle'")
        return Bitmap(decode_mask(value["rle"], height, width))
    if kind == "polygonlabels":
        points = np.asarray(value["points"], dtype=np.float64)
        if points.ndim != 2 or points.shape[1] != 2:
            raise ValueError("points must be [x, y] pairs in percent")
        return Polygon.from_points([points * (sx, sy)])
    if kind == "rectanglelabels":
        x, y, w, h = (float(value[k]) for k in ("x", "y", "width", "height"))
        rotation = float(value.get("rotation", 0))
        if rotation % 360 == 0:
            return Rectangle(x * sx, y * sy, (x + w) * sx, (y + h) * sy)
        cos, sin = math.cos(math.radians(rotation)), math.sin(math.radians(rotation))  # about the top-left corner
        corners = [(dx * sx * cos - dy * sy * sin, dx * sx * sin + dy * sy * cos) for dx, dy in ((0, 0), (w, 0), (w, h), (0, h))]
        return Polygon.from_points([[(x * sx + cx, y * sy + cy) for cx, cy in corners]])
    x, y, rx, ry = (float(value[k]) for k in ("x", "y", "radiusX", "radiusY"))
    return Ellipse(x * sx, y * sy, rx * sx, ry * sy, float(value.get("rotation", 0)))


# Writing


def prediction_results(
    labels: np.ndarray, class_names: list[str], *, shapes: str, from_name: str, to_name: str,
    options: ExportOptions | None = None, names: dict[int, str] | None = None,
) -> list[dict]:
    """Label Studio results for a label map: one ``brushlabels`` result per class (``shapes="mask"``)
    or one ``polygonlabels`` result per region (``shapes="polygon"``, in painting order, a hole as a
    ``background`` polygon over its region).

    Args:
        names: label -> the name in the labelling config (default: the class names); labels missing
            from it get no result.
    """
    options = options or ExportOptions()
    height, width = labels.shape
    names = names if names is not None else {i: label_name(class_names, i) for i in range(len(class_names))}
    common = {"from_name": from_name, "to_name": to_name, "original_width": int(width), "original_height": int(height),
              "image_rotation": 0}
    results = []
    if shapes == "mask":
        for label, mask in class_masks(labels):
            if label in names:
                results.append({"id": secrets.token_hex(5), "type": "brushlabels", **common,
                                "value": {"format": "rle", "rle": encode_mask(mask), "brushlabels": [names[label]]}})
        return results
    for piece in polygon_pieces(labels, options):
        if piece.label in names:
            points = [[round(x * 100 / width, 6), round(y * 100 / height, 6)] for x, y in piece.ring.tolist()]
            results.append({"id": secrets.token_hex(5), "type": "polygonlabels", **common,
                            "value": {"points": points, "closed": True, "polygonlabels": [names[piece.label]]}})
    return results


def write_label_studio(images: list[LabelledImage], class_names: list[str], out: Path, options: ExportOptions) -> list[Path]:
    """Write ``out/tasks.json`` (tasks with predictions, for Label Studio's import) and ``out/label_config.xml``."""
    shapes = options.shapes or "mask"
    from_name = options.from_name or (BRUSH_FROM if shapes == "mask" else POLYGON_FROM)
    to_name = options.to_name or TO_NAME
    prefix = DEFAULT_IMAGE_PREFIX if options.image_prefix is None else options.image_prefix
    tasks = []
    for image in images:
        labels = image.load()
        results = prediction_results(labels, class_names, shapes=shapes, from_name=from_name, to_name=to_name, options=options)
        tasks.append({"data": {"image": prefix + image.name},
                      "predictions": [{"model_version": options.model_version, "result": results}]})
    write_json(tasks, out / "tasks.json")
    atomic_write_text(label_config(class_names, shapes=shapes, from_name=from_name, to_name=to_name), out / "label_config.xml")
    return [out / "tasks.json", out / "label_config.xml"]


def label_config(class_names: list[str], *, shapes: str, from_name: str, to_name: str) -> str:
    """A Label Studio labelling config for the classes (without the background; with it, for polygon hole fills)."""
    tag = "BrushLabels" if shapes == "mask" else "PolygonLabels"
    palette = voc_palette(256)
    listed = list(enumerate(class_names))[1:] if shapes == "mask" else [(0, label_name(class_names, 0))] + list(enumerate(class_names))[1:]
    lines = [f"    <Label value={quoteattr(name)} background=\"#{int(palette[i][0]):02x}{int(palette[i][1]):02x}{int(palette[i][2]):02x}\"/>"
             for i, name in listed]
    return (f"<View>\n  <Image name={quoteattr(to_name)} value=\"$image\" zoom=\"true\"/>\n"
            f"  <{tag} name={quoteattr(from_name)} toName={quoteattr(to_name)}>\n" + "\n".join(lines) + f"\n  </{tag}>\n</View>\n")
