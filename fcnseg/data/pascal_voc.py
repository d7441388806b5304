"""What PASCAL VOC and SBD share (the paper trains on SBD and validates on VOC): the 21 classes, how each tree is
recognised, and the split lists each one's derived split subtracts from the other's.

Both ``voc.py`` and ``sbd.py`` import this module, and neither imports the other.
"""

from __future__ import annotations

from pathlib import Path

from fcnseg.data.classes import VOC_CLASSES, ClassInfo
from fcnseg.data.layout import TreeLayout, read_split_file
from fcnseg.data.palette import voc_palette

# Paper (section 4.3): validate on "seg11valid", the VOC 2011 val images that are not in SBD train.
SEG11VALID = "seg11valid"
# SBD train minus the VOC (2011) val names, so that training never sees a seg11valid image.
TRAIN_NOVAL = "train_noval"

VOC_TREE = TreeLayout(
    "VOC",
    ("", "VOC2012", "VOCdevkit/VOC2012"),
    ("JPEGImages/",),
    "JPEGImages/, SegmentationClass/ and ImageSets/Segmentation/",
)
SBD_TREE = TreeLayout(
    "SBD",
    ("", "dataset", "benchmark_RELEASE/dataset"),
    ("img/", "cls/"),
    "img/, cls/, train.txt and val.txt",
)
VOC_SPLIT_FILE = "ImageSets/Segmentation/{split}.txt"
SBD_SPLIT_FILE = "{split}.txt"


def voc_classes() -> ClassInfo:
    """The 21 VOC classes with their palette colours."""
    palette = voc_palette(len(VOC_CLASSES))
    return ClassInfo(VOC_CLASSES, tuple(tuple(int(c) for c in row) for row in palette))


def find_voc_root(root: str | Path) -> Path:
    """``root`` itself if it holds ``JPEGImages/``, else ``root/VOC2012`` or ``root/VOCdevkit/VOC2012``."""
    return VOC_TREE.find(root)


def find_sbd_root(root: str | Path) -> Path:
    """``root`` if it holds ``img/`` and ``cls/``, else ``root/dataset`` or ``root/benchmark_RELEASE/dataset``."""
    return SBD_TREE.find(root)


def voc_val_names(voc_root: str | Path) -> list[str]:
    """The names of VOC ``val`` (what SBD's ``train_noval`` leaves out)."""
    return read_split_file(find_voc_root(voc_root) / VOC_SPLIT_FILE.format(split="val"))


def sbd_train_names(sbd_root: str | Path) -> list[str]:
    """The names of SBD ``train`` (what VOC's ``seg11valid`` leaves out)."""
    return read_split_file(find_sbd_root(sbd_root) / SBD_SPLIT_FILE.format(split="train"))
