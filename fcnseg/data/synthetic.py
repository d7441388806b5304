"""Built-in synthetic data set: seeded scenes of textured objects on textured backgrounds, on disk (VOC layout) or in memory.

Four styles share the VOC-like conventions (background = 0, a 255 ignore rim around every object):
``shapes``, where the class is the outline (disc, square, triangle, cross, ring), ``blobs``, where
irregular blobs are classed by their texture (stripes, checks, dots, rings, waves), ``thin``: many
small and thin objects (bars, dots, rings, crosses, and rare curved wires) covering a few per cent of
the pixels, with wires under 1% (the imbalance of real scenes: background ~94%); and ``rare``, blobs
whose fifth class (waves) is drawn so seldom that it covers under 1% of the pixels. Colours are drawn
per instance from the same distribution for every class, so colour alone never gives the class away.
"""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from fcnseg.data.base import RawItem, SegmentationDataset, Transform
from fcnseg.data.classes import IGNORE_INDEX, ClassInfo, ClassSource, write_class_file
from fcnseg.data.kinds import SYNTHETIC_STYLES
from fcnseg.data.normalization import Normalization
from fcnseg.data.palette import palette_for, voc_palette, write_mask_png
from fcnseg.errors import DataError

STYLE_CLASSES = {  # keys: fcnseg.data.kinds.SYNTHETIC_STYLES, in its order
    "shapes": ("background", "disc", "square", "triangle", "cross", "ring"),
    "blobs": ("background", "stripes", "checks", "dots", "rings", "waves"),
    "thin": ("background", "bar", "dot", "ring", "cross", "wire"),
    # blobs with one rare class: waves drawn with 2% odds (under 1% of the pixels), the others evenly
    "rare": ("background", "stripes", "checks", "dots", "rings", "rare waves"),
}
RARE_CLASS_ODDS = (0.0, 0.245, 0.245, 0.245, 0.245, 0.02)
STYLES = SYNTHETIC_STYLES  # the style names, from the one torch-free list the command parsers offer
MIN_SIDE, MAX_SIDE = 97, 251  # image height and width are drawn from [MIN_SIDE, MAX_SIDE) independently
RIM = 3  # ignore-rim window (pixels): VOC-like band of 255 where a 3x3 window sees two labels
DEFAULT_SIZES = {"train": 160, "val": 40}


def synthetic_classes(style: str = "shapes") -> ClassInfo:
    """Class names of a style, coloured with the VOC palette."""
    names = STYLE_CLASSES[_check_style(style)]
    return ClassInfo(names, tuple(tuple(int(c) for c in row) for row in voc_palette(len(names))))


def style_of_classes(class_names) -> str | None:
    """The synthetic style whose classes are exactly ``class_names`` (in order), or None."""
    return next((style for style, names in STYLE_CLASSES.items() if list(names) == list(class_names)), None)


def generate_sample(
    seed: int, split: str, index: int, style: str = "shapes", size: tuple[int, int] | None = None
) -> RawItem:
    """Generate one scene, a pure function of ``(seed, style, split, index, size)``.

    Args:
        size: ``(height, width)``; default drawn from ``[97, 251)`` per side.
    Returns:
        RawItem with RGB uint8 ``[H, W, 3]`` image and int64 ``[H, W]`` mask (0..5, 255 rim; in ``thin``
        the rim lies on the background side of each object, whose own pixels all keep their class).
    """
    style = _check_style(style)
    rng = np.random.default_rng([seed, STYLES.index(style), _split_code(split), index])
    if size is None:
        h, w = (int(v) for v in rng.integers(MIN_SIDE, MAX_SIDE, size=2))
    else:
        h, w = size
    if style == "shapes":
        image, mask = _shapes_scene(rng, h, w)
    elif style in ("blobs", "rare"):
        image, mask = _blobs_scene(rng, h, w, RARE_CLASS_ODDS if style == "rare" else None)
    else:
        image, mask = _thin_scene(rng, h, w)
    rim = ndimage.maximum_filter(mask, size=RIM) != ndimage.minimum_filter(mask, size=RIM)
    if style == "thin":
        # a 2-pixel bar would be all rim: the band is drawn on the background side, and between objects
        # only where two classes touch
        objects = mask > 0
        highest = ndimage.maximum_filter(np.where(objects, mask, 0), size=RIM)
        lowest = ndimage.minimum_filter(np.where(objects, mask, 255), size=RIM)
        rim = (rim & ~objects) | (objects & ((highest != mask) | (lowest != mask)))
    mask = mask.astype(np.int64)
    mask[rim] = IGNORE_INDEX
    return RawItem(f"{split}_{index:05d}", np.clip(image, 0, 255).round().astype(np.uint8), mask)


