"""What the same training time buys: the demo's small FCN-8s for N minutes, today's small-cpu preset vs the old one.

Every row trains for the same wall time (``--minutes``, default 5; the poly schedule runs over it, see
``train.time_budget``) on the demo's synthetic set (400 training images), then evaluates its best
checkpoint on the 50 validation images. "today" is the small-cpu preset as it is; "old (pad 100)" is
the preset as it was before the "same"-padded trunk: the paper's geometry (conv1_1 padded by 100, so
a 128-pixel crop is a 328-pixel forward) with its other settings. Both run on today's input pipeline
and optimiser, so the rows differ by the settings only. "class_weights auto" is today's preset with
median frequency balancing. The preset was tuned on "blobs"; "shapes" is the held-out check; "thin"
(small, thin objects on ~94% background, wires under 1% of the pixels) is the imbalanced one: its
rows show the rare class's IU, with and without class weights, and the mean IU of answering
background everywhere; "rare" (blobs whose waves cover under 1% of the pixels) is the set for class
weights. Prints the CPU's flags, the instruction set PyTorch and oneDNN use, and the load average around every row: on a shared machine the images/s (and so the updates a budget buys)
fall with the load.

    python benchmarks/training_budget.py                  # 8 rows x 5 minutes
    python benchmarks/training_budget.py --minutes 2 --rows blobs:today
    # an AVX2-only CPU's kernels on a newer one (no native bf16, so fp32):
    ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 python benchmarks/training_budget.py
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import time
from pathlib import Path

import numpy as np
import torch

from tables import markdown_table  # benchmarks/tables.py

from fcnseg.data.synthetic import STYLES
from fcnseg.demo import DEMO_TRAIN_IMAGES, DEMO_VAL_IMAGES, run_demo
from fcnseg.precision import autocast_dtype, describe, select_device

# The small-cpu preset before the "same"-padded trunk (fcnseg/config.py at the time), in full.
OLD_PRESET = {
    "model": {"backbone": "small", "padding": "paper", "pad": 100, "dropout": 0.1, "learn_upsampling": False,
              "batch_norm": True},
    "train": {"optimizer": "adamw", "lr": 1e-3, "momentum": 0.9, "weight_decay": 1e-4, "bias_lr_mult": 1.0,
              "bias_decay_mult": 0.0, "normalize_loss": True, "batch_size": 8, "iter_size": 1, "lr_policy": "poly",
              "lr_power": 0.9, "warmup_iter": 50, "grad_clip": 5.0, "layout": "contiguous"},
    "data": {"mirror": True, "crop_size": 128, "scale_min": 0.75, "scale_max": 1.25, "normalization": "imagenet_rgb"},
}
VARIANTS = {"today": {}, "old (pad 100)": OLD_PRESET, "class_weights auto": {"train": {"class_weights": "auto"}}}
DEFAULT_ROWS = ["blobs:today", "blobs:old (pad 100)", "shapes:today", "shapes:old (pad 100)", "thin:today",
                "thin:class_weights auto", "rare:today", "rare:class_weights auto"]


def cpu_flags() -> str:
    """The CPU's model name and its bf16/AMX/AVX2 flags, as /proc/cpuinfo lists them."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown CPU"
    model = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
    flags = sorted(set(re.findall(r"\b(avx512_bf16|amx[a-z_]*|avx2)\b", text)))
    return f"{model.group(1) if model else 'unknown CPU'} ({', '.join(flags) or 'no AVX2'}), {os.cpu_count()} cores"


def kernels() -> str:
    """The instruction set PyTorch's kernels and oneDNN are allowed (ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA)."""
    return f"PyTorch kernels {torch.backends.cpu.get_cpu_capability()}, oneDNN {os.environ.get('ONEDNN_MAX_CPU_ISA', 'all')}"


def class_shares(data_dir: Path) -> np.ndarray:
    """Share of each class among the labelled pixels of the training set at ``data_dir``."""
    from fcnseg.data import build_dataset
    from fcnseg.training.datasets import class_frequencies

    pixels, _ = class_frequencies(build_dataset("voc", data_dir, "train"))
    return pixels / max(1, pixels.sum())


def load() -> str:
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=5.0, help="training time of every row (default 5)")
    p.add_argument("--rows", nargs="+", default=DEFAULT_ROWS, metavar="STYLE:SETTINGS",
                   help=f"rows to train, style ({', '.join(STYLES)}) and settings ({', '.join(VARIANTS)})")
    p.add_argument("--precision", default="auto", help="auto: bf16 where the CPU has it natively, else fp32")
    p.add_argument("--seed", type=int, default=0, help="train.seed of every row (the data stay the same): run-to-run spread")
    p.add_argument("--out", type=Path, default=Path("runs/training-budget"))
    p.add_argument("--data", type=Path, default=Path("data"), help="synthetic sets are written to DATA/synthetic-STYLE")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)

    precision = describe(autocast_dtype(args.precision, select_device("cpu")))
    plan = []
    for row in args.rows:
        style, _, variant = row.partition(":")
        if style not in STYLES or variant not in VARIANTS:
            p.error(f"row {row!r}: expected STYLE:SETTINGS with a style of {', '.join(STYLES)} and settings of "
                    f"{', '.join(VARIANTS)}")
        plan.append((style, variant))
    threads = torch.get_num_threads()
    print(f"{cpu_flags()}; {kernels()}; precision {precision}; {threads} threads; train.seed {args.seed}; {args.minutes:g} min of training "
          f"per row; load average (1/5/15 min) at the start {load()}", flush=True)
    rows = []
    for style, variant in plan:
        before = load()
        started = time.perf_counter()
        data_dir = args.data / f"synthetic-{style}"
        extra = {section: dict(values) for section, values in VARIANTS[variant].items()}
        if args.seed:
            extra.setdefault("train", {})["seed"] = args.seed
        result = run_demo(
            out_dir=args.out / f"{style}-{variant.split()[0]}{f'-seed{args.seed}' if args.seed else ''}", data_dir=data_dir,
            style=style, num_train=DEMO_TRAIN_IMAGES, num_val=DEMO_VAL_IMAGES, precision=args.precision,
            progress=False, extra=extra, time_budget=f"{args.minutes * 60:g}s",
            time_cap="",  # the same time for every row: no training on past the budget
        )
        m, t = result.metrics, result.train
        shares = class_shares(data_dir)
        rare = int(np.argmin(shares))
        rare_iu = m["per_class_iu"][rare]
        rows.append({
            "data": style, "settings": variant, "updates": t.iteration,
            "images/s": t.images_per_second, "images/s/core": t.images_per_second / threads,
            "mean IU": 100 * m["mean_iu"], "pixel acc.": 100 * m["pixel_accuracy"],
            "rarest class IU": f"{m['class_names'][rare] if 'class_names' in m else rare} "
                                f"({100 * shares[rare]:.2f}% px): {'-' if rare_iu is None else f'{100 * rare_iu:.1f}'}",
            "all-background mIU": 100 * shares[0] / len(shares),
            "minutes (all)": (time.perf_counter() - started) / 60, "load before/after": f"{before} / {load()}",
        })
        print(markdown_table(rows[-1:], header=len(rows) == 1), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    print()
    print(markdown_table(rows))



if __name__ == "__main__":
    main()
