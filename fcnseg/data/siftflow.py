"""SIFT Flow (Liu et al. 2011; paper section 5): 256x256 outdoor scenes with two labelings, 33 semantic and 3 geometric classes.

The layout and label mappings are those of the reference data layer (fcn.berkeleyvision.org ``siftflow_layers.py``):
``ROOT/{trainval,test}.txt``, ``Images/<SUBFOLDER>/<id>.jpg``, ``SemanticLabels/<SUBFOLDER>/<id>.mat`` and
``GeoLabels/<SUBFOLDER>/<id>.mat`` (key ``S`` in both).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fcnseg.data.base import FileDataset
from fcnseg.data.classes import IGNORE_INDEX, ClassInfo
from fcnseg.data.items import Head
from fcnseg.data.layout import TreeLayout
from fcnseg.data.normalization import SIFTFLOW_BGR
from fcnseg.data.mat_labels import read_mat_label_map

SUBFOLDER = "spatial_envelope_256x256_static_8outdoorcategories"
LABEL_KEY = "S"
GEOMETRIC = "geometric"

# Model output order (reference data/sift-flow/classes.txt; stored label k+1 is class k).
SIFTFLOW_SEMANTIC_CLASSES = (
    "awning", "balcony", "bird", "boat", "bridge", "building", "bus", "car", "cow", "crosswalk",
    "desert", "door", "fence", "field", "grass", "moon", "mountain", "person", "plant", "pole",
    "river", "road", "rock", "sand", "sea", "sidewalk", "sign", "sky", "staircase", "streetlight",
    "sun", "tree", "window",
)  # fmt: skip
SIFTFLOW_GEOMETRIC_CLASSES = ("sky", "horizontal", "vertical")

# The reference README: "Three classes (cow, desert, and moon) are absent from the test set, so they are
# excluded from evaluation" -- fcnseg.scoring's leave_out / leave_out_absent.
SIFTFLOW_ABSENT_FROM_TEST = ("cow", "desert", "moon")


SIFTFLOW_TREE = TreeLayout(
    "SIFT Flow",
    ("", "SiftFlow", "sift-flow"),
    ("Images/", "SemanticLabels/", "GeoLabels/"),
    "Images/, SemanticLabels/, GeoLabels/ and <split>.txt",
)


def find_siftflow_root(root: str | Path) -> Path:
    """``root`` if it holds ``Images/``, ``SemanticLabels/`` and ``GeoLabels/``, else ``root/SiftFlow`` or ``root/sift-flow``."""
    return SIFTFLOW_TREE.find(root)


def map_siftflow_labels(stored: np.ndarray) -> np.ndarray:
    """Stored labels -> int64 class indices with void 255, for both labelings.

    Semantic: 0 = void, 1..33 -> 0..32. Geometric: -1 = void, 1..3 -> 0..2 (sky, horizontal, vertical).
    The reference does the same in two steps (geometric -1 -> 0, then ``uint8(label) - 1``, so 0 wraps to 255).
    """
    stored = np.rint(np.asarray(stored, dtype=np.float64)).astype(np.int64)
    return np.where(stored <= 0, IGNORE_INDEX, stored - 1)


def read_siftflow_mat(path: str | Path) -> np.ndarray:
    """Read a SIFT Flow label ``.mat`` (key ``S``, ``[H, W]``) -> int64 ``[H, W]`` class indices and 255."""
    return map_siftflow_labels(read_mat_label_map(path, LABEL_KEY))


class SIFTFlowDataset(FileDataset):
    """SIFT Flow with both labelings, for one net with two heads.

    Args:
        root: the SIFT Flow folder (``root/SiftFlow`` is accepted too).
        split: a ``<split>.txt`` at the root: ``trainval`` (2,486 images) or ``test`` (200); the
            reference's lists leave out the two unannotated images.
        normalization: default ``siftflow_bgr``: RGB -> BGR minus SIFT Flow's mean ``(114.578, 115.294, 108.353)``.
        transform, scan, scan_workers: as in :class:`fcnseg.data.base.FileDataset` (transforms move both maps alike).

    Items: ``(image float32 [3, H, W], mask int64 [2, H, W])``: ``mask[0]`` the semantic classes
    (0..32), ``mask[1]`` the geometric ones (0..2), 255 = void in both. ``heads`` is
    ``[Head("semantic", 33 names), Head("geometric", ("sky", "horizontal", "vertical"))]``;
    ``class_names`` and ``num_classes`` are the semantic head's.
    """

    kind = "siftflow"
    tree = SIFTFLOW_TREE
    split_hint = " (SIFT Flow has trainval and test)"
    default_normalization = SIFTFLOW_BGR
    image_dir, image_name, image_by_stem = f"Images/{SUBFOLDER}", "{name}.jpg", False
    mask_dir, mask_name = f"SemanticLabels/{SUBFOLDER}", "{name}.mat"
    extra_mask_dirs = (f"GeoLabels/{SUBFOLDER}",)
    class_table = ClassInfo(SIFTFLOW_SEMANTIC_CLASSES)
    extra_heads = (Head(GEOMETRIC, SIFTFLOW_GEOMETRIC_CLASSES),)
    read_mask = staticmethod(read_siftflow_mat)

    def __init__(self, root: str | Path, split: str = "trainval", **common) -> None:
        super().__init__(root, split, **common)
