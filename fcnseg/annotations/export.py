"""Label maps -> a labelling tool's files: the formats, the pairing of label PNGs with their images, and the report.

``export_annotations("coco", images, class_names, out)`` writes the files of one format into ``out``
(see each format's writer), with ``out/classes.txt`` (the classes in label order, background first:
``fcnseg import FORMAT ... --classes out/classes.txt`` reads the files back with the same labels).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fcnseg.annotations.class_list import BACKGROUND, BACKGROUND_NAMES, class_info
from fcnseg.annotations.writing import ExportOptions, LabelledImage, check_classes
from fcnseg.data.classes import write_class_file
from fcnseg.data.palette import read_mask_png
from fcnseg.errors import ConfigError, DataError
from fcnseg.files import atomic_write, plural
from fcnseg.images import image_size, list_images

# Format name (as fcnseg import names it) -> (module, writer function).
WRITERS = {
    "coco": ("fcnseg.annotations.coco", "write_coco"),
    "labelme": ("fcnseg.annotations.labelme", "write_labelme"),
    "cvat-xml": ("fcnseg.annotations.cvat", "write_cvat_xml"),
    "cvat-mask": ("fcnseg.annotations.cvat", "write_cvat_mask"),
    "label-studio": ("fcnseg.annotations.label_studio", "write_label_studio"),
    "geojson": ("fcnseg.annotations.geojson", "write_geojson"),
}
ALIASES = {"cvat": "cvat-xml", "labelstudio": "label-studio", "label_studio": "label-studio"}
CLASS_FILE = "classes.txt"
LABEL_SUFFIX = "_labels.png"  # fcnseg predict's label maps: NAME_labels.png beside nothing else of NAME


@dataclass
class ExportReport:
    """What :func:`export_annotations` wrote, and the label maps it could not use."""

    format: str
    out: Path
    images: int = 0
    files: list[Path] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (label map or image, reason)

    def summary(self) -> str:
        text = f"{self.format}: {plural(self.images, 'image')} written to {self.out}"
        if self.skipped:
            shown = "; ".join(f"{name}: {reason}" for name, reason in self.skipped[:5])
            more = f"; ... and {len(self.skipped) - 5} more" if len(self.skipped) > 5 else ""
            text += f"; {len(self.skipped)} skipped ({shown}{more})"
        return text


def format_name(name: str) -> str:
    """The format's name as :data:`WRITERS` spells it (``cvat`` is ``cvat-xml``).

    Raises:
        ConfigError: no such format.
    """
    name = ALIASES.get(name, name)
    if name not in WRITERS:
        raise ConfigError(f"unknown annotation format {name!r}; expected one of {', '.join(WRITERS)} (cvat = cvat-xml)")
    return name


def export_annotations(
    format: str, images: list[LabelledImage], class_names: list[str], out: str | Path, options: ExportOptions | None = None,
) -> ExportReport:
    """Write the label maps of ``images`` as ``format`` into the folder ``out`` (created), and ``out/classes.txt``.

    Args:
        format: one of :data:`WRITERS` (``cvat`` means ``cvat-xml``).
        images: the images and their label maps (int ``[H, W]``, 0 background, 255 unlabelled).
        class_names: the classes in label order, the background first.
        options: polygons or masks, simplification, the smallest region, image references.
    Returns:
        ExportReport with the files written.
    """
    format = format_name(format)
    options = options or ExportOptions()
    check_classes(list(class_names))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    module, function = WRITERS[format]
    written = getattr(importlib.import_module(module), function)(images, list(class_names), out, options)
    names = [class_names[0] if class_names[0] in BACKGROUND_NAMES else BACKGROUND, *class_names[1:]]
    info = class_info(names, where=str(out / CLASS_FILE))
    atomic_write(out / CLASS_FILE, lambda tmp: write_class_file(tmp, info))
    return ExportReport(format, out, len(images), [*written, out / CLASS_FILE])


def _checked_loader(path: Path, image: Path, num_classes: int):
    """A loader of the label PNG ``path`` that checks it against its image and the classes when called."""
    def load() -> np.ndarray:
        labels = read_mask_png(path)
        if labels.shape != image_size(image):
            height, width = image_size(image)
            raise DataError(f"label map is {labels.shape[1]}x{labels.shape[0]} but its image {image} is {width}x{height}", path=path)
        stray = np.unique(labels[(labels >= num_classes) & (labels != 255)])
        if stray.size:
            raise DataError(f"holds labels {', '.join(map(str, stray[:5].tolist()))}; the {num_classes} classes are 0..{num_classes - 1}"
                            " (and 255, unlabelled)", path=path)
        return labels
    return load


def pair_label_maps(labels_dir: Path, images_dir: Path, num_classes: int) -> tuple[list[LabelledImage], list[tuple[str, str]]]:
    """Pair every image under ``images_dir`` with its label PNG under ``labels_dir`` (same relative path, the stem
    followed by ``.png`` or by ``_labels.png``, fcnseg predict's name).

    Returns:
        ``(images, skipped)``: the pairs (label maps are read when written), and the images without a label map.
    Raises:
        DataError: no image found, or no image has a label map.
    """
    found = [p for p in list_images(images_dir) if not p.name.endswith(LABEL_SUFFIX)]
    if not found:
        raise DataError("holds no image; expected the images the label maps belong to", path=images_dir)
    pairs, skipped = [], []
    for image in found:
        relative = image.relative_to(images_dir)
        candidates = [labels_dir / relative.with_suffix(".png"), labels_dir / relative.parent / f"{relative.stem}{LABEL_SUFFIX}"]
        label = next((c for c in candidates if c.is_file() and c != image), None)
        if label is None:
            skipped.append((str(image), f"no label map ({candidates[0].name} or {candidates[1].name} in {candidates[0].parent})"))
            continue
        pairs.append(LabelledImage(relative.as_posix(), image, _checked_loader(label, image, num_classes)))
    if not pairs:
        raise DataError(f"no image of {images_dir} has a label map here (NAME.png or NAME{LABEL_SUFFIX})", path=labels_dir)
    return pairs, skipped


def export_label_folder(
    format: str, labels_dir: str | Path, images_dir: str | Path, class_names: list[str], out: str | Path,
    options: ExportOptions | None = None,
) -> ExportReport:
    """The label PNGs of ``labels_dir`` (those of ``fcnseg predict``, or masks of class indices) as ``format`` in ``out``.

    A label map that cannot be read, or whose size is not its image's, is reported and skipped.
    """
    pairs, skipped = pair_label_maps(Path(labels_dir), Path(images_dir), len(class_names))
    usable = []
    for pair in pairs:
        try:
            pair.load()  # read again when written: a folder may hold thousands
        except DataError as e:
            skipped.append((pair.name, str(e)))
            continue
        usable.append(pair)
    report = export_annotations(format, usable, class_names, out, options)
    report.skipped = skipped
    return report


def save_predictions(inputs: list[Path], output_dir: Path, format: str, class_names: list[str],
                     options: ExportOptions | None = None) -> ExportReport:
    """After ``fcnseg predict``: the label maps it wrote in ``output_dir`` as ``format`` in ``output_dir/<format>/``.

    Images are named by their path relative to the input folder they were found in (a file named alone:
    its file name), as the label maps are.
    """
    from fcnseg.inference.folder import MASK_SUFFIX, plan_jobs

    format = format_name(format)
    images, skipped = [], []
    for job in plan_jobs(list(inputs), Path(output_dir)).jobs:
        label = Path(f"{job.stem}{MASK_SUFFIX}")
        if not label.is_file():
            skipped.append((str(job.path), "no label map (the prediction failed)"))
            continue
        images.append(LabelledImage(Path(job.name).as_posix(), job.path, _checked_loader(label, job.path, len(class_names))))
    report = export_annotations(format, images, class_names, Path(output_dir) / format, options)
    report.skipped = skipped
    return report
