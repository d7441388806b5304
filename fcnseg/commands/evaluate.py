"""`fcnseg eval`: a checkpoint on a data set, or a folder of predicted PNGs against ground truth -> the four metrics."""

from __future__ import annotations

import argparse
from pathlib import Path

from fcnseg.data import DATASET_KINDS, build_dataset, check_class_count, detect_kind
from fcnseg.errors import ConfigError
from fcnseg.evaluation import evaluate, format_skipped, score_folders
from fcnseg.files import check_output_path, write_json
from fcnseg.inference.runtime import RUNTIMES
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
    p.add_argument("checkpoint", nargs="?", type=Path,
                   help="model: a checkpoint, or an fcnseg .onnx (fp32 or int8, run with ONNX Runtime)")
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
    p.add_argument("--runtime", choices=RUNTIMES, default="auto",
                   help="torch for checkpoints, onnxruntime for .onnx files (default auto: by the model file)")
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
    from fcnseg.weights.checkpoint import load_model as load

    return load(path, map_location=device)


def scored_line(result: dict, out: Path) -> str:
    """``14 images scored, 2 skipped (listed below and in eval.json)``, or ``14 images scored``."""
    n = result["num_images"]
    line = f"{n} image{'s' if n != 1 else ''} scored"
    if result["num_skipped"]:
        line += f", {result['num_skipped']} skipped (listed below and in {out})"
    return line


def load_subject(path: Path, runtime: str, device, precision: str) -> dict:
    """What evaluation runs: ``model`` (a torch module), the ``normalization`` its data set needs, and for the
    JSON the ``runtime``, ``precision`` and ``num_classes``; a checkpoint also gives ``loaded``."""
    from fcnseg.inference.runtime import select_runtime

    chosen, why = select_runtime(runtime, path, device, precision)
    if chosen == "onnxruntime":
        from fcnseg.inference.onnx_model import RAW_PIXELS, OnnxModule, load_onnx_model

        onnx_model = load_onnx_model(path)
        return {"model": OnnxModule(onnx_model.net), "normalization": RAW_PIXELS, "runtime": chosen, "why": why,
                "precision": onnx_model.precision, "num_classes": onnx_model.num_classes, "loaded": None,
                "source_normalization": onnx_model.normalization}
    loaded = load_model(path, device)
    return {"model": loaded.model, "normalization": loaded.normalization, "runtime": chosen, "why": why,
            "precision": None, "num_classes": loaded.config.num_classes, "loaded": loaded,
            "source_normalization": loaded.normalization}


def _dataset(args: argparse.Namespace, subject: dict):
    """The data set to score, read as the model was trained: its normalisation, and NYUD's modalities."""
    loaded = subject["loaded"]
    inputs = loaded.inputs if loaded is not None else None
    kind = args.kind
    if args.data is not None and kind in ("auto", "synthetic"):
        kind = detect_kind(args.data)
    if args.modalities and kind != "nyud":
        raise ConfigError(f"--modalities is for NYUD; {args.data} holds a {kind} data set")
    normalization, extra = subject["normalization"], {}
    if args.kind == "synthetic" and args.data is None:
        extra = {"style": args.style}
    elif kind == "nyud":
        from fcnseg.data.nyud import nyud_options

        extra = nyud_options(inputs) if inputs is not None else {}
        # the colour normalisation (a caffemodel of colour alone has no input spec: its normalisation is it)
        normalization = extra.pop("normalization", None if inputs is not None else normalization)
        if args.modalities:
            extra["modalities"] = args.modalities
    elif kind == "voc" and args.sbd_root is not None:
        extra = {"sbd_root": args.sbd_root}
    elif kind == "pascal_context" and args.voc_root is not None:
        extra = {"voc_root": args.voc_root}
    dataset = build_dataset(kind if args.data is not None else args.kind, args.data, args.split,
                            normalization=normalization, **extra)
    if len(dataset.heads) == 1:
        check_class_count(
            dataset,
            subject["num_classes"],
            what=f"the number of classes {args.checkpoint} predicts",
            fix=f"evaluate a checkpoint trained on the data set's {dataset.num_classes} classes",
        )
    return dataset


def _score(args: argparse.Namespace, subject: dict, dataset, device, precision: str, tta, per_image: bool = False) -> dict:
    from fcnseg.inference.tta import TTAModel

    model = TTAModel(subject["model"], tta) if tta else subject["model"]
    onnx = subject["runtime"] == "onnxruntime"
    result = evaluate(
        model,
        dataset,
        device="cpu" if onnx else device,
        precision="fp32" if onnx else precision,
        num_workers=args.workers,
        limit=args.limit,
        save_predictions=args.save_predictions,
        progress=not args.no_progress,
        per_image=per_image,
        leave_out_absent=args.leave_out_absent,
    )
    if onnx:
        result["precision"] = subject["precision"]
    result["runtime"] = subject["runtime"]
    result["tta"] = [str(v) for v in tta]
    return result


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
        )
        source = f"{args.pred_dir} against {args.gt_dir}"
    else:
        if args.checkpoint is None:
            raise ConfigError("give a CHECKPOINT and --data, or --pred-dir and --gt-dir")
        if args.data is None and args.kind != "synthetic":
            raise ConfigError("--data ROOT is needed to evaluate a checkpoint (or --kind synthetic)")
        from fcnseg.inference.tta import parse_tta

        device = select_device(args.device)
        tta = parse_tta(args.tta)
        if args.compare_precisions:
            return compare_precisions(args, device, tta)
        subject = load_subject(args.checkpoint, args.runtime, device, args.precision)
        dataset = _dataset(args, subject)
        if tta and len(dataset.heads) > 1:
            raise ConfigError(f"--tta averages one score map; {args.checkpoint} has the heads "
                              f"{', '.join(h.name for h in dataset.heads)}")
        result = _score(args, subject, dataset, device, args.precision, tta, per_image=args.report is not None)
        result["checkpoint"] = str(args.checkpoint)
        result["split"] = args.split
        result["normalization"] = subject["source_normalization"].to_dict()
        source = f"{args.checkpoint} on {args.data or 'synthetic'} {args.split}"
        if subject["runtime"] == "onnxruntime" or tta:
            source += f" ({subject['runtime']}, {result['precision']}{', TTA ' + args.tta if tta else ''})"
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
        report = _write_report(args, result, rows, source, subject=subject, dataset=dataset)
        print(f"report written to {report['index']}")
    return 0


