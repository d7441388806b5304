"""`fcnseg predict` under torchrun: the input list split by rank, each image segmented once, rank 0 merges the report and manifest.

Every process plans the same sorted input list and takes every ``world_size``-th image of it
(:func:`fcnseg.inference.folder.predict_folder` with ``shard``), on its own GPU where there are GPUs.
Outputs are written atomically with the label map last, so a re-run (any process count) skips the
images whose label map exists and redoes the rest; rank 0 first sweeps the temp files a killed run left.
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from fcnseg import distributed as D
from fcnseg.errors import ConfigError
from fcnseg.files import plural, sweep_temp_files

log = logging.getLogger(__name__)


def under_torchrun() -> bool:
    """True in a process torchrun started with more than one process in the job."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def predict_with_torchrun(args: argparse.Namespace, max_memory: int, on_done=None) -> int:
    """Run ``fcnseg predict``'s image inputs as one rank of a torchrun job; returns the exit status (rank 0's report).

    ``args`` are predict's parsed flags with ``out`` resolved; videos are refused (one video is one
    sequential job: run it without torchrun). ``on_done(predictor)`` runs on rank 0 once every rank's
    outputs are written (the annotations of the whole set).
    """
    from fcnseg.inference.confidence import TABLE_NAME, write_confidence_table
    from fcnseg.inference.folder import FolderReport, plan_jobs, predict_folder, write_area_tables
    from fcnseg.inference.manifest import write_manifest
    from fcnseg.inference.predictor import Predictor
    from fcnseg.inference.tta import parse_tta
    from fcnseg.inference.video import is_video_file

    videos = [str(p) for p in args.inputs if not p.is_dir() and is_video_file(p)]
    if videos:
        raise ConfigError(f"{videos[0]}: videos are not split between torchrun processes; segment them without torchrun")
    tta = parse_tta(args.tta)
    info = D.init_distributed(args.device)
    try:
        out = Path(args.out)
        if info.is_main:
            out.mkdir(parents=True, exist_ok=True)
            swept = sweep_temp_files(out, recursive=True)
            if swept:
                log.info("removed %s a stopped run left in %s", plural(len(swept), "unfinished file"), out)
        D.barrier()  # no process writes before the sweep ends
        predictor = Predictor.from_checkpoint(
            args.checkpoint, runtime=args.runtime, tta=tta, device=str(info.device), precision=args.precision,
            layout=args.layout, compile=args.compile, max_memory=max_memory, tile=args.tile)
        if info.is_main:
            log.info("%s: %s; %d processes", args.checkpoint, predictor.describe(), info.world_size)
        report = predict_folder(
            predictor, list(args.inputs), out, overlay_images=args.overlay, legend=not args.no_legend,
            probabilities=args.probabilities, stats=True, overwrite=args.overwrite, workers=args.workers,
            max_pixels=args.max_pixels or None, palette=predictor.palette,
            progress=not args.no_progress and info.is_main, shard=(info.rank, info.world_size),
            confidence=args.confidence, confidence_threshold=args.confidence_threshold)
        reports = D.all_gather_objects(report)
        if not info.is_main:
            return 0
        merged = merge_reports(reports)
        if args.stats:
            write_area_tables(merged.areas, predictor.class_names, out)
        if args.confidence:
            write_confidence_table(merged.confidence, out / TABLE_NAME, args.confidence)
        plan = plan_jobs([Path(p) for p in args.inputs], out)
        manifest = write_manifest(manifest_rows(plan.jobs, merged), predictor.class_names, out)
        print(f"{merged.summary()}\n({info.world_size} processes; manifest: {manifest})")
        if args.stats:
            print(f"class areas: {out / 'areas.csv'}  {out / 'areas.json'}")
        if on_done is not None:
            on_done(predictor)
        return 1 if merged.failed else 0
    finally:
        D.cleanup()


def merge_reports(reports: list) -> "FolderReport":
    """One :class:`~fcnseg.inference.folder.FolderReport` of every rank's (counts summed, lists joined)."""
    from fcnseg.inference.folder import FolderReport

    merged = FolderReport()
    for r in reports:
        merged.processed += r.processed
        merged.skipped_existing += r.skipped_existing
        merged.failed += r.failed
        merged.areas.update(r.areas)
        merged.confidence.update(r.confidence)
        merged.not_images += r.not_images
        merged.earlier_outputs += r.earlier_outputs
    merged.failed.sort()
    return merged


def manifest_rows(jobs: list, report) -> list:
    """A manifest row per planned image: ``done`` with its size and class pixels, or ``failed`` with the reason."""
    from fcnseg.inference.manifest import DONE, FAILED, ManifestRow

    failed = dict(report.failed)
    planned = {str(job.path) for job in jobs}
    rows = []
    for job in jobs:
        area = report.areas.get(job.name)
        if area is not None and str(job.path) not in failed:
            rows.append(ManifestRow(job.name, str(job.path), DONE, area["height"], area["width"],
                                    [int(n) for n in area["counts"]]))
        else:
            rows.append(ManifestRow(job.name, str(job.path), FAILED,
                                    error=failed.get(str(job.path), "no label map was written")))
    for path, reason in report.failed:  # inputs that never became jobs (missing files, name clashes)
        if path not in planned:
            rows.append(ManifestRow(Path(path).name, path, FAILED, error=reason))
    return rows
