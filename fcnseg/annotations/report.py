"""What an import found: the items written, the items and annotations skipped with their files, and the scan of the result."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

from fcnseg.data.classes import ClassInfo
from fcnseg.data.scan import Problem, ScanReport
from fcnseg.files import plural

# An item (image) is skipped: nothing of it is written.
ITEM_KINDS = (
    "unreadable_annotation",  # an annotation file (labelme JSON) or entry (COCO image record) cannot be read
    "missing_image",  # the image file named by the export does not exist
    "unreadable_image",  # cannot be opened or decoded
    "missing_mask",  # CVAT / COCO panoptic: the mask PNG of a listed image does not exist
    "unreadable_mask",  # the mask PNG cannot be read
    "size_mismatch",  # the image is not the size the export declares (or its mask PNG is another size)
    "duplicate_name",  # a second image with a name (file stem) already imported, or a repeated image id
)
# One annotation of an item is left out (or, for unknown colours and segments, its pixels set to 255);
# the rest of the item is written.
ANNOTATION_KINDS = (
    "unknown_category",  # a category id or label that is not in the class list
    "unknown_image",  # COCO: an annotation for an image id that is not in "images"
    "bad_annotation",  # COCO: an annotation that is not an object, or whose ids are not integers
    "outside_image",  # a shape lying entirely outside its image
    "bad_shape",  # a shape that cannot be drawn: too few points, not numbers, an RLE of another size
    "unknown_colour",  # CVAT: mask colours not in labelmap.txt (those pixels become 255)
    "unknown_segment",  # COCO panoptic: segment ids in the PNG without a segments_info entry (-> 255)
)
# Worth knowing, nothing lost: reported, but they do not make the import fail.
NOTE_KINDS = (
    "clipped",  # a shape reaching more than half a pixel outside its image, cut to it
    "ignored_shape",  # labelme lines, points and line strips, which cover no area
    "empty_shape",  # a shape that covers no pixel centre
)


@dataclass
class ImportReport:
    """Outcome of :func:`fcnseg.annotations.import_dataset`.

    ``problems`` (kinds in ``ITEM_KINDS`` and ``ANNOTATION_KINDS``) make the import fail (``ok`` is
    False, the command exits 1) although every good item is written; ``notes`` (``NOTE_KINDS``) do not.
    ``scans`` are the data scans of the written folder, one per split.
    """

    format: str
    source: str
    out: str
    items: int = 0  # images the export lists
    written: list[str] = field(default_factory=list)  # names (file stems) written, in export order
    classes: ClassInfo | None = None
    class_map: dict[str, int] = field(default_factory=dict)  # source label (category id, label, colour) -> class index
    splits: dict[str, list[str]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    notes: list[Problem] = field(default_factory=list)
    scans: list[ScanReport] = field(default_factory=list)

    def add(self, finding: Problem) -> None:
        """File ``finding`` as a note or a problem by its kind."""
        (self.notes if finding.kind in NOTE_KINDS else self.problems).append(finding)

    @property
    def skipped(self) -> list[Problem]:
        return [p for p in self.problems if p.kind in ITEM_KINDS]

    @property
    def ok(self) -> bool:
        return bool(self.written) and not self.problems and all(scan.ok for scan in self.scans)

    def summary(self) -> str:
        """One line: ``coco import of SRC into OUT: 98 of 100 images written, 2 skipped (...); ...``."""
        head = f"{self.format} import of {self.source} into {self.out}: {len(self.written)} of {plural(self.items, 'image')} written"
        parts = [head]
        skipped = Counter(p.kind for p in self.skipped)
        if skipped:
            parts[0] += f", {sum(skipped.values())} skipped ({_counts(skipped)})"
        dropped = Counter(p.kind for p in self.problems if p.kind not in ITEM_KINDS)
        if dropped:
            parts.append(f"{plural(sum(dropped.values()), 'annotation problem')} ({_counts(dropped)})")
        notes = Counter(p.kind for p in self.notes)
        if notes:
            parts.append(f"{plural(sum(notes.values()), 'note')} ({_counts(notes)})")
        if self.classes is not None:
            parts.append(plural(self.classes.num_classes, "class", "classes"))
        if self.splits:
            parts.append(", ".join(f"{split} {len(names)}" for split, names in self.splits.items()))
        return "; ".join(parts)

    def to_dict(self) -> dict:
        def listed(problems: list[Problem]) -> list[dict]:
            return [{"name": p.name, "path": p.path, "kind": p.kind, "message": p.message} for p in problems]

        return {
            "format": self.format,
            "source": self.source,
            "out": self.out,
            "items": self.items,
            "written": len(self.written),
            "classes": list(self.classes.names) if self.classes else [],
            "class_map": self.class_map,
            "splits": {split: len(names) for split, names in self.splits.items()},
            "problems": listed(self.problems),
            "notes": listed(self.notes),
            "scans": [scan.to_dict() for scan in self.scans],
        }

    def log(self, log: logging.Logger, max_lines: int = 20) -> None:
        """Log problems and notes (at most ``max_lines`` of each) and the summary."""
        for label, found, level in (("problem", self.problems, logging.WARNING), ("note", self.notes, logging.INFO)):
            for finding in found[:max_lines]:
                log.log(level, "%s %s: %s", label, finding.kind, finding)
            if len(found) > max_lines:
                log.log(level, "... and %d more %ss", len(found) - max_lines, label)
        log.log(logging.INFO if self.ok else logging.WARNING, "%s", self.summary())


def _counts(counter: Counter) -> str:
    return ", ".join(f"{n} {kind}" for kind, n in counter.items())
