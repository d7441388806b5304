"""What a format reader hands the import: the options, the class list, and one item per image with a lazy drawing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from fcnseg.data.classes import ClassInfo
from fcnseg.annotations.raster import OVERLAPS, Drawing
from fcnseg.data.scan import Problem
from fcnseg.errors import ConfigError, DataError


@dataclass(frozen=True)
class ImportOptions:
    """Settings of an import (defaults give the documented behaviour).

    Args:
        overlap: ``area`` (larger objects first, smaller on top) or ``order`` (annotation order, last on top).
        val_fraction: share of the written images listed in ``val.txt`` (0 <= f < 1); the rest in ``train.txt``.
        seed: seed of the train/val draw.
        classes: a class file imposing the class order (else background 0 and the names sorted, in every format).
        images: COCO, CVAT: the folder the image file names are relative to (default: guessed from the export).
        masks: COCO panoptic: the folder of the panoptic PNGs (default: the JSON's path without ``.json``).
    """

    overlap: str = "area"
    val_fraction: float = 0.2
    seed: int = 0
    classes: Path | None = None
    images: Path | None = None
    masks: Path | None = None

    def __post_init__(self) -> None:
        if self.overlap not in OVERLAPS:
            raise ConfigError(f"overlap must be one of {', '.join(OVERLAPS)}; found {self.overlap!r}")
        if not 0 <= self.val_fraction < 1:
            raise ConfigError(f"val_fraction must lie in 0 <= f < 1; found {self.val_fraction}")


class SkippedItem(DataError):
    """Raised while drawing an item that cannot be imported (its mask PNG is missing, unreadable or mis-sized)."""

    def __init__(self, kind: str, message: str, *, path):
        self.kind = kind
        super().__init__(message, path=path)


# Embedded image bytes: a callable, so that a labelme JSON's imageData is decoded only when written.
ImageBytes = Callable[[], bytes]


@dataclass(frozen=True)
class Item:
    """One image of the export.

    Args:
        name: the output file stem (``images/<name>.jpg``, ``masks/<name>.png``).
        source: the annotation file that describes the item (named in reports).
        image: the image file (may not exist: reported as ``missing_image``), its embedded bytes, or
            None when the export names no image (``missing_image`` too).
        size: ``(height, width)`` the export declares, checked against the image; None if it declares none.
        draw: ``draw(height, width) -> Drawing``, the label map for the upright image; may raise SkippedItem.
    """

    name: str
    source: Path
    image: Path | ImageBytes | None
    size: tuple[int, int] | None
    draw: Callable[[int, int], Drawing]


@dataclass
class Export:
    """A read export: classes (label order), items, and what was found while listing them."""

    classes: ClassInfo
    items: list[Item]
    class_map: dict[str, int] = field(default_factory=dict)
    findings: list[Problem] = field(default_factory=list)
