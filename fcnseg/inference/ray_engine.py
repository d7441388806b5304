"""Segment many images on a Ray cluster: Ray Data reads and decodes in tasks, a pool of model actors runs the forwards, tasks write.

``fcnseg predict MODEL SRC -o OUT --engine ray`` and :func:`segment_with_ray`. The inputs are folders,
list files (one path or URI a line) or URIs that pyarrow (or fsspec) reads: local, ``s3://``, ``gs://``.
Each actor loads the model once (sent through Ray's object store, so no node needs the file) and runs
:class:`~fcnseg.inference.predictor.Predictor` with its tiling and memory budget; decoding and writing
run in Ray tasks beside them. Outputs are named after the input and written atomically, the label
map last, so an image whose label map exists is done: a retried task (an actor or node died) finds it
and writes nothing again, and a re-run skips it. ``OUT/manifest.parquet`` records each image (status,
size, per-class pixels, seconds, error); a stopped driver leaves its rows so far in ``OUT/manifest.parts/``,
merged by the next run. Ray is an optional extra: ``pip install 'fcnseg[ray]'``.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fcnseg.errors import ConfigError, DataError, FcnsegError
from fcnseg.files import check_output_path, plural, sweep_temp_files
from fcnseg.images import DEFAULT_MAX_PIXELS, is_image_file, read_image
from fcnseg.inference.folder import (MASK_SUFFIX, OVERLAY_SUFFIX, PROBABILITY_SUFFIX, check_output_folder, failure_reason,
                                     plan_jobs)
from fcnseg.inference.manifest import (DONE, FAILED, MANIFEST_NAME, ManifestRow, read_manifest, row_from_label_file,
                                       row_from_labels, write_manifest, write_parquet)
from fcnseg.inference.predictor import DEFAULT_MAX_MEMORY
from fcnseg.inference.tiling import OUTPUT_STRIDE

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'fcnseg[ray]'"
PARTS_FOLDER = "manifest.parts"  # the rows of a run so far, one Parquet file per flush
LIST_SUFFIXES = (".txt", ".lst")  # an input with this suffix lists images, one path or URI a line
TASK_CPUS = 0.5  # what each decode or write task reserves
MAX_BLOCKS = 10_000  # input blocks of a run (a million images: 100 a block)
FLUSH_SECONDS = 10.0  # how often the driver saves the manifest rows it has (a killed driver loses at most these)
_URI = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")


def import_ray():
    """The ``ray`` module with Ray Data, or a ConfigError saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError as e:
        raise ConfigError(f"--engine ray needs Ray Data (the 'ray[data]' package), which is not installed; "
                          f"install it with: {INSTALL_HINT}") from e
    return ray


# --- what to segment ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """One image: where to read it (a path or URI), its name in the run, and its output path without suffix."""

    source: str
    name: str
    stem: str


def is_uri(text: str) -> bool:
    return bool(_URI.match(text))


def as_source(value: str | Path) -> str:
    """A command-line input as given: ``Path("s3://b/k")`` reads ``s3:/b/k``; the second slash is put back."""
    text = str(value)
    if not is_uri(text) and re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]+:/[^/]", text):
        scheme, rest = text.split(":/", 1)
        return f"{scheme}://{rest}" if scheme != "file" else f"file:///{rest}"
    return text


def _filesystem(uri: str):
    """``(pyarrow filesystem, path in it)`` of a URI."""
    from pyarrow import fs as pafs

    try:
        return pafs.FileSystem.from_uri(uri)
    except Exception as e:  # noqa: BLE001 - pyarrow knows file, s3, gs, hdfs; fsspec knows the rest
        try:
            import fsspec
        except ImportError:
            raise ConfigError(f"{uri}: pyarrow cannot open this URI ({e}); for other filesystems install fsspec "
                              f"and its driver (e.g. adlfs for az://)") from e
        fs, path = fsspec.core.url_to_fs(uri)
        return pafs.PyFileSystem(pafs.FSSpecHandler(fs)), path


