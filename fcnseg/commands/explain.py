"""`fcnseg explain`: measure the paper's ideas on this machine and write a Markdown report with figures."""

from __future__ import annotations

from fcnseg.ideas import CLASSIFIER_NAMES, ExplainOptions, explain


def register(subparsers) -> None:
    defaults = ExplainOptions()
    p = subparsers.add_parser(
        "explain",
        help="measure patch-wise vs dense, FC->conv, receptive fields, upsampling and shift-and-stitch",
        description="Reproduce the paper's quantitative arguments in one command: every number is computed now. "
        "Writes report.md, PNG figures and results.json into --out.",
    )
    p.add_argument("--out", default=defaults.out_dir, help=f"output folder (default: {defaults.out_dir})")
    p.add_argument("--arch", default=defaults.arch, choices=CLASSIFIER_NAMES,
                   help="patch classifier to convolutionalize (default: small; 'alexnet --size 500' is the paper's case)")
    p.add_argument("--size", type=int, help="image side in pixels (default: 384, 500 for alexnet)")
    p.add_argument("--batch-size", type=int, default=defaults.batch_size, help="windows per patch-wise batch")
    p.add_argument("--repeats", type=int, default=defaults.repeats, help="timed runs per method (median)")
    p.add_argument("--scaling-points", type=int, default=defaults.scaling_points,
                   help="image sizes in the cost-scaling plot (FLOPs and memory for each, time for three)")
    p.add_argument("--stitch-size", type=int, default=defaults.stitch_size, help="image side for shift-and-stitch")
    p.add_argument("--stitch-factor", type=int, default=defaults.stitch_factor,
                   help="subsampling undone by shift-and-stitch, a power of two up to 32 (default: 4)")
    p.add_argument("--checkpoint", action="append", default=[], metavar="CKPT",
                   help="FCN checkpoint for the upsampling view (repeat for 32s/16s/8s); default: train briefly here")
    p.add_argument("--image", help="RGB image for the upsampling view (default: a synthetic scene)")
    p.add_argument("--train-seconds", type=float, default=defaults.train_seconds,
                   help="training budget without --checkpoint (default: 35)")
    p.add_argument("--seed", type=int, default=defaults.seed, help="random seed")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    options = ExplainOptions(
        out_dir=args.out, arch=args.arch, size=args.size, batch_size=args.batch_size, repeats=args.repeats,
        stitch_size=args.stitch_size, stitch_factor=args.stitch_factor, checkpoints=list(args.checkpoint),
        image=args.image, scaling_points=args.scaling_points, train_seconds=args.train_seconds, seed=args.seed, progress=not args.no_progress,
    )
    results = explain(options)
    print(results["key_table"])
    print(f"\nreport: {results['report']}")
    return 0
