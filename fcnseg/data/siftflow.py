"""SIFT Flow (Liu et al. 2011; paper section 5): 256x256 outdoor scenes with two labelings, 33 semantic and 3 geometric classes.

The layout and label mappings are those of the reference data layer (fcn.berkeleyvision.org ``siftflow_layers.py``):
``ROOT/{trainval,test}.txt``, ``Images/<SUBFOLDER>/<id>.jpg``, ``SemanticLabels/<SUBFOLDER>/<id>.mat`` and
``GeoLabels/<SUBFOLDER>/<id>.mat`` (key ``S`` in both).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io

from fcnseg.data.base import SegmentationDataset, Transform, read_split_file
from fcnseg.data.classes import IGNORE_INDEX, ClassInfo
from fcnseg.data.items import SEMANTIC, Head
from fcnseg.data.normalization import SIFTFLOW_BGR, Normalization
from fcnseg.data.scan import Sample
from fcnseg.errors import DataError

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


def find_siftflow_root(root: str | Path) -> Path:
    """``root`` if it holds ``Images/``, ``SemanticLabels/`` and ``GeoLabels/``, else ``root/SiftFlow`` or ``root/sift-flow``."""
    root = Path(root)
    for candidate in (root, root / "SiftFlow", root / "sift-flow"):
        if all((candidate / sub).is_dir() for sub in ("Images", "SemanticLabels", "GeoLabels")):
            return candidate
    raise DataError(f"{root} is not a SIFT Flow tree: expected Images/, SemanticLabels/, GeoLabels/ and <split>.txt")


def map_siftflow_labels(stored: np.ndarray) -> np.ndarray:
    """Stored labels -> int64 class indices with void 255, for both labelings.

    Semantic: 0 = void, 1..33 -> 0..32. Geometric: -1 = void, 1..3 -> 0..2 (sky, horizontal, vertical).
    The reference does the same in two steps (geometric -1 -> 0, then ``uint8(label) - 1``, so 0 wraps to 255).
    """
    stored = np.rint(np.asarray(stored, dtype=np.float64)).astype(np.int64)
    return np.where(stored <= 0, IGNORE_INDEX, stored - 1)


def read_siftflow_mat(path: str | Path) -> np.ndarray:
    """Read a SIFT Flow label ``.mat`` (key ``S``, ``[H, W]``) -> int64 ``[H, W]`` class indices and 255."""
    try:
        mat = scipy.io.loadmat(str(path))
    except Exception as e:  # scipy raises ValueError, OSError or its own MatReadError for a bad file
        raise DataError(f"cannot be read as a MATLAB file ({type(e).__name__}: {e})", path=path) from e
    if LABEL_KEY not in mat:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise DataError(f"expected the key {LABEL_KEY!r} holding the label map, found keys {found}", path=path)
    labels = np.asarray(mat[LABEL_KEY])
    if labels.ndim != 2:
        raise DataError(f"{LABEL_KEY!r} has shape {labels.shape}; expected H x W", path=path)
    return map_siftflow_labels(labels)


class SIFTFlowDataset(SegmentationDataset):
    """SIFT Flow with both labelings, for one net with two heads.

    Args:
        root: the SIFT Flow folder (``root/SiftFlow`` is accepted too).
        split: a ``<split>.txt`` at the root: ``trainval`` (2,486 images) or ``test`` (200); the
            reference's lists leave out the two unannotated images.
        normalization: default ``siftflow_bgr``: RGB -> BGR minus SIFT Flow's mean ``(114.578, 115.294, 108.353)``.
        transform, scan: as in :class:`fcnseg.data.voc.VOCDataset` (transforms move both maps alike).

    Items: ``(image float32 [3, H, W], mask int64 [2, H, W])``: ``mask[0]`` the semantic classes
    (0..32), ``mask[1]`` the geometric ones (0..2), 255 = void in both. ``heads`` is
    ``[Head("semantic", 33 names), Head("geometric", ("sky", "horizontal", "vertical"))]``;
    ``class_names`` and ``num_classes`` are the semantic head's.
    """

    kind = "siftflow"

    def __init__(
        self,
        root: str | Path,
        split: str = "trainval",
        *,
        normalization: Normalization = SIFTFLOW_BGR,
        transform: Transform | None = None,
        scan: bool = True,
        scan_workers: int = 4,
    ) -> None:
        root = find_siftflow_root(root)
        path = root / f"{split}.txt"
        if not path.is_file():
            available = sorted(p.stem for p in root.glob("*.txt"))
            raise DataError(f"split file {path} does not exist; found splits {available} (SIFT Flow has trainval and test)")
        samples = [
            Sample(
                name,
                root / "Images" / SUBFOLDER / f"{name}.jpg",
                root / "SemanticLabels" / SUBFOLDER / f"{name}.mat",
                extra_masks=(root / "GeoLabels" / SUBFOLDER / f"{name}.mat",),
            )
            for name in read_split_file(path)
        ]
        super().__init__(
            samples,
            ClassInfo(SIFTFLOW_SEMANTIC_CLASSES),
            root=root,
            split=split,
            normalization=normalization,
            transform=transform,
            scan=scan,
            scan_workers=scan_workers,
        )

    @property
    def heads(self) -> list[Head]:
        return [Head(SEMANTIC, SIFTFLOW_SEMANTIC_CLASSES), Head(GEOMETRIC, SIFTFLOW_GEOMETRIC_CLASSES)]

    def read_mask(self, path: Path) -> np.ndarray:
        return read_siftflow_mat(path)
