"""Segment a folder of images: decoding overlapped with compute, bad files skipped and reported, finished outputs kept on re-runs."""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fcnseg.data.class_match import PREDICTION_CLASS_FILE
from fcnseg.data.classes import ClassInfo, write_class_file
from fcnseg.data.palette import overlay, read_mask_png, voc_palette, write_mask_png
from fcnseg.errors import ConfigError, DataError, FcnsegError
from fcnseg.files import atomic_write_text, plural, write_json
from fcnseg.images import DEFAULT_MAX_PIXELS, is_image_file, list_images, read_image, save_rgb
from fcnseg.inference import confidence as confidence_maps
from fcnseg.inference.predictor import Predictor
from fcnseg.metrics import class_pixel_counts
from fcnseg.progress import progress_bar, set_status
from fcnseg.reports.legend import legend_rows, with_legend

log = logging.getLogger(__name__)

# Outputs carry a suffix of their own, so that no output can take an input's name (photo.png's label map
# is photo_labels.png, not photo.png), and a folder that holds outputs can be listed without them.
MASK_SUFFIX = "_labels.png"
OVERLAY_SUFFIX = "_overlay.jpg"
PROBABILITY_SUFFIX = "_prob.npy"
OUTPUT_SUFFIXES = (MASK_SUFFIX, OVERLAY_SUFFIX, PROBABILITY_SUFFIX, confidence_maps.PICTURE_SUFFIX,
                   confidence_maps.ARRAY_SUFFIX)
DEFAULT_OUTPUT_SUFFIX = "_fcnseg"  # the default output folder: <input stem or folder name>_fcnseg beside the input
SHOWN_NAMES = 5  # file names listed in a one-line note before "..."


def is_output_name(name: str | Path) -> bool:
    """True for a file name a folder run writes (``NAME_labels.png``, ``NAME_overlay.jpg``, ``NAME_prob.npy``)."""
    return str(name).endswith(OUTPUT_SUFFIXES)


def default_output_folder(first_input: str | Path) -> Path:
    """``<stem>_fcnseg`` beside an image, ``<name>_fcnseg`` beside a folder: never inside the input."""
    first_input = Path(first_input).absolute()
    if first_input.name in ("", ".", ".."):
        first_input = first_input.resolve()
    stem = first_input.name if first_input.is_dir() else first_input.stem
    return first_input.parent / f"{stem}{DEFAULT_OUTPUT_SUFFIX}"