def make_synthetic(
    root: str | Path,
    num_train: int = DEFAULT_SIZES["train"],
    num_val: int = DEFAULT_SIZES["val"],
    seed: int = 0,
    style: str = "shapes",
    *,
    image_format: str = "jpg",
    size: tuple[int, int] | None = None,
    jpeg_quality: int = 95,
) -> dict:
    """Write a synthetic data set in the VOC layout, readable by :class:`fcnseg.data.voc.VOCDataset`.

    Writes ``JPEGImages/<name>.jpg`` (or lossless ``.png`` with ``image_format="png"``),
    ``SegmentationClass/<name>.png`` (palette), ``ImageSets/Segmentation/{train,val,trainval}.txt``,
    ``classes.txt`` and ``synthetic.json`` (the generator settings).

    Returns:
        dict with ``root``, ``style``, ``seed``, ``num_train``, ``num_val``, ``class_names``.
    """
    style = _check_style(style)
    if image_format not in ("jpg", "png"):
        raise DataError(f"image_format must be 'jpg' or 'png', found {image_format!r}")
    root = Path(root)
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    classes = synthetic_classes(style)
    palette = palette_for(classes)
    splits: dict[str, list[str]] = {}
    for split, count in (("train", num_train), ("val", num_val)):
        splits[split] = []
        for index in range(count):
            item = generate_sample(seed, split, index, style, size)
            image = Image.fromarray(item.image)
            if image_format == "jpg":
                image.save(root / "JPEGImages" / f"{item.name}.jpg", quality=jpeg_quality)
            else:
                image.save(root / "JPEGImages" / f"{item.name}.png")
            write_mask_png(item.mask, root / "SegmentationClass" / f"{item.name}.png", palette)
            splits[split].append(item.name)
    splits["trainval"] = splits["train"] + splits["val"]
    for split, names in splits.items():
        (root / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("".join(f"{n}\n" for n in names))
    write_class_file(root / "classes.txt", classes)
    settings = {
        "generator": "fcnseg.data.synthetic",
        "style": style,
        "seed": seed,
        "num_train": num_train,
        "num_val": num_val,
        "size": list(size) if size else None,
        "image_format": image_format,
        "class_names": list(classes.names),
    }
    (root / "synthetic.json").write_text(json.dumps(settings, indent=2) + "\n")
    return {"root": str(root), **{k: settings[k] for k in ("style", "seed", "num_train", "num_val", "class_names")}}


class SyntheticDataset(SegmentationDataset):
    """The synthetic set served from memory: item ``i`` is generated on demand, identical on every call.

    Same interface as the file-backed data sets (:class:`fcnseg.data.base.SegmentationDataset`):
    ``dataset[i] -> (image float32 [3, H, W], mask int64 [H, W])``, ``class_names``, ``num_classes``,
    ``palette``, ``heads``, ``streams``, ``normalization``, ``use_inputs``, ``name(i)``, ``load_raw(i)``.
    The pixels equal those :func:`make_synthetic` writes with ``image_format="png"``.
    """

    kind = "synthetic"

    def __init__(
        self,
        split: str = "train",
        num_images: int | None = None,
        *,
        seed: int = 0,
        style: str = "shapes",
        size: tuple[int, int] | None = None,
        normalization: Normalization | None = None,
        transform: Transform | None = None,
    ) -> None:
        self.style = _check_style(style)
        self.seed = seed
        self.size = size
        self.num_images = DEFAULT_SIZES.get(split, DEFAULT_SIZES["val"]) if num_images is None else num_images
        super().__init__(
            synthetic_classes(style),
            root=None,
            split=split,
            class_source=ClassSource(f"the synthetic {self.style} classes"),
            normalization=normalization,
            transform=transform,
        )

    def __len__(self) -> int:
        return self.num_images

    def name(self, index: int) -> str:
        return f"{self.split}_{index:05d}"

    def load_raw(self, index: int) -> RawItem:
        if not 0 <= index < self.num_images:
            raise IndexError(f"index {index} out of range for {self.num_images} synthetic images")
        return generate_sample(self.seed, self.split, index, self.style, self.size)

    def __repr__(self) -> str:
        return f"SyntheticDataset(style={self.style!r}, split={self.split!r}, items={len(self)}, seed={self.seed})"


# ----------------------------------------------------------------------------- scene painting


def _check_style(style: str) -> str:
    if style not in STYLE_CLASSES:
        raise DataError(f"unknown synthetic style {style!r}; expected one of {list(STYLES)}")
    return style


def _split_code(split: str) -> int:
    return {"train": 0, "val": 1}.get(split, zlib.crc32(split.encode()) + 2)


def _colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0, 255, size=3)


