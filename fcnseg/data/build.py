"""Opening a data set by kind name: the kind -> class table, the layout guess and `build_dataset`."""

from __future__ import annotations

from pathlib import Path

from fcnseg.data.base import require_folder
from fcnseg.data.folder import FolderDataset
from fcnseg.data.kinds import AUTO, DATASET_KINDS
from fcnseg.data.nyud import NYUDDataset
from fcnseg.data.pascal_context import PascalContextDataset
from fcnseg.data.sbd import SBDDataset
from fcnseg.data.siftflow import SIFTFlowDataset
from fcnseg.data.synthetic import SyntheticDataset
from fcnseg.data.voc import VOCDataset
from fcnseg.errors import DataError

# kind (fcnseg.data.kinds.DATASET_KINDS) -> the class that reads it
DATASET_CLASSES = {
    cls.kind: cls
    for cls in (VOCDataset, SBDDataset, FolderDataset, SyntheticDataset, NYUDDataset, SIFTFlowDataset, PascalContextDataset)
}
assert tuple(DATASET_CLASSES) == DATASET_KINDS, "every kind has one class"

# The layouts detect_kind tries, in order: Context and its synthetic tree hold JPEGImages/ too, so the
# paper's other layouts come before VOC.
DETECTION_ORDER = (PascalContextDataset, SIFTFlowDataset, NYUDDataset, VOCDataset, SBDDataset)


def detect_kind(root: str | Path) -> str:
    """Guess the layout of ``root``: ``pascal_context`` (trainval/ + labels.txt + 59_labels.txt), ``siftflow``
    (SemanticLabels/ + GeoLabels/), ``nyud`` (segmentation/ + data/), ``voc`` (JPEGImages/), ``sbd`` (img/ + cls/)
    or ``folder`` (images/).

    Raises:
        DataError: ``root`` is missing or not a folder, or holds none of these layouts.
    """
    root = require_folder(root)
    for cls in DETECTION_ORDER:
        if cls.tree.locate(root) is not None:
            return cls.kind
    if (root / "images").is_dir() or any((p / "images").is_dir() for p in root.iterdir() if p.is_dir()):
        return FolderDataset.kind
    raise DataError(
        "cannot tell the layout; expected JPEGImages/ (VOC), img/ + cls/ (SBD), images/ + masks/ (folder), "
        "segmentation/ + data/ (NYUD), SemanticLabels/ + GeoLabels/ (SIFT Flow) or trainval/ + labels.txt "
        "(PASCAL-Context)",
        path=root,
    )


def build_dataset(
    kind: str,
    root: str | Path | None,
    split: str = "train",
    *,
    normalization=None,
    transform=None,
    **kwargs,
):
    """Open a data set by kind name.

    Args:
        kind: one of :data:`fcnseg.data.kinds.DATASET_KINDS` (``voc``, ``sbd``, ``folder``, ``synthetic``,
            ``nyud``, ``siftflow``, ``pascal_context``) or ``auto`` (guess from ``root``).
            ``synthetic`` with ``root=None`` is served from memory (kwargs ``num_images``, ``seed``,
            ``style``, ``size``); with a root it is read as the VOC-layout tree ``make_synthetic`` wrote.
        root: the data set folder.
        split: split name (``train``, ``val``, ``seg11valid``, ``train_noval``, ``all`` for folders).
        normalization: image normalisation, recorded on the data set as ``.normalization``; default
            the data set's own (``paper_bgr``; NYUD and SIFT Flow: their reference mean pixels).
            :meth:`~fcnseg.data.base.SegmentationDataset.use_inputs` replaces it later.
        transform: ``(image, mask) -> (image, mask)`` applied after normalisation.
        kwargs: passed on (``sbd_root``, ``voc_root``, ``class_file``, ``scan``, ``modalities``, ...).
    Returns:
        A data set yielding ``(image float32 [C, H, W], mask int64 [H, W])`` (C = 3 but for NYUD's
        modalities; mask ``[K, H, W]`` for K heads, SIFT Flow's two) with ``class_names``,
        ``num_classes``, ``heads``, ``streams``, ``palette``, ``name(i)`` and ``load_raw(i)``.
    """
    if kind == AUTO:
        if root is None:
            raise DataError("kind 'auto' needs a data set root")
        kind = detect_kind(root)
    if normalization is not None:
        kwargs["normalization"] = normalization
    if kind == SyntheticDataset.kind:
        if root is None:
            return SyntheticDataset(split, transform=transform, **kwargs)
        kind = detect_kind(root)  # a make_synthetic tree: VOC layout, or the layout of its style
    if kind not in DATASET_CLASSES:
        raise DataError(f"unknown data set kind {kind!r}; expected one of {sorted(DATASET_KINDS)} or 'auto'")
    if root is None:
        raise DataError(f"data set kind {kind!r} needs a root folder")
    return DATASET_CLASSES[kind](root, split, transform=transform, **kwargs)
