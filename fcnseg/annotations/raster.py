"""Annotated shapes -> label maps: polygons, rectangles, circles and bitmaps rasterised and painted in overlap order.

Pixel convention (every format): coordinates are continuous image coordinates with the origin at the
top-left corner of the top-left pixel, so pixel (row r, column c) is the square [c, c+1) x [r, r+1)
and its centre is (c + 0.5, r + 0.5). A pixel belongs to a shape when its centre lies inside the
shape or on its edge (polygons are filled with Pillow's ImageDraw at 8x resolution, so a centre
within about 1/8 pixel of a slanted edge may fall either way). This is the convention of COCO, CVAT and labelme coordinates; it gives an
axis-aligned rectangle from x=2 to x=7 exactly the five columns 2..6. (labelme's own labelme2voc.py
draws with Pillow at the raw coordinates, outline included, which labels up to one more pixel along
the right and bottom edges.)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from fcnseg.data.classes import IGNORE_INDEX
from fcnseg.data.scan import Problem
from fcnseg.files import plural

OVERLAPS = ("area", "order")

# Pillow's polygon fill snaps vertices to whole canvas pixels and fills whole pixels, edges included.
# Drawing at SUBPIXELS times the resolution and reading the canvas pixel at each image pixel centre
# (SUBPIXELS is even, so a centre is a canvas pixel) samples at the centres with vertices at 1/8 pixel
# precision: only a centre within about 1/8 pixel of an edge can land on the other side.
SUBPIXELS = 8
BAND_ROWS = 64  # output rows drawn per canvas: a 4000-pixel-wide polygon needs a 2 MB canvas, not one per image


@dataclass(frozen=True)
class Region:
    """The pixels of one shape inside the image: ``mask`` bool ``[h, w]`` placed at (``top``, ``left``)."""

    top: int
    left: int
    mask: np.ndarray

    @property
    def area(self) -> int:
        return int(self.mask.sum())

    def paint(self, label_map: np.ndarray, value: int) -> None:
        """Set the region's pixels of ``label_map`` (uint8 ``[H, W]``) to ``value``, in place."""
        h, w = self.mask.shape
        label_map[self.top : self.top + h, self.left : self.left + w][self.mask] = value


def _empty_region() -> Region:
    return Region(0, 0, np.zeros((0, 0), dtype=bool))


def _pixel_span(lo: float, hi: float, size: int) -> tuple[int, int]:
    """Indices ``[first, stop)`` of the pixels whose centre ``i + 0.5`` lies in ``[lo, hi]``, clipped to ``0..size``."""
    first = max(0, math.ceil(lo - 0.5))
    stop = min(size, math.floor(hi - 0.5) + 1)
    return first, max(first, stop)


