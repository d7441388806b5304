"""SBD layout (Hariharan et al. 2011, the paper's training set): img/*.jpg, cls/*.mat, train.txt, val.txt."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io

from fcnseg.data.base import FileDataset
from fcnseg.data.layout import read_split_file
from fcnseg.data.pascal_voc import SBD_SPLIT_FILE, SBD_TREE, TRAIN_NOVAL, voc_classes, voc_val_names
from fcnseg.errors import DataError


def read_sbd_mat(path: str | Path) -> np.ndarray:
    """Read an SBD ``cls/*.mat`` file: struct ``GTcls`` whose field ``Segmentation`` is the uint8 ``[H, W]`` label map.

    Returns int64 ``[H, W]`` (0 = background, 1..20 = VOC classes; SBD has no 255 border).

    Raises:
        DataError: the file is missing, empty, not a MAT file, or has no ``GTcls.Segmentation``.
    """
    path = Path(path)
    try:
        mat = scipy.io.loadmat(str(path))
    except FileNotFoundError as e:
        raise DataError("mask file not found", path=path) from e
    except Exception as e:  # scipy raises MatReadError, ValueError, TypeError ... for a damaged file
        # scipy calls a zero-byte file "truncated"; say what it is, as images and PNG masks do
        if path.is_file() and path.stat().st_size == 0:
            raise DataError("empty file (0 bytes)", path=path) from e
        raise DataError(f"cannot read the .mat file ({type(e).__name__}: {e})", path=path) from e
    try:
        mask = mat["GTcls"][0]["Segmentation"][0]
    except (KeyError, IndexError, ValueError) as e:
        keys = sorted(k for k in mat if not k.startswith("__"))
        raise DataError(f"expected a struct GTcls with a field Segmentation, found keys {keys}", path=path) from e
    return np.asarray(mask).astype(np.int64)


class SBDDataset(FileDataset):
    """Semantic Boundaries Dataset, class segmentations, with the 21 VOC classes.

    Args:
        root: SBD's ``dataset`` folder (``benchmark_RELEASE`` or its parent are accepted too).
        split: ``train`` (8498 images), ``val``, or ``train_noval``: ``train`` minus VOC ``val``
            names (needs ``voc_root``; with VOC2011 this is the paper's training set without
            seg11valid overlap).
        voc_root: VOC tree whose ``ImageSets/Segmentation/val.txt`` is excluded (``train_noval`` only).
        normalization, transform, scan, scan_workers: as in :class:`fcnseg.data.base.FileDataset`.

    Items: ``(image float32 [3, H, W], mask int64 [H, W])``.
    """

    kind = "sbd"
    tree = SBD_TREE
    split_file = SBD_SPLIT_FILE
    split_hint = f" (or {TRAIN_NOVAL!r})"
    image_dir, image_name = "img", "{name}.jpg"
    mask_dir, mask_name = "cls", "{name}.mat"
    class_table = voc_classes()
    class_table_source = "the 21 PASCAL VOC classes SBD is labelled with"
    read_mask = staticmethod(read_sbd_mat)

    def __init__(self, root: str | Path, split: str = "train", *, voc_root: str | Path | None = None, **common) -> None:
        self.voc_root = voc_root
        super().__init__(root, split, **common)

    def split_names(self) -> list[str]:
        """``train_noval`` is ``train`` minus VOC ``val`` (order of ``train`` kept)."""
        if self.split != TRAIN_NOVAL:
            return super().split_names()
        if self.voc_root is None:
            raise DataError(f"split {TRAIN_NOVAL!r} of {self.root} needs voc_root: it is SBD train minus VOC val")
        voc_val = set(voc_val_names(self.voc_root))
        train = SBD_SPLIT_FILE.format(split="train")
        return [n for n in read_split_file(self.root / train) if n not in voc_val]
