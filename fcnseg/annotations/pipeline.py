"""The import itself: a read export -> images, masks, class file and split files in OUT, then the data scan of OUT."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from tqdm import tqdm

from fcnseg.data import build_dataset
from fcnseg.annotations.items import Export, ImportOptions, Item, SkippedItem
from fcnseg.annotations.report import ITEM_KINDS, ImportReport
from fcnseg.annotations.import_folder import (
    check_out,
    choose_split,
    copy_image,
    publish,
    safe_name,
    staging_folder,
    write_classes,
    write_image_bytes,
    write_mask,
    write_splits,
)
from fcnseg.data.scan import Problem, ScanReport
from fcnseg.errors import DataError
from fcnseg.files import write_json
from fcnseg.images import image_size

logger = logging.getLogger(__name__)

REPORT_FILE = "import.json"


def write_export(
    export: Export, report: ImportReport, out: Path, options: ImportOptions, *, progress: bool = False
) -> ImportReport:
    """Write every good item of ``export`` into ``out`` and fill ``report``; then the class file, splits and scan.

    Items are skipped, not fatal: each skipped item or dropped annotation is a problem in the report
    naming its file. Everything is written into a hidden folder beside ``out`` that is renamed to
    ``out`` once complete, so an import that fails midway (or is interrupted) leaves ``out`` as it
    was. ``out/import.json`` holds the report.

    Raises:
        DataError: ``out`` exists and holds anything (checked before and again at the rename).
    """
    check_out(out)
    staging = staging_folder(out)
    try:
        _write_items(export, report, staging, options, progress=progress)
        publish(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if report.written:
        report.scans = scan_output(out, list(report.splits))
    write_json(report.to_dict(), out / REPORT_FILE)
    return report


def _write_items(export: Export, report: ImportReport, out: Path, options: ImportOptions, *, progress: bool) -> None:
    """The items, class file and split files of ``export`` written into the (staging) folder ``out``."""
    report.classes = export.classes
    report.class_map = dict(export.class_map)
    report.items = len(export.items) + sum(f.kind in ITEM_KINDS for f in export.findings)  # + files that listed no item
    for finding in export.findings:
        report.add(finding)
    seen: dict[str, Item] = {}
    items = tqdm(export.items, desc=f"import {report.format}", unit="image") if progress else export.items
    for item in items:
        name = safe_name(item.name)
        if name in seen:
            first = seen[name]
            where = item.image if isinstance(item.image, Path) else item.source
            report.add(Problem(name, str(where), "duplicate_name",
                               f"image name {name!r} is already used by {_describe(first)}; only the first is imported"))
            continue
        written, findings = _write_item(item, name, out, export)
        if written:  # a name is taken by the first item written under it, not by one that failed
            seen[name] = item
            report.written.append(name)
        for finding in findings:
            report.add(finding)
    if report.written:
        write_classes(out, export.classes)
        report.splits = choose_split(report.written, options.val_fraction, options.seed)
        write_splits(out, report.splits)


def scan_output(out: Path, splits: list[str]) -> list[ScanReport]:
    """The data scan of the written folder, one report per split (what ``fcnseg train --dataset folder`` reads)."""
    return [build_dataset("folder", out, split, scan=False).scan() for split in splits]


def _describe(item: Item) -> str:
    return str(item.image) if isinstance(item.image, Path) else f"the image of {item.source}"


def _size_of(path: Path, reported: Path) -> tuple[int, int]:
    """``(height, width)`` of the upright image, decoding it all; a bad file skips the item."""
    try:
        return image_size(path)
    except DataError as e:
        raise SkippedItem("unreadable_image", e.reason, path=reported) from e


def _write_item(item: Item, name: str, out: Path, export: Export) -> tuple[bool, list[Problem]]:
    """Write one item as ``images/<name>.*`` and ``masks/<name>.png``.

    Returns ``(written, findings)``: a written item's annotation problems and notes, or the one
    problem that skipped it (then nothing of it is left in ``out``).
    """
    written: list[Path] = []
    try:
        if item.image is None:
            raise SkippedItem("missing_image", "the annotation names no image file and embeds no image data", path=item.source)
        if isinstance(item.image, Path):
            if not item.image.is_file():
                raise SkippedItem("missing_image", f"image file not found (named by {item.source})", path=item.image)
            height, width = _size_of(item.image, item.image)
        else:
            try:
                image_path = write_image_bytes(item.image(), out, name)
            except DataError as e:
                raise SkippedItem("unreadable_image", e.reason, path=item.source) from e
            written.append(image_path)
            height, width = _size_of(image_path, item.source)
        if item.size is not None and item.size != (height, width):
            raise SkippedItem(
                "size_mismatch",
                f"the annotation says the image is {item.size[1]}x{item.size[0]} but it is {width}x{height}",
                path=item.image if isinstance(item.image, Path) else item.source,
            )
        drawing = item.draw(height, width)
        if isinstance(item.image, Path):
            written.append(copy_image(item.image, out, name))
        write_mask(drawing.mask, out, name, export.classes)
    except SkippedItem as e:
        for path in written:
            path.unlink(missing_ok=True)
        return False, [Problem(name, e.path or str(item.source), e.kind, e.reason)]
    return True, drawing.findings
