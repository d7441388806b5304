"""`fcnseg rank`: order unlabelled images by how much a label would help; write the order and gather the top N."""

from __future__ import annotations

import argparse
from pathlib import Path

from fcnseg.errors import ConfigError
from fcnseg.files import check_output_path
from fcnseg.images import DEFAULT_MAX_PIXELS
from fcnseg.inference.ranking import RANK_BY

DEFAULT_CSV = "ranking.csv"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "rank",
        help="order unlabelled images by how much a label would help; copy or link the top N to label",
        description="Runs the model on every image under UNLABELLED (folders searched recursively) and scores each "
        "by its pixels' mean uncertainty: entropy (default), margin (between the two likeliest classes), "
        "least-confidence (one minus the largest probability) or random (the baseline). --diverse spreads the "
        "picks over images that look different and hold different predicted classes (a greedy k-center "
        "selection weighted by the score). Writes the order to a CSV (rank, image, path, score, mean "
        "confidence); --copy N or --link N with --to DIR puts the top N into a folder to label. The scores use "
        "the model's calibration temperature (fcnseg calibrate).",
    )
    p.add_argument("checkpoint", type=Path, help="model: a checkpoint or an fcnseg .onnx")
    p.add_argument("inputs", nargs="+", type=Path, help="unlabelled image files and/or folders")
    p.add_argument("--by", choices=RANK_BY, default="entropy", help="the per-pixel uncertainty (default: entropy)")
    p.add_argument("--diverse", action="store_true",
                   help="spread the order over different-looking images (no ten near-copies at the top)")
    p.add_argument("--seed", type=int, default=0, help="the draw of --by random (default 0)")
    p.add_argument("-o", "--out", type=Path, default=Path(DEFAULT_CSV),
                   help=f"the ranking CSV (default: {DEFAULT_CSV}; replaced atomically)")
    gather = p.add_mutually_exclusive_group()
    gather.add_argument("--copy", type=int, metavar="N", help="copy the top N images into --to")
    gather.add_argument("--link", type=int, metavar="N", help="symlink the top N images into --to")
    p.add_argument("--to", type=Path, metavar="DIR", help="folder for --copy / --link (created; files there are kept)")
    p.add_argument("--precision", default="auto", help="forward precision of a checkpoint (default: auto)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                   help=f"refuse images with more pixels than this (default {DEFAULT_MAX_PIXELS:,}; 0 = no limit)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fcnseg.inference.predictor import Predictor
    from fcnseg.inference.ranking import gather_top, rank_images, write_ranking_csv

    count = args.copy if args.copy is not None else args.link
    if count is not None and count < 1:
        raise ConfigError(f"--{'copy' if args.copy is not None else 'link'} N needs N of 1 or more, got {count}")
    if (count is None) != (args.to is None):
        raise ConfigError("--copy N or --link N goes with --to DIR (and --to with one of them)")
    check_output_path(args.out, "file", "-o")
    if args.to is not None:
        check_output_path(args.to, "folder", "--to")
        for root in args.inputs:
            if root.is_dir() and (args.to.resolve() == root.resolve() or root.resolve() in args.to.resolve().parents):
                raise ConfigError(f"--to {args.to} lies inside the input folder {root}: the picked images would be "
                                  "ranked again on the next run; choose a folder outside it")
    predictor = Predictor.from_checkpoint(args.checkpoint, device=args.device, precision=args.precision)
    ranked, failed = rank_images(predictor, args.inputs, by=args.by, diverse=args.diverse, seed=args.seed,
                                 max_pixels=args.max_pixels or None, progress=not args.no_progress)
    if not ranked:
        raise ConfigError(f"no readable image under {', '.join(map(str, args.inputs))}")
    write_ranking_csv(ranked, args.out, args.by)
    print(f"{len(ranked)} images ranked by {args.by}{' (diverse)' if args.diverse else ''}: {args.out}")
    for entry in ranked[:5]:
        print(f"  {entry.rank:>3}. {entry.name}  score {entry.score:.4f}  mean confidence {entry.mean_confidence:.4f}")
    if failed:
        print(f"{len(failed)} unreadable, skipped: " + "; ".join(f"{p}: {why}" for p, why in failed[:5]))
    if count is not None:
        written = gather_top(ranked, count, args.to, link=args.link is not None)
        print(f"{'linked' if args.link is not None else 'copied'} {len(written)} of the top {min(count, len(ranked))} "
              f"into {args.to}")
    return 1 if failed else 0
