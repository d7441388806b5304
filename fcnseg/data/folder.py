"""A generic folder of image/mask pairs matched by file stem, with a small class file."""

from __future__ import annotations

from pathlib import Path

from fcnseg.data.base import SegmentationDataset, Transform, read_split_file, require_folder
from fcnseg.data.classes import ClassSource, read_class_file
from fcnseg.data.normalization import PAPER_BGR, Normalization
from fcnseg.data.scan import Sample
from fcnseg.images import images_by_stem
from fcnseg.errors import DataError

ALL = "all"


class FolderDataset(SegmentationDataset):
    """Image/mask pairs in two folders, matched by stem (``images/cat_01.jpg`` <-> ``masks/cat_01.png``).

    Layout::

        ROOT/classes.txt          one class per line: name [R G B]   (see fcnseg.data.classes)
        ROOT/images/*.jpg|png     images
        ROOT/masks/*.png          palette or grey PNGs of class indices (255 = ignore),
                                  or RGB PNGs in the class file's colours
        ROOT/<split>.txt          optional list of stems; or ROOT/<split>/images + ROOT/<split>/masks

    Args:
        root: the folder.
        split: ``all`` (every stem found in images/ or masks/), a list file ``ROOT/<split>.txt``, or a
            sub-folder ``ROOT/<split>/`` with its own images/ and masks/.
        class_file: default ``ROOT/classes.txt`` (or ``ROOT/<split>/classes.txt``).
        normalization, transform, scan: as in :class:`fcnseg.data.voc.VOCDataset`.

    Items: ``(image float32 [3, H, W], mask int64 [H, W])``.
    """

    kind = "folder"

    def __init__(
        self,
        root: str | Path,
        split: str = ALL,
        *,
        class_file: str | Path | None = None,
        image_dir: str = "images",
        mask_dir: str = "masks",
        normalization: Normalization = PAPER_BGR,
        transform: Transform | None = None,
        scan: bool = True,
        scan_workers: int = 4,
    ) -> None:
        root = require_folder(root)
        base = root
        names: list[str] | None = None
        if split != ALL:
            if (root / f"{split}.txt").is_file():
                names = read_split_file(root / f"{split}.txt")
            elif (root / split / image_dir).is_dir():
                base = root / split
            else:
                raise DataError(f"split {split!r} of {root}: expected {root / f'{split}.txt'} or {root / split / image_dir}/")
        if not (base / image_dir).is_dir():
            raise DataError(f"{base} is not an image/mask folder: expected {image_dir}/, {mask_dir}/ and classes.txt")
        if class_file is None:
            class_file = base / "classes.txt" if (base / "classes.txt").is_file() else root / "classes.txt"
        classes = read_class_file(class_file)
        source = ClassSource.from_file(class_file)
        images = images_by_stem(base / image_dir)
        masks = images_by_stem(base / mask_dir)
        if names is None:
            names = sorted(set(images) | set(masks))
        samples = [
            Sample(n, images.get(n, base / image_dir / f"{n}.*"), masks.get(n, base / mask_dir / f"{n}.png"))
            for n in names
        ]
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
