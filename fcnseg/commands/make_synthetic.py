"""`fcnseg make-synthetic OUT`: write the built-in synthetic data set in the VOC layout."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from fcnseg.data.synthetic import STYLES, make_synthetic
from fcnseg.errors import ConfigError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "make-synthetic",
        help="write the seeded synthetic data set (VOC layout) for demos and tests",
        description="Generate coloured shapes (or textured blobs) on textured backgrounds, with a 255 ignore rim, "
        "as JPEGImages/, SegmentationClass/, ImageSets/Segmentation/ and classes.txt.",
    )
    p.add_argument("out", type=Path, help="output folder (created)")
    p.add_argument("--num-train", type=int, default=160, help="training images (default: 160)")
    p.add_argument("--num-val", type=int, default=40, help="validation images (default: 40)")
    p.add_argument("--seed", type=int, default=0, help="generator seed (default: 0)")
    p.add_argument("--style", choices=STYLES, default="shapes", help="scene style (default: shapes)")
    p.add_argument("--format", dest="image_format", choices=["jpg", "png"], default="jpg", help="image files (png is lossless)")
    p.add_argument("--size", help="fixed HEIGHTxWIDTH for every image (default: random 97..250 per side)")
    p.set_defaults(func=run)


def parse_size(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError as e:
        raise ConfigError(f"--size expects HEIGHTxWIDTH such as 375x500, found {text!r}") from e
    if h < 1 or w < 1:
        raise ConfigError(f"--size must be positive, found {text!r}")
    return h, w


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    info = make_synthetic(
        args.out,
        args.num_train,
        args.num_val,
        args.seed,
        args.style,
        image_format=args.image_format,
        size=parse_size(args.size),
    )
    print(
        f"wrote {info['num_train']} train + {info['num_val']} val {info['style']} images to {info['root']} "
        f"in {time.perf_counter() - start:.1f} s; classes: {', '.join(info['class_names'])}"
    )
    return 0