@dataclass(frozen=True)
class Polygon:
    """One area made of one or more rings (their union, as COCO does for a multi-part object).

    ``parts``: float64 ``[N, 2]`` arrays of ``(x, y)`` vertices, N >= 3 each.
    """

    parts: tuple[np.ndarray, ...]

    @classmethod
    def from_points(cls, parts: Sequence[Sequence[Sequence[float]]]) -> Polygon:
        """From rings of ``[x, y]`` pairs (labelme). Raises ValueError for a ring of fewer than 3 points."""
        rings = []
        for ring in parts:
            array = np.asarray(ring, dtype=np.float64)
            if array.ndim != 2 or array.shape[1] != 2:
                raise ValueError(f"expected [x, y] points, found an array of shape {array.shape}")
            rings.append(array)
        return cls._checked(rings)

    @classmethod
    def from_flat(cls, parts: Sequence[Sequence[float]]) -> Polygon:
        """From COCO's flat rings ``[x1, y1, x2, y2, ...]``. Raises ValueError for an odd or short ring."""
        rings = []
        for ring in parts:
            array = np.asarray(ring, dtype=np.float64)
            if array.ndim != 1 or array.size % 2:
                raise ValueError(f"a polygon ring has {array.size} numbers; expected x, y pairs")
            rings.append(array.reshape(-1, 2))
        return cls._checked(rings)

    @classmethod
    def _checked(cls, rings: list[np.ndarray]) -> Polygon:
        if not rings:
            raise ValueError("a polygon without points")
        for ring in rings:
            if len(ring) < 3:
                raise ValueError(f"a polygon ring has {plural(len(ring), 'point')}; expected at least 3")
            if not np.isfinite(ring).all():
                raise ValueError("a polygon has a coordinate that is not a finite number")
        return cls(tuple(rings))

    def bounds(self) -> tuple[float, float, float, float]:
        points = np.concatenate(self.parts)
        return float(points[:, 0].min()), float(points[:, 1].min()), float(points[:, 0].max()), float(points[:, 1].max())

    def region(self, height: int, width: int) -> Region:
        x_lo, y_lo, x_hi, y_hi = self.bounds()
        left, right = _pixel_span(x_lo, x_hi, width)
        top, bottom = _pixel_span(y_lo, y_hi, height)
        if left >= right or top >= bottom:
            return _empty_region()
        # Pillow draws in 32-bit integers: rings reaching far outside (1e9) are cut to a pixel beyond the
        # image first, which keeps every pixel centre inside the image on the side it was on
        rings = [clipped for ring in self.parts if len(clipped := clip_ring(ring, width, height)) >= 3]
        s, half = SUBPIXELS, SUBPIXELS // 2
        mask = np.zeros((bottom - top, right - left), dtype=bool)
        for band in range(0, bottom - top, BAND_ROWS):
            rows = min(BAND_ROWS, bottom - top - band)
            canvas = Image.new("1", ((right - left) * s, rows * s), 0)
            draw = ImageDraw.Draw(canvas)
            for ring in rings:
                # canvas pixel k of the band is the image coordinate left + k / s (rows: top + band + k / s);
                # + 0.5 because Pillow floors vertices, and rounding them to the nearest canvas pixel halves the error
                xy = np.empty_like(ring)
                xy[:, 0] = (ring[:, 0] - left) * s + 0.5
                xy[:, 1] = (ring[:, 1] - top - band) * s + 0.5
                draw.polygon([tuple(p) for p in xy.tolist()], fill=1)
            mask[band : band + rows] = np.asarray(canvas)[half::s, half::s]
        return Region(top, left, mask)


def clip_ring(ring: np.ndarray, width: int, height: int, margin: float = 1.0) -> np.ndarray:
    """The ring ``[N, 2]`` (x, y) cut to the box ``[-margin, width + margin] x [-margin, height + margin]``.

    Sutherland-Hodgman clipping against the box's four sides: the part of the polygon inside the box
    is the same area as before (edges along the box's sides may be added, outside the image), so every
    pixel centre is inside the clipped ring exactly when it was inside the ring. Coordinates up to the
    largest float64 are handled without overflow (intersections are computed from halved coordinates).

    Returns:
        float64 ``[M, 2]``, every vertex inside the box; fewer than 3 rows when nothing of it is inside.
    """
    points = [tuple(p) for p in np.asarray(ring, dtype=np.float64).tolist()]
    for axis, bound, keep_below in ((0, -margin, False), (0, width + margin, True),
                                    (1, -margin, False), (1, height + margin, True)):
        def inside(p, axis=axis, bound=bound, keep_below=keep_below):
            return p[axis] <= bound if keep_below else p[axis] >= bound

        kept: list[tuple[float, float]] = []
        for i, current in enumerate(points):
            previous = points[i - 1]
            if inside(current) != inside(previous):
                kept.append(_crossing(previous, current, axis, bound))
            if inside(current):
                kept.append(current)
        points = kept
        if not points:
            break
    clipped = np.array(points, dtype=np.float64).reshape(-1, 2)
    lows, highs = (-margin, -margin), (width + margin, height + margin)
    return np.clip(clipped, lows, highs)  # rounding in the crossings may step a hair outside


def _crossing(a: tuple[float, float], b: tuple[float, float], axis: int, bound: float) -> tuple[float, float]:
    """Where the segment ``a``-``b`` (one end on each side) meets the line ``coordinate[axis] == bound``."""
    t = (bound / 2 - a[axis] / 2) / (b[axis] / 2 - a[axis] / 2)  # halves: no overflow for |coordinates| < max float
    other = 1 - axis
    value = a[other] * (1 - t) + b[other] * t
    return (bound, value) if axis == 0 else (value, bound)


