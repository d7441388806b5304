"""The `fcnseg` command: one subcommand per module in fcnseg.commands, each a thin wrapper over the library.

Only the module of the command being run is imported (its flags are registered then), so that
``fcnseg --help`` answers without importing torch and ``fcnseg predict`` without matplotlib.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from fcnseg.errors import FcnsegError

# Subcommand -> (module in fcnseg.commands that defines `register(subparsers)`, one-line summary).
# A new command is one module and one line here.
COMMANDS = {
    "demo": ("demo", "train and evaluate a small FCN-8s on built-in synthetic data (a few minutes on a CPU)"),
    "train": ("train", "train an FCN (config file and/or flags; resumable; runs under torchrun)"),
    "eval": ("evaluate", "score a checkpoint on a data set, or predicted label PNGs against ground truth"),
    "check-data": ("check_data", "scan a data set for unreadable, missing, mis-sized or mislabelled files"),
    "make-synthetic": ("make_synthetic", "write the seeded synthetic data set (VOC layout) for demos and tests"),
    "predict": ("predict", "segment images or folders of images with a checkpoint"),
    "calibrate": ("calibrate", "fit a model's temperature on a validation split: probabilities as sure as it is right"),
    "rank": ("rank", "order unlabelled images by how much a label would help; copy or link the top N to label"),
    "serve": ("serve", "a local web page and HTTP API: drop an image, see its segmentation"),
    "export": ("export", "export a checkpoint to ONNX"),
    "quantize": ("quantize", "quantize a checkpoint to int8 ONNX (ONNX Runtime, calibrated on your images)"),
    "explain": ("explain", "measure patch-wise vs dense, FC->conv, receptive fields, upsampling and shift-and-stitch"),
    "models": ("models", "list the architectures with parameters and GFLOPs"),
    "convert": ("convert", "turn pytorch-fcn, Caffe or VGG16 classifier weights into an fcnseg checkpoint"),
    "import": ("import_data", "convert a COCO, labelme or CVAT mask export into the folder layout fcnseg train reads"),
    "export-annotations": ("export_annotations", "write label PNGs as COCO, labelme, CVAT, Label Studio or GeoJSON annotations"),
}


def _command_in(argv: list[str]) -> str | None:
    """The subcommand named in ``argv`` (the first word that is one), or None."""
    return next((word for word in argv if word in COMMANDS), None)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser for ``argv``: every command listed, the flags of the one named in ``argv`` registered."""
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        prog="fcnseg",
        description="Fully Convolutional Networks for semantic segmentation "
        "(Long, Shelhamer & Darrell, CVPR 2015).",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = _command_in(argv)
    for name, (module_name, summary) in COMMANDS.items():
        if name == wanted:
            importlib.import_module(f"fcnseg.commands.{module_name}").register(subparsers)
        else:
            subparsers.add_parser(name, help=summary)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except FcnsegError as e:
        print(f"fcnseg {args.command}: error: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f"fcnseg {args.command}: interrupted", file=sys.stderr)
        return 130
