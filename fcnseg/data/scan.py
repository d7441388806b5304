"""Dataset scan shared by every layout: find unreadable, missing, mis-sized or mislabelled items, report and skip them."""

from __future__ import annotations

import logging
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from fcnseg.data.classes import IGNORE_INDEX, class_pixel_counts
from fcnseg.errors import DataError
from fcnseg.images import image_size
from fcnseg.progress import progress_bar

logger = logging.getLogger(__name__)

# What can be wrong with one item, in the order the scan checks it.
PROBLEM_KINDS = (
    "missing_files",  # a name in a split file with neither image nor mask
    "missing_image",  # a mask (or split-file name) without its image
    "missing_mask",  # an image without its mask
    "unreadable_image",  # cannot be opened or decoded (including truncated files)
    "unreadable_mask",
    "size_mismatch",  # mask height/width differ from the image's
    "bad_labels",  # mask values outside 0..num_classes-1 other than the ignore label
)
# Evaluation records one more kind, fcnseg.evaluation.FAILED_TO_LOAD: an item that passed the scan but
# could not be read when it came to be scored.


@dataclass(frozen=True)
class Sample:
    """One item of a data set: its name (file stem / id) and where its image and mask should be.

    Multi-modal and multi-target items add files: ``extra_images`` are further inputs of the same
    height and width (NYUD's HHA or depth beside the colour image), ``extra_masks`` the label maps of
    further heads (SIFT Flow's geometric labels beside the semantic ones), in head order.
    """

    name: str
    image_path: Path
    mask_path: Path
    extra_images: tuple[Path, ...] = ()
    extra_masks: tuple[Path, ...] = ()


@dataclass(frozen=True)
class Problem:
    """One skipped item: the file at fault, the kind of problem (see ``PROBLEM_KINDS``) and what was found."""

    name: str
    path: str
    kind: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "path": self.path, "kind": self.kind, "message": self.message}


@dataclass
class ScanReport:
    """Outcome of a scan: the usable samples in their original order and one problem per skipped item."""

    root: str
    split: str
    scanned: int
    usable: list[Sample] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    # Counted once, while the scan reads every mask anyway (the first head's, for several): labelled
    # pixels of each class over the usable items, and the labelled pixels of the items each class
    # appears in (what median frequency balancing divides by). int64 [num_classes], or None.
    class_pixels: np.ndarray | None = None
    image_pixels: np.ndarray | None = None

    def add_counts(self, counts: np.ndarray) -> None:
        """Add one usable item's class pixel counts (int64 ``[num_classes]``)."""
        if self.class_pixels is None:
            self.class_pixels = np.zeros_like(counts)
            self.image_pixels = np.zeros_like(counts)
        self.class_pixels += counts
        self.image_pixels += np.where(counts > 0, counts.sum(), 0)

    @property
    def ok(self) -> bool:
        return not self.problems

    def counts(self) -> dict[str, int]:
        """Number of skipped items per problem kind (only kinds that occurred)."""
        return dict(Counter(p.kind for p in self.problems))

    def summary(self) -> str:
        """One line: ``voc train at ROOT: 98 of 100 items usable, 2 skipped (1 missing_mask, 1 bad_labels)``."""
        head = f"{self.split} at {self.root}: {len(self.usable)} of {self.scanned} items usable"
        if self.ok:
            return head
        kinds = ", ".join(f"{n} {k}" for k, n in self.counts().items())
        return f"{head}, {len(self.problems)} skipped ({kinds})"

    def to_dict(self) -> dict:
        return {
            "root": self.root,
            "split": self.split,
            "scanned": self.scanned,
            "usable": len(self.usable),
            "skipped": len(self.problems),
            "counts": self.counts(),
            "class_pixels": None if self.class_pixels is None else self.class_pixels.tolist(),
            "problems": [p.to_dict() for p in self.problems],
        }

    def log(self, log: logging.Logger = logger, max_lines: int = 20) -> None:
        """Log each problem (at most ``max_lines``) and the summary as warnings; the summary alone at info if clean."""
        if self.ok:
            log.info("%s", self.summary())
            return
        for problem in self.problems[:max_lines]:
            log.warning("skipping %s", problem)
        if len(self.problems) > max_lines:
            log.warning("... and %d more problems", len(self.problems) - max_lines)
        log.warning("%s", self.summary())


