"""`fcnseg calibrate`: fit a model's temperature on a validation split and write the model with it."""

from __future__ import annotations

import argparse
from pathlib import Path

from fcnseg.data.kinds import AUTO, DATASET_KINDS, NYUD_MODALITIES, SYNTHETIC_STYLES
from fcnseg.errors import ConfigError
from fcnseg.files import check_output_path, write_json


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "calibrate",
        help="fit the temperature that makes a model's probabilities as sure as it is right",
        description="Temperature scaling: one number T, fitted on the validation split (LBFGS on the pixel-wise "
        "negative log-likelihood of softmax(logits / T), ignore-label pixels left out), divides the logits before "
        "every softmax. Labels, metrics and the argmax do not change; probabilities, confidence maps (predict "
        "--confidence) and rankings (fcnseg rank) do. The model is written with T in it (a checkpoint's "
        "'temperature', an ONNX file's fcnseg.temperature) to MODEL's name + '_calibrated', or -o.",
    )
    p.add_argument("checkpoint", type=Path, help="model: a checkpoint, or an fcnseg .onnx")
    p.add_argument("--data", type=Path, help="data set folder (omit with --kind synthetic for the in-memory set)")
    p.add_argument("--kind", default=AUTO, choices=[AUTO, *DATASET_KINDS], help="layout")
    p.add_argument("--split", default="val", help="held-out split to fit on (default: val; never the training split)")
    p.add_argument("--sbd-root", type=Path, help="SBD folder, for the VOC split seg11valid")
    p.add_argument("--voc-root", type=Path, help="PASCAL-Context: the VOC2010 images, when not under --data")
    p.add_argument("--modalities", choices=NYUD_MODALITIES, help="NYUD inputs (default: the model's)")
    p.add_argument("--style", default="shapes", choices=SYNTHETIC_STYLES, help="synthetic style when served from memory")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--precision", default="auto", help="forward precision of a checkpoint (default: auto)")
    p.add_argument("--max-pixels", type=int, default=2_000_000,
                   help="labelled pixels sampled evenly over the images for the fit (default 2,000,000)")
    p.add_argument("--limit", type=int, help="use only the first N images")
    p.add_argument("-o", "--out", type=Path, help="the calibrated model (default: MODEL_calibrated.pt or .onnx beside it)")
    p.add_argument("--in-place", action="store_true", help="write the temperature into MODEL itself (atomic)")
    p.add_argument("--json", type=Path, help="also write the fit's numbers (temperature, NLL and ECE before/after)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def output_path(model: Path, out: Path | None, in_place: bool, onnx: bool) -> Path:
    """Where the calibrated model goes: ``-o``, the model itself with ``--in-place``, else ``<stem>_calibrated``."""
    if out is not None and in_place:
        raise ConfigError("give -o or --in-place, not both")
    if in_place:
        if not onnx and model.suffix != ".pt":
            raise ConfigError(f"--in-place keeps the file's format; {model} is not an fcnseg checkpoint (.pt) or .onnx: "
                              "write an fcnseg checkpoint with -o FILE.pt")
        return model
    if out is not None:
        return out
    return model.with_name(f"{model.stem}_calibrated{'.onnx' if onnx else '.pt'}")


def run(args: argparse.Namespace) -> int:
    from fcnseg.calibration import calibrate
    from fcnseg.evaluation_data import dataset_for_model
    from fcnseg.weights.checkpoint import load_model
    from fcnseg.weights.onnx_format import is_onnx_file, write_temperature

    if args.data is None and args.kind != "synthetic":
        raise ConfigError("--data ROOT is needed to calibrate (its validation split), or --kind synthetic")
    if args.max_pixels < 1:
        raise ConfigError(f"--max-pixels must be at least 1, got {args.max_pixels}")
    onnx = is_onnx_file(args.checkpoint)
    out = output_path(args.checkpoint, args.out, args.in_place, onnx)
    check_output_path(out, "file", "-o")
    if onnx and not is_onnx_file(out):
        raise ConfigError(f"-o {out}: an ONNX model is written as an .onnx file (its metadata holds the temperature)")
    if not onnx and is_onnx_file(out):
        raise ConfigError(f"-o {out}: a checkpoint is written as a checkpoint (.pt); export it afterwards "
                          "(fcnseg export), the temperature goes with it")
    model = load_model(args.checkpoint)
    if model.onnx_info is None:
        model.prepare(args.device, args.precision)
    dataset = dataset_for_model(model, args.data, kind=args.kind, split=args.split, sbd_root=args.sbd_root,
                                voc_root=args.voc_root, modalities=args.modalities, style=args.style)
    result = calibrate(model, dataset, max_pixels=args.max_pixels, limit=args.limit, progress=not args.no_progress)
    print(f"{args.checkpoint} on {args.data or 'synthetic'} {args.split}: {result.summary()}")
    if onnx:
        write_temperature(args.checkpoint, out, result.temperature)
    else:
        model.save(out)
    print(f"calibrated model written to {out}")
    if args.json is not None:
        write_json({"checkpoint": str(args.checkpoint), "split": args.split, "out": str(out), **result.to_dict()},
                   args.json)
    return 0
