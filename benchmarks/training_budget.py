"""What the same training time buys: the demo's small FCN-8s for N minutes, today's small-cpu preset vs the old one.

Every row trains for the same wall time (``--minutes``, default 5; the poly schedule runs over it, see
``train.time_budget``) on the demo's synthetic set (400 training images), then evaluates its best
checkpoint on the 50 validation images. "today" is the small-cpu preset as it is; "old (pad 100)" is
the preset as it was before the "same"-padded trunk: the paper's geometry (conv1_1 padded by 100, so
a 128-pixel crop is a 328-pixel forward) with its other settings. Both run on today's input pipeline
and optimiser, so the rows differ by the settings only. The preset was tuned on "blobs"; "shapes" is
the held-out check. Prints the CPU's flags and the load average around every row: on a shared
machine the images/s (and so the updates a budget buys) fall with the load.

    python benchmarks/training_budget.py                  # 4 rows x 5 minutes
    python benchmarks/training_budget.py --minutes 2 --styles blobs
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import time
from pathlib import Path

from fcnseg.demo import DEMO_TRAIN_IMAGES, DEMO_VAL_IMAGES, run_demo
from fcnseg.precision import autocast_dtype, describe, select_device

# The small-cpu preset before the "same"-padded trunk (fcnseg/config.py at the time), in full.
OLD_PRESET = {
    "model": {"backbone": "small", "padding": "paper", "pad": 100, "dropout": 0.1, "learn_upsampling": False,
              "batch_norm": True},
    "train": {"optimizer": "adamw", "lr": 1e-3, "momentum": 0.9, "weight_decay": 1e-4, "bias_lr_mult": 1.0,
              "bias_decay_mult": 0.0, "normalize_loss": True, "batch_size": 8, "iter_size": 1, "lr_policy": "poly",
              "lr_power": 0.9, "warmup_iter": 50, "grad_clip": 5.0, "channels_last": False},
    "data": {"mirror": True, "crop_size": 128, "scale_min": 0.75, "scale_max": 1.25, "normalization": "imagenet_rgb"},
}
VARIANTS = {"today": {}, "old (pad 100)": OLD_PRESET}


def cpu_flags() -> str:
    """The CPU's model name and its bf16/AMX/AVX2 flags, as /proc/cpuinfo lists them."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown CPU"
    model = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    flags = sorted(set(re.findall(r"\b(avx512_bf16|amx[a-z_]*|avx2)\b", text)))
    return f"{model.group(1) if model else 'unknown CPU'} ({', '.join(flags) or 'no AVX2'}), {os.cpu_count()} cores"


def load() -> str:
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=5.0, help="training time of every row (default 5)")
    p.add_argument("--styles", nargs="+", default=["blobs", "shapes"], choices=["blobs", "shapes"])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--precision", default="auto", help="auto: bf16 where the CPU has it natively, else fp32")
    p.add_argument("--out", type=Path, default=Path("runs/training-budget"))
    p.add_argument("--data", type=Path, default=Path("data"), help="synthetic sets are written to DATA/synthetic-STYLE")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)

    precision = describe(autocast_dtype(args.precision, select_device("cpu")))
    print(f"{cpu_flags()}; precision {precision}; {args.minutes:g} min of training per row; "
          f"load average (1/5/15 min) at the start {load()}", flush=True)
    rows = []
    for style in args.styles:
        for variant in args.variants:
            before = load()
            started = time.perf_counter()
            result = run_demo(
                out_dir=args.out / f"{style}-{variant.split()[0]}", data_dir=args.data / f"synthetic-{style}",
                style=style, num_train=DEMO_TRAIN_IMAGES, num_val=DEMO_VAL_IMAGES, precision=args.precision,
                progress=False, extra=VARIANTS[variant], time_budget=f"{args.minutes * 60:g}s",
            )
            m, t = result.metrics, result.train
            rows.append({
                "data": style, "settings": variant, "updates": t.iteration,
                "images/s": t.images_per_second, "mean IU": 100 * m["mean_iu"], "pixel acc.": 100 * m["pixel_accuracy"],
                "minutes (all)": (time.perf_counter() - started) / 60, "load before/after": f"{before} / {load()}",
            })
            print(_table(rows[-1:], header=len(rows) == 1), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    print()
    print(_table(rows))


def _table(rows: list[dict], header: bool = True) -> str:
    keys = list(rows[0])
    lines = []
    if header:
        lines += ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    for row in rows:
        cells = [f"{row[k]:.1f}" if isinstance(row[k], float) else str(row[k]) for k in keys]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
