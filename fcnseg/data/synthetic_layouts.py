"""Synthetic trees in the layouts of the paper's other benchmarks (NYUDv2, SIFT Flow, PASCAL-Context), for demos and tests.

Each scene is a pure function of ``(seed, style, split, index, size)`` and is written in the files its real
data set uses, so that :class:`~fcnseg.data.nyud.NYUDDataset`, :class:`~fcnseg.data.siftflow.SIFTFlowDataset` and
:class:`~fcnseg.data.pascal_context.PascalContextDataset` read it through ``build_dataset`` like the real thing:

- ``nyud``: indoor RGB-D scenes from a level pinhole camera: a back wall, a floor plane and objects in front of
  it; the depth map (16-bit PNG, mm) is the scene's geometry, objects occlude only what lies behind them, and the
  HHA image encodes disparity, height above the floor and the angle of the surface normal with gravity (scaled as
  rcnn-depth's ``saveHHA.m`` scales them).
- ``siftflow``: outdoor scenes: sky above a wavy skyline, a ground stuff class below, objects standing in it;
  semantic and geometric (sky / horizontal / vertical) label ``.mat`` files that agree with each other.
- ``pascal_context``: full-scene labelings: a stuff class above, another below, objects, and some objects of
  classes outside the 59, stored as ``labels.txt`` ids in ``trainval/*.mat``; ``labels.txt`` / ``59_labels.txt``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import scipy.io
from PIL import Image
from scipy import ndimage

from fcnseg.data.classes import ClassInfo
from fcnseg.data.nyud import NYUD_CLASSES, nyud_file, nyud_label_file
from fcnseg.data.pascal_context import BACKGROUND, CONTEXT_59_CLASSES, TASK_TO_FULL_NAME
from fcnseg.data.siftflow import SIFTFLOW_SEMANTIC_CLASSES, SUBFOLDER
from fcnseg.data.synthetic import MAX_SIDE, MIN_SIDE, RIM, _colour, _shade, _shape_mask, _smooth_field, _split_code
from fcnseg.errors import DataError

LAYOUT_STYLES = ("nyud", "siftflow", "pascal_context")
# (training split, scoring split) each style writes: the split names of the real data set
LAYOUT_SPLITS = {"nyud": ("train", "val"), "siftflow": ("trainval", "test"), "pascal_context": ("train", "val")}
SIFTFLOW_SIZE = (256, 256)  # every SIFT Flow image is 256 x 256

# Shape outlines of fcnseg.data.synthetic (1 disc, 2 square, 3 triangle, 4 cross, 5 ring) stand for these classes.
NYUD_SHAPE_CLASSES = {1: "lamp", 2: "cabinet", 3: "chair", 4: "table", 5: "picture"}
SIFTFLOW_SHAPE_CLASSES = {1: "tree", 2: "building", 3: "mountain", 4: "pole", 5: "sign"}
SIFTFLOW_GROUND = {"road": (110, 110, 115), "grass": (70, 130, 50), "sea": (40, 80, 140), "sand": (200, 180, 130), "field": (150, 140, 60)}
CONTEXT_SHAPE_CLASSES = {1: "cat", 2: "tvmonitor", 3: "boat", 4: "aeroplane", 5: "diningtable"}
CONTEXT_ABOVE, CONTEXT_BELOW = ("sky", "wall", "ceiling"), ("grass", "ground", "road", "floor")

# labels.txt of the synthetic Context tree: the 59 classes under their ids (and spellings) in the released
# labels.txt, and four classes outside the 59, which map to background.
CONTEXT_FULL_IDS = {
    "aeroplane": 2, "bicycle": 23, "bird": 25, "boat": 31, "bottle": 34, "bus": 45, "car": 59, "cat": 65, "chair": 72,
    "cow": 98, "table": 397, "dog": 113, "horse": 207, "motorbike": 258, "person": 284, "pottedplant": 308,
    "sheep": 347, "sofa": 368, "train": 416, "tvmonitor": 427, "bag": 9, "bed": 18, "bench": 22, "book": 33,
    "building": 44, "cabinet": 46, "ceiling": 68, "cloth": 80, "computer": 85, "cup": 104, "door": 115, "fence": 144,
    "floor": 158, "flower": 159, "food": 162, "grass": 187, "ground": 189, "keyboard": 220, "light": 232,
    "mountain": 259, "mouse": 260, "curtain": 105, "platform": 296, "sign": 355, "plate": 295, "road": 324,
    "rock": 326, "shelves": 349, "sidewalk": 354, "sky": 360, "snow": 366, "bedclothes": 19, "track": 415,
    "tree": 420, "truck": 424, "wall": 440, "water": 445, "window": 454, "wood": 458,
}  # fmt: skip
CONTEXT_OTHER_IDS = {"accordion": 1, "clothes tree": 81, "pool table": 304, "tableware": 398}


def generate_layout_scene(
    seed: int, style: str, split: str, index: int, size: tuple[int, int] | None = None
) -> dict[str, np.ndarray]:
    """One scene of ``style`` as its files store it.

    Returns:
        ``nyud``: ``color`` and ``hha`` uint8 ``[H, W, 3]``, ``depth`` uint16 ``[H, W]`` (mm), ``segmentation``
        uint8 ``[H, W]`` (0 void, 1..40). ``siftflow``: ``image`` uint8 ``[H, W, 3]``, ``semantic`` int16
        (0 void, 1..33) and ``geometric`` int16 (-1 void, 1 sky, 2 horizontal, 3 vertical). ``pascal_context``:
        ``image`` and ``LabelMap`` uint16 ``[H, W]`` (``labels.txt`` ids, 0 unlabelled).
    """
    _check_layout(style)
    rng = np.random.default_rng([seed, 100 + LAYOUT_STYLES.index(style), _split_code(split), index])
    if size is None:
        size = SIFTFLOW_SIZE if style == "siftflow" else tuple(int(v) for v in rng.integers(MIN_SIDE, MAX_SIDE, size=2))
    h, w = size
    return {"nyud": _nyud_scene, "siftflow": _siftflow_scene, "pascal_context": _context_scene}[style](rng, h, w)


def layout_classes(style: str) -> ClassInfo:
    """The classes a style's data set reads (NYUD 40; SIFT Flow's 33 semantic; Context background + 59)."""
    names = {"nyud": NYUD_CLASSES, "siftflow": SIFTFLOW_SEMANTIC_CLASSES, "pascal_context": (BACKGROUND, *CONTEXT_59_CLASSES)}
    return ClassInfo(tuple(names[_check_layout(style)]))


def make_synthetic_layout(
    root: str | Path,
    style: str,
    num_train: int = 160,
    num_val: int = 40,
    seed: int = 0,
    *,
    size: tuple[int, int] | None = None,
    jpeg_quality: int = 95,
) -> dict:
    """Write a synthetic tree in the layout of ``style`` (see the module docstring) under ``root``.

    ``num_train`` scenes go to the training split and ``num_val`` to the scoring split of the real data
    set (:data:`LAYOUT_SPLITS`: NYUD ``train``/``val`` and ``trainval``; SIFT Flow ``trainval``/``test``;
    Context ``train``/``val``). Writes ``synthetic.json`` with the generator settings.

    Returns:
        dict with ``root``, ``style``, ``seed``, ``num_train``, ``num_val``, ``splits`` and ``class_names``.
    """
    _check_layout(style)
    root = Path(root)
    train_split, val_split = LAYOUT_SPLITS[style]
    write = {"nyud": _write_nyud, "siftflow": _write_siftflow, "pascal_context": _write_context}[style]
    _prepare(root, style)
    names: dict[str, list[str]] = {}
    for split, count in ((train_split, num_train), (val_split, num_val)):
        names[split] = []
        for index in range(count):
            # NYUD ids are numbers (the released files run from 5001); the others are free-form
            number = 5001 + index + (0 if split == train_split else num_train)
            name = str(number) if style == "nyud" else f"{split}_{index:05d}"
            write(root, name, generate_layout_scene(seed, style, split, index, size), jpeg_quality)
            names[split].append(name)
    if style == "nyud":
        names["trainval"] = names["train"] + names["val"]
    split_dir = root / "ImageSets" / "Main" if style == "pascal_context" else root
    for split, listed in names.items():
        (split_dir / f"{split}.txt").write_text("".join(f"{n}\n" for n in listed))
    classes = layout_classes(style)
    settings = {
        "generator": "fcnseg.data.synthetic_layouts",
        "style": style,
        "seed": seed,
        "num_train": num_train,
        "num_val": num_val,
        "splits": [train_split, val_split],
        "size": list(size) if size else None,
        "class_names": list(classes.names),
    }
    (root / "synthetic.json").write_text(json.dumps(settings, indent=2) + "\n")
    return {"root": str(root), **{k: settings[k] for k in ("style", "seed", "num_train", "num_val", "splits", "class_names")}}


# ----------------------------------------------------------------------------- files


def _check_layout(style: str) -> str:
    if style not in LAYOUT_STYLES:
        raise DataError(f"unknown synthetic layout {style!r}; expected one of {list(LAYOUT_STYLES)}")
    return style


def _prepare(root: Path, style: str) -> None:
    folders = {
        "nyud": ["data/images", "data/hha", "data/depth", "segmentation"],
        "siftflow": [f"{top}/{SUBFOLDER}" for top in ("Images", "SemanticLabels", "GeoLabels")],
        "pascal_context": ["JPEGImages", "ImageSets/Main", "trainval"],
    }[style]
    for folder in folders:
        (root / folder).mkdir(parents=True, exist_ok=True)
    if style == "pascal_context":
        full = {**CONTEXT_FULL_IDS, **CONTEXT_OTHER_IDS}
        (root / "labels.txt").write_text("".join(f"{i}: {n}\n" for n, i in sorted(full.items(), key=lambda kv: kv[1])))
        (root / "59_labels.txt").write_text("".join(f"{k}: {n}\n" for k, n in enumerate(CONTEXT_59_CLASSES, start=1)))


def _write_nyud(root: Path, name: str, scene: dict, jpeg_quality: int) -> None:
    Image.fromarray(scene["color"]).save(nyud_file(root, "color", name))
    Image.fromarray(scene["hha"]).save(nyud_file(root, "hha", name))
    Image.fromarray(scene["depth"]).save(nyud_file(root, "depth", name))  # uint16 -> 16-bit grey PNG
    scipy.io.savemat(str(nyud_label_file(root, name)), {"segmentation": scene["segmentation"]})


def _write_siftflow(root: Path, name: str, scene: dict, jpeg_quality: int) -> None:
    Image.fromarray(scene["image"]).save(root / "Images" / SUBFOLDER / f"{name}.jpg", quality=jpeg_quality)
    scipy.io.savemat(str(root / "SemanticLabels" / SUBFOLDER / f"{name}.mat"), {"S": scene["semantic"]})
    scipy.io.savemat(str(root / "GeoLabels" / SUBFOLDER / f"{name}.mat"), {"S": scene["geometric"]})


def _write_context(root: Path, name: str, scene: dict, jpeg_quality: int) -> None:
    Image.fromarray(scene["image"]).save(root / "JPEGImages" / f"{name}.jpg", quality=jpeg_quality)
    scipy.io.savemat(str(root / "trainval" / f"{name}.mat"), {"LabelMap": scene["LabelMap"]})


# ----------------------------------------------------------------------------- scenes


def _rim(labels: np.ndarray) -> np.ndarray:
    """bool ``[H, W]``: where a ``RIM x RIM`` window sees two labels (the band left unlabelled between regions)."""
    return ndimage.maximum_filter(labels, size=RIM) != ndimage.minimum_filter(labels, size=RIM)


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(image, 0, 255).round().astype(np.uint8)


def _stuff(rng: np.random.Generator, h: int, w: int, base=None) -> np.ndarray:
    """A textured surface colour, float ``[H, W, 3]``: ``base`` (default random) with smooth variation and noise."""
    colour = _colour(rng) if base is None else np.asarray(base, dtype=np.float64) + rng.normal(0, 12, size=3)
    image = colour + (_smooth_field(rng, h, w, int(rng.integers(3, 8)), 3) - 0.5) * rng.uniform(20, 50)
    return image + rng.normal(0, rng.uniform(3, 8), size=(h, w, 3))


def _nyud_scene(rng: np.random.Generator, h: int, w: int) -> dict[str, np.ndarray]:
    wall_label, floor_label = NYUD_CLASSES.index("wall") + 1, NYUD_CLASSES.index("floor") + 1
    focal = rng.uniform(0.8, 1.1) * w  # pixels; the camera looks level, so the horizon is a row
    horizon = rng.uniform(0.3, 0.5) * h
    camera_height = rng.uniform(1.1, 1.6)  # metres above the floor
    wall_depth = rng.uniform(3.0, 5.0)  # metres to the back wall
    rows = np.broadcast_to(np.arange(h, dtype=np.float64)[:, None] + 0.5, (h, w))
    below = rows - horizon
    # a floor pixel at `below` rows under the horizon sees the floor at depth focal * camera_height / below
    floor_depth = np.where(below > 0, focal * camera_height / np.maximum(below, 1e-6), np.inf)
    is_floor = floor_depth < wall_depth
    depth = np.where(is_floor, floor_depth, wall_depth)
    labels = np.where(is_floor, floor_label, wall_label).astype(np.uint8)
    horizontal = is_floor.copy()  # surface normal along gravity
    image = np.where(is_floor[..., None], _stuff(rng, h, w), _stuff(rng, h, w))
    for z in sorted(rng.uniform(1.0, wall_depth - 0.3, size=int(rng.integers(2, 5))), reverse=True):
        shape = int(rng.integers(1, 6))
        region = _shape_mask(rng, shape, h, w) & (depth > z)  # an object hides only what lies behind it
        image[region] = _shade(rng, region)
        depth[region] = z + rng.uniform(-0.05, 0.05)  # a fronto-parallel face: one depth, a vertical normal
        labels[region] = NYUD_CLASSES.index(NYUD_SHAPE_CLASSES[shape]) + 1
        horizontal[region] = False
    labels[_rim(labels)] = 0  # void
    depth_mm = np.clip(depth * 1000 + rng.normal(0, 5, size=(h, w)), 1, 65535)
    height = camera_height + (horizon - rows) * depth / focal  # metres above the floor
    angle = np.where(horizontal, 0.0, 90.0)  # degrees between the surface normal and gravity
    # encoded as rcnn-depth's saveHHA.m does: 31000 / depth in cm (at least 100), height in cm, angle + 38
    hha = np.stack([31000.0 / np.maximum(depth * 100, 100), height * 100, angle + 128 - 90], axis=-1)
    hha += rng.normal(0, 1, size=hha.shape)
    return {
        "color": _to_uint8(image),
        "hha": _to_uint8(hha),
        "depth": depth_mm.round().astype(np.uint16),
        "segmentation": labels,
    }


def _siftflow_scene(rng: np.random.Generator, h: int, w: int) -> dict[str, np.ndarray]:
    sky_label = SIFTFLOW_SEMANTIC_CLASSES.index("sky") + 1
    ground = list(SIFTFLOW_GROUND)[int(rng.integers(len(SIFTFLOW_GROUND)))]
    skyline = rng.uniform(0.3, 0.6) * h + (_smooth_field(rng, 1, w, 6)[0, :, 0] - 0.5) * 0.15 * h  # [W]
    rows = np.arange(h, dtype=np.float64)[:, None]
    is_sky = np.broadcast_to(rows < skyline[None, :], (h, w))
    semantic = np.where(is_sky, sky_label, SIFTFLOW_SEMANTIC_CLASSES.index(ground) + 1).astype(np.int16)
    geometric = np.where(is_sky, 1, 2).astype(np.int16)  # 1 sky, 2 horizontal
    blue = np.array([90.0, 140.0, 215.0]) + rng.normal(0, 15, size=3)
    sky = blue + (rows / h)[..., None] * 50.0 + rng.normal(0, 3, size=(h, w, 3))
    image = np.where(is_sky[..., None], sky, _stuff(rng, h, w, SIFTFLOW_GROUND[ground]))
    for _ in range(int(rng.integers(1, 5))):
        shape = int(rng.integers(1, 6))
        region = _shape_mask(rng, shape, h, w)
        image[region] = _shade(rng, region)
        semantic[region] = SIFTFLOW_SEMANTIC_CLASSES.index(SIFTFLOW_SHAPE_CLASSES[shape]) + 1
        geometric[region] = 3  # vertical
    rim = _rim(semantic)
    semantic[rim], geometric[rim] = 0, -1  # void in both labelings
    return {"image": _to_uint8(image), "semantic": semantic, "geometric": geometric}


def _context_scene(rng: np.random.Generator, h: int, w: int) -> dict[str, np.ndarray]:
    def full_id(task_name: str) -> int:
        name = TASK_TO_FULL_NAME.get(task_name, task_name)
        return CONTEXT_FULL_IDS[name]

    above = CONTEXT_ABOVE[int(rng.integers(len(CONTEXT_ABOVE)))]
    below = CONTEXT_BELOW[int(rng.integers(len(CONTEXT_BELOW)))]
    split_row = rng.uniform(0.3, 0.6) * h
    is_above = np.broadcast_to(np.arange(h)[:, None] < split_row, (h, w))
    label_map = np.where(is_above, full_id(above), full_id(below)).astype(np.uint16)
    image = np.where(is_above[..., None], _stuff(rng, h, w), _stuff(rng, h, w))
    for _ in range(int(rng.integers(2, 5))):
        shape = int(rng.integers(1, 6))
        region = _shape_mask(rng, shape, h, w)
        image[region] = _shade(rng, region)
        label_map[region] = full_id(CONTEXT_SHAPE_CLASSES[shape])
    if rng.random() < 0.5:  # an object of a class outside the 59: background in the task
        region = _shape_mask(rng, 2, h, w)
        image[region] = _shade(rng, region)
        label_map[region] = list(CONTEXT_OTHER_IDS.values())[int(rng.integers(len(CONTEXT_OTHER_IDS)))]
    label_map[_rim(label_map)] = 0  # unlabelled
    return {"image": _to_uint8(image), "LabelMap": label_map}
