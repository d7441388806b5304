"""`fcnseg export`: a checkpoint to ONNX with dynamic batch/height/width, checked against PyTorch with ONNX Runtime."""

from __future__ import annotations

import argparse
from pathlib import Path

from fcnseg.errors import FcnsegError
from fcnseg.files import check_output_path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export",
        help="export a checkpoint to ONNX",
        description="The exported model takes RGB float32 [N, 3, H, W] in 0..255 (normalisation inside) and "
        "returns logits [N, C, H, W]; batch, height and width are dynamic. An ONNX file is then run with "
        "ONNX Runtime on several sizes and compared with PyTorch.",
    )
    p.add_argument("checkpoint", type=Path, help="model checkpoint")
    p.add_argument("output", type=Path, help="output file, e.g. model.onnx")
    p.add_argument("--no-check", action="store_true", help="skip the comparison with PyTorch")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fcnseg.weights.checkpoint import load_model
    from fcnseg.inference.export import CHECK_MODULES, EXPORT_MODULES, check_onnx, export, require_modules

    # Before any work: a missing extra is one line naming every missing module, not a traceback mid-export.
    needed = EXPORT_MODULES if args.no_check else EXPORT_MODULES + CHECK_MODULES
    require_modules(needed, "ONNX export" if args.no_check else "ONNX export and its check")
    check_output_path(args.output, "file", "output")
    loaded = load_model(args.checkpoint)
    path = export(loaded, args.output)
    cfg = loaded.config
    print(f"wrote {path} ({cfg.arch}, {cfg.backbone}, {cfg.num_classes} classes; input 'image' RGB float32 0..255 [N,3,H,W])")
    if args.no_check:
        return 0
    rows = check_onnx(loaded, path)
    print(f"{'input shape':<20} {'max |onnx - torch|':>20} {'argmax agreement':>18}")
    for row in rows:
        print(f"{str(list(row.shape)):<20} {row.max_abs_diff:>20.3g} {row.argmax_agreement:>17.4%}")
    worst = min(r.argmax_agreement for r in rows)
    if worst < 1.0:
        raise FcnsegError(f"{path}: ONNX Runtime and PyTorch disagree on {1 - worst:.4%} of pixels on some input")
    return 0