PRECISION_METRICS = (("mean_iu", "mean IU"), ("pixel_accuracy", "pixel acc."), ("mean_accuracy", "mean acc."),
                     ("frequency_weighted_iu", "f.w. IU"))


def compare_precisions(args: argparse.Namespace, device, tta) -> int:
    """fp32, bf16 (PyTorch) and int8 (ONNX Runtime) scores of one checkpoint on one set, in one table and eval.json."""
    import tempfile

    from fcnseg.inference.onnx_model import is_onnx_file

    if is_onnx_file(args.checkpoint):
        raise ConfigError(f"{args.checkpoint}: --compare-precisions scores a checkpoint in fp32, bf16 and int8; give "
                          "the checkpoint (and its int8 .onnx with --int8-model, or --calib DIR to make one)")
    if args.report is not None or args.save_predictions is not None:
        raise ConfigError("--compare-precisions writes one table; drop --report and --save-predictions")
    subject = load_subject(args.checkpoint, "torch", device, "fp32")
    dataset = _dataset(args, subject)
    rows = []
    for precision in ("fp32", "bf16"):
        result = _score(args, subject, dataset, device, precision, tta)
        rows.append({"precision": precision, "runtime": "torch", "result": result})
    with tempfile.TemporaryDirectory(prefix="fcnseg-int8-") as tmp:
        int8 = args.int8_model
        if int8 is None and args.calib is not None:
            from fcnseg.inference.quantization import quantize

            report = quantize(args.checkpoint, Path(tmp) / "int8.onnx", args.calib, check_images=0)
            print(f"int8: quantized for this table only ({report.calibration_line()}; "
                  "to keep an int8 model, run fcnseg quantize)")  # not the temporary file's path: it is deleted
            int8 = report.path
        if int8 is not None:
            onnx_subject = load_subject(int8, "onnxruntime", device, "auto")
            if onnx_subject["precision"] != "int8":
                raise ConfigError(f"{int8}: an {onnx_subject['precision']} ONNX file; --int8-model takes a quantized one "
                                  "('fcnseg quantize')")
            onnx_dataset = _dataset(args, onnx_subject)
            rows.append({"precision": "int8", "runtime": "onnxruntime", "result": _score(args, onnx_subject, onnx_dataset, device, "fp32", tta)})
    base = rows[0]["result"]["mean_iu"]
    print(f"{args.checkpoint} on {args.data or 'synthetic'} {args.split}: {scored_line(rows[0]['result'], args.out)}"
          f"{', TTA ' + args.tta if tta else ''}")
    print(f"{'precision':<10} {'runtime':<12} " + " ".join(f"{label:>10}" for _, label in PRECISION_METRICS)
          + f" {'vs fp32':>8} {'images/s':>9}")
    for row in rows:
        r = row["result"]
        print(f"{row['precision']:<10} {row['runtime']:<12} " + " ".join(f"{100 * r[key]:>10.2f}" for key, _ in PRECISION_METRICS)
              + f" {100 * (r['mean_iu'] - base):>+8.2f} {r['images_per_second']:>9.2f}")
    if len(rows) < 3:
        print("int8: not measured; give --int8-model FILE (from 'fcnseg quantize') or --calib DIR")
    summary = {
        "checkpoint": str(args.checkpoint), "split": args.split, "tta": [str(v) for v in tta],
        "precisions": [{"precision": row["precision"], "runtime": row["runtime"], **row["result"]} for row in rows],
    }
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
        from fcnseg.inference.tta import TTAModel, parse_tta

        palette = dataset.palette
        onnx = subject["runtime"] == "onnxruntime"
        device = "cpu" if onnx else next(subject["model"].parameters()).device
        tta = parse_tta(args.tta)
        model = TTAModel(subject["model"], tta) if tta else subject["model"]

        def load_items(chosen):
            indices = [r["index"] for r in chosen]
            return predict_items(model, dataset, indices, device=device, precision="fp32" if onnx else args.precision)
    else:
        classes = read_class_file(args.class_file) if args.class_file is not None else None
        palette = palette_for(classes)

        def load_items(chosen):
            return folder_items(chosen, classes.colours if classes else None, args.image_dir)

    return write_report(args.report, result, rows, load_items=load_items, palette=palette,
                        num_images=args.report_images, source=source)
