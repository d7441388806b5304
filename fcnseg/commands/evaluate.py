"""`fcnseg eval`: a checkpoint on a data set, or a folder of predicted PNGs against ground truth -> the four metrics."""

from __future__ import annotations

import argparse
from pathlib import Path

import logging

from fcnseg.data.kinds import AUTO, DATASET_KINDS, NYUD_MODALITIES, SYNTHETIC_STYLES
from fcnseg.errors import ConfigError
from fcnseg.evaluation import evaluate, format_skipped, score_folders
from fcnseg.files import check_output_path, write_json
from fcnseg.inference.runtime import RUNTIME_HELP, RUNTIMES
from fcnseg.precision import PRECISIONS
from fcnseg.metrics import format_table
from fcnseg.scoring import format_head_tables

log = logging.getLogger("fcnseg.evaluation")

def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval",
        help="score a checkpoint on a data set, or predicted label PNGs against ground truth",
        description="Pixel accuracy, mean accuracy, mean IU and frequency-weighted IU (paper section 5). "
        "Either CHECKPOINT with --data, or --pred-dir with --gt-dir.",
    )
    p.add_argument("checkpoint", nargs="?", type=Path,
                   help="model: a checkpoint, or an fcnseg .onnx (fp32 or int8, run with ONNX Runtime)")
    p.add_argument("--data", type=Path, help="data set folder (omit with --kind synthetic for the in-memory set)")
    p.add_argument("--kind", default=AUTO, choices=[AUTO, *DATASET_KINDS], help="layout")
    p.add_argument("--split", default="val", help="split to score (default: val)")
    p.add_argument("--sbd-root", type=Path, help="SBD folder, for the VOC split seg11valid")
    p.add_argument("--voc-root", type=Path, help="PASCAL-Context: the VOC2010 images, when not under --data")
    p.add_argument("--modalities", choices=NYUD_MODALITIES,
                   help="NYUD inputs (default: the ones the checkpoint was trained on)")
    p.add_argument("--leave-out-absent", action="store_true",
                   help="leave classes without a ground-truth pixel out of the class means (SIFT Flow's test set)")
    p.add_argument("--style", default="shapes", choices=SYNTHETIC_STYLES, help="synthetic style when served from memory")
    p.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU) | cpu | cuda | cuda:N")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="auto (default): fp16 on CUDA, bf16 on CPUs with native bf16, else fp32")
    p.add_argument("--runtime", choices=RUNTIMES, default=None, help=RUNTIME_HELP)
    p.add_argument("--tta", metavar="SPEC",
                   help="test-time augmentation, softmax averaged at input size: flip, scales=0.75,1,1.25 or "
                   "scales=0.75,1,1.25,flip")
    p.add_argument("--compare-precisions", action="store_true",
                   help="score the checkpoint in fp32, bf16 and int8 on the same set and print one table "
                   "(int8 needs --int8-model or --calib)")
    p.add_argument("--int8-model", type=Path, metavar="FILE", help="the checkpoint's int8 .onnx for --compare-precisions")
    p.add_argument("--calib", type=Path, metavar="DIR",
                   help="for --compare-precisions without --int8-model: quantize the checkpoint, calibrated on DIR")
    p.add_argument("--workers", type=int, default=0, help="data loader workers")
    p.add_argument("--limit", type=int, help="score only the first N images")
    p.add_argument("--save-predictions", type=Path, help="folder for predicted label maps (palette PNGs)")
    p.add_argument("--pred-dir", type=Path, help="predicted label PNGs to score (instead of a checkpoint)")
    p.add_argument("--gt-dir", type=Path, help="ground-truth label PNGs, e.g. VOC SegmentationClass/")
    p.add_argument("--class-file", type=Path, help="class names for --pred-dir scoring (default: the 21 VOC classes)")
    p.add_argument("--num-classes", type=int, help="number of classes for --pred-dir scoring without a class file")
    p.add_argument("--class-map", type=Path, metavar="FILE",
                   help="read the data set's class names in the model's: one 'data name -> model name' per line")
    p.add_argument("--ignore-class-names", action="store_true",
                   help="compare class counts only, not names (at your risk: a different order scores wrongly)")
    p.add_argument("--allow-missing", action="store_true", help="score only ground truths that have a prediction")
    p.add_argument("--out", type=Path, default=Path("eval.json"), help="JSON results (default: eval.json)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--report", type=Path, metavar="DIR",
                   help="also write a report folder: index.html, confusion heatmap, per-class IU bars, "
                   "worst/best gallery, per-image CSV")
    p.add_argument("--report-images", type=int, default=8, metavar="N",
                   help="images in each of the report's worst and best galleries (default: 8)")
    p.add_argument("--image-dir", type=Path,
                   help="images for the report's gallery in --pred-dir scoring, matched by stem")
    p.set_defaults(func=run)


