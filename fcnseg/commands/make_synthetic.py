"""`fcnseg make-synthetic OUT`: write the built-in synthetic data set in the VOC layout, or in NYUD's, SIFT Flow's or Context's."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from fcnseg.data.synthetic import STYLES, make_synthetic
from fcnseg.data.synthetic_layouts import LAYOUT_STYLES, make_synthetic_layout
from fcnseg.errors import ConfigError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "make-synthetic",
        help="write the seeded synthetic data set (VOC layout) for demos and tests",
        description="Generate coloured shapes (or textured blobs) on textured backgrounds, with a 255 ignore rim, "
        "as JPEGImages/, SegmentationClass/, ImageSets/Segmentation/ and classes.txt; or, with the styles nyud, "
        "siftflow and pascal_context, scenes in the layout of that data set (see docs/data.md).",
    )
    p.add_argument("out", type=Path, help="output folder (created)")
    p.add_argument("--num-train", type=int, default=160, help="training images (default: 160)")
    p.add_argument("--num-val", type=int, default=40, help="validation images (default: 40)")
    p.add_argument("--seed", type=int, default=0, help="generator seed (default: 0)")
    p.add_argument(
        "--style",
        choices=STYLES + LAYOUT_STYLES,
        default="shapes",
        help=f"scene style (VOC layout: {', '.join(STYLES)}) or data set layout ({', '.join(LAYOUT_STYLES)}); default: shapes",
    )
    p.add_argument(
        "--format", dest="image_format", choices=["jpg", "png"], default="jpg",
        help="image files of the VOC-layout styles (png is lossless); the other layouts use their data set's",
    )  # fmt: skip
    p.add_argument(
        "--size", help="fixed HEIGHTxWIDTH for every image (default: random 97..250 per side; siftflow: 256x256)"
    )
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
    if args.style in LAYOUT_STYLES:
        info = make_synthetic_layout(
            args.out, args.style, args.num_train, args.num_val, args.seed, size=parse_size(args.size)
        )
        train_split, val_split = info["splits"]
        print(
            f"wrote {info['num_train']} {train_split} + {info['num_val']} {val_split} {info['style']} scenes to "
            f"{info['root']} in {time.perf_counter() - start:.1f} s; {len(info['class_names'])} classes"
        )
        return 0
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
