"""A generic folder of image/mask pairs matched by file stem, with a small class file."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from fcnseg.data.base import FileDataset
from fcnseg.data.classes import ClassInfo, ClassSource, read_class_file
from fcnseg.data.layout import read_split_file
from fcnseg.data.scan import Sample
from fcnseg.images import images_by_stem
from fcnseg.errors import DataError

ALL = "all"
CLASS_FILE = "classes.txt"


class FolderDataset(FileDataset):
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
        normalization, transform, scan, scan_workers: as in :class:`fcnseg.data.base.FileDataset`.

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
        **common,
    ) -> None:
        self.class_file = class_file
        self.image_dir, self.mask_dir = image_dir, mask_dir
        super().__init__(root, split, **common)

    @cached_property
    def base(self) -> Path:
        """The folder holding ``image_dir``/``mask_dir``: the root, or ``ROOT/<split>/`` for a sub-folder split."""
        if self.split != ALL and not (self.root / f"{self.split}.txt").is_file() and (self.root / self.split / self.image_dir).is_dir():
            return self.root / self.split
        return self.root

    def read_classes(self) -> tuple[ClassInfo, ClassSource]:
        class_file = self.class_file
        if class_file is None:
            class_file = self.base / CLASS_FILE if (self.base / CLASS_FILE).is_file() else self.root / CLASS_FILE
        return read_class_file(class_file), ClassSource.from_file(class_file)

    def image_folder(self) -> Path:
        return self.base / self.image_dir

    def list_samples(self) -> list[Sample]:
        """Stems of ``ROOT/<split>.txt``, else every stem in the split's images/ or masks/."""
        names: list[str] | None = None
        if self.split != ALL:
            if (self.root / f"{self.split}.txt").is_file():
                names = read_split_file(self.root / f"{self.split}.txt")
            elif self.base == self.root:
                raise DataError(
                    f"split {self.split!r} of {self.root}: expected {self.root / f'{self.split}.txt'} "
                    f"or {self.root / self.split / self.image_dir}/"
                )
        if not self.image_folder().is_dir():
            raise DataError(
                f"{self.base} is not an image/mask folder: expected {self.image_dir}/, {self.mask_dir}/ and {CLASS_FILE}"
            )
        image_folder, mask_folder = self.image_folder(), self.base / self.mask_dir
        images, masks = images_by_stem(image_folder), images_by_stem(mask_folder)
        if names is None:
            names = sorted(set(images) | set(masks))
        return [Sample(n, images.get(n, image_folder / f"{n}.*"), masks.get(n, mask_folder / f"{n}.png")) for n in names]