def read_bytes(source: str) -> bytes:
    """The contents of a local path or a URI."""
    if not is_uri(source):
        return Path(source).read_bytes()
    fs, path = _filesystem(source)
    with fs.open_input_stream(path) as f:
        return f.read()


def _list_uri(uri: str) -> list[tuple[str, str]]:
    """``[(uri, name)]`` of the images under a URI folder (recursive, hidden ones left out), or the one file it names."""
    from pyarrow import fs as pafs

    fs, root = _filesystem(uri)
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        raise DataError("no such file or folder", path=uri)
    if info.type == pafs.FileType.File:
        return [(uri, Path(root).name)]
    base = uri.rstrip("/")
    found = []
    for entry in fs.get_file_info(pafs.FileSelector(root, recursive=True)):
        rel = entry.path[len(root.rstrip("/")):].lstrip("/")
        if entry.type == pafs.FileType.File and is_image_file(rel) and not any(p.startswith(".") for p in rel.split("/")):
            found.append((f"{base}/{rel}", rel))
    return sorted(found)


def _list_file(path: Path) -> list[tuple[str, str]]:
    """``[(source, name)]`` of a list file's lines; names are the paths below the entries' common folder."""
    from fcnseg.files import read_text

    lines = [line.strip() for line in read_text(path, "image list").splitlines()]
    entries = [line for line in lines if line and not line.startswith("#")]
    sources = [e if is_uri(e) else str((path.parent / e) if not Path(e).is_absolute() else Path(e)) for e in entries]
    folders = [source.split("/")[:-1] for source in sources]  # "s3:", "", "bucket", ... for a URI
    common = 0
    while folders and all(len(f) > common and f[common] == folders[0][common] for f in folders):
        common += 1
    prefix = "/".join(folders[0][:common]) + "/" if folders and common else ""
    return [(s, s[len(prefix):]) for s in sources]


def list_items(inputs: list[str | Path], output_dir: str | Path) -> tuple[list[Item], list[tuple[str, str]]]:
    """The images to segment, in a fixed order, and the inputs that failed already (missing, name clashes).

    Local files and folders are planned as :func:`fcnseg.inference.folder.plan_jobs` plans them (the
    same output names as a plain ``fcnseg predict``); URIs are listed through their filesystem; a
    ``.txt``/``.lst`` file lists one image path or URI per line.
    """
    output_dir = Path(output_dir)
    items: list[Item] = []
    failed: list[tuple[str, str]] = []
    local: list[Path] = []
    listed: list[tuple[str, str]] = []
    for value in map(as_source, inputs):
        if is_uri(value):
            listed += _list_uri(value)
        elif Path(value).suffix.lower() in LIST_SUFFIXES and Path(value).is_file():
            listed += _list_file(Path(value))
        else:
            local.append(Path(value))
    if local:
        plan = plan_jobs(local, output_dir)
        items += [Item(str(job.path), job.name, str(job.stem)) for job in plan.jobs]
        failed += plan.failed
    taken = {item.stem: item.source for item in items}
    for source, name in listed:
        stem = str(output_dir / Path(name).with_suffix(""))
        if stem in taken:
            failed.append((source, f"its outputs would overwrite those of {taken[stem]} (same name, other suffix)"))
            continue
        taken[stem] = source
        items.append(Item(source, name, stem))
    return items, failed


# --- where the work goes -------------------------------------------------------------------------------


@dataclass(frozen=True)
class RayPlan:
    """How a run uses the cluster: actor count and size, images per actor call, and why."""

    actors: int
    cpus_per_actor: float  # what each actor reserves
    gpus_per_actor: float
    threads: int  # torch / ONNX Runtime threads in each actor
    batch_size: int
    note: str = ""

    def describe(self) -> str:
        where = f"{self.gpus_per_actor:g} GPU + " if self.gpus_per_actor else ""
        text = (f"{plural(self.actors, 'model actor')} ({where}{self.cpus_per_actor:g} CPU, {self.threads} "
                f"thread{'s' if self.threads != 1 else ''} each), {self.batch_size} images per call")
        return text + (f"; {self.note}" if self.note else "")


