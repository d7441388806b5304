"""Does the small-cpu preset learn on data it was not tuned on? The demo's run on both synthetic styles.

The preset was tuned on the texture-classed "blobs" (the demo's data). This script trains the demo's
small FCN-8s, with the demo's settings and budget, on "blobs" and on "shapes" (classes told apart by
their outline only: colour and texture give nothing away), evaluates each best checkpoint on its 50
validation images and prints one table. ``--variants`` adds the same runs with settings changed,
for a side-by-side comparison (each run is independent; they share nothing but the machine).

    python benchmarks/preset_transfer.py                                   # the preset, 2 x 4 min of training
    python benchmarks/preset_transfer.py --variants no-bn                  # and the preset without BatchNorm
    python benchmarks/preset_transfer.py --time-budget 10m --styles shapes # a longer budget
    python benchmarks/preset_transfer.py --iters 2000                      # a fixed number of updates
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from tables import markdown_table  # benchmarks/tables.py

from fcnseg.demo import DEMO_TIME_BUDGET, DEMO_TRAIN_IMAGES, DEMO_VAL_IMAGES, run_demo

VARIANTS = {
    "preset": {},
    "no-bn": {"model": {"batch_norm": False}},
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--styles", nargs="+", default=["blobs", "shapes"], choices=["blobs", "shapes"])
    p.add_argument("--variants", nargs="*", default=[], choices=[v for v in VARIANTS if v != "preset"],
                   help="also run the preset with these changes")
    p.add_argument("--time-budget", default=DEMO_TIME_BUDGET, help=f"training time per run (the demo's: {DEMO_TIME_BUDGET})")
    p.add_argument("--iters", type=int, help="a fixed number of updates per run instead of the time budget")
    p.add_argument("--out", type=Path, default=Path("runs/preset-transfer"))
    p.add_argument("--data", type=Path, default=Path("data"), help="synthetic sets are written to DATA/synthetic-STYLE")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)

    rows = []
    for style in args.styles:
        for variant in ["preset", *args.variants]:
            started = time.perf_counter()
            result = run_demo(
                out_dir=args.out / f"{style}-{variant}",
                data_dir=args.data / f"synthetic-{style}",
                style=style,
                max_iter=args.iters,
                time_budget=args.time_budget,
                time_cap="",  # the same time for every row: no training on past the budget
                num_train=DEMO_TRAIN_IMAGES,
                num_val=DEMO_VAL_IMAGES,
                progress=False,
                extra=VARIANTS[variant],
            )
            m = result.metrics
            objects = [v for v in m["per_class_iu"][1:] if v is not None]
            rows.append({
                "style": style, "tuned on": "yes" if style == "blobs" else "no", "variant": variant,
                "updates": result.train.iteration, "minutes": (time.perf_counter() - started) / 60,
                "mean IU": 100 * m["mean_iu"], "pixel acc.": 100 * m["pixel_accuracy"],
                "background IU": 100 * m["per_class_iu"][0],
                "object IU min-max": f"{100 * min(objects):.1f}-{100 * max(objects):.1f}",
            })
            print(markdown_table(rows[-1:], header=len(rows) == 1), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    print()
    print(markdown_table(rows))



if __name__ == "__main__":
    main()