def _smooth_field(rng: np.random.Generator, h: int, w: int, cells: int, channels: int = 1) -> np.ndarray:
    """Low-frequency noise in [0, 1]: a ``cells x cells`` random grid upsampled bicubically, float ``[H, W, channels]``."""
    out = np.empty((h, w, channels), dtype=np.float32)
    for c in range(channels):
        grid = rng.uniform(0, 1, size=(cells, cells)).astype(np.float32)
        out[..., c] = np.asarray(Image.fromarray(grid, mode="F").resize((w, h), Image.BICUBIC))
    return np.clip(out, 0, 1)


def _background(rng: np.random.Generator, h: int, w: int, structured: bool) -> np.ndarray:
    """Two-colour smooth field + colour blotches + pixel noise (+ a faint stripe texture), float ``[H, W, 3]``."""
    c1, c2 = _colour(rng), _colour(rng)
    t = _smooth_field(rng, h, w, int(rng.integers(2, 6)))
    image = c1 * (1 - t) + c2 * t
    image += (_smooth_field(rng, h, w, int(rng.integers(8, 16)), 3) - 0.5) * rng.uniform(20, 60)
    if structured and rng.random() < 0.5:
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        angle, period = rng.uniform(0, math.pi), rng.uniform(6, 20)
        stripes = np.sin((xx * math.cos(angle) + yy * math.sin(angle)) * 2 * math.pi / period)
        image += stripes[..., None] * rng.uniform(8, 25)
    image += rng.normal(0, rng.uniform(4, 12), size=(h, w, 3))
    return image


def _polygon_mask(h: int, w: int, polygons: list[tuple[list[tuple[float, float]], int]]) -> np.ndarray:
    """Rasterise ``(points, fill)`` polygons in order onto a bool ``[H, W]`` mask (fill 0 cuts holes)."""
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    for points, fill in polygons:
        draw.polygon(points, fill=fill)
    return np.asarray(canvas) > 0


def _ellipse(cx: float, cy: float, rx: float, ry: float, angle: float, n: int = 48) -> list[tuple[float, float]]:
    t = np.linspace(0, 2 * math.pi, n, endpoint=False)
    x, y = rx * np.cos(t), ry * np.sin(t)
    return _rotate(x, y, cx, cy, angle)


def _rotate(x: np.ndarray, y: np.ndarray, cx: float, cy: float, angle: float) -> list[tuple[float, float]]:
    ca, sa = math.cos(angle), math.sin(angle)
    return list(zip((cx + x * ca - y * sa).tolist(), (cy + x * sa + y * ca).tolist()))


def _shape_mask(rng: np.random.Generator, cls: int, h: int, w: int) -> np.ndarray:
    """Outline of class ``cls`` (1 disc, 2 square, 3 triangle, 4 cross, 5 ring) at a random place, size and angle."""
    r = rng.uniform(0.12, 0.3) * min(h, w)
    cx, cy = rng.uniform(0.1 * w, 0.9 * w), rng.uniform(0.1 * h, 0.9 * h)
    angle = rng.uniform(0, 2 * math.pi)
    aspect = rng.uniform(0.75, 1.0)
    if cls == 1:
        polygons = [(_ellipse(cx, cy, r, r * aspect, angle), 1)]
    elif cls == 2:
        s = r * 0.85
        x = np.array([-s, s, s, -s])
        y = np.array([-s, -s, s, s]) * aspect
        polygons = [(_rotate(x, y, cx, cy, angle), 1)]
    elif cls == 3:
        t = np.array([0, 2 * math.pi / 3, 4 * math.pi / 3]) + rng.uniform(-0.15, 0.15, size=3)
        polygons = [(_rotate(1.15 * r * np.cos(t), 1.15 * r * np.sin(t), cx, cy, angle), 1)]
    elif cls == 4:
        a = r * rng.uniform(0.28, 0.38)  # half-width of an arm
        x = np.array([-a, a, a, r, r, a, a, -a, -a, -r, -r, -a])
        y = np.array([-r, -r, -a, -a, a, a, r, r, a, a, -a, -a])
        polygons = [(_rotate(x, y, cx, cy, angle), 1)]
    else:
        inner = rng.uniform(0.45, 0.62)
        polygons = [
            (_ellipse(cx, cy, r, r * aspect, angle), 1),
            (_ellipse(cx, cy, r * inner, r * aspect * inner, angle), 0),
        ]
    return _polygon_mask(h, w, polygons)