def first_image(inputs: list[str | Path], max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray | None:
    """The first readable image among ``inputs`` (files, and folders searched as prediction searches them),
    uint8 RGB ``[H, W, 3]``, for ``--runtime auto`` to time the runtimes on; None where there is none."""
    for path in map(Path, inputs):
        candidates = list_images(path) if path.is_dir() else [path] if path.is_file() and is_image_file(path.name) else []
        for candidate in candidates[:5]:
            try:
                return read_image(candidate, max_pixels)
            except (DataError, OSError):
                continue
    return None


def check_output_folder(inputs: list[str | Path], output_dir: str | Path) -> None:
    """Refuse an output folder that is an input folder or lies inside one (a ConfigError showing both).

    Outputs written there would replace the user's images (``-o photos/``), be segmented again on the
    next run (``photo_overlay_overlay.jpg``), or nest one level deeper every run (``-o photos/pred``).
    """
    out = Path(output_dir).resolve()
    for root in map(Path, inputs):
        if not root.is_dir():
            continue
        folder = root.resolve()
        if out == folder or folder in out.parents:
            where = "is the input folder" if out == folder else f"lies inside the input folder {root}"
            raise ConfigError(
                f"-o {output_dir} {where}: the outputs would be listed as inputs on the next run and could replace "
                f"the images; choose a folder outside it, e.g. -o {default_output_folder(root)}")


@dataclass
class FolderReport:
    """Outcome of :func:`predict_folder`: counts, the failed files with their reason, per-image class areas."""

    processed: int = 0
    skipped_existing: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (input path, reason)
    areas: dict[str, dict] = field(default_factory=dict)  # relative name -> {"height", "width", "counts" [C]}
    not_images: list[str] = field(default_factory=list)  # files in the input folders without an image suffix
    earlier_outputs: list[str] = field(default_factory=list)  # fcnseg outputs found among the inputs, not segmented
    confidence: dict = field(default_factory=dict)  # relative name -> ConfidenceSummary (with a confidence kind)

    def summary(self) -> str:
        text = f"{self.processed} segmented, {self.skipped_existing} already done, {len(self.failed)} failed"
        for files, what in ((self.not_images, "that are not images"),
                            (self.earlier_outputs, "that fcnseg wrote (label maps, overlays, probabilities)")):
            if files:
                more = ", ..." if len(files) > SHOWN_NAMES else ""
                text += (f"\nskipped {plural(len(files), 'file')} {what}: "
                         f"{', '.join(files[:SHOWN_NAMES])}{more}")
        if self.failed:
            shown = "\n".join(f"  {path}: {reason}" for path, reason in self.failed[:20])
            more = f"\n  ... and {len(self.failed) - 20} more" if len(self.failed) > 20 else ""
            text += f"\nfailed files:\n{shown}{more}"
        return text


@dataclass(frozen=True)
class Job:
    """One input image and where its outputs go (``stem`` is the output path without suffix)."""

    path: Path
    name: str  # path relative to the input root, used in reports and statistics
    stem: Path


def _not_images(root: Path) -> list[str]:
    """Visible files under ``root`` (as :func:`list_images` walks it) without an image suffix, relative names."""
    found = []
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or is_image_file(path.name) or not path.is_file():
            continue
        found.append(str(rel))
    return sorted(found)


@dataclass
class Plan:
    """What :func:`plan_jobs` found: the jobs, the inputs that failed already, and what it did not list."""

    jobs: list[Job]
    failed: list[tuple[str, str]]
    not_images: list[str] = field(default_factory=list)
    earlier_outputs: list[str] = field(default_factory=list)


def plan_jobs(inputs: list[Path], output_dir: Path) -> Plan:
    """Map input files or folders to output stems, mirroring folder structure; name collisions are failures.

    A folder's files named like fcnseg outputs (``*_labels.png``, ``*_overlay.jpg``) or lying in the output
    folder are not inputs; they and its non-image files are listed in the plan, not segmented. An input whose
    outputs would replace an input file fails instead of overwriting it.
    """
    plan, taken = Plan([], []), {}
    out = output_dir.resolve()
    for root in inputs:
        if root.is_dir():
            files = []
            for p in list_images(root):
                if out in p.resolve().parents or is_output_name(p.name):
                    plan.earlier_outputs.append(str(p))
                else:
                    files.append((p, p.relative_to(root)))
            plan.not_images += [str(root / name) for name in _not_images(root)]
        elif root.is_file():
            files = [(root, Path(root.name))]
        else:
            plan.failed.append((str(root), "no such file or folder"))
            continue
        for path, rel in files:
            stem = output_dir / rel.with_suffix("")
            if stem in taken:
                plan.failed.append((str(path), f"its outputs would overwrite those of {taken[stem]} (same name, other suffix)"))
                continue
            taken[stem] = path
            plan.jobs.append(Job(path, str(rel), stem))
    inputs_resolved = {job.path.resolve(): job.path for job in plan.jobs}
    for job in list(plan.jobs):
        clash = next((inputs_resolved[o.resolve()] for o in output_paths(job) if o.resolve() in inputs_resolved), None)
        if clash is not None:
            plan.jobs.remove(job)
            plan.failed.append((str(job.path), f"its output would replace the input {clash}; rename that file"))
    return plan


def output_paths(job: Job) -> list[Path]:
    """Every file a job may write: label map, overlay, probabilities."""
    return [Path(f"{job.stem}{suffix}") for suffix in OUTPUT_SUFFIXES]


class _Decode(torch.utils.data.Dataset):
    """Reads images in DataLoader workers; an unreadable file yields its error instead of raising."""

    def __init__(self, jobs: list[Job], max_pixels: int | None):
        self.jobs, self.max_pixels = jobs, max_pixels

    def __len__(self) -> int:
        return len(self.jobs)

    def __getitem__(self, index: int):
        job = self.jobs[index]
        try:
            return index, read_image(job.path, self.max_pixels), None
        except DataError as e:
            return index, None, failure_reason(e, job.path)
        except Exception as e:  # noqa: BLE001 - any decoder failure is reported and skipped
            return index, None, f"cannot read the image ({type(e).__name__}: {e})"


def _first(batch):
    return batch[0]


def failure_reason(error: Exception, path: Path) -> str:
    """What went wrong with ``path``, for a report that names the file already (without repeating the path)."""
    if isinstance(error, DataError) and error.path == str(path):
        return error.reason
    return str(error)


def predict_folder(
    predictor: Predictor,
    inputs: list[str | Path],
    output_dir: str | Path,
    *,
    overlay_images: bool = False,
    legend: bool = True,
    probabilities: bool = False,
    stats: bool = False,
    overwrite: bool = False,
    workers: int = 2,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    palette: np.ndarray | None = None,
    progress: bool = True,
    shard: tuple[int, int] = (0, 1),
    confidence: str | None = None,
    confidence_threshold: float = confidence_maps.DEFAULT_THRESHOLD,
) -> FolderReport:
    """Segment every image in ``inputs`` (files or folders, searched recursively) into ``output_dir``.

    ``output_dir`` must not be an input folder or lie inside one (see :func:`check_output_folder`).
    Per image ``<name>``: ``<name>_labels.png`` (palette label map), with ``overlay_images``
    ``<name>_overlay.jpg`` (with a legend of the classes present to its right unless not ``legend``), with ``probabilities`` ``<name>_prob.npy`` (float16 ``[C, H, W]``). Every
    file is written atomically and the label map last, so an existing label map means the image is
    done: a re-run skips it (unless ``overwrite``) and an interrupted job resumes. ``classes.txt`` lists the
    model's classes in label order (read back by :func:`fcnseg.evaluation.score_folders`). With ``stats``,
    ``areas.csv`` and ``areas.json`` hold per-class pixel counts and fractions of every image,
    finished ones included. With ``confidence`` (a kind of :mod:`fcnseg.inference.confidence`),
    ``<name>_confidence.png`` (the map with its scale) and ``<name>_confidence.npy`` (float16 ``[H, W]``) per
    image, and ``confidence.csv``: mean confidence and the share of pixels below ``confidence_threshold``.

    Decoding runs in ``workers`` DataLoader processes (0: in this process), one image at a time since
    sizes differ. Unreadable images are reported in the returned report and skipped.

    ``shard=(rank, world_size)``: this process segments every ``world_size``-th image of the full, fixed
    input list (finished ones included, so that every process splits the same list however far the
    others got); planning failures are reported by rank 0 only and the area tables are left to the
    caller, which merges the processes' reports (:mod:`fcnseg.inference.torchrun`).
    """
    output_dir = Path(output_dir)
    check_output_folder(inputs, output_dir)
    palette = voc_palette(256) if palette is None else palette
    plan = plan_jobs([Path(p) for p in inputs], output_dir)
    rank, world_size = shard
    if world_size > 1:
        plan.jobs = plan.jobs[rank::world_size]
        if rank != 0:
            plan.failed, plan.not_images, plan.earlier_outputs = [], [], []
    report = FolderReport(failed=plan.failed, not_images=plan.not_images, earlier_outputs=plan.earlier_outputs)
    output_dir.mkdir(parents=True, exist_ok=True)
    # the model's classes, so that scoring the folder (fcnseg eval --pred-dir) can compare them by name
    try:
        write_class_file(output_dir / PREDICTION_CLASS_FILE, ClassInfo(tuple(predictor.class_names)))
    except DataError as e:  # a name a class file cannot hold: the folder is scored by index, as before
        log.warning("%s not written: %s", PREDICTION_CLASS_FILE, e)
    todo = []
    for job in plan.jobs:
        if not overwrite and _done(job, overlay_images, probabilities, confidence is not None):
            report.skipped_existing += 1
            if stats:
                _record_existing(report, job, predictor.num_classes)
            if confidence:
                _record_existing_confidence(report, job, confidence_threshold)
        else:
            todo.append(job)
    if report.skipped_existing:
        log.info("%s already segmented in %s; skipping them", plural(report.skipped_existing, "image"), output_dir)
    loader = torch.utils.data.DataLoader(
        _Decode(todo, max_pixels),
        batch_size=1,
        collate_fn=_first,
        num_workers=workers if len(todo) > 1 else 0,
        prefetch_factor=2 if workers and len(todo) > 1 else None,
    )
    bar = progress_bar(loader, total=len(todo), desc="predict", unit="img", show=progress)
    for index, image, error in bar:
        job = todo[index]
        if error is not None:
            report.failed.append((str(job.path), error))
            log.warning("skipping %s: %s", job.path, error)
            continue

        def on_tile(done: int, total: int, name: str = job.name) -> None:
            if total > 1:  # a large image: its tiles, so that a long forward shows it moves
                set_status(bar, f"{name}: tile {done}/{total}")

        try:
            _predict_one(predictor, job, image, overlay_images, probabilities, palette, report, stats,
                         legend=legend, on_tile=on_tile, confidence=confidence, threshold=confidence_threshold)
        except FcnsegError as e:
            reason = failure_reason(e, job.path)
            report.failed.append((str(job.path), reason))
            log.warning("skipping %s: %s", job.path, reason)
            continue
        finally:
            set_status(bar, "")
        report.processed += 1
    if stats and world_size == 1:
        write_area_tables(report.areas, predictor.class_names, output_dir)
    if confidence and world_size == 1:  # under torchrun rank 0 writes the table of every rank's images
        confidence_maps.write_confidence_table(report.confidence, output_dir / confidence_maps.TABLE_NAME, confidence)
    return report


def _done(job: Job, overlay_images: bool, probabilities: bool, confidence: bool = False) -> bool:
    paths = [Path(f"{job.stem}{MASK_SUFFIX}")]
    if confidence:
        paths += [Path(f"{job.stem}{confidence_maps.ARRAY_SUFFIX}"), Path(f"{job.stem}{confidence_maps.PICTURE_SUFFIX}")]
    if overlay_images:
        paths.append(Path(f"{job.stem}{OVERLAY_SUFFIX}"))
    if probabilities:
        paths.append(Path(f"{job.stem}{PROBABILITY_SUFFIX}"))
    return all(p.is_file() for p in paths)


def _area_entry(labels: np.ndarray, num_classes: int) -> dict:
    """Image size and int64 per-class pixel counts (label maps are not kept: a folder may hold 10,000 images)."""
    return {"height": int(labels.shape[0]), "width": int(labels.shape[1]), "counts": class_pixel_counts(labels, num_classes)}


def _record_existing(report: FolderReport, job: Job, num_classes: int) -> None:
    try:
        labels = read_mask_png(f"{job.stem}{MASK_SUFFIX}")
    except Exception as e:  # noqa: BLE001 - a damaged earlier output only costs its statistics
        log.warning("%s%s: cannot re-read for statistics (%s)", job.stem, MASK_SUFFIX, e)
        return
    report.areas[job.name] = _area_entry(labels, num_classes)


def _record_existing_confidence(report: FolderReport, job: Job, threshold: float) -> None:
    try:
        values = np.load(f"{job.stem}{confidence_maps.ARRAY_SUFFIX}")
    except Exception as e:  # noqa: BLE001 - a damaged earlier output only costs its row
        log.warning("%s%s: cannot re-read for the confidence table (%s)", job.stem, confidence_maps.ARRAY_SUFFIX, e)
        return
    report.confidence[job.name] = confidence_maps.summarize(values, threshold)


def _predict_one(predictor, job, image, overlay_images, probabilities, palette, report, stats, *, legend=True,
                 on_tile=None, confidence=None, threshold=confidence_maps.DEFAULT_THRESHOLD) -> None:
    prob_path = Path(f"{job.stem}{PROBABILITY_SUFFIX}") if probabilities else None
    result = predictor.predict(image, probabilities_path=prob_path, on_tile=on_tile, confidence=confidence)
    if confidence:
        confidence_maps.write_confidence(result.confidence, job.stem, confidence)
        report.confidence[job.name] = confidence_maps.summarize(result.confidence, threshold)
    if overlay_images:
        picture = overlay(image, result.labels, palette)
        if legend:
            picture = with_legend(picture, legend_rows(result.labels, list(predictor.class_names), palette))
        save_rgb(picture, f"{job.stem}{OVERLAY_SUFFIX}")
    write_mask_png(result.labels, f"{job.stem}{MASK_SUFFIX}", palette)  # last: its presence marks the image done
    if stats:
        report.areas[job.name] = _area_entry(result.labels, predictor.num_classes)


def write_area_tables(areas: dict[str, dict], class_names: list[str], output_dir: str | Path) -> dict:
    """Write ``areas.csv`` (one row per image: size, then pixels and fraction per class) and ``areas.json``.

    ``areas`` maps image name -> ``{"height", "width", "counts"}`` (int64 ``[C]``). Returns the JSON document.
    """
    output_dir = Path(output_dir)
    rows, doc = [], {"class_names": list(class_names), "images": {}}
    total = np.zeros(len(class_names), dtype=np.int64)
    for name in sorted(areas):
        entry = areas[name]
        counts = np.asarray(entry["counts"], dtype=np.int64)
        fractions = counts / max(int(counts.sum()), 1)
        total += counts
        doc["images"][name] = {
            "width": entry["width"],
            "height": entry["height"],
            "pixels": {c: int(n) for c, n in zip(class_names, counts)},
            "fraction": {c: float(f) for c, f in zip(class_names, fractions)},
        }
        rows.append([name, entry["width"], entry["height"], *counts.tolist(), *[f"{f:.6f}" for f in fractions]])
    doc["total"] = {
        "pixels": {c: int(n) for c, n in zip(class_names, total)},
        "fraction": {c: float(n) / max(int(total.sum()), 1) for c, n in zip(class_names, total)},
    }
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["image", "width", "height", *[f"{c}_pixels" for c in class_names], *[f"{c}_fraction" for c in class_names]])
    writer.writerows(rows)
    atomic_write_text(buffer.getvalue(), output_dir / "areas.csv")
    write_json(doc, output_dir / "areas.json")
    return doc
