"""`fcnseg eval`: a checkpoint on a data set, or a folder of predicted PNGs against ground truth -> the four metrics."""

from __future__ import annotations

import argparse
from pathlib import Path

from fcnseg.data import DATASET_KINDS, build_dataset, check_class_count, detect_kind
from fcnseg.errors import ConfigError
from fcnseg.evaluation import evaluate, format_skipped, score_folders
from fcnseg.files import write_json
from fcnseg.precision import PRECISIONS, select_device
from fcnseg.metrics import format_table
from fcnseg.scoring import format_head_tables

def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval",
        help="score a checkpoint on a data set, or predicted label PNGs against ground truth",
        description="Pixel accuracy, mean accuracy, mean IU and frequency-weighted IU (paper section 5). "
        "Either CHECKPOINT with --data, or --pred-dir with --gt-dir.",
    )
    p.add_argument("checkpoint", nargs="?", type=Path, help="model checkpoint")
    p.add_argument("--data", type=Path, help="data set folder (omit with --kind synthetic for the in-memory set)")
    p.add_argument("--kind", default="auto", choices=["auto", *DATASET_KINDS], help="layout")
    p.add_argument("--split", default="val", help="split to score (default: val)")
    p.add_argument("--sbd-root", type=Path, help="SBD folder, for the VOC split seg11valid")
    p.add_argument("--voc-root", type=Path, help="PASCAL-Context: the VOC2010 images, when not under --data")
    p.add_argument("--modalities", choices=["color", "hha", "depth", "color+depth", "color+hha"],
                   help="NYUD inputs (default: the ones the checkpoint was trained on)")
    p.add_argument("--leave-out-absent", action="store_true",
                   help="leave classes without a ground-truth pixel out of the class means (SIFT Flow's test set)")
    p.add_argument("--style", default="shapes", help="synthetic style when served from memory")
    p.add_argument("--device", default="auto", help="auto (CUDA when present, else CPU) | cpu | cuda | cuda:N")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="auto (default): fp16 on CUDA, bf16 on CPUs with native bf16, else fp32")
    p.add_argument("--workers", type=int, default=0, help="data loader workers")
    p.add_argument("--limit", type=int, help="score only the first N images")
    p.add_argument("--save-predictions", type=Path, help="folder for predicted label maps (palette PNGs)")
    p.add_argument("--pred-dir", type=Path, help="predicted label PNGs to score (instead of a checkpoint)")
    p.add_argument("--gt-dir", type=Path, help="ground-truth label PNGs, e.g. VOC SegmentationClass/")
    p.add_argument("--class-file", type=Path, help="class names for --pred-dir scoring (default: the 21 VOC classes)")
    p.add_argument("--num-classes", type=int, help="number of classes for --pred-dir scoring without a class file")
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


def load_model(path: Path, device: str):
    """The checkpoint loader (a seam tests can replace)."""
    from fcnseg.checkpoint import load_model as load

    return load(path, map_location=device)


def scored_line(result: dict, out: Path) -> str:
    """``14 images scored, 2 skipped (listed below and in eval.json)``, or ``14 images scored``."""
    n = result["num_images"]
    line = f"{n} image{'s' if n != 1 else ''} scored"
    if result["num_skipped"]:
        line += f", {result['num_skipped']} skipped (listed below and in {out})"
    return line


