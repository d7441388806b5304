"""GeoJSON: one FeatureCollection per image, a Polygon (holes included) per region, read into items and written from label maps.

Each file describes one image, in a member of its own (GeoJSON allows foreign members)::

    {"type": "FeatureCollection",
     "fcnseg": {"image": "tile_07.tif", "width": 512, "height": 512, "coordinates": "pixel"},
     "features": [{"type": "Feature", "properties": {"class": "building", "label": 3, "pixels": 812},
                   "geometry": {"type": "Polygon", "coordinates": [[[x, y], ...], [[x, y], ...]]}}]}

``coordinates`` is ``pixel`` (x right, y down from the image's top-left corner, in pixels) or ``map``:
the image is a GeoTIFF with a georeference and the rings are in its coordinate reference system
(``crs`` names it, in GDAL's form); reading or writing map coordinates needs rasterio
(``pip install 'fcnseg[geo]'``). ``image`` is relative to the GeoJSON file. Exterior rings run
counter-clockwise, holes clockwise, as RFC 7946 asks. The reader also takes Polygons and
MultiPolygons from other tools, the class from the property ``class``, ``label`` or ``name``.
"""

from __future__ import annotations

import json
import os
from functools import partial
from pathlib import Path

import numpy as np

from fcnseg.annotations.class_list import clean_name, import_classes
from fcnseg.annotations.contours import ring_area
from fcnseg.annotations.items import Export, ImportOptions, Item, SkippedItem
from fcnseg.annotations.raster import Drawing, Polygon, PolygonWithHoles, Shape, draw_shapes
from fcnseg.annotations.writing import ExportOptions, LabelledImage, label_name, region_outlines
from fcnseg.data.scan import Problem
from fcnseg.errors import ConfigError, DataError
from fcnseg.files import read_text, write_json

SUFFIX = ".geojson"
CLASS_PROPERTIES = ("class", "label", "name")
GEOTIFF_SUFFIXES = (".tif", ".tiff")


def georeference(image: Path):
    """``(affine transform, CRS string)`` of a GeoTIFF that has both, else None (and None without rasterio)."""
    if image.suffix.lower() not in GEOTIFF_SUFFIXES:
        return None
    try:
        import rasterio
    except ImportError:
        return None
    try:
        with rasterio.open(image) as dataset:
            if dataset.crs is None or dataset.transform.is_identity:
                return None
            return dataset.transform, dataset.crs.to_string()
    except rasterio.errors.RasterioError:
        return None


def _apply(transform, ring: np.ndarray) -> np.ndarray:
    a, b, c, d, e, f = transform.a, transform.b, transform.c, transform.d, transform.e, transform.f
    x, y = ring[:, 0], ring[:, 1]
    return np.stack([a * x + b * y + c, d * x + e * y + f], axis=1)


def _closed(ring: np.ndarray, counter_clockwise: bool) -> list[list[float]]:
    """A GeoJSON linear ring: first point repeated at the end, turned the way RFC 7946 asks."""
    if (ring_area(ring) > 0) != counter_clockwise:  # ring_area > 0: counter-clockwise with y up
        ring = ring[::-1]
    points = [[_number(x), _number(y)] for x, y in ring.tolist()]
    return points + points[:1]


def _number(value: float):
    return int(value) if float(value).is_integer() else round(float(value), 9)


# Writing


def write_geojson(images: list[LabelledImage], class_names: list[str], out: Path, options: ExportOptions) -> list[Path]:
    """Write ``out/<name>.geojson`` per image: a Feature (Polygon with holes) per region; map coordinates for a
    georeferenced GeoTIFF, else pixel coordinates."""
    if options.shapes == "mask":
        raise ConfigError("GeoJSON holds polygons only; leave --annotation-shapes out or choose polygon")
    written = []
    for image in images:
        labels = image.load()
        height, width = labels.shape
        target = out / f"{image.stem}{SUFFIX}"
        target.parent.mkdir(parents=True, exist_ok=True)
        geo = georeference(image.image)
        features = []
        for outline in region_outlines(labels, options):
            rings = [outline.outer, *outline.holes]
            if geo is not None:
                rings = [_apply(geo[0], ring) for ring in rings]
            coordinates = [_closed(rings[0], True)] + [_closed(r, False) for r in rings[1:]]
            features.append({"type": "Feature",
                             "properties": {"class": label_name(class_names, outline.label), "label": outline.label,
                                            "pixels": outline.pixels},
                             "geometry": {"type": "Polygon", "coordinates": coordinates}})
        relative = os.path.relpath(image.image.absolute(), target.parent.absolute()).replace("\\", "/")
        document = {"type": "FeatureCollection",
                    "fcnseg": {"image": relative, "width": width, "height": height,
                               "coordinates": "pixel" if geo is None else "map"}}
        if geo is not None:
            document["crs"] = {"type": "name", "properties": {"name": geo[1]}}
        document["features"] = features
        write_json(document, target)
        written.append(target)
    return written


