"""The machinery every data set shares, written once: what a data set serves (``SegmentationDataset``) and how a
tree of files becomes one (``FileDataset``: root, split list, samples, scan, item loading). A layout is a
declaration on top of it."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from fcnseg.data.classes import IGNORE_INDEX, ClassInfo, ClassSource
from fcnseg.data.items import Head, InputStream, single_head
from fcnseg.data.layout import TreeLayout, available_splits, read_split_file, require_folder
from fcnseg.data.normalization import PAPER_BGR, InputSpec, Normalization
from fcnseg.data.palette import palette_for, read_mask_png
from fcnseg.data.scan import Sample, ScanReport, scan_samples
from fcnseg.errors import DataError
from fcnseg.images import image_size, images_by_stem, read_image

logger = logging.getLogger(__name__)

# (image float32 [C, H, W], mask int64 [H, W] or [K, H, W]) -> the same, e.g. fcnseg.data.transforms.Compose([...])
Transform = Callable[[torch.Tensor, torch.Tensor], "tuple[torch.Tensor, torch.Tensor]"]

MAX_SUBSTITUTIONS = 10  # consecutive unreadable items tried before a load gives up

__all__ = [  # read_split_file and require_folder live in fcnseg.data.layout; importers take them from here
    "FileDataset", "RawItem", "SegmentationDataset", "Transform", "read_split_file", "require_folder",
]  # fmt: skip


@dataclass(frozen=True)
class RawItem:
    """An item as stored: name, RGB uint8 image ``[H, W, 3]`` and int64 label map ``[H, W]`` (255 = ignore).

    Multi-target items have a mask ``[K, H, W]`` (one map per head); multi-modal items keep each stored
    input in ``inputs`` by modality name (NYUD: ``color``/``hha`` uint8 ``[H, W, 3]``, ``depth`` float32
    ``[H, W]``), while ``image`` is the RGB picture to draw panels on.
    """

    name: str
    image: np.ndarray
    mask: np.ndarray
    inputs: dict[str, np.ndarray] = field(default_factory=dict)


class SegmentationDataset(torch.utils.data.Dataset):
    """What every data set serves: ``dataset[i] -> (image float32 [C, H, W], mask int64 [H, W] or [K, H, W])``.

    The stored item (:meth:`load_raw`, a :class:`RawItem`) becomes the model input through
    :meth:`image_tensor` (here the RGB image normalised by ``normalization``, C = 3), then
    ``transform(image, mask)`` if given. Mask values are class indices or 255 (ignore).
    ``heads`` and ``streams`` (:mod:`fcnseg.data.items`) describe the mask and the image channels:
    one ``semantic`` head of ``classes`` plus any ``extra_heads``, and the declared ``input_streams``.
    :meth:`use_inputs` replaces the normalisation after construction.

    ``class_source`` records where the classes came from (a class file, or defaults assumed for want of
    one), so that a class-count mismatch can name the file that would fix it
    (:func:`fcnseg.data.classes.check_class_count`).

    Subclasses give ``__len__``, :meth:`name` and :meth:`load_raw`; an item that cannot be loaded is
    logged and replaced by the next readable one, so a training run never stops on a file changed under it.
    """

    kind = "base"
    default_normalization: Normalization = PAPER_BGR
    input_streams: tuple[InputStream, ...] = (InputStream("color", 3),)
    extra_heads: tuple[Head, ...] = ()  # label maps after the semantic one (the mask is then [K, H, W])

    def __init__(
        self,
        classes: ClassInfo,
        *,
        root: Path | None,
        split: str,
        class_source: ClassSource | None = None,
        normalization: Normalization | None = None,
        transform: Transform | None = None,
    ) -> None:
        self.root = root
        self.split = split
        self.classes = classes
        self.class_source = class_source or ClassSource(f"the {self.kind} data set's classes")
        self.transform = transform
        self.ignore_index = IGNORE_INDEX
        self.report: ScanReport | None = None
        self.normalization = self.default_normalization
        self.use_inputs(normalization=normalization)

    def use_inputs(self, normalization: Normalization | None = None, inputs: InputSpec | None = None):
        """Set how ``dataset[i]`` turns stored pixels into the model input, after construction; returns the data set.

        The one place to hand a data set what a model was trained on. ``inputs`` (a checkpoint's
        :class:`InputSpec`) is applied first, then ``normalization`` (the colour image's); ``None`` keeps
        what is set. An RGB data set takes an ``inputs`` of modalities ``color`` only.
        Items served afterwards equal those of a data set constructed with the same normalisation.

        Raises:
            DataError: ``inputs`` describes modalities this data set does not read.
        """
        if inputs is not None:
            if inputs.modalities != "color" or "color" not in inputs.normalizations:
                raise DataError(
                    f"{self.kind} data set at {self.root}: the model reads {inputs.modalities!r} but this data set "
                    "serves one RGB image; open a NYUD data set with those modalities instead"
                )
            self.normalization = inputs.normalizations["color"]
        if normalization is not None:
            self.normalization = normalization
        return self

    @property
    def class_names(self) -> list[str]:
        return list(self.classes.names)

    @property
    def num_classes(self) -> int:
        return self.classes.num_classes

    @property
    def heads(self) -> list[Head]:
        """The label maps of an item's mask, in order (one ``semantic`` head: the mask is ``[H, W]``)."""
        return single_head(self.classes.names) + list(self.extra_heads)

    @property
    def streams(self) -> list[InputStream]:
        """The channel groups of an item's image, in order (one 3-channel ``color`` stream but for NYUD)."""
        return list(self.input_streams)

    @property
    def palette(self) -> np.ndarray:
        """uint8 ``[256, 3]`` colours for drawing label maps (the class file's, else VOC's)."""
        return palette_for(self.classes)

    def __len__(self) -> int:
        raise NotImplementedError

    def name(self, index: int) -> str:
        """The item's id (file stem), e.g. ``2007_000032``."""
        raise NotImplementedError

    def load_raw(self, index: int) -> RawItem:
        """The item as stored, before normalisation and transforms (for drawing panels)."""
        raise NotImplementedError

    def image_tensor(self, raw: RawItem) -> torch.Tensor:
        """The model input of an item: float32 ``[C, H, W]`` (here the RGB image normalised, C = 3)."""
        return self.normalization.image_to_tensor(raw.image)

    def load_item(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Item ``index`` as ``dataset[index]`` serves it, but never another in its place.

        Evaluation uses this: a substitute would be scored twice and the bad item not at all.
        Raises:
            DataError: a file of the item cannot be read (it went bad after the scan).
        """
        return self._to_tensors(self.load_raw(index))

    def _to_tensors(self, raw: RawItem) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.image_tensor(raw)  # float32 [C, H, W]
        mask = torch.from_numpy(raw.mask.astype(np.int64))  # int64 [H, W] or [K, H, W]
        if self.transform is not None:
            image, mask = self.transform(image, mask)
        return image, mask

    def load_usable_raw(self, index: int) -> RawItem:
        """Item ``index`` as stored, or, if its files went bad after the scan, the next readable one (logged).

        Raises:
            IndexError: ``index`` is out of range.
            DataError: ``MAX_SUBSTITUTIONS`` items in a row cannot be read.
        """
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} items")
        for attempt in range(MAX_SUBSTITUTIONS):
            current = (index + attempt) % len(self)
            try:
                return self.load_raw(current)
            except Exception as e:  # a file went bad after the scan: log it and serve the next item
                logger.warning(
                    "item %s (%s) cannot be loaded (%s: %s); substituting the next item",
                    current,
                    self.name(current),
                    type(e).__name__,
                    e,
                )
        raise DataError(
            f"{self.kind} data set at {self.root}: items {index}..{index + MAX_SUBSTITUTIONS - 1} all failed to load"
        )

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self._to_tensors(self.load_usable_raw(index))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, split={self.split!r}, items={len(self)}, "
            f"classes={self.num_classes}, normalization={self.normalization.name!r})"
        )


class FileDataset(SegmentationDataset):
    """A data set read from a tree of files, described by the class attributes below (a declaration).

    Construction finds the root (``tree``), reads the classes (``class_table``, or :meth:`read_classes`),
    lists the split (``split_file``) and each name's files (``image_dir``/``image_name``,
    ``mask_dir``/``mask_name``, ``extra_mask_dirs`` for further heads), then scans every item once:
    bad items are reported and dropped (see :mod:`fcnseg.data.scan`). A layout overrides
    :meth:`read_mask` for another label format, and :meth:`split_names`, :meth:`sample` or
    :meth:`read_classes` only where its layout says more than these attributes can.

    Args (every subclass takes them, as keywords after its own):
        root: the data set folder (or a folder holding it, as ``tree`` allows).
        split: the split to read.
        normalization: how images become tensors (default: the layout's ``default_normalization``).
        transform: ``(image [C,H,W], mask [H,W]) -> (image, mask)`` after normalisation.
        scan: check every item at construction (see :mod:`fcnseg.data.scan`).
        scan_workers: threads of that scan.
    """

    tree: TreeLayout | None = None  # where the root may be; None: the folder named, which must exist
    split_file = "{split}.txt"  # the split's name list, relative to the root
    split_hint = ""  # said after the splits found, when the one asked for is missing
    image_dir = "JPEGImages"
    image_name = "{name}.jpg"  # the image expected where none is found
    image_by_stem = True  # take an image of any suffix (.jpg, .png, ...) with the item's name as stem
    mask_dir = "SegmentationClass"
    mask_name = "{name}.png"
    extra_mask_dirs: tuple[str, ...] = ()  # one folder per extra head, in head order
    class_table: ClassInfo | None = None
    class_table_source: str | None = None  # where class_table comes from, for a class-count error

    def __init__(
        self,
        root: str | Path,
        split: str,
        *,
        normalization: Normalization | None = None,
        transform: Transform | None = None,
        scan: bool = True,
        scan_workers: int = 4,
    ) -> None:
        self.root = self.tree.find(root) if self.tree is not None else require_folder(root)
        self.split = split
        classes, class_source = self.read_classes()
        super().__init__(
            classes,
            root=self.root,
            split=split,
            class_source=class_source,
            normalization=normalization,
            transform=transform,
        )
        self.samples = self.list_samples()
        if scan:
            self.report = self.scan(workers=scan_workers)
            self.report.log(logger)
            self.samples = self.report.usable
        if not self.samples:
            raise DataError(f"{self.kind} data set at {self.root}, split {split!r}: no usable items")

    # --- the layout: what a declaration's attributes say, overridable where a layout says more

    def read_classes(self) -> tuple[ClassInfo, ClassSource]:
        """The classes and where they come from (here the declared ``class_table``)."""
        return self.class_table, ClassSource(self.class_table_source or f"the {self.kind} data set's classes")

    def split_names(self) -> list[str]:
        """The item names of ``self.split``, from ``root/<split_file>``."""
        path = self.root / self.split_file.format(split=self.split)
        if not path.is_file():
            raise DataError(
                f"split file {path} does not exist; found splits {available_splits(path.parent)}{self.split_hint}"
            )
        return read_split_file(path)

    def image_folder(self) -> Path:
        return self.root / self.image_dir

    def sample(self, name: str, images: dict[str, Path]) -> Sample:
        """Where item ``name``'s files are; ``images`` maps stems to the image files found (``image_by_stem``)."""
        return Sample(
            name,
            images.get(name, self.image_folder() / self.image_name.format(name=name)),
            self.root / self.mask_dir / self.mask_name.format(name=name),
            extra_masks=tuple(self.root / folder / self.mask_name.format(name=name) for folder in self.extra_mask_dirs),
        )

    def list_samples(self) -> list[Sample]:
        """Every item of the split, in split-file order."""
        images = images_by_stem(self.image_folder()) if self.image_by_stem else {}
        return [self.sample(name, images) for name in self.split_names()]

    def read_mask(self, path: Path) -> np.ndarray:
        """int64 ``[H, W]`` class indices, 255 = ignore, from a palette, grey or class-coloured PNG.

        Layouts with another format (SBD's and NYUD's ``.mat``) override it.
        """
        return read_mask_png(path, self.classes.colours)

    # --- the machinery

    def scan(self, workers: int = 4, progress: bool = False) -> ScanReport:
        """Check every current sample (see :func:`fcnseg.data.scan.scan_samples`) without dropping any."""
        return scan_samples(
            self.samples,
            num_classes=[head.num_classes for head in self.heads],
            read_mask=self.read_mask,
            read_size=self.read_size,
            root=self.root,
            split=f"{self.kind} {self.split}",
            workers=workers,
            progress=progress,
        )

    def __len__(self) -> int:
        return len(self.samples)

    def name(self, index: int) -> str:
        return self.samples[index].name

    def read_image(self, path: Path) -> np.ndarray:
        """RGB uint8 ``[H, W, 3]``, upright (EXIF orientation applied, as in prediction)."""
        return read_image(path)

    def read_size(self, path: Path) -> tuple[int, int]:
        """``(height, width)`` of an input file, decoding it in full (the scan's check of every input)."""
        return image_size(path)

    def load_raw(self, index: int) -> RawItem:
        sample = self.samples[index]
        image = self.read_image(sample.image_path)
        return RawItem(sample.name, image, self.read_masks(sample, image.shape[:2]))

    def read_masks(self, sample: Sample, size: tuple[int, int]) -> np.ndarray:
        """The item's label maps, int64 ``[H, W]`` (one head) or ``[K, H, W]``, each checked against ``size``."""
        masks = []
        for path in (sample.mask_path, *sample.extra_masks):
            mask = self.read_mask(path)
            if mask.shape != tuple(size):
                raise DataError(f"{path} is {mask.shape[1]}x{mask.shape[0]} but its image is {size[1]}x{size[0]}")
            masks.append(mask)
        return masks[0] if len(masks) == 1 else np.stack(masks)
