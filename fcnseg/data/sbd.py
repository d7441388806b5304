"""SBD layout (Hariharan et al. 2011, the paper's training set): img/*.jpg, cls/*.mat, train.txt, val.txt."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io

from fcnseg.data.base import SegmentationDataset, Transform, read_split_file, require_folder
from fcnseg.data.classes import ClassSource
from fcnseg.data.normalization import PAPER_BGR, Normalization
from fcnseg.data.scan import Sample
from fcnseg.data.voc import find_voc_root, voc_classes
from fcnseg.images import images_by_stem
from fcnseg.errors import DataError

# SBD train minus the VOC (2011) val names, so that training never sees a seg11valid image.
TRAIN_NOVAL = "train_noval"


def find_sbd_root(root: str | Path) -> Path:
    """``root`` if it holds ``img/`` and ``cls/``, else ``root/dataset`` or ``root/benchmark_RELEASE/dataset``."""
    root = require_folder(root)
    for candidate in (root, root / "dataset", root / "benchmark_RELEASE" / "dataset"):
        if (candidate / "img").is_dir() and (candidate / "cls").is_dir():
            return candidate
    raise DataError(f"{root} is not an SBD tree: expected img/, cls/, train.txt and val.txt")


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


def sbd_split_names(root: Path, split: str) -> list[str]:
    """Names in ``root/<split>.txt`` of an SBD ``dataset`` folder."""
    root = find_sbd_root(root)
    path = root / f"{split}.txt"
    if not path.is_file():
        raise DataError(f"split file {path} does not exist; SBD has train.txt and val.txt (or split {TRAIN_NOVAL!r})")
    return read_split_file(path)


class SBDDataset(SegmentationDataset):
    """Semantic Boundaries Dataset, class segmentations, with the 21 VOC classes.

    Args:
        root: SBD's ``dataset`` folder (``benchmark_RELEASE`` or its parent are accepted too).
        split: ``train`` (8498 images), ``val``, or ``train_noval``: ``train`` minus VOC ``val``
            names (needs ``voc_root``; with VOC2011 this is the paper's training set without
            seg11valid overlap).
        voc_root: VOC tree whose ``ImageSets/Segmentation/val.txt`` is excluded (``train_noval`` only).
        normalization, transform, scan: as in :class:`fcnseg.data.voc.VOCDataset`.

    Items: ``(image float32 [3, H, W], mask int64 [H, W])``.
    """

    kind = "sbd"

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        *,
        voc_root: str | Path | None = None,
        normalization: Normalization = PAPER_BGR,
        transform: Transform | None = None,
        scan: bool = True,
        scan_workers: int = 4,
    ) -> None:
        root = find_sbd_root(root)
        if split == TRAIN_NOVAL:
            if voc_root is None:
                raise DataError(f"split {TRAIN_NOVAL!r} of {root} needs voc_root: it is SBD train minus VOC val")
            voc_val = set(read_split_file(find_voc_root(voc_root) / "ImageSets" / "Segmentation" / "val.txt"))
            names = [n for n in sbd_split_names(root, "train") if n not in voc_val]
        else:
            names = sbd_split_names(root, split)
        images = images_by_stem(root / "img")
        samples = [Sample(n, images.get(n, root / "img" / f"{n}.jpg"), root / "cls" / f"{n}.mat") for n in names]
        super().__init__(
            samples,
            voc_classes(),
            class_source=ClassSource("the 21 PASCAL VOC classes SBD is labelled with"),
            root=root,
            split=split,
            normalization=normalization,
            transform=transform,
            scan=scan,
            scan_workers=scan_workers,
        )

    def read_mask(self, path: Path) -> np.ndarray:
        return read_sbd_mat(path)