def _shade(rng: np.random.Generator, region: np.ndarray) -> np.ndarray:
    """A flat random colour with a linear lighting gradient and noise for the pixels of ``region``, float ``[K, 3]``."""
    h, w = region.shape
    ys, xs = np.nonzero(region)  # row-major, the order of image[region]
    angle = rng.uniform(0, 2 * math.pi)
    ramp = (xs * math.cos(angle) + ys * math.sin(angle)) / max(h, w)  # about -1..1 across the image
    noise = rng.normal(0, rng.uniform(3, 10), size=(ys.size, 3))
    return _colour(rng) + ramp[:, None] * rng.uniform(-50, 50) + noise


def _shapes_scene(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    image = _background(rng, h, w, structured=True)
    mask = np.zeros((h, w), dtype=np.uint8)
    for _ in range(int(rng.integers(2, 6))):  # later objects occlude earlier ones
        cls = int(rng.integers(1, 6))
        region = _shape_mask(rng, cls, h, w)
        image[region] = _shade(rng, region)
        mask[region] = cls
    return image, mask


def _texture(rng: np.random.Generator, cls: int, region: np.ndarray, cx: float, cy: float) -> np.ndarray:
    """Binary texture of class ``cls`` (1 stripes, 2 checks, 3 dots, 4 rings, 5 waves) at the pixels of ``region``, float ``[K]``."""
    ys, xs = np.nonzero(region)
    yy, xx = ys.astype(np.float32), xs.astype(np.float32)
    angle = rng.uniform(0, math.pi)
    u = xx * math.cos(angle) + yy * math.sin(angle)
    v = -xx * math.sin(angle) + yy * math.cos(angle)
    p = rng.uniform(5, 10)  # period, pixels
    if cls == 1:
        pattern = np.mod(u / p, 1) < 0.5
    elif cls == 2:
        pattern = np.mod(np.floor(u / p) + np.floor(v / p), 2) == 0
    elif cls == 3:
        pattern = (np.mod(u / p, 1) - 0.5) ** 2 + (np.mod(v / p, 1) - 0.5) ** 2 < rng.uniform(0.22, 0.32) ** 2
    elif cls == 4:
        pattern = np.mod(np.hypot(xx - cx, yy - cy) / p, 1) < 0.5
    else:
        amplitude, wavelength = rng.uniform(0.5, 1.0) * p, rng.uniform(3, 5) * p
        pattern = np.mod((u + amplitude * np.sin(2 * math.pi * v / wavelength)) / p, 1) < 0.5
    return pattern.astype(np.float32)


def _blob_mask(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, float, float]:
    """An irregular blob: radius ``R (1 + sum_k a_k cos(k phi + p_k))``, k = 2..4; returns mask and centre."""
    big = rng.uniform(0.15, 0.32) * min(h, w)
    cx, cy = rng.uniform(0.1 * w, 0.9 * w), rng.uniform(0.1 * h, 0.9 * h)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    phi = np.arctan2(yy - cy, xx - cx)
    radius = np.full_like(phi, big)
    for k in (2, 3, 4):
        radius += big * rng.uniform(0, 0.18) * np.cos(k * phi + rng.uniform(0, 2 * math.pi))
    return np.hypot(xx - cx, yy - cy) < radius, cx, cy


def _blobs_scene(rng: np.random.Generator, h: int, w: int, odds=None) -> tuple[np.ndarray, np.ndarray]:
    """Blobs classed by texture; ``odds`` (per class, background's 0) draws the classes unevenly."""
    image = _background(rng, h, w, structured=False)
    mask = np.zeros((h, w), dtype=np.uint8)
    for _ in range(int(rng.integers(1, 5))):
        cls = int(rng.integers(1, 6)) if odds is None else int(rng.choice(len(odds), p=odds))
        region, cx, cy = _blob_mask(rng, h, w)
        c1 = _colour(rng)
        c2 = _colour(rng)
        while np.abs(c1 - c2).sum() < 150:  # keep the texture visible
            c2 = _colour(rng)
        pattern = _texture(rng, cls, region, cx, cy)[:, None]  # [K, 1]
        noise = rng.normal(0, rng.uniform(3, 10), size=(pattern.shape[0], 3))
        image[region] = c1 * (1 - pattern) + c2 * pattern + noise
        mask[region] = cls
    return image, mask


# The thin style: object classes are drawn with these odds; wires are rare (under 1% of the pixels).
THIN_CLASS_ODDS = (0.0, 0.27, 0.26, 0.2, 0.21, 0.06)


def _thin_mask(rng: np.random.Generator, cls: int, h: int, w: int) -> np.ndarray:
    """A small or thin object of class ``cls`` (1 bar, 2 dot, 3 ring, 4 cross, 5 wire), bool ``[H, W]``."""
    canvas = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    cx, cy = rng.uniform(0.05 * w, 0.95 * w), rng.uniform(0.05 * h, 0.95 * h)
    width = int(rng.integers(2, 5))
    if cls == 1:  # a straight bar, 2-4 px wide, 12-40 px long
        length, angle = rng.uniform(12, 40), rng.uniform(0, math.pi)
        dx, dy = 0.5 * length * math.cos(angle), 0.5 * length * math.sin(angle)
        draw.line([(cx - dx, cy - dy), (cx + dx, cy + dy)], fill=1, width=width)
    elif cls == 2:  # a filled dot, radius 2-5
        r = rng.uniform(2, 5.5)
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=1)
    elif cls == 3:  # a ring, radius 5-10, 2-3 px thick
        r = rng.uniform(5, 10)
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=1, width=min(width, 3))
    elif cls == 4:  # a plus, arms 4-8 px, 2-3 px thick
        a = rng.uniform(4, 8)
        thick = min(width, 3)
        draw.line([(cx - a, cy), (cx + a, cy)], fill=1, width=thick)
        draw.line([(cx, cy - a), (cx, cy + a)], fill=1, width=thick)
    else:  # a wire: a smooth curve 1-2 px wide, 30-70 px long
        length, angle = rng.uniform(30, 70), rng.uniform(0, 2 * math.pi)
        bend, phase = rng.uniform(0.3, 1.0), rng.uniform(0, 2 * math.pi)
        t = np.linspace(0, 1, 24)
        heading = angle + bend * np.sin(2 * math.pi * t + phase)
        steps = length / (len(t) - 1)
        xs = cx + np.concatenate([[0], np.cumsum(steps * np.cos(heading[:-1]))])
        ys = cy + np.concatenate([[0], np.cumsum(steps * np.sin(heading[:-1]))])
        draw.line(list(zip(xs.tolist(), ys.tolist())), fill=1, width=int(rng.integers(1, 3)), joint="curve")
    return np.asarray(canvas) > 0


def _thin_scene(rng: np.random.Generator, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    image = _background(rng, h, w, structured=True)
    mask = np.zeros((h, w), dtype=np.uint8)
    count = max(2, int(round(h * w / 1200 * rng.uniform(0.6, 1.4))))  # ~25 objects in a 175x175 scene
    for cls in rng.choice(len(THIN_CLASS_ODDS), size=count, p=THIN_CLASS_ODDS):
        region = _thin_mask(rng, int(cls), h, w)
        if not region.any():
            continue
        # contrasting with the local background (whatever the class), so that a thin object is visible
        ys, xs = np.nonzero(region)
        local = image[ys, xs].mean(axis=0)
        colour = np.clip(255 - local + rng.normal(0, 40, size=3), 0, 255)
        image[region] = colour + rng.normal(0, rng.uniform(3, 10), size=(ys.size, 3))
        mask[region] = int(cls)
    return image, mask
