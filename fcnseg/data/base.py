"""The dataset every layout shares: scanned samples -> (normalised image, mask), with bad items skipped, not fatal."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from fcnseg.data.classes import IGNORE_INDEX, ClassInfo, ClassSource
from fcnseg.data.items import Head, InputStream, single_head
from fcnseg.data.normalization import PAPER_BGR, Normalization
from fcnseg.data.palette import palette_for, read_mask_png
from fcnseg.data.scan import Problem, Sample, ScanReport, scan_samples
from fcnseg.errors import DataError
from fcnseg.files import read_text
from fcnseg.images import image_size, read_image

logger = logging.getLogger(__name__)

# (image float32 [C, H, W], mask int64 [H, W] or [K, H, W]) -> the same, e.g. fcnseg.data.transforms.Compose([...])
Transform = Callable[[torch.Tensor, torch.Tensor], "tuple[torch.Tensor, torch.Tensor]"]

MAX_SUBSTITUTIONS = 10  # consecutive unreadable items tried before a load gives up


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


def require_folder(path: str | Path) -> Path:
    """``path`` as a Path if it is an existing folder.

    Raises:
        DataError: ``"PATH: no such folder"`` or ``"PATH: not a folder"`` (a file), so that a mistyped data
            set root is one line naming it rather than an OSError from a listing.
    """
    path = Path(path)
    if not path.is_dir():
        raise DataError("not a folder" if path.exists() else "no such folder", path=path)
    return path


def read_split_file(path: str | Path) -> list[str]:
    """Names listed one per line (blank lines skipped; only the first column is used)."""
    text = read_text(path, what="split file")
    return [line.split()[0] for line in text.splitlines() if line.strip()]


class SegmentationDataset(torch.utils.data.Dataset):
    """Base class: a list of samples, scanned once, served as ``(image, mask)``.

    ``dataset[i]`` returns ``(image float32 [3, H, W], mask int64 [H, W])``: the RGB image normalised
    by ``normalization`` (recorded as ``dataset.normalization`` so a checkpoint can store it), then
    ``transform(image, mask)`` if given. Mask values are class indices or 255 (ignore).
    ``heads`` and ``streams`` (:mod:`fcnseg.data.items`) describe the mask and the image channels:
    one ``semantic`` head and one 3-channel ``color`` stream here; subclasses with several heads
    (the mask is then ``[K, H, W]``) or inputs (``[C, H, W]``) override them and :meth:`image_tensor`.

    Bad items are handled twice: the scan at construction reports and drops them (see
    :mod:`fcnseg.data.scan`); an item that turns bad later is logged and replaced by the next
    readable one, so a training run never stops on a file changed under it.

    ``class_source`` records where the classes came from (a class file, or defaults assumed for want of
    one), so that a class-count mismatch can name the file that would fix it
    (:func:`fcnseg.data.classes.check_class_count`).

    Subclasses list their samples and may override :meth:`read_mask` (SBD reads ``.mat`` files).
    """

    kind = "base"

    def __init__(
        self,
        samples: list[Sample],
        classes: ClassInfo,
        *,
        root: str | Path,
        split: str,
        normalization: Normalization = PAPER_BGR,
        transform: Transform | None = None,
        scan: bool = True,
        scan_workers: int = 4,
        listing_problems: list[Problem] | None = None,
        class_source: ClassSource | None = None,
    ) -> None:
        self.root = Path(root)
        self.split = split
        self.classes = classes
        self.class_source = class_source or ClassSource(f"the {self.kind} data set's classes")
        self.normalization = normalization
        self.transform = transform
        self.ignore_index = IGNORE_INDEX
        self.samples = list(samples)
        self._listing_problems = list(listing_problems or [])
        self.report: ScanReport | None = None
        if scan:
            self.report = self.scan(workers=scan_workers)
            self.report.log(logger)
            self.samples = self.report.usable
        if not self.samples:
            raise DataError(f"{self.kind} data set at {self.root}, split {split!r}: no usable items")

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
            extra_problems=self._listing_problems,
        )

    @property
    def class_names(self) -> list[str]:
        return list(self.classes.names)

    @property
    def num_classes(self) -> int:
        return self.classes.num_classes

    @property
    def heads(self) -> list[Head]:
        """The label maps of an item's mask, in order (one ``semantic`` head: the mask is ``[H, W]``)."""
        return single_head(self.classes.names)

    @property
    def streams(self) -> list[InputStream]:
        """The channel groups of an item's image, in order (one 3-channel ``color`` stream)."""
        return [InputStream("color", 3)]

    @property
    def palette(self) -> np.ndarray:
        """uint8 ``[256, 3]`` colours for drawing label maps (the class file's, else VOC's)."""
        return palette_for(self.classes)

    def __len__(self) -> int:
        return len(self.samples)

    def name(self, index: int) -> str:
        """The item's id (file stem), e.g. ``2007_000032``."""
        return self.samples[index].name

    def read_image(self, path: Path) -> np.ndarray:
        """RGB uint8 ``[H, W, 3]``, upright (EXIF orientation applied, as in prediction)."""
        return read_image(path)

    def read_size(self, path: Path) -> tuple[int, int]:
        """``(height, width)`` of an input file, decoding it in full (the scan's check of every input)."""
        return image_size(path)

    def read_mask(self, path: Path) -> np.ndarray:
        """int64 ``[H, W]`` class indices, 255 = ignore, from a palette, grey or class-coloured PNG.

        Subclasses with another format (SBD's ``.mat``) override it.
        """
        return read_mask_png(path, self.classes.colours)

    def load_raw(self, index: int) -> RawItem:
        """The item as stored, before normalisation and transforms (for drawing panels)."""
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
            DataError: ``MAX_SUBSTITUTIONS`` items in a row cannot be read.
        """
        for attempt in range(MAX_SUBSTITUTIONS):
            current = (index + attempt) % len(self.samples)
            try:
                return self.load_raw(current)
            except Exception as e:  # a file went bad after the scan: log it and serve the next item
                logger.warning(
                    "item %s (%s) cannot be loaded (%s: %s); substituting the next item",
                    current,
                    self.samples[current].name,
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