def scan_samples(
    samples: Iterable[Sample],
    *,
    num_classes: int | Sequence[int],
    read_mask: Callable[[Path], np.ndarray],
    root: str | Path,
    split: str,
    ignore_index: int = IGNORE_INDEX,
    workers: int = 4,
    progress: bool = False,
    extra_problems: Iterable[Problem] = (),
    read_size: Callable[[Path], tuple[int, int]] | None = None,
) -> ScanReport:
    """Check every sample and sort it into usable or skipped; never raises for a bad item.

    Each image is decoded in full (so a truncated JPEG is caught here, not at item 9,999 of a
    training epoch) and each mask read with ``read_mask`` -> int64 ``[H, W]``. Decoding runs on
    ``workers`` threads (PIL and zlib release the GIL).

    Args:
        samples: the items named by the split.
        num_classes: labels must lie in ``0..num_classes-1`` or equal ``ignore_index``; a sequence
            gives one count per head (``mask_path`` first, then each of ``extra_masks``).
        read_mask: reads a mask file into an integer ``[H, W]`` array.
        root, split: for messages; paths are shown relative to ``root``.
        extra_problems: problems found while listing the files (e.g. a mask without an image),
            added to the report.
        read_size: decodes an input file in full and returns its ``(height, width)``; default
            :func:`image_size`. A data set with non-photo inputs (depth maps) passes its own.
    Returns:
        ScanReport with usable samples in input order.
    """
    samples = list(samples)
    root = Path(root)
    counts = (num_classes,) if isinstance(num_classes, int) else tuple(num_classes)
    size_of = read_size or image_size

    def check(sample: Sample) -> Problem | np.ndarray:
        try:
            return _check_one(sample, counts, read_mask, size_of, root, ignore_index)
        except Exception as e:  # a bad item must never stop a scan of 10,000
            return Problem(sample.name, _rel(sample.image_path, root), "unreadable_image", f"{type(e).__name__}: {e}")

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = pool.map(check, samples)
        if progress:
            results = progress_bar(results, total=len(samples), desc=f"scan {split}", unit="item")
        results = list(results)
    report = ScanReport(root=str(root), split=split, scanned=len(samples))
    report.problems.extend(extra_problems)
    report.scanned += len(report.problems)
    for sample, outcome in zip(samples, results):
        if isinstance(outcome, Problem):
            report.problems.append(outcome)
        else:
            report.usable.append(sample)
            report.add_counts(outcome)
    return report


def _check_one(
    sample: Sample,
    num_classes: tuple[int, ...],
    read_mask: Callable[[Path], np.ndarray],
    read_size: Callable[[Path], tuple[int, int]],
    root: Path,
    ignore_index: int,
) -> Problem | np.ndarray:
    """The item's problem, or the class pixel counts of its first label map if it is usable."""
    image_rel, mask_rel = _rel(sample.image_path, root), _rel(sample.mask_path, root)
    has_image, has_mask = sample.image_path.is_file(), sample.mask_path.is_file()
    if not has_image and not has_mask:
        return Problem(sample.name, sample.name, "missing_files", f"listed in the split but neither {image_rel} nor {mask_rel} exists")
    if not has_image:
        return Problem(sample.name, mask_rel, "missing_image", f"mask has no image; expected {image_rel}")
    if not has_mask:
        return Problem(sample.name, image_rel, "missing_mask", f"image has no mask; expected {mask_rel}")
    for path in sample.extra_images:
        if not path.is_file():
            return Problem(sample.name, image_rel, "missing_image", f"image has no {_rel(path, root)} beside it")
    for path in sample.extra_masks:
        if not path.is_file():
            return Problem(sample.name, image_rel, "missing_mask", f"image has no mask {_rel(path, root)}")
    sizes = []
    for path in (sample.image_path, *sample.extra_images):
        try:
            sizes.append(read_size(path))
        except DataError as e:
            return Problem(sample.name, _rel(path, root), "unreadable_image", e.reason)
        except Exception as e:
            return Problem(sample.name, _rel(path, root), "unreadable_image", f"cannot be decoded ({type(e).__name__}: {e})")
    height, width = sizes[0]
    for path, (h, w) in zip(sample.extra_images, sizes[1:]):
        if (h, w) != (height, width):
            return Problem(
                sample.name, _rel(path, root), "size_mismatch", f"image is {w}x{h} but {image_rel} is {width}x{height}"
            )
    if len(num_classes) == 1:
        num_classes = num_classes * (1 + len(sample.extra_masks))
    first = None
    for path, classes in zip((sample.mask_path, *sample.extra_masks), num_classes):
        outcome = _check_mask(sample.name, path, classes, read_mask, (height, width), image_rel, root, ignore_index)
        if isinstance(outcome, Problem):
            return outcome
        first = outcome if first is None else first
    return first


def _check_mask(
    name: str,
    path: Path,
    num_classes: int,
    read_mask: Callable[[Path], np.ndarray],
    size: tuple[int, int],
    image_rel: str,
    root: Path,
    ignore_index: int,
) -> Problem | np.ndarray:
    mask_rel = _rel(path, root)
    try:
        mask = read_mask(path)
    except DataError as e:
        return Problem(name, mask_rel, "unreadable_mask", e.reason)
    except Exception as e:
        return Problem(name, mask_rel, "unreadable_mask", f"cannot be read ({type(e).__name__}: {e})")
    if mask.ndim != 2:
        return Problem(name, mask_rel, "unreadable_mask", f"mask has shape {tuple(mask.shape)}; expected H x W")
    height, width = size
    if mask.shape != (height, width):
        return Problem(
            name,
            mask_rel,
            "size_mismatch",
            f"mask is {mask.shape[1]}x{mask.shape[0]} but its image {image_rel} is {width}x{height}",
        )
    values = np.unique(mask)
    bad = values[((values < 0) | (values >= num_classes)) & (values != ignore_index)]
    if bad.size:
        shown = ", ".join(str(int(v)) for v in bad[:8])
        return Problem(
            name,
            mask_rel,
            "bad_labels",
            f"label values {shown} outside the {num_classes} classes 0..{num_classes - 1} (and ignore {ignore_index})",
        )
    return class_pixel_counts(mask, num_classes)


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)