def plan_resources(cpus: float, gpus: float, node_cpus: float, *, actors: int | None = None,
                   batch_size: int | None = None, cpus_per_actor: float | None = None,
                   gpus_per_actor: float | None = None) -> RayPlan:
    """Actors and batch size from a cluster's resources; the flags given override.

    Args:
        cpus, gpus: the cluster's totals (``ray.cluster_resources()``).
        node_cpus: the CPUs of its smallest node with any (an actor must fit on one node).
    On GPUs: one actor per GPU, 1 CPU each, 8 images per call. On CPUs: actors of up to 4 threads
    (half a node's CPUs, at least 1), as many as fit once an eighth of the cluster (at least one
    task's share) is left to the decode and write tasks, 4 images per call. Actors asked for beyond
    what fits reserve less CPU each (their threads stay), so that decode and write tasks still run.
    """
    for flag, value in (("--actors", actors), ("--batch-size", batch_size)):
        if value is not None and value < 1:
            raise ConfigError(f"{flag} must be at least 1, got {value}")
    for flag, value in (("--cpus-per-actor", cpus_per_actor), ("--gpus-per-actor", gpus_per_actor)):
        if value is not None and value < 0 or (flag == "--cpus-per-actor" and value == 0):
            raise ConfigError(f"{flag} must be positive, got {value}")
    gpu = gpus_per_actor if gpus_per_actor is not None else (1.0 if gpus >= 1 else 0.0)
    note = ""
    if gpu > 0:
        if gpus < gpu:
            raise ConfigError(f"--gpus-per-actor {gpu:g}: the cluster has {gpus:g} GPUs")
        per = cpus_per_actor or 1.0
        count = actors or max(1, int(gpus // gpu))
        batch = batch_size or 8
    else:
        per = cpus_per_actor or float(min(4, max(1, int(node_cpus) // 2)))
        reserve = max(TASK_CPUS, cpus / 8)
        count = actors or max(1, int((cpus - reserve) // per))
        batch = batch_size or 4
    threads = max(1, int(per + 0.5))
    room = cpus - TASK_CPUS
    if count * per > room:
        shrunk = max(0.01, math.floor(room / count * 100) / 100)
        note = (f"{count} actors of {per:g} CPU do not fit the cluster's {cpus:g} CPUs beside the decode and write "
                f"tasks: each reserves {shrunk:g} CPU and runs {threads} thread{'s' if threads != 1 else ''}")
        per = shrunk
    return RayPlan(count, per, gpu, threads, batch, note)


# --- the Ray Data stages (run on the cluster) -------------------------------------------------------------


def _decode(row: dict, max_pixels: int | None) -> dict:
    """Ray task: read and decode one image; an unreadable one carries its error instead."""
    start = time.perf_counter()
    try:
        source = row["source"]
        image = read_image(read_bytes(source) if is_uri(source) else Path(source), max_pixels)
        error = ""
    except DataError as e:
        image, error = np.zeros((0, 0, 3), np.uint8), failure_reason(e, Path(row["source"]))
    except Exception as e:  # noqa: BLE001 - any reader failure is recorded and skipped
        image, error = np.zeros((0, 0, 3), np.uint8), f"cannot read the image ({type(e).__name__}: {e})"
    return {**row, "image": image, "error": error, "seconds": time.perf_counter() - start}


def stacked_groups(predictor, images: list[np.ndarray], max_stack: int) -> list[list[int]]:
    """Indices of ``images`` to run as one forward each: same-size images together (at most ``max_stack``, and only
    as many as the memory budget holds side by side in one whole-image forward), every other image alone.

    Stacking is for GPUs, where one forward of k images costs little more than one; tiles, test-time
    augmentation and probabilities keep the one-image path.
    """
    groups: list[list[int]] = []
    by_size: dict[tuple, list[int]] = {}
    for index, image in enumerate(images):
        by_size.setdefault(image.shape, []).append(index)
    for (height, width, _), indices in by_size.items():
        fit = 1
        if max_stack > 1 and len(indices) > 1 and not predictor.tta and predictor.tile is None:
            plan = predictor.plan(height, width)
            if plan.whole:  # estimated on the output grid, as the plan is
                estimate = predictor.estimate(-(-height // OUTPUT_STRIDE) * OUTPUT_STRIDE,
                                              -(-width // OUTPUT_STRIDE) * OUTPUT_STRIDE)
                per_image = estimate.total - estimate.weights + 4 * height * width  # the forward, the pixels, labels
                fit = max_stack if predictor.max_memory is None else \
                    max(1, min(max_stack, int((predictor.max_memory - estimate.weights) // max(per_image, 1))))
        groups += [indices[i:i + fit] for i in range(0, len(indices), fit)]
    return groups


def forward_stacked(predictor, images: list[np.ndarray]) -> list[np.ndarray]:
    """Label maps ``[H, W]`` of same-size RGB uint8 images ``[H, W, 3]`` from one forward of ``[k, H, W, 3]``."""
    import torch

    from fcnseg.inference.forward import class_indices

    logits = predictor.runtime(torch.from_numpy(np.stack(images)))  # [k, C, H, W]
    labels = class_indices(logits, 1).cpu().numpy().astype(np.uint8 if predictor.num_classes <= 256 else np.int32)
    return list(labels)


def _node_copy(data: bytes, model_name: str) -> Path:
    """The model's bytes as a file in this node's cache, one per content: every actor on the node (and every later
    run) opens the same file, so ``--runtime auto``'s measurement, cached per model file, is made once per node."""
    import hashlib

    from fcnseg.files import atomic_write_bytes
    from fcnseg.inference.runtime_choice import cache_dir

    path = cache_dir() / "models" / hashlib.sha256(data).hexdigest()[:24] / model_name
    if not (path.is_file() and path.stat().st_size == len(data)):
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(data, path)
    return path


class _Segmenter:
    """Ray actor: loads the model once, then turns batches of decoded images into label maps."""

    def __init__(self, model: list, model_name: str, options: dict):
        import ray
        import torch

        from fcnseg.inference.predictor import Predictor

        torch.set_num_threads(options["threads"])
        path = _node_copy(ray.get(model[0]), model_name)  # from the object store: no node needs the model file
        self.predictor = Predictor.from_checkpoint(
            path, runtime=options["runtime"], device=options["device"], precision=options["precision"],
            layout=options["layout"], max_memory=options["max_memory"], tile=options["tile"], tta=options["tta"])
        self.probabilities = options["probabilities"]
        self.keep_image = options["overlay"]
        stack = options["stack"]
        on_gpu = getattr(getattr(self.predictor.runtime, "device", None), "type", "") == "cuda"
        self.max_stack = options["batch_size"] if (stack or (stack is None and on_gpu)) and not self.probabilities else 1

    def __call__(self, batch: dict) -> dict:
        count = len(batch["name"])
        labels = [np.zeros((0, 0), np.uint8)] * count
        errors, seconds = list(batch["error"]), list(batch["seconds"])
        good = [i for i in range(count) if not errors[i]]
        images = [np.array(batch["image"][i]) for i in good]  # writable copies, for torch.from_numpy
        groups = stacked_groups(self.predictor, images, self.max_stack) if self.max_stack > 1 else \
            [[k] for k in range(len(good))]
        for group in groups:
            start = time.perf_counter()
            try:
                if len(group) > 1:
                    maps = forward_stacked(self.predictor, [images[k] for k in group])
                else:
                    i = good[group[0]]
                    prob_path = Path(f"{batch['stem'][i]}{PROBABILITY_SUFFIX}") if self.probabilities else None
                    maps = [self.predictor.predict(images[group[0]], probabilities_path=prob_path).labels]
            except FcnsegError as e:
                for k in group:
                    errors[good[k]] = failure_reason(e, Path(batch["source"][good[k]]))
                continue
            share = (time.perf_counter() - start) / len(group)
            for k, labels_k in zip(group, maps):
                labels[good[k]] = labels_k
                seconds[good[k]] += share
        out = {key: list(batch[key]) for key in ("source", "name", "stem")}
        out.update(labels=labels, error=errors, seconds=seconds)
        if self.keep_image:
            out["image"] = list(batch["image"])
        return out

    def __del__(self):
        shutil.rmtree(getattr(self, "folder", ""), ignore_errors=True)


def _write(row: dict, palette: np.ndarray, class_names: list[str], overlay_images: bool, legend: bool) -> dict:
    """Ray task: write one image's outputs (label map last) and return its manifest row as a dict.

    A label map that exists already was written by an earlier try of this task (its worker died
    after the rename): nothing is written again.
    """
    from dataclasses import asdict

    from fcnseg.data.palette import overlay, write_mask_png
    from fcnseg.images import save_rgb
    from fcnseg.reports.legend import legend_rows, with_legend

    start = time.perf_counter()
    name, source, stem = row["name"], row["source"], row["stem"]
    if row["error"]:
        return asdict(ManifestRow(name, source, FAILED, error=row["error"], seconds=row["seconds"]))
    labels = np.asarray(row["labels"])
    try:
        mask_path = Path(f"{stem}{MASK_SUFFIX}")
        if not mask_path.is_file():
            if overlay_images:
                image = np.asarray(row["image"])
                picture = overlay(image, labels, palette)
                if legend:
                    picture = with_legend(picture, legend_rows(labels, list(class_names), palette))
                save_rgb(picture, f"{stem}{OVERLAY_SUFFIX}")
            write_mask_png(labels, mask_path, palette)  # last: its presence marks the image done
    except (OSError, FcnsegError) as e:
        return asdict(ManifestRow(name, source, FAILED, int(labels.shape[0]), int(labels.shape[1]),
                                  error=f"cannot write its outputs ({e})", seconds=row["seconds"]))
    seconds = row["seconds"] + time.perf_counter() - start
    return asdict(row_from_labels(name, source, labels, len(class_names), seconds))


# --- the driver ------------------------------------------------------------------------------------------


@dataclass
class RayReport:
    """Outcome of :func:`segment_with_ray`: counts, failures, the plan it ran with, its manifest."""

    processed: int = 0
    skipped_existing: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (source, reason)
    plan: RayPlan | None = None
    manifest: Path | None = None
    seconds: float = 0.0

    def summary(self) -> str:
        rate = f" ({self.processed / self.seconds:.1f} images/s)" if self.processed and self.seconds else ""
        text = f"{self.processed} segmented{rate}, {self.skipped_existing} already done, {len(self.failed)} failed"
        if self.failed:
            shown = "\n".join(f"  {source}: {reason}" for source, reason in self.failed[:20])
            more = f"\n  ... and {len(self.failed) - 20} more" if len(self.failed) > 20 else ""
            text += f"\nfailed files:\n{shown}{more}"
        return text + (f"\nmanifest: {self.manifest}" if self.manifest else "")


class _Manifest:
    """The driver's record: earlier runs' rows, this run's rows, flushed to ``manifest.parts/`` as they come."""

    def __init__(self, output_dir: Path, class_names: list[str]):
        self.output_dir, self.class_names = output_dir, class_names
        self.parts = output_dir / PARTS_FOLDER
        self.earlier: dict[str, ManifestRow] = {}
        files = [output_dir / MANIFEST_NAME] if (output_dir / MANIFEST_NAME).is_file() else []
        files += sorted(self.parts.glob("*.parquet")) if self.parts.is_dir() else []
        for path in files:  # later files win
            try:
                self.earlier.update((r.image, r) for r in read_manifest(path))
            except Exception as e:  # noqa: BLE001 - a damaged record costs only its rows, rebuilt from the outputs
                log.warning("%s: cannot read it (%s); its images are checked by their outputs", path, e)
        self.rows: dict[str, ManifestRow] = {}
        self.pending: list[ManifestRow] = []
        self.last_flush = time.monotonic()
        self.session = f"{int(time.time() * 1000):x}-{os.getpid()}"

    def add(self, row: ManifestRow) -> None:
        self.rows[row.image] = row
        self.pending.append(row)
        if time.monotonic() - self.last_flush > FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        from fcnseg.files import atomic_write

        if self.pending:
            self.parts.mkdir(parents=True, exist_ok=True)
            rows, self.pending = self.pending, []
            path = self.parts / f"{self.session}-{len(self.rows):09d}.parquet"
            atomic_write(path, lambda tmp: write_parquet(rows, self.class_names, tmp))
        self.last_flush = time.monotonic()

    def finish(self, items: list[Item], failed: list[tuple[str, str]]) -> tuple[Path, list[ManifestRow]]:
        """Write ``manifest.parquet``: a row per planned image and per input that failed before planning; returns it and the rows."""
        rows = []
        for item in items:
            row = self.rows.get(item.name)
            if row is None:  # done by an earlier run
                row = self.earlier.get(item.name)
                if row is None or row.status != DONE:
                    try:
                        row = row_from_label_file(item.name, item.source, f"{item.stem}{MASK_SUFFIX}",
                                                  len(self.class_names))
                    except DataError as e:  # not done after all (the run stopped early): left for the next
                        row = ManifestRow(item.name, item.source, FAILED, error=f"not segmented ({e.reason})")
            rows.append(row)
        rows += [ManifestRow(Path(source).name, source, FAILED, error=reason) for source, reason in failed]
        path = write_manifest(rows, self.class_names, self.output_dir)
        self.pending = []  # in the manifest now
        shutil.rmtree(self.parts, ignore_errors=True)
        return path, rows


def _connect(ray, address: str | None) -> bool:
    """Join the cluster at ``address`` or start Ray on this machine; False when Ray was running already."""
    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if address:
        ray.init(address=address, logging_level=logging.WARNING)
    else:
        ray.init(include_dashboard=False, logging_level=logging.WARNING)
    return True


def _smallest_node_cpus(ray) -> float:
    sizes = [node["Resources"].get("CPU", 0) for node in ray.nodes() if node.get("Alive")]
    sizes = [s for s in sizes if s > 0]
    return min(sizes) if sizes else 1.0


def segment_with_ray(
    model: str | Path,
    inputs: list[str | Path],
    output_dir: str | Path,
    *,
    address: str | None = None,
    actors: int | None = None,
    batch_size: int | None = None,
    cpus_per_actor: float | None = None,
    gpus_per_actor: float | None = None,
    runtime: str = "auto",
    device: str = "auto",
    precision: str = "auto",
    layout: str = "auto",
    max_memory: int | None = DEFAULT_MAX_MEMORY,
    tile: int | None = None,
    tta: tuple = (),
    overlay_images: bool = False,
    legend: bool = True,
    probabilities: bool = False,
    stats: bool = False,
    overwrite: bool = False,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
    stack: bool | None = None,
    progress: bool = True,
) -> RayReport:
    """Segment every image of ``inputs`` into ``output_dir`` with Ray Data; returns a :class:`RayReport`.

    Args:
        model: a model file :func:`fcnseg.load_model` reads (checkpoint or fcnseg ``.onnx``, fp32 or int8),
            on the driver's machine; each actor gets a copy through the object store and loads it once.
        inputs: folders (searched recursively), image files, list files (``.txt``/``.lst``, one path or URI
            a line) and URIs (``s3://bucket/photos/``: a folder, or one image).
        output_dir: a local or shared folder every node can write (the same path on every node).
        address: ``None`` (Ray on this machine, or the one already started by ``ray.init``), ``auto`` or
            ``ray://HEAD:10001``.
        actors, batch_size, cpus_per_actor, gpus_per_actor: override :func:`plan_resources`'s choice.
        runtime, device, precision, layout, max_memory, tile, tta: how each actor's
            :class:`~fcnseg.inference.predictor.Predictor` runs (``device="auto"``: the actor's GPU if it has one).
        overlay_images, legend, probabilities: also write ``<name>_overlay.jpg`` / ``<name>_prob.npy``
            (the probabilities are written by the actor, band by band).
        stats: also write ``areas.csv`` and ``areas.json`` (as ``fcnseg predict --stats``) from the manifest.
        overwrite: redo images whose label map exists.
        max_pixels: refuse larger images (recorded as failed).
        stack: run same-size images of a batch as one forward where the memory budget holds them whole
            (:func:`stacked_groups`); None: on GPU actors only.
    Outputs per image as a plain ``fcnseg predict`` names them (``<name>_labels.png``...), and
    ``manifest.parquet``: one row per image (:class:`~fcnseg.inference.manifest.ManifestRow`).
    """
    ray = import_ray()
    from fcnseg.data.classes import ClassInfo, write_class_file
    from fcnseg.data.class_match import PREDICTION_CLASS_FILE
    from fcnseg.weights.checkpoint import load_model

    started = time.perf_counter()
    output_dir = Path(output_dir)
    check_output_path(output_dir, "folder", "-o")
    check_output_folder([p for p in inputs if not is_uri(as_source(p))], output_dir)
    handle = load_model(model)  # on the driver too: a bad file fails here, before the cluster starts on it
    class_names, palette = list(handle.class_names), handle.palette
    del handle
    items, failed = list_items(inputs, output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    try:
        write_class_file(output_dir / PREDICTION_CLASS_FILE, ClassInfo(tuple(class_names)))
    except DataError as e:
        log.warning("%s not written: %s", PREDICTION_CLASS_FILE, e)
    swept = sweep_temp_files(output_dir, recursive=True)
    if swept:
        log.info("removed %s a stopped run left in %s", plural(len(swept), "unfinished file"), output_dir)
    record = _Manifest(output_dir, class_names)
    report = RayReport()
    todo = []
    for item in items:
        outputs = [MASK_SUFFIX] + ([OVERLAY_SUFFIX] if overlay_images else []) + \
            ([PROBABILITY_SUFFIX] if probabilities else [])
        if not overwrite and all(Path(f"{item.stem}{s}").is_file() for s in outputs):
            report.skipped_existing += 1
        else:
            todo.append(item)
    if overwrite:  # every label map goes, so that the write tasks do not take them for their own earlier try
        for item in todo:
            Path(f"{item.stem}{MASK_SUFFIX}").unlink(missing_ok=True)
    if report.skipped_existing:
        log.info("%s already segmented in %s; skipping them", plural(report.skipped_existing, "image"), output_dir)
    owned = _connect(ray, address) if todo else False
    try:
        if todo:
            resources = ray.cluster_resources()
            report.plan = plan_resources(resources.get("CPU", 1.0), resources.get("GPU", 0.0), _smallest_node_cpus(ray),
                                         actors=actors, batch_size=batch_size, cpus_per_actor=cpus_per_actor,
                                         gpus_per_actor=gpus_per_actor)
            log.info("ray: %s", report.plan.describe())
            options = {"threads": report.plan.threads, "batch_size": report.plan.batch_size, "stack": stack,
                       "runtime": runtime, "device": device, "precision": precision,
                       "layout": layout, "max_memory": max_memory, "tile": tile, "tta": tuple(tta),
                       "probabilities": probabilities, "overlay": overlay_images}
            dataset = _pipeline(ray, todo, Path(model), options, report.plan, palette, class_names, overlay_images,
                                legend, max_pixels)
            _drive(dataset, len(todo), record, report, progress)
        report.manifest, rows = record.finish(items, failed)
        if stats:
            from fcnseg.inference.folder import write_area_tables

            write_area_tables({r.image: {"height": r.height, "width": r.width, "counts": r.class_pixels}
                               for r in rows if r.status == DONE}, class_names, output_dir)
    finally:
        record.flush()
        if owned:
            ray.shutdown()
    report.failed = sorted(failed + [(r.source, r.error) for r in record.rows.values() if r.status == FAILED])
    report.seconds = time.perf_counter() - started
    return report


def _pipeline(ray, todo: list[Item], model: Path, options: dict, plan: RayPlan, palette, class_names, overlay_images,
              legend, max_pixels):
    """The Ray Data pipeline: items -> decode tasks -> model actors -> write tasks -> manifest rows."""
    from ray.data import ActorPoolStrategy, DataContext

    context = DataContext.get_current()
    context.enable_progress_bars = False  # the driver shows one bar of its own
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    model_ref = ray.put(model.read_bytes())
    # About one batch per block, so that work spreads over the actors from the start; at most MAX_BLOCKS
    # (Ray Data splits blocks that grow too large once decoded).
    blocks = max(1, min(MAX_BLOCKS, math.ceil(len(todo) / plan.batch_size)))
    dataset = ray.data.from_items([{"source": i.source, "name": i.name, "stem": i.stem} for i in todo],
                                  override_num_blocks=blocks)
    dataset = dataset.map(_decode, fn_kwargs={"max_pixels": max_pixels}, num_cpus=TASK_CPUS)
    dataset = dataset.map_batches(
        _Segmenter, fn_constructor_kwargs={"model": [model_ref], "model_name": model.name, "options": options},
        batch_size=plan.batch_size, batch_format="numpy", compute=ActorPoolStrategy(size=plan.actors),
        num_cpus=plan.cpus_per_actor, num_gpus=plan.gpus_per_actor or None)
    return dataset.map(_write, fn_kwargs={"palette": palette, "class_names": class_names,
                                          "overlay_images": overlay_images, "legend": legend}, num_cpus=TASK_CPUS)


def _drive(dataset, total: int, record: _Manifest, report: RayReport, progress: bool) -> None:
    """Stream the manifest rows back: each image counted once (a retried task's repeat is dropped), progress shown."""
    from fcnseg.progress import progress_bar

    bar = progress_bar(total=total, desc="ray predict", unit="img", show=progress)
    try:
        for row in dataset.iter_rows():
            if row["image"] in record.rows:
                continue
            entry = ManifestRow(**{k: _plain(row[k]) for k in ManifestRow.__dataclass_fields__})
            record.add(entry)
            if entry.status == DONE:
                report.processed += 1
            else:
                log.warning("skipping %s: %s", entry.source, entry.error)
            bar.update(1)
    finally:
        bar.close()


def _plain(value):
    """A Ray row's value as a plain Python one (lists of int for numpy arrays)."""
    if isinstance(value, np.ndarray):
        return [int(v) for v in value.tolist()]
    if isinstance(value, np.generic):
        return value.item()
    return value


# --- the command line ------------------------------------------------------------------------------------


RAY_FLAGS = ("address", "actors", "batch_size", "cpus_per_actor", "gpus_per_actor")


def check_engine_flags(args: argparse.Namespace) -> None:
    """Refuse --engine ray's flags without --engine ray (they would be ignored in silence)."""
    given = [f"--{name.replace('_', '-')}" for name in RAY_FLAGS if getattr(args, name, None) is not None]
    if given and args.engine != "ray":
        raise ConfigError(f"{' '.join(given)} {'is' if len(given) == 1 else 'are'} for --engine ray; add --engine ray "
                          f"or leave {'it' if len(given) == 1 else 'them'} out")


def predict_with_ray(args: argparse.Namespace, max_memory: int) -> int:
    """``fcnseg predict ... --engine ray``: run :func:`segment_with_ray` with predict's flags, print its report."""
    from fcnseg.inference.tta import parse_tta
    from fcnseg.inference.video import is_video_file

    import_ray()  # before anything else: say how to install it
    videos = [str(p) for p in args.inputs if is_video_file(p) and not is_uri(as_source(p))]
    if videos:
        raise ConfigError(f"{videos[0]}: --engine ray segments images; segment videos without it")
    if args.compile:
        log.info("--compile is not used by --engine ray")
    report = segment_with_ray(
        args.checkpoint, list(args.inputs), args.out, address=args.address, actors=args.actors,
        batch_size=args.batch_size, cpus_per_actor=args.cpus_per_actor, gpus_per_actor=args.gpus_per_actor,
        runtime=args.runtime, device=args.device, precision=args.precision, layout=args.layout, max_memory=max_memory,
        tile=args.tile, tta=parse_tta(args.tta), overlay_images=args.overlay, legend=not args.no_legend,
        probabilities=args.probabilities, stats=args.stats, overwrite=args.overwrite, max_pixels=args.max_pixels or None,
        progress=not args.no_progress)
    if report.plan is not None:
        print(f"ray: {report.plan.describe()}")
    print(report.summary())
    return 1 if report.failed else 0