@dataclass(frozen=True)
class Rectangle:
    """An axis-aligned box between two corners (any order)."""

    x0: float
    y0: float
    x1: float
    y1: float

    def bounds(self) -> tuple[float, float, float, float]:
        return min(self.x0, self.x1), min(self.y0, self.y1), max(self.x0, self.x1), max(self.y0, self.y1)

    def region(self, height: int, width: int) -> Region:
        x_lo, y_lo, x_hi, y_hi = self.bounds()
        left, right = _pixel_span(x_lo, x_hi, width)
        top, bottom = _pixel_span(y_lo, y_hi, height)
        return Region(top, left, np.ones((bottom - top, right - left), dtype=bool))


@dataclass(frozen=True)
class Circle:
    """A disc: centre ``(cx, cy)`` and ``radius``."""

    cx: float
    cy: float
    radius: float

    def bounds(self) -> tuple[float, float, float, float]:
        r = abs(self.radius)
        return self.cx - r, self.cy - r, self.cx + r, self.cy + r

    def region(self, height: int, width: int) -> Region:
        x_lo, y_lo, x_hi, y_hi = self.bounds()
        left, right = _pixel_span(x_lo, x_hi, width)
        top, bottom = _pixel_span(y_lo, y_hi, height)
        ys = np.arange(top, bottom, dtype=np.float64)[:, None] + 0.5 - self.cy
        xs = np.arange(left, right, dtype=np.float64)[None, :] + 0.5 - self.cx
        return Region(top, left, ys * ys + xs * xs <= self.radius * self.radius)


@dataclass(frozen=True)
class Ellipse:
    """An ellipse: centre ``(cx, cy)``, radii ``rx`` along its own x axis and ``ry``, turned ``rotation``
    degrees clockwise on screen (y points down) about its centre (CVAT's ellipses)."""

    cx: float
    cy: float
    rx: float
    ry: float
    rotation: float = 0.0

    def bounds(self) -> tuple[float, float, float, float]:
        cos, sin = math.cos(math.radians(self.rotation)), math.sin(math.radians(self.rotation))
        half_x = math.hypot(self.rx * cos, self.ry * sin)
        half_y = math.hypot(self.rx * sin, self.ry * cos)
        return self.cx - half_x, self.cy - half_y, self.cx + half_x, self.cy + half_y

    def region(self, height: int, width: int) -> Region:
        x_lo, y_lo, x_hi, y_hi = self.bounds()
        left, right = _pixel_span(x_lo, x_hi, width)
        top, bottom = _pixel_span(y_lo, y_hi, height)
        if left >= right or top >= bottom or self.rx <= 0 or self.ry <= 0:
            return _empty_region()
        cos, sin = math.cos(math.radians(self.rotation)), math.sin(math.radians(self.rotation))
        dy = np.arange(top, bottom, dtype=np.float64)[:, None] + 0.5 - self.cy
        dx = np.arange(left, right, dtype=np.float64)[None, :] + 0.5 - self.cx
        along, across = dx * cos + dy * sin, dy * cos - dx * sin  # in the ellipse's own axes
        return Region(top, left, (along / self.rx) ** 2 + (across / self.ry) ** 2 <= 1.0)


@dataclass(frozen=True)
class Bitmap:
    """A pixel mask (bool ``[h, w]``) whose pixel (0, 0) is image pixel (``top``, ``left``): RLE, labelme masks."""

    mask: np.ndarray
    top: int = 0
    left: int = 0

    def bounds(self) -> tuple[float, float, float, float]:
        h, w = self.mask.shape
        return float(self.left), float(self.top), float(self.left + w), float(self.top + h)

    def region(self, height: int, width: int) -> Region:
        h, w = self.mask.shape
        top, left = max(0, self.top), max(0, self.left)
        bottom, right = min(height, self.top + h), min(width, self.left + w)
        if top >= bottom or left >= right:
            return _empty_region()
        mask = self.mask[top - self.top : bottom - self.top, left - self.left : right - self.left].astype(bool)
        return Region(top, left, mask)


