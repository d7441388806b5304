"""`fcnseg demo`: generate synthetic data, train a small FCN-8s for a few minutes on the CPU, evaluate, draw."""

from __future__ import annotations

import argparse
from pathlib import Path

from fcnseg.precision import PRECISIONS
from fcnseg.data.synthetic import STYLES
from fcnseg.demo import (
    DEMO_OUT,
    DEMO_STYLE,
    DEMO_TARGET_MEAN_IU,
    DEMO_TARGET_VALIDATIONS,
    DEMO_TIME_BUDGET,
    DEMO_TIME_CAP,
    DEMO_TRAIN_IMAGES,
    DEMO_VAL_IMAGES,
)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="train and evaluate a small FCN-8s on built-in synthetic data (four minutes of training on a CPU)",
        description="Writes a synthetic data set, trains the small FCN-8s with the small-cpu preset, evaluates "
        "its best checkpoint and leaves the metrics table, the loss/mean IU curves and "
        "image | ground truth | prediction panels in --out.",
    )
    p.add_argument("--out", type=Path, default=Path(DEMO_OUT), help=f"output folder (default {DEMO_OUT})")
    p.add_argument("--data", type=Path, help="where the synthetic set is written (default data/synthetic-STYLE)")
    p.add_argument("--style", choices=STYLES, default=DEMO_STYLE,
                   help=f"synthetic data style (default {DEMO_STYLE}, the one the small-cpu preset was tuned on)")
    p.add_argument("--time-budget", default=DEMO_TIME_BUDGET, metavar="DURATION",
                   help=f"training time, e.g. 90s, 4m, 1h (default {DEMO_TIME_BUDGET}); validations not counted")
    p.add_argument("--time-cap", default=DEMO_TIME_CAP, metavar="DURATION",
                   help=f"below the target after --time-budget, train on up to this much training time in all "
                   f"(default {DEMO_TIME_CAP}; the poly schedule restarts over it); no longer than --time-budget: off")
    p.add_argument("--target", type=float, default=100 * DEMO_TARGET_MEAN_IU, metavar="PERCENT",
                   help=f"the mean IU the extension stops at, {DEMO_TARGET_VALIDATIONS} validations in a row "
                   f"(default {100 * DEMO_TARGET_MEAN_IU:.0f}; 0: no extension)")
    p.add_argument("--max-iter", type=int, help="a fixed number of updates instead of the time budget")
    p.add_argument("--train-images", type=int, default=DEMO_TRAIN_IMAGES, help="synthetic training images")
    p.add_argument("--val-images", type=int, default=DEMO_VAL_IMAGES, help="synthetic validation images")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="auto (default): fp16 autocast on CUDA, bf16 on CPUs with native bf16 (AMX / AVX512-BF16), "
                   "else fp32")
    p.add_argument("--workers", type=int, help="data loader processes")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from tqdm.contrib.logging import logging_redirect_tqdm

    from fcnseg.demo import run_demo, summary_lines
    from fcnseg.errors import ConfigError

    if not 0 <= args.target <= 100:
        raise ConfigError(f"--target is a mean IU in percent, 0 to 100 (0: no extension), found {args.target:g}")

    extra = {"data": {"num_workers": args.workers}} if args.workers is not None else None
    with logging_redirect_tqdm():
        result = run_demo(
            out_dir=args.out,
            data_dir=args.data,
            style=args.style,
            max_iter=args.max_iter,
            time_budget=args.time_budget,
            time_cap=args.time_cap,
            target_mean_iu=args.target / 100,
            num_train=args.train_images,
            num_val=args.val_images,
            precision=args.precision,
            progress=not args.no_progress,
            extra=extra,
        )
    out = result.out_dir
    print(f"\nvalidation ({result.data_dir}, {result.metrics['num_images']} images), best checkpoint:\n")
    print(result.table)
    print()
    for line in summary_lines(result):
        print(line)
    print(f"outputs: {out / 'metrics.txt'}  {out / 'curves.png'}  {out / 'panels.png'}  {out / 'checkpoints'}")
    return 0