def run(args: argparse.Namespace) -> int:
    if args.report_images < 0:
        raise ConfigError(f"--report-images must be 0 or more, found {args.report_images}")
    if args.image_dir is not None and args.pred_dir is None:
        raise ConfigError("--image-dir is for --pred-dir scoring (a data set brings its own images)")
    if args.pred_dir is not None or args.gt_dir is not None:
        if args.pred_dir is None or args.gt_dir is None or args.checkpoint is not None:
            raise ConfigError("score folders with both --pred-dir and --gt-dir, and no checkpoint")
        result = score_folders(
            args.pred_dir,
            args.gt_dir,
            class_file=args.class_file,
            num_classes=args.num_classes,
            allow_missing=args.allow_missing,
            progress=not args.no_progress,
            per_image=args.report is not None,
        )
        source = f"{args.pred_dir} against {args.gt_dir}"
    else:
        if args.checkpoint is None:
            raise ConfigError("give a CHECKPOINT and --data, or --pred-dir and --gt-dir")
        if args.data is None and args.kind != "synthetic":
            raise ConfigError("--data ROOT is needed to evaluate a checkpoint (or --kind synthetic)")
        device = select_device(args.device)
        loaded = load_model(args.checkpoint, device)
        dataset = _open_dataset(args, loaded)
        if len(dataset.heads) == 1:
            check_class_count(
                dataset,
                loaded.config.num_classes,
                what=f"the number of classes {args.checkpoint} predicts",
                fix=f"evaluate a checkpoint trained on the data set's {dataset.num_classes} classes",
            )
        result = evaluate(
            loaded.model,
            dataset,
            device=device,
            precision=args.precision,
            num_workers=args.workers,
            limit=args.limit,
            save_predictions=args.save_predictions,
            progress=not args.no_progress,
            per_image=args.report is not None,
            leave_out_absent=args.leave_out_absent,
        )
        result["checkpoint"] = str(args.checkpoint)
        result["split"] = args.split
        result["normalization"] = loaded.normalization.to_dict()
        source = f"{args.checkpoint} on {args.data or 'synthetic'} {args.split}"
    rows = result.pop("per_image", None)
    print(f"{source}: {scored_line(result, args.out)}")
    if result["skipped"]:
        print(format_skipped(result))
    if "heads" in result:
        print(format_head_tables(result["heads"], dataset.heads))
    else:
        print(format_table(result, result["class_names"]))
    write_json(result, args.out)
    print(f"results written to {args.out}")
    if args.save_predictions is not None:
        print(f"predictions written to {args.save_predictions}")
    if args.report is not None:
        report = _write_report(args, result, rows, source, loaded=None if args.pred_dir else loaded,
                               dataset=None if args.pred_dir else dataset)
        print(f"report written to {report['index']}")
    return 0


def _open_dataset(args: argparse.Namespace, loaded):
    """The data set to score, read as the checkpoint was trained: its normalisation, and NYUD's modalities."""
    kind = args.kind
    if args.data is not None and kind in ("auto", "synthetic"):
        kind = detect_kind(args.data)
    if args.modalities and kind != "nyud":
        raise ConfigError(f"--modalities is for NYUD; {args.data} holds a {kind} data set")
    normalization, extra = loaded.normalization, {}
    if args.kind == "synthetic" and args.data is None:
        extra = {"style": args.style}
    elif kind == "nyud":
        from fcnseg.data.nyud import nyud_options

        extra = nyud_options(loaded.inputs) if loaded.inputs is not None else {}
        # the colour normalisation (a caffemodel of colour alone has no input spec: its normalisation is it)
        normalization = extra.pop("normalization", None if loaded.inputs is not None else loaded.normalization)
        if args.modalities:
            extra["modalities"] = args.modalities
    elif kind == "voc" and args.sbd_root is not None:
        extra = {"sbd_root": args.sbd_root}
    elif kind == "pascal_context" and args.voc_root is not None:
        extra = {"voc_root": args.voc_root}
    return build_dataset(kind if args.data is not None else args.kind, args.data, args.split,
                         normalization=normalization, **extra)


def _write_report(args: argparse.Namespace, result: dict, rows: list[dict], source: str, *, loaded, dataset) -> dict:
    """The --report folder; the gallery re-predicts its images with the model, or reads them from the folders."""
    # imported here: matplotlib is loaded only when a report is asked for
    from fcnseg.data.classes import read_class_file
    from fcnseg.data.palette import palette_for
    from fcnseg.evaluation import predict_items
    from fcnseg.reports.evaluation_report import folder_items, write_report

    if dataset is not None:
        palette = dataset.palette
        device = next(loaded.model.parameters()).device

        def load_items(chosen):
            indices = [r["index"] for r in chosen]
            return predict_items(loaded.model, dataset, indices, device=device, precision=args.precision)
    else:
        classes = read_class_file(args.class_file) if args.class_file is not None else None
        palette = palette_for(classes)

        def load_items(chosen):
            return folder_items(chosen, classes.colours if classes else None, args.image_dir)

    return write_report(args.report, result, rows, load_items=load_items, palette=palette,
                        num_images=args.report_images, source=source)
