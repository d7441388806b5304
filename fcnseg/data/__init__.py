"""Data sets (VOC, SBD, folder, synthetic, NYUDv2, SIFT Flow, PASCAL-Context), transforms, collate, palettes and the
dataset scan; `build_dataset` opens any by name."""

from __future__ import annotations

from pathlib import Path

from fcnseg.data.base import RawItem, SegmentationDataset, read_split_file, require_folder
from fcnseg.data.classes import (
    IGNORE_INDEX,
    VOC_CLASSES,
    ClassInfo,
    ClassSource,
    check_class_count,
    parse_class_line,
    read_class_file,
    write_class_file,
)
from fcnseg.data.collate import PadCollate
from fcnseg.data.folder import FolderDataset
from fcnseg.data.items import Head, InputStream, split_streams, split_targets
from fcnseg.data.normalization import IMAGENET_RGB, PAPER_BGR, Normalization, get_normalization
from fcnseg.data.normalization import NYUD_BGR, NYUD_HHA, NYUD_LOG_DEPTH, SIFTFLOW_BGR, LogDepthNormalization
from fcnseg.data.nyud import NYUD_CLASSES, NYUDDataset, find_nyud_root
from fcnseg.data.palette import colorize, overlay, palette_for, read_mask_png, voc_palette, write_mask_png
from fcnseg.data.pascal_context import PascalContextDataset, find_context_root
from fcnseg.data.sbd import SBDDataset, read_sbd_mat
from fcnseg.data.scan import PROBLEM_KINDS, Problem, Sample, ScanReport, scan_samples
from fcnseg.data.siftflow import SIFTFLOW_GEOMETRIC_CLASSES, SIFTFLOW_SEMANTIC_CLASSES, SIFTFlowDataset, find_siftflow_root
from fcnseg.data.synthetic import STYLES, SyntheticDataset, generate_sample, make_synthetic, synthetic_classes
from fcnseg.data.synthetic_layouts import LAYOUT_STYLES, make_synthetic_layout
from fcnseg.data.transforms import Compose, RandomCrop, RandomMirror, RandomScale, train_transform
from fcnseg.data.voc import VOCDataset
from fcnseg.errors import DataError

DATASET_KINDS = {
    "voc": VOCDataset,
    "sbd": SBDDataset,
    "folder": FolderDataset,
    "synthetic": SyntheticDataset,
    "nyud": NYUDDataset,
    "siftflow": SIFTFlowDataset,
    "pascal_context": PascalContextDataset,
}


def detect_kind(root: str | Path) -> str:
    """Guess the layout of ``root``: ``pascal_context`` (trainval/ + labels.txt + 59_labels.txt), ``siftflow``
    (SemanticLabels/ + GeoLabels/), ``nyud`` (segmentation/ + data/), ``voc`` (JPEGImages/), ``sbd`` (img/ + cls/)
    or ``folder`` (images/).

    Context and its synthetic tree hold JPEGImages/ too, so the paper's other layouts are tried before VOC.

    Raises:
        DataError: ``root`` is missing or not a folder, or holds none of these layouts.
    """
    root = require_folder(root)
    for kind, find in (("pascal_context", find_context_root), ("siftflow", find_siftflow_root), ("nyud", find_nyud_root)):
        try:
            find(root)
        except DataError:
            continue
        return kind
    for candidate in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (candidate / "JPEGImages").is_dir():
            return "voc"
    for candidate in (root, root / "dataset", root / "benchmark_RELEASE" / "dataset"):
        if (candidate / "img").is_dir() and (candidate / "cls").is_dir():
            return "sbd"
    if (root / "images").is_dir() or any((p / "images").is_dir() for p in root.iterdir() if p.is_dir()):
        return "folder"
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
    normalization: Normalization | None = None,
    transform=None,
    **kwargs,
):
    """Open a data set by kind name.

    Args:
        kind: ``voc``, ``sbd``, ``folder``, ``synthetic``, ``nyud``, ``siftflow``, ``pascal_context`` or
            ``auto`` (guess from ``root``).
            ``synthetic`` with ``root=None`` is served from memory (kwargs ``num_images``, ``seed``,
            ``style``, ``size``); with a root it is read as the VOC-layout tree ``make_synthetic`` wrote.
        root: the data set folder.
        split: split name (``train``, ``val``, ``seg11valid``, ``train_noval``, ``all`` for folders).
        normalization: image normalisation, recorded on the data set as ``.normalization``; default
            the data set's own (``paper_bgr``; NYUD and SIFT Flow: their reference mean pixels).
        transform: ``(image, mask) -> (image, mask)`` applied after normalisation.
        kwargs: passed on (``sbd_root``, ``voc_root``, ``class_file``, ``scan``, ``modalities``, ...).
    Returns:
        A data set yielding ``(image float32 [C, H, W], mask int64 [H, W])`` (C = 3 but for NYUD's
        modalities; mask ``[K, H, W]`` for K heads, SIFT Flow's two) with ``class_names``,
        ``num_classes``, ``heads``, ``streams``, ``palette``, ``name(i)`` and ``load_raw(i)``.
    """
    if kind == "auto":
        if root is None:
            raise DataError("kind 'auto' needs a data set root")
        kind = detect_kind(root)
    if normalization is not None:
        kwargs["normalization"] = normalization
    if kind == "synthetic":
        if root is None:
            return SyntheticDataset(split, transform=transform, **kwargs)
        kind = detect_kind(root)  # a make_synthetic tree: VOC layout, or the layout of its style
    if kind not in DATASET_KINDS:
        raise DataError(f"unknown data set kind {kind!r}; expected one of {sorted(DATASET_KINDS)} or 'auto'")
    if root is None:
        raise DataError(f"data set kind {kind!r} needs a root folder")
    return DATASET_KINDS[kind](root, split, transform=transform, **kwargs)


__all__ = [
    "DATASET_KINDS",
    "IGNORE_INDEX",
    "IMAGENET_RGB",
    "LAYOUT_STYLES",
    "NYUD_BGR",
    "NYUD_CLASSES",
    "NYUD_HHA",
    "NYUD_LOG_DEPTH",
    "PAPER_BGR",
    "PROBLEM_KINDS",
    "SIFTFLOW_BGR",
    "SIFTFLOW_GEOMETRIC_CLASSES",
    "SIFTFLOW_SEMANTIC_CLASSES",
    "STYLES",
    "VOC_CLASSES",
    "ClassInfo",
    "ClassSource",
    "Compose",
    "FolderDataset",
    "Head",
    "InputStream",
    "LogDepthNormalization",
    "NYUDDataset",
    "Normalization",
    "PadCollate",
    "PascalContextDataset",
    "Problem",
    "RandomCrop",
    "RandomMirror",
    "RandomScale",
    "RawItem",
    "SBDDataset",
    "SIFTFlowDataset",
    "Sample",
    "ScanReport",
    "SegmentationDataset",
    "SyntheticDataset",
    "VOCDataset",
    "build_dataset",
    "check_class_count",
    "colorize",
    "detect_kind",
    "generate_sample",
    "get_normalization",
    "make_synthetic",
    "make_synthetic_layout",
    "overlay",
    "palette_for",
    "parse_class_line",
    "read_class_file",
    "read_mask_png",
    "read_sbd_mat",
    "read_split_file",
    "require_folder",
    "scan_samples",
    "split_streams",
    "split_targets",
    "synthetic_classes",
    "train_transform",
    "voc_palette",
    "write_class_file",
    "write_mask_png",
]
