"""PASCAL-Context, the 59-class task of Mottaghi et al. (paper section 5): VOC2010 images, full-scene .mat label maps.

The layout and the mapping of the full label set onto the 59 classes are those of the reference data layer
(fcn.berkeleyvision.org ``pascalcontext_layers.py``): images ``VOC2010/JPEGImages/<id>.jpg`` listed in
``VOC2010/ImageSets/Main/<split>.txt``; annotations ``trainval/<id>.mat`` (key ``LabelMap``, ids of ``labels.txt``),
classes ``59_labels.txt``; everything outside the 59 classes is background, class 0 of 60 outputs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fcnseg.data.base import FileDataset
from fcnseg.data.classes import IGNORE_INDEX, ClassInfo, ClassSource
from fcnseg.data.layout import TreeLayout, read_split_file
from fcnseg.data.mat_labels import read_mat_label_map
from fcnseg.errors import DataError
from fcnseg.files import read_text

LABEL_KEY = "LabelMap"
ALL_LABELS_FILE = "labels.txt"  # "<id>: <name>" for every class of the full annotation (459 lines)
MAX_LABEL_ID = 65535  # label ids size a lookup table: beyond this a labels file is broken, not large
TASK_LABELS_FILE = "59_labels.txt"  # "<id>: <name>" for the 59 classes, in output order
BACKGROUND = "background"

# The 59 task classes in output order 1..59, as 59_labels.txt lists them (reference data/pascal-context/classes-59.txt).
CONTEXT_59_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
    "bag", "bed", "bench", "book", "building", "cabinet", "ceiling", "clothes", "computer", "cup",
    "door", "fence", "floor", "flower", "food", "grass", "ground", "keyboard", "light", "mountain",
    "mouse", "curtain", "platform", "sign", "plate", "road", "rock", "shelves", "sidewalk", "sky",
    "snow", "bedcloth", "track", "tree", "truck", "wall", "water", "window", "wood",
)  # fmt: skip

# Three of the 59 task names are spelled differently in labels.txt; the reference renames them before
# matching (after removing spaces from both lists, so that "potted plant" matches "pottedplant").
TASK_TO_FULL_NAME = {"diningtable": "table", "bedcloth": "bedclothes", "clothes": "cloth"}


def read_context_labels(path: str | Path) -> list[tuple[int, str]]:
    """``(id, name)`` for each ``<id>: <name>`` line of a PASCAL-Context label file, in file order.

    Raises:
        DataError: a line is not ``<id>: <name>``, or its id is beyond ``MAX_LABEL_ID`` (the label ids
            size a lookup table: an id of 1e15 would ask for petabytes).
    """
    path = Path(path)
    lines = read_text(path, what="label file").splitlines()
    entries = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        key, sep, name = line.partition(":")
        key = key.strip()
        if sep and key.startswith("-") and key[1:].isascii() and key[1:].isdigit():
            raise DataError(f"{path}:{number}: label id {key} is negative; expected an id 0..{MAX_LABEL_ID}")
        if not sep or not (key.isascii() and key.isdigit()) or not name.strip():
            raise DataError(f"{path}:{number}: expected '<id>: <name>', found {line!r}")
        if int(key) > MAX_LABEL_ID:
            raise DataError(f"{path}:{number}: label id {int(key)} is beyond {MAX_LABEL_ID}; expected an id "
                            f"0..{MAX_LABEL_ID} (PASCAL-Context's labels.txt goes up to 459)")
        entries.append((int(key), name.strip()))
    if not entries:
        raise DataError(f"label file {path} lists no classes; expected '<id>: <name>' lines")
    return entries


def context_label_table(
    all_labels: list[tuple[int, str]], task_labels: list[str], background: bool = True, source: str = ALL_LABELS_FILE
) -> np.ndarray:
    """Lookup table from stored label ids to training labels, int64 ``[max_id + 1]``.

    Task class ``k`` (0-based position in ``task_labels``) takes the stored id whose name in
    ``all_labels`` matches it (spaces removed, :data:`TASK_TO_FULL_NAME` applied). With ``background``
    (the reference): class ``k`` -> ``k + 1`` and every other id (unlabelled 0, the other classes) -> 0;
    without: class ``k`` -> ``k`` and every other id -> 255 (ignored).
    """
    ids = {}
    for label_id, name in all_labels:
        ids.setdefault(name.replace(" ", ""), label_id)
    top = max(label_id for label_id, _ in all_labels)
    if top > MAX_LABEL_ID or min(label_id for label_id, _ in all_labels) < 0:
        raise DataError(f"{source}: label ids must lie in 0..{MAX_LABEL_ID}; found {top}")
    table = np.full(top + 1, 0 if background else IGNORE_INDEX, dtype=np.int64)
    for k, name in enumerate(task_labels):
        key = name.replace(" ", "")
        key = TASK_TO_FULL_NAME.get(key, key)
        if key not in ids:
            raise DataError(f"{source}: has no class {key!r} for the task class {name!r}")
        table[ids[key]] = k + 1 if background else k
    return table


def map_context_labels(stored: np.ndarray, table: np.ndarray, background: bool = True) -> np.ndarray:
    """Stored ``LabelMap`` ids -> int64 training labels through ``table``; ids beyond it are "other" classes too."""
    stored = np.asarray(stored).astype(np.int64)
    inside = (stored >= 0) & (stored < table.size)
    other = 0 if background else IGNORE_INDEX
    return np.where(inside, table[np.clip(stored, 0, table.size - 1)], other)


def read_context_mat(path: str | Path) -> np.ndarray:
    """The stored ``LabelMap`` of ``trainval/<id>.mat``, int64 ``[H, W]`` ids of ``labels.txt`` (0 = unlabelled)."""
    return read_mat_label_map(path, LABEL_KEY).astype(np.int64)


CONTEXT_TREE = TreeLayout(
    "PASCAL-Context",
    ("", "pascal-context", "PASCAL-Context"),
    ("trainval/", ALL_LABELS_FILE, TASK_LABELS_FILE),
    f"trainval/*.mat, {ALL_LABELS_FILE} and {TASK_LABELS_FILE}",
)
VOC2010_TREE = TreeLayout(
    "VOC2010", ("", "VOC2010", "VOCdevkit/VOC2010"), ("JPEGImages/",), "JPEGImages/ and ImageSets/Main/ (or VOC2010/ with them)"
)


def find_context_root(root: str | Path) -> Path:
    """``root`` if it holds ``trainval/``, ``labels.txt`` and ``59_labels.txt``, else ``root/pascal-context``."""
    return CONTEXT_TREE.find(root)


def find_voc2010_root(root: str | Path) -> Path:
    """``root`` if it holds ``JPEGImages/``, else ``root/VOC2010`` or ``root/VOCdevkit/VOC2010``."""
    return VOC2010_TREE.find(root)


def read_task_classes(path: Path) -> list[str]:
    """The task class names of ``59_labels.txt`` in file order (a ``0: background`` line, if any, is skipped).

    The reference enumerates the file, so the line's position is the class; in the released file it equals the number.
    """
    return [name for label_id, name in read_context_labels(path) if not (label_id == 0 and name == BACKGROUND)]


class PascalContextDataset(FileDataset):
    """PASCAL-Context, 59 classes + background (60 outputs), as the reference trains and scores it.

    Args:
        root: the PASCAL-Context folder with ``trainval/``, ``labels.txt`` and ``59_labels.txt``
            (``root/pascal-context`` is accepted too).
        split: ``train`` (4,998 images) or ``val`` (5,105), the lists in ``VOC2010/ImageSets/Main``
            (a ``<split>.txt`` beside ``labels.txt`` is used if the VOC folder lacks it).
        voc_root: the VOC2010 folder (``VOC2010/``, ``VOCdevkit/`` or its parent); default: ``root``
            itself, or ``root/VOC2010``, when they hold the images.
        background: ``True`` (the reference): unlabelled pixels and the other classes are class 0
            ``background``, trained and scored; ``False``: they are ignored (255) and the 59 classes
            are 0..58, for the common 59-class evaluation without background.
        normalization: default ``paper_bgr`` (the reference layer's mean ``(104.007, 116.669, 122.679)``).
        transform, scan, scan_workers: as in :class:`fcnseg.data.base.FileDataset`.

    Items: ``(image float32 [3, H, W], mask int64 [H, W])``; one ``semantic`` head of 60 (or 59) classes.
    """

    kind = "pascal_context"
    tree = CONTEXT_TREE
    mask_dir, mask_name = "trainval", "{name}.mat"

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        *,
        voc_root: str | Path | None = None,
        background: bool = True,
        **common,
    ) -> None:
        self.voc_root = voc_root
        self.background = background
        super().__init__(root, split, **common)

    def read_classes(self) -> tuple[ClassInfo, ClassSource]:
        """The 59 task classes of ``59_labels.txt`` (after ``background`` if kept); builds ``label_table`` too."""
        self.voc = find_voc2010_root(self.voc_root if self.voc_root is not None else self.root)
        task = read_task_classes(self.root / TASK_LABELS_FILE)
        all_labels = self.root / ALL_LABELS_FILE
        self.label_table = context_label_table(read_context_labels(all_labels), task, self.background, source=str(all_labels))
        names = ([BACKGROUND] if self.background else []) + task
        return ClassInfo(tuple(names)), ClassSource(f"the {self.kind} data set's classes")

    def image_folder(self) -> Path:
        return self.voc / "JPEGImages"

    def split_names(self) -> list[str]:
        return context_split_names(self.root, self.voc, self.split)

    def read_mask(self, path: Path) -> np.ndarray:
        return map_context_labels(read_context_mat(path), self.label_table, self.background)


def context_split_names(root: Path, voc: Path, split: str) -> list[str]:
    """Ids of ``VOC2010/ImageSets/Main/<split>.txt`` (the reference's lists), else of ``root/<split>.txt``."""
    for path in (voc / "ImageSets" / "Main" / f"{split}.txt", root / f"{split}.txt"):
        if path.is_file():
            return read_split_file(path)
    raise DataError(
        f"split file {voc / 'ImageSets' / 'Main' / f'{split}.txt'} does not exist (nor {root / f'{split}.txt'}); "
        "PASCAL-Context uses the VOC2010 train and val lists"
    )
