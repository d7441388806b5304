"""PASCAL VOC 2012 layout: JPEGImages/, SegmentationClass/ palette PNGs, ImageSets/Segmentation/<split>.txt."""

from __future__ import annotations

from pathlib import Path

from fcnseg.data.base import SegmentationDataset, Transform, read_split_file, require_folder
from fcnseg.data.classes import VOC_CLASSES, ClassInfo, ClassSource, read_class_file
from fcnseg.data.normalization import PAPER_BGR, Normalization
from fcnseg.data.palette import voc_palette
from fcnseg.data.scan import Sample
from fcnseg.errors import DataError
from fcnseg.images import images_by_stem

CLASS_FILE = "classes.txt"  # optional, at the root: overrides the 21 VOC classes (the synthetic set writes one)

# Paper (section 4.3): validate on "seg11valid", the VOC 2011 val images that are not in SBD train.
SEG11VALID = "seg11valid"


def voc_classes() -> ClassInfo:
    """The 21 VOC classes with their palette colours."""
    palette = voc_palette(len(VOC_CLASSES))
    return ClassInfo(VOC_CLASSES, tuple(tuple(int(c) for c in row) for row in palette))


def find_voc_root(root: str | Path) -> Path:
    """``root`` itself if it holds ``JPEGImages/``, else ``root/VOC2012`` or ``root/VOCdevkit/VOC2012``."""
    root = require_folder(root)
    for candidate in (root, root / "VOC2012", root / "VOCdevkit" / "VOC2012"):
        if (candidate / "JPEGImages").is_dir():
            return candidate
    raise DataError(f"{root} is not a VOC tree: expected JPEGImages/, SegmentationClass/ and ImageSets/Segmentation/")


class VOCDataset(SegmentationDataset):
    """PASCAL VOC segmentation (or any tree in its layout, such as the synthetic set).

    Args:
        root: the ``VOC2012`` folder (``VOCdevkit`` or its parent are accepted too).
        split: a file name in ``ImageSets/Segmentation`` without ``.txt`` (``train``, ``val``,
            ``trainval``), or ``seg11valid``: ``val`` minus the SBD ``train`` names (needs ``sbd_root``;
            point ``root`` at VOC2011 to reproduce the paper's 736 images).
        sbd_root: SBD ``dataset`` folder, only for ``seg11valid``.
        class_file: class names/colours; default ``root/classes.txt`` if present, else the 21 VOC classes.
        normalization: how images become tensors (default: the paper's BGR mean subtraction).
        transform: ``(image [3,H,W], mask [H,W]) -> (image, mask)`` after normalisation.
        scan: check every item at construction (see :mod:`fcnseg.data.scan`).

    Items: ``(image float32 [3, H, W], mask int64 [H, W])``, 255 = ignore.
    """

    kind = "voc"

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        *,
        sbd_root: str | Path | None = None,
        class_file: str | Path | None = None,
        normalization: Normalization = PAPER_BGR,
        transform: Transform | None = None,
        scan: bool = True,
        scan_workers: int = 4,
    ) -> None:
        root = find_voc_root(root)
        names = voc_split_names(root, split, sbd_root)
        images = images_by_stem(root / "JPEGImages")
        samples = [
            Sample(n, images.get(n, root / "JPEGImages" / f"{n}.jpg"), root / "SegmentationClass" / f"{n}.png")
            for n in names
        ]
        if class_file is None and (root / CLASS_FILE).is_file():
            class_file = root / CLASS_FILE
        if class_file is not None:
            classes, source = read_class_file(class_file), ClassSource.from_file(class_file)
        else:
            classes = voc_classes()
            source = ClassSource.assumed(f"the {len(VOC_CLASSES)} PASCAL VOC classes", root / CLASS_FILE)
        super().__init__(
            samples,
            classes,
            class_source=source,
            root=root,
            split=split,
            normalization=normalization,
            transform=transform,
            scan=scan,
            scan_workers=scan_workers,
        )


def voc_split_names(root: Path, split: str, sbd_root: str | Path | None = None) -> list[str]:
    """Names of a VOC split; ``seg11valid`` is ``val`` minus SBD ``train`` (order of ``val`` kept)."""
    split_dir = root / "ImageSets" / "Segmentation"
    if split == SEG11VALID:
        if (split_dir / f"{SEG11VALID}.txt").is_file():
            return read_split_file(split_dir / f"{SEG11VALID}.txt")
        if sbd_root is None:
            raise DataError(f"split {SEG11VALID!r} of {root} needs sbd_root: it is VOC val minus SBD train")
        from fcnseg.data.sbd import sbd_split_names

        sbd_train = set(sbd_split_names(Path(sbd_root), "train"))
        return [n for n in read_split_file(split_dir / "val.txt") if n not in sbd_train]
    path = split_dir / f"{split}.txt"
    if not path.is_file():
        available = sorted(p.stem for p in split_dir.glob("*.txt"))
        raise DataError(f"split file {path} does not exist; found splits {available} (or {SEG11VALID!r})")
    return read_split_file(path)