def scored_line(result: dict, out: Path) -> str:
    """``14 images scored, 2 skipped (listed below and in eval.json)``, or ``14 images scored``."""
    n = result["num_images"]
    line = f"{n} image{'s' if n != 1 else ''} scored"
    if result["num_skipped"]:
        line += f", {result['num_skipped']} skipped (listed below and in {out})"
    return line


def _model_and_data(args: argparse.Namespace):
    """The model handle, prepared as the flags say, and the data set opened as it reads it."""
    from fcnseg.evaluation_data import dataset_for_model, first_image
    from fcnseg.inference.runtime_choice import choose_runtime
    from fcnseg.weights.checkpoint import load_model

    model = load_model(args.checkpoint)
    dataset = dataset_for_model(model, args.data, kind=args.kind, split=args.split, sbd_root=args.sbd_root,
                                voc_root=args.voc_root, modalities=args.modalities, style=args.style)
    # The runtime is timed on the first image (evaluation feeds each runtime's handle as it reads: fed_as).
    choice = choose_runtime(model, first_image(dataset), runtime=args.runtime, device=args.device, precision=args.precision)
    log.log(choice.log_level, "%s: runtime %s", args.checkpoint, choice.why)
    return choice.handle, dataset


def _class_options(args: argparse.Namespace) -> dict:
    from fcnseg.data.class_match import read_class_map

    return {"class_map": read_class_map(args.class_map) if args.class_map is not None else None,
            "ignore_class_names": args.ignore_class_names}


def run(args: argparse.Namespace) -> int:
    if args.report_images < 0:
        raise ConfigError(f"--report-images must be 0 or more, found {args.report_images}")
    if args.image_dir is not None and args.pred_dir is None:
        raise ConfigError("--image-dir is for --pred-dir scoring (a data set brings its own images)")
    if (args.int8_model is not None or args.calib is not None) and not args.compare_precisions:
        raise ConfigError("--int8-model and --calib are for --compare-precisions")
    # Before any work: an output that cannot be written fails now, not after the whole evaluation.
    check_output_path(args.out, "file", "--out")
    if args.report is not None:
        check_output_path(args.report, "folder", "--report")
    if args.save_predictions is not None:
        check_output_path(args.save_predictions, "folder", "--save-predictions")
    subject = dataset = None
    if args.pred_dir is not None or args.gt_dir is not None:
        _refuse_under_torchrun("--pred-dir scoring")
        if args.pred_dir is None or args.gt_dir is None or args.checkpoint is not None:
            raise ConfigError("score folders with both --pred-dir and --gt-dir, and no checkpoint")
        if args.tta or args.compare_precisions:
            raise ConfigError("--tta and --compare-precisions run a model; --pred-dir scoring reads label maps")
        result = score_folders(
            args.pred_dir,
            args.gt_dir,
            class_file=args.class_file,
            num_classes=args.num_classes,
            allow_missing=args.allow_missing,
            progress=not args.no_progress,
            per_image=args.report is not None,
            class_map=args.class_map,
            ignore_class_names=args.ignore_class_names,
        )
        source = f"{args.pred_dir} against {args.gt_dir}"
    else:
        if args.checkpoint is None:
            raise ConfigError("give a CHECKPOINT and --data, or --pred-dir and --gt-dir")
        if args.data is None and args.kind != "synthetic":
            raise ConfigError("--data ROOT is needed to evaluate a checkpoint (or --kind synthetic)")
        from fcnseg.inference.tta import parse_tta

        tta = parse_tta(args.tta)
        if args.compare_precisions:
            _refuse_under_torchrun("--compare-precisions")
            return compare_precisions(args, tta)
        if _under_torchrun():
            return _evaluate_under_torchrun(args, tta)
        subject, dataset = _model_and_data(args)
        result, source = _evaluate_checkpoint(args, tta, subject, dataset)
    return _write_results(args, result, source, subject, dataset)


def _evaluate_checkpoint(args: argparse.Namespace, tta, subject, dataset) -> tuple[dict, str]:
    """Score the model on the data set (this process's share of it under torchrun) and name what was scored."""
    if tta and len(dataset.heads) > 1:
        raise ConfigError(f"--tta averages one score map; {args.checkpoint} has the heads "
                          f"{', '.join(h.name for h in dataset.heads)}")
    result = evaluate(subject, dataset, tta=tta, num_workers=args.workers, limit=args.limit,
                      save_predictions=args.save_predictions, progress=not args.no_progress,
                      per_image=args.report is not None, leave_out_absent=args.leave_out_absent,
                      calibration=args.report is not None and len(dataset.heads) == 1,
                      **_class_options(args))
    result.update(checkpoint=str(args.checkpoint), split=args.split, tta=[str(v) for v in tta])
    source = f"{args.checkpoint} on {args.data or 'synthetic'} {args.split}"
    if subject.runtime != "torch" or tta:
        source += f" ({subject.runtime}, {result['precision']}{', TTA ' + args.tta if tta else ''})"
    return result, source


