"""`fcnseg models`: the architectures with their parameter counts, GFLOPs and crop offsets."""

from __future__ import annotations

import json

from fcnseg.models.complexity import complexity_table, format_complexity_table


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "models",
        help="list the architectures with parameters and GFLOPs",
        description="List every FCN architecture with its parameter count, forward GFLOPs at an input size "
        "(the paper's conv1 pad of 100 included, or not with --padding same) and the crop offsets derived "
        "from its layers.",
    )
    p.add_argument("--size", type=int, nargs="+", default=[500], metavar="PX",
                   help="input size: one number for a square image or HEIGHT WIDTH (default: 500)")
    p.add_argument("--num-classes", type=int, default=21, help="number of classes (default: 21, PASCAL VOC)")
    p.add_argument("--padding", choices=["paper", "same"], default="paper",
                   help="paper: conv1_1 padded by 100 (the reference nets); same: every convolution keeps sizes")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def run(args) -> int:
    size = (args.size[0], args.size[0]) if len(args.size) == 1 else tuple(args.size[:2])
    rows = complexity_table(size, args.num_classes, args.padding)
    if args.json:
        print(json.dumps([r.__dict__ for r in rows], indent=2))
    else:
        print(format_complexity_table(rows))
    return 0
