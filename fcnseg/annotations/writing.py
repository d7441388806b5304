"""What every annotation writer shares: the options, one labelled image, and the label map cut into shapes.

A writer gets the class names (label order; label 0 is the background and gets no shape of its own),
and per image its label map, its file and how the format should name it; it writes polygons
(:mod:`fcnseg.annotations.contours`) or masks (the format's RLE or bitmap), as the options say.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fcnseg.annotations.class_list import BACKGROUND, BACKGROUND_NAMES
from fcnseg.annotations.contours import DEFAULT_MIN_AREA, DEFAULT_TOLERANCE, Outline, Piece, outlines, paint_pieces
from fcnseg.errors import ConfigError

SHAPES = ("polygon", "mask")
IGNORE = 255


@dataclass(frozen=True)
class ExportOptions:
    """How label maps become shapes.

    Args:
        shapes: ``polygon`` (traced outlines, editable in every tool) or ``mask`` (the format's RLE or
            bitmap: every pixel, exactly); None: the format's default (masks for Label Studio, else polygons).
        tolerance: polygon simplification in pixels (0: the exact pixel outline).
        min_area: polygons: regions and holes of fewer pixels are left out. Masks keep every pixel.
        image_prefix: put before each image's relative path where the format names images (Label Studio:
            ``/data/local-files/?d=`` unless given).
        from_name, to_name: Label Studio: the names of the labelling config's control tag (BrushLabels or
            PolygonLabels) and of its Image tag; None: ``tag`` for brushes and ``label`` for polygons, and ``image``
            (Label Studio's templates).
        model_version: Label Studio: the predictions' ``model_version``.
    """

    shapes: str | None = None
    tolerance: float = DEFAULT_TOLERANCE
    min_area: int = DEFAULT_MIN_AREA
    image_prefix: str | None = None
    from_name: str | None = None
    to_name: str | None = None
    model_version: str = "fcnseg"

    def __post_init__(self) -> None:
        if self.shapes is not None and self.shapes not in SHAPES:
            raise ConfigError(f"shapes must be one of {', '.join(SHAPES)}; found {self.shapes!r}")
        if self.tolerance < 0:
            raise ConfigError(f"the simplification tolerance must be 0 or more pixels; found {self.tolerance}")
        if self.min_area < 0:
            raise ConfigError(f"the smallest region must be 0 or more pixels; found {self.min_area}")


@dataclass(frozen=True)
class LabelledImage:
    """One image and its label map.

    Args:
        name: its path relative to the image folder, with its suffix (``street/0001.jpg``): how the
            formats name the image, and (without suffix) where per-image files are written.
        image: the image file (labelme and GeoJSON name it relative to the file written; GeoJSON reads its
            georeference).
        load: returns the label map, int ``[H, W]`` (0 background, 255 unlabelled: neither gets a shape).
    """

    name: str
    image: Path
    load: Callable[[], np.ndarray]

    @property
    def stem(self) -> str:
        """The name without its suffix, with ``/`` separators."""
        return str(Path(self.name).with_suffix("")).replace("\\", "/")


def region_outlines(labels: np.ndarray, options: ExportOptions) -> list[Outline]:
    """The regions of every class but the background and the unlabelled, traced and simplified."""
    return outlines(labels, tolerance=options.tolerance, min_area=options.min_area, skip=(0, IGNORE))


def polygon_pieces(labels: np.ndarray, options: ExportOptions) -> list[Piece]:
    """Rings without holes in painting order (holes as background rings painted before what they hold)."""
    return paint_pieces(region_outlines(labels, options))


def class_masks(labels: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """``(label, bool [H, W])`` for every class present but the background and the unlabelled, by label."""
    return [(int(c), labels == c) for c in np.unique(labels) if c not in (0, IGNORE)]


def label_name(class_names: list[str], label: int, background: str = BACKGROUND) -> str:
    """The name a shape of ``label`` carries: its class name; label 0 (hole fills) ``background``,
    a name every fcnseg importer reads as label 0."""
    if label == 0:
        return class_names[0] if class_names[0] in BACKGROUND_NAMES else background
    return class_names[label]


def bounding_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """``(top, left, bottom, right)`` of the true pixels of a non-empty mask, bottom and right exclusive."""
    rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
    return int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1


def rounded(ring: np.ndarray) -> list[list[float]]:
    """A ring as ``[[x, y], ...]`` JSON numbers (whole numbers as ints)."""
    return [[_number(x), _number(y)] for x, y in ring.tolist()]


def _number(value: float) -> float | int:
    return int(value) if float(value).is_integer() else round(float(value), 4)


def check_classes(class_names: list[str]) -> None:
    if len(class_names) < 2:
        raise ConfigError(f"expected the model's class names, background first, and at least one class; found {class_names}")
    if len(class_names) > IGNORE:
        raise ConfigError(f"{len(class_names)} classes; label maps hold at most {IGNORE}")