def _under_torchrun() -> bool:
    import os

    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def _refuse_under_torchrun(what: str) -> None:
    if _under_torchrun():
        raise ConfigError(f"{what} runs in one process; start it without torchrun (only evaluating a checkpoint on a "
                          "data set is split between processes)")


def _evaluate_under_torchrun(args: argparse.Namespace, tta) -> int:
    """Each process scores every world_size-th image on its own device; the counts are summed, rank 0 writes."""
    from fcnseg import distributed

    info = distributed.init_distributed(args.device)
    args.device = str(info.device)
    try:
        subject, dataset = _model_and_data(args)
        result, source = _evaluate_checkpoint(args, tta, subject, dataset)
        if not info.is_main:
            return 0
        return _write_results(args, result, source + f" ({info.world_size} processes)", subject, dataset)
    finally:
        distributed.cleanup()


def _write_results(args: argparse.Namespace, result: dict, source: str, subject, dataset) -> int:
    """Print the scores and write the JSON (and the report), once."""
    rows = result.pop("per_image", None)
    print(f"{source}: {scored_line(result, args.out)}")
    if result["skipped"]:
        print(format_skipped(result))
    if "heads" in result:
        print(format_head_tables(result["heads"], dataset.heads))
    else:
        print(format_table(result, result["class_names"]))
    if result.get("calibration"):
        c = result["calibration"]
        print(f"expected calibration error {100 * c['ece_uncalibrated']:.2f}% at temperature 1, "
              f"{100 * c['ece_calibrated']:.2f}% at the model's {c['temperature']:.3f}")
    write_json(result, args.out)
    print(f"results written to {args.out}")
    if args.save_predictions is not None:
        print(f"predictions written to {args.save_predictions}")
    if args.report is not None:
        report = _write_report(args, result, rows, source, subject=subject, dataset=dataset)
        print(f"report written to {report['index']}")
    return 0


def compare_precisions(args: argparse.Namespace, tta) -> int:
    """fp32, bf16 (PyTorch, where the CPU runs it natively) and int8 (ONNX Runtime) scores of one checkpoint, one table."""
    from fcnseg.precision_comparison import compare_precisions as compare, format_comparison
    from fcnseg.weights.checkpoint import load_model

    if args.report is not None or args.save_predictions is not None:
        raise ConfigError("--compare-precisions writes one table; drop --report and --save-predictions")
    model, dataset = _model_and_data(args)
    int8 = load_model(args.int8_model) if args.int8_model is not None else None
    comparison = compare(model, dataset, int8=int8, calib_dir=args.calib, tta=tta, num_workers=args.workers,
                         limit=args.limit, progress=not args.no_progress, leave_out_absent=args.leave_out_absent,
                         **_class_options(args))
    rows = comparison["rows"]
    print(f"{args.checkpoint} on {args.data or 'synthetic'} {args.split}: {scored_line(rows[0], args.out)}"
          f"{', TTA ' + args.tta if tta else ''}")
    print(format_comparison(comparison))
    summary = {"checkpoint": str(args.checkpoint), "split": args.split, "tta": [str(v) for v in tta],
               "precisions": rows, "notes": comparison["notes"]}
    write_json(summary, args.out)
    print(f"results written to {args.out}")
    return 0


def _write_report(args: argparse.Namespace, result: dict, rows: list[dict], source: str, *, subject, dataset) -> dict:
    """The --report folder; the gallery re-predicts its images with the model, or reads them from the folders."""
    # imported here: matplotlib is loaded only when a report is asked for
    from fcnseg.data.classes import read_class_file
    from fcnseg.data.palette import palette_for
    from fcnseg.evaluation import predict_items
    from fcnseg.reports.evaluation_report import folder_items, write_report

    if dataset is not None:
        from fcnseg.inference.tta import parse_tta

        palette = dataset.palette
        tta = parse_tta(args.tta)

        def load_items(chosen):
            return predict_items(subject, dataset, [r["index"] for r in chosen], tta=tta)
    else:
        classes = read_class_file(args.class_file) if args.class_file is not None else None
        palette = palette_for(classes)

        def load_items(chosen):
            return folder_items(chosen, classes.colours if classes else None, args.image_dir)

    return write_report(args.report, result, rows, load_items=load_items, palette=palette,
                        num_images=args.report_images, source=source)