@dataclass(frozen=True)
class PolygonWithHoles:
    """An area with holes (a GeoJSON polygon): the pixels of ``outer`` less those of each of ``holes``."""

    outer: Polygon
    holes: tuple[Polygon, ...] = ()

    def bounds(self) -> tuple[float, float, float, float]:
        return self.outer.bounds()

    def region(self, height: int, width: int) -> Region:
        region = self.outer.region(height, width)
        mask = region.mask.copy()
        h, w = mask.shape
        for hole in self.holes:
            cut = hole.region(height, width)
            top, left = max(region.top, cut.top), max(region.left, cut.left)
            bottom = min(region.top + h, cut.top + cut.mask.shape[0])
            right = min(region.left + w, cut.left + cut.mask.shape[1])
            if top < bottom and left < right:
                inside = cut.mask[top - cut.top : bottom - cut.top, left - cut.left : right - cut.left]
                mask[top - region.top : bottom - region.top, left - region.left : right - region.left] &= ~inside
        return Region(region.top, region.left, mask)


Geometry = Polygon | PolygonWithHoles | Rectangle | Circle | Ellipse | Bitmap


@dataclass(frozen=True)
class Shape:
    """One annotated area: its geometry, the label it paints (a class index, or 255 for crowd/ignore
    regions) and how reports name it (``annotation 17 (cat)``)."""

    geometry: Geometry
    label: int
    what: str


@dataclass
class Drawing:
    """A label map (uint8 ``[H, W]``, 0 = background, 255 = ignore) and what was found drawing it."""

    mask: np.ndarray
    findings: list[Problem] = field(default_factory=list)


def paint_order(regions: Sequence[Region], labels: Sequence[int], overlap: str) -> list[int]:
    """Indices of ``regions`` in the order they are painted (later ones end up on top).

    Ignore regions (label 255: COCO crowds, labelme's ``__ignore__``) come first, so that an object
    annotated on its own keeps its label where it overlaps a crowd. Then objects: ``area`` paints the
    larger first so smaller objects stay visible on top (ties keep annotation order); ``order``
    paints in annotation order, the last one on top (the annotation tool's z-order).
    """
    if overlap not in OVERLAPS:
        raise ValueError(f"overlap must be one of {OVERLAPS}, not {overlap!r}")
    indices = range(len(regions))
    ignore = [i for i in indices if labels[i] == IGNORE_INDEX]
    objects = [i for i in indices if labels[i] != IGNORE_INDEX]
    if overlap == "area":
        objects.sort(key=lambda i: -regions[i].area)  # sort is stable: equal areas keep annotation order
    return ignore + objects


def draw_shapes(shapes: Sequence[Shape], height: int, width: int, *, overlap: str, name: str, path: str) -> Drawing:
    """Rasterise ``shapes`` on a ``height`` x ``width`` background (0) and paint them by ``overlap``.

    A shape reaching more than half a pixel outside the image is clipped (finding ``clipped``); one entirely outside is left
    out (``outside_image``); one that covers no pixel centre is left out (``empty_shape``). Findings
    name the item ``name`` and the annotation file ``path``.

    Returns:
        Drawing with ``mask`` uint8 ``[height, width]``.
    """
    findings: list[Problem] = []
    regions: list[Region] = []
    kept: list[Shape] = []
    for shape in shapes:
        x_lo, y_lo, x_hi, y_hi = shape.geometry.bounds()
        extent = f"x {x_lo:g}..{x_hi:g}, y {y_lo:g}..{y_hi:g}"
        if x_hi <= 0 or y_hi <= 0 or x_lo >= width or y_lo >= height:
            findings.append(Problem(name, path, "outside_image", f"{shape.what} lies outside the {width}x{height} image ({extent}); skipped"))
            continue
        region = shape.geometry.region(height, width)
        if region.area == 0:
            findings.append(Problem(name, path, "empty_shape", f"{shape.what} covers no pixel centre ({extent}); skipped"))
            continue
        # within half a pixel of the border no pixel centre lies outside: exports rounding to 640.3 are not clipped
        if x_lo < -0.5 or y_lo < -0.5 or x_hi > width + 0.5 or y_hi > height + 0.5:
            findings.append(Problem(name, path, "clipped", f"{shape.what} reaches outside the {width}x{height} image ({extent}); clipped"))
        regions.append(region)
        kept.append(shape)
    mask = np.zeros((height, width), dtype=np.uint8)
    for i in paint_order(regions, [s.label for s in kept], overlap):
        regions[i].paint(mask, kept[i].label)
    return Drawing(mask, findings)
