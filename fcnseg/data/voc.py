"""PASCAL VOC 2012 layout: JPEGImages/, SegmentationClass/ palette PNGs, ImageSets/Segmentation/<split>.txt."""

from __future__ import annotations

from pathlib import Path

from fcnseg.data.base import FileDataset
from fcnseg.data.classes import VOC_CLASSES, ClassInfo, ClassSource, read_class_file
from fcnseg.data.layout import read_split_file
from fcnseg.data.pascal_voc import SEG11VALID, VOC_SPLIT_FILE, VOC_TREE, sbd_train_names, voc_classes
from fcnseg.errors import DataError

CLASS_FILE = "classes.txt"  # optional, at the root: overrides the 21 VOC classes (the synthetic set writes one)

__all__ = ["CLASS_FILE", "SEG11VALID", "VOCDataset", "voc_classes"]


class VOCDataset(FileDataset):
    """PASCAL VOC segmentation (or any tree in its layout, such as the synthetic set).

    Args:
        root: the ``VOC2012`` folder (``VOCdevkit`` or its parent are accepted too).
        split: a file name in ``ImageSets/Segmentation`` without ``.txt`` (``train``, ``val``,
            ``trainval``), or ``seg11valid``: ``val`` minus the SBD ``train`` names (needs ``sbd_root``;
            point ``root`` at VOC2011 to reproduce the paper's 736 images).
        sbd_root: SBD ``dataset`` folder, only for ``seg11valid``.
        class_file: class names/colours; default ``root/classes.txt`` if present, else the 21 VOC classes.
        normalization, transform, scan, scan_workers: as in :class:`fcnseg.data.base.FileDataset`
            (default normalisation: the paper's BGR mean subtraction).

    Items: ``(image float32 [3, H, W], mask int64 [H, W])``, 255 = ignore.
    """

    kind = "voc"
    tree = VOC_TREE
    split_file = VOC_SPLIT_FILE
    split_hint = f" (or {SEG11VALID!r})"
    image_dir, image_name = "JPEGImages", "{name}.jpg"
    mask_dir, mask_name = "SegmentationClass", "{name}.png"

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        *,
        sbd_root: str | Path | None = None,
        class_file: str | Path | None = None,
        **common,
    ) -> None:
        self.sbd_root = sbd_root
        self.class_file = class_file
        super().__init__(root, split, **common)

    def read_classes(self) -> tuple[ClassInfo, ClassSource]:
        class_file = self.class_file
        if class_file is None and (self.root / CLASS_FILE).is_file():
            class_file = self.root / CLASS_FILE
        if class_file is not None:
            return read_class_file(class_file), ClassSource.from_file(class_file)
        return voc_classes(), ClassSource.assumed(f"the {len(VOC_CLASSES)} PASCAL VOC classes", self.root / CLASS_FILE)

    def split_names(self) -> list[str]:
        """``seg11valid`` is ``val`` minus SBD ``train`` (order of ``val`` kept), unless a file lists it."""
        if self.split != SEG11VALID or (self.root / VOC_SPLIT_FILE.format(split=SEG11VALID)).is_file():
            return super().split_names()
        if self.sbd_root is None:
            raise DataError(f"split {SEG11VALID!r} of {self.root} needs sbd_root: it is VOC val minus SBD train")
        sbd_train = set(sbd_train_names(self.sbd_root))
        return [n for n in read_split_file(self.root / VOC_SPLIT_FILE.format(split="val")) if n not in sbd_train]
