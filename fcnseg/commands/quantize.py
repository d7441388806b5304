"""`fcnseg quantize`: a checkpoint to a static int8 ONNX model, calibrated on a folder of the user's images."""

from __future__ import annotations

import argparse
from pathlib import Path

from fcnseg.files import check_output_path
from fcnseg.inference.quantization import (
    DEFAULT_CALIB_MAX_SIDE,
    DEFAULT_CHECK_IMAGES,
    DEFAULT_KEEP_FP32,
    DEFAULT_NUM_CALIB,
    KEEP_GROUPS,
    METHODS,
    parse_keep_fp32,
    quantize,
)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "quantize",
        help="quantize a checkpoint to int8 ONNX (ONNX Runtime, calibrated on your images)",
        description="Post-training static quantization with ONNX Runtime: QDQ graph, per-channel int8 weights, "
        "uint8 activations, calibrated on the first --num-calib readable images under --calib (unreadable files "
        "are listed and skipped). The output .onnx carries the checkpoint's classes and normalisation and runs "
        "with 'fcnseg predict' like any model. Afterwards the int8 model's argmax agreement with fp32 is "
        "measured on a few calibration images.",
    )
    p.add_argument("checkpoint", type=Path, help="model checkpoint (any format 'fcnseg predict' reads) or an fp32 fcnseg .onnx")
    p.add_argument("output", type=Path, help="output file, e.g. model-int8.onnx")
    p.add_argument("--calib", type=Path, required=True, metavar="DIR", help="folder of calibration images (searched recursively)")
    p.add_argument("--num-calib", type=int, default=DEFAULT_NUM_CALIB, help="calibration images to use (default %(default)s)")
    p.add_argument("--method", choices=METHODS, default="minmax", help="calibration method (default %(default)s)")
    p.add_argument("--keep-fp32", default=",".join(DEFAULT_KEEP_FP32) or "none", metavar="GROUPS",
                   help=f"layer groups left in float: comma list of {', '.join(KEEP_GROUPS)} (first: the first "
                   "convolution; score: score_fr, score_pool4, score_pool3; head: the score layers and the upscores; on a ResNet "
                   "FCN score is classifier.4 and head its whole FCNHead, classifier.0 and .4), "
                   "or none (default %(default)s)")
    p.add_argument("--full-range", action="store_true",
                   help="8-bit weights instead of 7-bit; only for CPUs with VNNI (AVX512_VNNI/AVX_VNNI), where "
                   "the int16 saturation that 7-bit weights avoid cannot happen")
    p.add_argument("--calib-max-side", type=int, default=DEFAULT_CALIB_MAX_SIDE,
                   help="crop larger calibration images to their central N x N pixels (default %(default)s; 0 = whole)")
    p.add_argument("--calibration-cache", type=Path, metavar="FILE",
                   help="JSON of the calibrated ranges: reused when it exists (no calibration pass), else written; "
                   "one cache serves any --keep-fp32")
    p.add_argument("--check", type=int, default=DEFAULT_CHECK_IMAGES, metavar="N",
                   help="measure the agreement with fp32 on N calibration images (default %(default)s; 0 = skip)")
    p.add_argument("--runtime", choices=("onnxruntime", "openvino"), default="onnxruntime",
                   help="whose int8: onnxruntime (default; ONNX Runtime's static QDQ quantization) or openvino (NNCF's, "
                   "also QDQ ONNX, placed for OpenVINO's kernels: run it with --runtime openvino; needs "
                   "pip install 'fcnseg[openvino]'; --method, --full-range and --calibration-cache are ONNX Runtime's)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    check_output_path(args.output, "file", "output")  # before calibration, not after it
    if args.calibration_cache is not None:
        check_output_path(args.calibration_cache, "file", "--calibration-cache")
    report = quantize(
        args.checkpoint,
        args.output,
        args.calib,
        num_calib=args.num_calib,
        method=args.method,
        keep_fp32=parse_keep_fp32(args.keep_fp32),
        reduce_range=not args.full_range,
        max_side=args.calib_max_side or None,
        check_images=args.check,
        calibration_cache=args.calibration_cache,
        runtime=args.runtime,
    )
    print(report.summary())
    return 0