# Reading


def list_files(src: Path) -> list[Path]:
    """``src`` itself, or every ``*.geojson`` (and ``*.json``) under the folder ``src``, sorted.

    Raises:
        DataError: nothing found.
    """
    if src.is_file():
        return [src]
    found = sorted(p for p in src.rglob("*") if p.suffix.lower() in (SUFFIX, ".json") and p.is_file()) if src.is_dir() else []
    if not found:
        raise DataError("no such file, or a folder without .geojson files; expected GeoJSON files, one per image", path=src)
    return found


def read_geojson(src: Path, options: ImportOptions) -> Export:
    """Read GeoJSON files (one FeatureCollection per image) into items."""
    findings: list[Problem] = []
    parsed: list[tuple[Path, dict]] = []
    for path in list_files(src):
        try:
            data = json.loads(read_text(path, what="GeoJSON"))
        except (DataError, json.JSONDecodeError) as e:
            findings.append(Problem(path.stem, str(path), "unreadable_annotation", getattr(e, "reason", None) or f"cannot be read as JSON ({e})"))
            continue
        if not isinstance(data, dict) or data.get("type") != "FeatureCollection" or not isinstance(data.get("features"), list):
            findings.append(Problem(path.stem, str(path), "unreadable_annotation", "expected a GeoJSON FeatureCollection"))
            continue
        parsed.append((path, data))
    names = {n for _, data in parsed for f in data["features"] if (n := _class_of(f)) is not None}
    cleaned = set()
    for name in names:
        try:
            cleaned.add(clean_name(name, str(src)))
        except DataError:
            pass  # reported when drawn
    classes, index = import_classes(cleaned, options.classes, where=str(src))
    items = []
    for path, data in parsed:
        meta = data.get("fcnseg") if isinstance(data.get("fcnseg"), dict) else {}
        image = _image_of(path, meta, options.images)
        size = (meta["height"], meta["width"]) if isinstance(meta.get("height"), int) and isinstance(meta.get("width"), int) else None
        draw = partial(_draw, data["features"], index, image, meta.get("coordinates", "pixel"),
                       overlap=options.overlap, name=Path(path.name).stem, path=str(path))
        items.append(Item(Path(path.name).stem, path, image, size, draw))
    class_map = {f"class {name}": i for name, i in sorted(index.items(), key=lambda kv: (kv[1], kv[0]))}
    return Export(classes, items, class_map, findings)


def _class_of(feature) -> str | None:
    properties = feature.get("properties") if isinstance(feature, dict) else None
    if not isinstance(properties, dict):
        return None
    return next((properties[k] for k in CLASS_PROPERTIES if isinstance(properties.get(k), str)), None)


def _image_of(path: Path, meta: dict, folder: Path | None) -> Path | None:
    named = meta.get("image")
    if isinstance(named, str) and named:
        return (folder / Path(named).name) if folder is not None else path.parent / named
    base = folder if folder is not None else path.parent
    found = [p for p in base.glob(f"{Path(path.name).stem}.*") if p.suffix.lower() not in (SUFFIX, ".json")]
    return found[0] if found else None


def _draw(features: list, index, image: Path | None, coordinates: str, height: int, width: int, *, overlap, name, path) -> Drawing:
    findings: list[Problem] = []
    inverse = None
    if coordinates == "map":
        geo = georeference(image) if image is not None else None
        if geo is None:
            raise SkippedItem("unreadable_annotation", f"map coordinates, but the image {image} has no georeference "
                              "rasterio can read (pip install 'fcnseg[geo]' for GeoTIFFs)", path=path)
        inverse = ~geo[0]
    shapes: list[Shape] = []
    for number, feature in enumerate(features):
        label = _class_of(feature)
        what = f"feature {number} ({label!r})"
        try:
            cleaned = clean_name(label, what)
            geometry = feature["geometry"]
            kind = geometry["type"]
            polygons = [geometry["coordinates"]] if kind == "Polygon" else geometry["coordinates"] if kind == "MultiPolygon" else None
            if polygons is None:
                findings.append(Problem(name, path, "bad_shape", f"{what}: geometry {kind!r} has no area; skipped"))
                continue
            for rings in polygons:
                arrays = [np.asarray(r, dtype=np.float64)[:, :2] for r in rings]
                if inverse is not None:
                    arrays = [_apply(inverse, r) for r in arrays]
                outer, *holes = [Polygon.from_points([r]) for r in arrays]
                shapes.append(Shape(PolygonWithHoles(outer, tuple(holes)), index[cleaned], what))
        except DataError as e:
            findings.append(Problem(name, path, "bad_shape", f"{e}; skipped"))
        except (KeyError, TypeError, ValueError, IndexError) as e:
            findings.append(Problem(name, path, "bad_shape", f"{what}: {e}; skipped"))
    drawing = draw_shapes(shapes, height, width, overlap=overlap, name=name, path=path)
    drawing.findings[:0] = findings
    return drawing
