"""Data sets (VOC, SBD, folder, synthetic, NYUDv2, SIFT Flow, PASCAL-Context), transforms, collate, palettes and the
dataset scan; `build_dataset` opens any by name.

Names are resolved on first use (PEP 562), so that ``fcnseg.data.kinds`` (the option lists the command parsers
offer) can be imported without torch.
"""

from __future__ import annotations

import importlib

# Public name -> the module of fcnseg.data that defines it.
_EXPORTS = {
    "fcnseg.data.base": ("FileDataset", "RawItem", "SegmentationDataset", "read_split_file", "require_folder"),
    "fcnseg.data.build": ("build_dataset", "detect_kind"),
    "fcnseg.data.classes": (
        "IGNORE_INDEX", "VOC_CLASSES", "ClassInfo", "ClassSource", "check_class_count", "parse_class_line",
        "read_class_file", "write_class_file",
    ),
    "fcnseg.data.collate": ("PadCollate",),
    "fcnseg.data.folder": ("FolderDataset",),
    "fcnseg.data.items": ("Head", "InputStream", "split_streams", "split_targets"),
    "fcnseg.data.kinds": ("DATASET_KINDS",),
    "fcnseg.data.normalization": (
        "IMAGENET_RGB", "PAPER_BGR", "Normalization", "get_normalization", "NYUD_BGR", "NYUD_HHA", "NYUD_LOG_DEPTH",
        "SIFTFLOW_BGR", "LogDepthNormalization",
    ),
    "fcnseg.data.nyud": ("NYUD_CLASSES", "NYUDDataset", "find_nyud_root"),
    "fcnseg.data.palette": ("colorize", "overlay", "palette_for", "read_mask_png", "voc_palette", "write_mask_png"),
    "fcnseg.data.pascal_context": ("PascalContextDataset", "find_context_root"),
    "fcnseg.data.sbd": ("SBDDataset", "read_sbd_mat"),
    "fcnseg.data.scan": ("PROBLEM_KINDS", "Problem", "Sample", "ScanReport", "scan_samples"),
    "fcnseg.data.siftflow": (
        "SIFTFLOW_GEOMETRIC_CLASSES", "SIFTFLOW_SEMANTIC_CLASSES", "SIFTFlowDataset", "find_siftflow_root",
    ),
    "fcnseg.data.synthetic": ("STYLES", "SyntheticDataset", "generate_sample", "make_synthetic", "synthetic_classes"),
    "fcnseg.data.synthetic_layouts": ("LAYOUT_STYLES", "make_synthetic_layout"),
    "fcnseg.data.transforms": ("Compose", "RandomCrop", "RandomMirror", "RandomScale", "train_transform"),
    "fcnseg.data.voc": ("VOCDataset",),
}  # fmt: skip
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)


def __getattr__(name: str):
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'fcnseg.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_MODULE_OF))
