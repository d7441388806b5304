"""Labelling tools' formats (COCO, labelme, CVAT masks and XML, Label Studio, GeoJSON), read and written.

Read: ``import_dataset("coco", "annotations/instances_val2017.json", "data/coco-val")`` writes
``images/``, ``masks/`` (palette PNGs of class indices, 255 = ignore), ``classes.txt``, ``train.txt``
and ``val.txt`` and ``import.json`` (the report), then scans the result as training will.
Written: ``export_annotations("coco", images, class_names, out)`` turns label maps into the format's
files (:mod:`fcnseg.annotations.export`), for ``fcnseg predict --save-annotations`` and
``fcnseg export-annotations``.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from fcnseg.annotations.items import Export, ImportOptions, Item
from fcnseg.annotations.raster import OVERLAPS
from fcnseg.annotations.report import (
    ANNOTATION_KINDS,
    ITEM_KINDS,
    NOTE_KINDS,
    ImportReport,
)
from fcnseg.annotations.export import WRITERS, ExportReport, export_annotations, export_label_folder
from fcnseg.annotations.writing import ExportOptions, LabelledImage
from fcnseg.errors import ConfigError

# Format name -> (module, reader function, the ImportOptions fields it reads besides overlap and the split).
FORMATS = {
    "coco": ("fcnseg.annotations.coco", "read_coco", ("classes", "images", "masks")),
    "labelme": ("fcnseg.annotations.labelme", "read_labelme", ("classes",)),
    "cvat-mask": ("fcnseg.annotations.cvat", "read_cvat", ("classes", "images")),
    "cvat-xml": ("fcnseg.annotations.cvat", "read_cvat_xml", ("classes", "images")),
    "label-studio": ("fcnseg.annotations.label_studio", "read_label_studio", ("classes", "images")),
    "geojson": ("fcnseg.annotations.geojson", "read_geojson", ("classes", "images")),
}


def read_export(format: str, src: str | Path, options: ImportOptions | None = None) -> Export:
    """Read an export into classes and items without writing anything (see :func:`import_dataset`)."""
    if format not in FORMATS:
        raise ConfigError(f"unknown import format {format!r}; expected one of {', '.join(FORMATS)}")
    module, function, fields = FORMATS[format]
    options = options or ImportOptions()
    unused = [f for f in ("classes", "images", "masks") if getattr(options, f) is not None and f not in fields]
    if unused:
        raise ConfigError(f"format {format} does not use {', '.join(unused)}; it reads {', '.join(fields) or 'no such option'}")
    return getattr(importlib.import_module(module), function)(Path(src), options)


def import_dataset(
    format: str,
    src: str | Path,
    out: str | Path,
    *,
    overlap: str = "area",
    val_fraction: float = 0.2,
    seed: int = 0,
    classes: str | Path | None = None,
    images: str | Path | None = None,
    masks: str | Path | None = None,
    progress: bool = False,
) -> ImportReport:
    """Convert the export ``src`` of format ``format`` into the folder data set ``out``.

    Args:
        format: ``coco`` (instances or panoptic JSON), ``labelme`` (folder of JSON files) or
            ``cvat-mask`` (CVAT "Segmentation mask 1.1" folder, unzipped) or ``cvat-xml`` (CVAT
            "CVAT for images 1.1" annotations.xml, or the unzipped folder holding it).
        src: the COCO JSON (or a folder holding one), the labelme folder, the CVAT folder, or the CVAT XML.
        out: a new or empty folder.
        overlap: ``area`` (larger objects painted first, so smaller ones stay on top) or ``order``
            (annotation order, the last on top). Crowd and ignore regions go underneath both.
        val_fraction, seed: the share of images listed in ``val.txt`` and the seed of that draw.
        classes: a class file imposing the class order (every category found must be in it; its
            classes absent from the export are kept). Without it: background 0, then the category
            names sorted alphabetically, case-insensitively (ties by the exact string), in every format.
        images: COCO, CVAT (both): the image folder (default: guessed from the export).
        masks: COCO panoptic: the PNG folder (default: the JSON's path without ``.json``).
    Returns:
        ImportReport: written names, problems and notes by file, the class list, the splits and the
        data scan of ``out`` for each split. ``report.ok`` is False when anything was skipped.
    Raises:
        DataError: the export as a whole cannot be read (no JSON, no labelmap colours, duplicate class
            names, a category missing from the class file), or ``out`` is not empty. Bad items do not raise: they are in the report.
    """
    from fcnseg.annotations.pipeline import write_export

    options = ImportOptions(
        overlap=overlap,
        val_fraction=val_fraction,
        seed=seed,
        classes=None if classes is None else Path(classes),
        images=None if images is None else Path(images),
        masks=None if masks is None else Path(masks),
    )
    export = read_export(format, src, options)
    report = ImportReport(format=format, source=str(src), out=str(out))
    return write_export(export, report, Path(out), options, progress=progress)


__all__ = [
    "ANNOTATION_KINDS",
    "WRITERS",
    "ExportOptions",
    "ExportReport",
    "LabelledImage",
    "export_annotations",
    "export_label_folder",
    "FORMATS",
    "ITEM_KINDS",
    "NOTE_KINDS",
    "OVERLAPS",
    "Export",
    "ImportOptions",
    "ImportReport",
    "Item",
    "import_dataset",
    "read_export",
]
