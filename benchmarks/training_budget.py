"""What the same training time buys: the small-cpu preset for N minutes against the preset before it and a plain FCN.

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
weights.

Real data (``brain``, ``nuclei``: grey images that installed packages ship, written by
``benchmarks/real_data.py``; nothing is downloaded) go through ``fcnseg.train`` on the folder layout, each
row scoring its *last* weights on the validation split (no checkpoint is picked by it), and "plain" is
the baseline written here in a hundred lines: the small trunk's widths without BatchNorm (two 3x3
conv + ReLU and a max-pool per stage, output stride 32), a 1x1 score and a bilinear resize, Adam at 1e-3,
fp32, batches of 8 random 128-pixel crops with flips, every update timed against the same budget; "plain 8s" is
the same net with the paper's FCN-8s skips (1x1 scores of the stride-16 and stride-8 features added to the
upsampled coarser scores), to tell the skips' share of the gap from the rest of the recipe. The
preset was tuned on ``brain`` (axial slices to train on, coronal ones to validate); ``nuclei`` (16 tiles of
one microscopy image, the 4 diagonal ones held out) was not looked at while choosing. Prints the CPU's flags, the instruction set PyTorch and oneDNN use, and the load average around every row: on a shared machine the images/s (and so the updates a budget buys)
fall with the load.

    python benchmarks/training_budget.py                  # 8 rows x 5 minutes
    python benchmarks/training_budget.py --minutes 2 --rows blobs:today
    python benchmarks/training_budget.py --minutes 2 --rows nuclei:plain nuclei:today nuclei:plain nuclei:today
    # on a shared machine: budgets of CPU time (one thread each), one process per row, side by side
    python benchmarks/training_budget.py --clock cpu --minutes 1 --rows brain:plain --out runs/tb/brain-plain &
    # mean IU against the budget: every row at several budgets, then the curves and ratios of those runs
    python benchmarks/training_budget.py --clock cpu --minutes 0.25 0.5 1 2 4 --rows nuclei:plain --out runs/tb/np &
    python benchmarks/training_budget.py --clock cpu --minutes 0.25 0.5 1 2 4 --rows nuclei:today --out runs/tb/nt &
    wait; python benchmarks/training_budget.py --curve runs/tb/np runs/tb/nt --curve-out docs/images/budget_curve.png
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

from real_data import CLASSES, SETS as REAL_SETS, write_set  # benchmarks/real_data.py

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
VARIANTS = {
    "today": {}, "old (pad 100)": OLD_PRESET, "class_weights auto": {"train": {"class_weights": "auto"}},
    # settings tried while choosing the preset on real data
    "fp32": {"train": {"precision": "fp32"}},
    "lr 1e-3": {"train": {"lr": 1e-3}}, "lr 1e-2": {"train": {"lr": 1e-2}},
    "crop 192": {"data": {"crop_size": 192}}, "batch 4": {"train": {"batch_size": 4}},
    "batch 16": {"train": {"batch_size": 16}}, "no rescale": {"data": {"scale_min": 1.0, "scale_max": 1.0}},
    "fcn32s": {"model": {"arch": "fcn32s"}}, "workers 0": {"data": {"num_workers": 0}},
    "plain": None,  # the baseline below, not fcnseg
    "plain 8s": None,  # the same with FCN-8s skips
}
DEFAULT_ROWS = ["blobs:today", "blobs:old (pad 100)", "shapes:today", "shapes:old (pad 100)", "thin:today",
                "thin:class_weights auto", "rare:today", "rare:class_weights auto"]


# What each real set was to the preset's choice (benchmarks/real_data.py)
ROLES = {"brain": "tuned on", "nuclei": "held out"}
LEGEND = {"today": "small-cpu preset", "plain": "plain FCN-32s", "plain 8s": "plain FCN-8s"}


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


class PlainFCN(torch.nn.Module):
    """The baseline: a plain FCN as one writes it in an afternoon (the small trunk's widths, no BatchNorm): FCN-32s,
    or with ``skips`` FCN-8s (scores of the stride-8 and stride-16 features added to the upsampled coarse ones)."""

    def __init__(self, num_classes: int, widths=(16, 32, 64, 128, 128), skips: bool = False) -> None:
        super().__init__()
        self.stages = torch.nn.ModuleList()
        channels = 3
        for width in widths:
            self.stages.append(torch.nn.Sequential(
                torch.nn.Conv2d(channels, width, 3, padding=1), torch.nn.ReLU(inplace=True),
                torch.nn.Conv2d(width, width, 3, padding=1), torch.nn.ReLU(inplace=True), torch.nn.MaxPool2d(2)))
            channels = width
        self.score = torch.nn.Conv2d(channels, num_classes, 1)
        self.skip_scores = torch.nn.ModuleList(
            [torch.nn.Conv2d(widths[2], num_classes, 1), torch.nn.Conv2d(widths[3], num_classes, 1)] if skips else [])

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [N, 3, H, W] -> [N, C, H, W]
        features = []
        h = x
        for stage in self.stages:
            h = stage(h)
            features.append(h)  # strides 2, 4, 8, 16, 32
        scores = self.score(h)  # [N, C, H/32, W/32]
        for skip, feature in zip(reversed(self.skip_scores), (features[3], features[2])):  # stride 16, then 8
            scores = torch.nn.functional.interpolate(scores, size=feature.shape[-2:], mode="bilinear",
                                                     align_corners=False) + skip(feature)
        return torch.nn.functional.interpolate(scores, size=x.shape[-2:], mode="bilinear", align_corners=False)


def read_split(data_dir: Path, split: str) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(float [3, H, W] image scaled to about zero mean and unit spread, int64 [H, W] labels) of every pair."""
    from PIL import Image

    pairs = []
    for image_path in sorted((data_dir / split / "images").glob("*.png")):
        image = np.asarray(Image.open(image_path).convert("RGB"), np.float32) / 255.0
        labels = np.asarray(Image.open(data_dir / split / "masks" / image_path.name), np.int64)
        pairs.append((torch.from_numpy((image - 0.45) / 0.25).permute(2, 0, 1).contiguous(), torch.from_numpy(labels)))
    return pairs


def mean_iu_of(predict, pairs, num_classes: int) -> dict:
    """The paper's metrics (fcnseg.metrics.ConfusionMatrix) of ``predict(image [1, 3, H, W]) -> labels [H, W]``."""
    from fcnseg.metrics import ConfusionMatrix

    matrix = ConfusionMatrix(num_classes)
    with torch.inference_mode():
        for image, labels in pairs:
            matrix.update(predict(image[None]), labels)
    return matrix.compute()


def train_plain(data_dir: Path, seconds: float, seed: int, crop: int = 128, batch: int = 8,
                clock=time.perf_counter, skips: bool = False) -> dict:
    """Train :class:`PlainFCN` for ``seconds`` of updates on ``clock``; its metrics on the validation split, updates,
    images/s."""
    torch.manual_seed(seed)
    generator = np.random.default_rng(seed)
    train_pairs, val_pairs = read_split(data_dir, "train"), read_split(data_dir, "val")
    num_classes = len(CLASSES[data_dir.name])
    model = PlainFCN(num_classes, skips=skips)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    updates, spent = 0, 0.0
    while spent < seconds:
        began = clock()
        images, masks = [], []
        for index in generator.integers(len(train_pairs), size=batch):
            image, labels = train_pairs[index]
            top = int(generator.integers(image.shape[1] - crop + 1))
            left = int(generator.integers(image.shape[2] - crop + 1))
            image, labels = image[:, top:top + crop, left:left + crop], labels[top:top + crop, left:left + crop]
            if generator.random() < 0.5:
                image, labels = image.flip(-1), labels.flip(-1)
            images.append(image)
            masks.append(labels)
        loss = torch.nn.functional.cross_entropy(model(torch.stack(images)), torch.stack(masks))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        updates += 1
        spent += clock() - began
    model.eval()
    metrics = mean_iu_of(lambda x: model(x).argmax(1)[0], val_pairs, num_classes)
    return {"metrics": metrics, "updates": updates, "images_per_second": updates * batch / spent}


def train_preset(data_dir: Path, out_dir: Path, seconds: float, seed: int, precision: str, extra: dict,
                 clock=time.perf_counter) -> dict:
    """``fcnseg.train`` with the small-cpu preset (FCN-8s) for ``seconds`` on the folder set at ``data_dir``; the
    metrics of its last weights on the validation split (fcnseg.evaluate), updates, images/s."""
    from fcnseg import build_dataset, evaluate, load_model, resolve_run_config, train

    overrides = {
        "preset": "small-cpu",
        "model": {"arch": "fcn8s", "backbone": "small", "num_classes": len(CLASSES[data_dir.name])},
        "data": {"dataset": "folder", "root": str(data_dir)},
        "train": {"out_dir": str(out_dir), "precision": precision, "time_budget": f"{seconds:g}s", "seed": seed,
                  "val_every": 10**9, "checkpoint_every": 10**9, "log_every": 10**9},
    }
    for section, values in extra.items():
        overrides.setdefault(section, {}).update(values)
    config = resolve_run_config(overrides=overrides)
    result = train(config, progress=False, clock=clock)
    loaded = load_model(result.last_checkpoint).prepare(config.train.device, config.train.precision)
    metrics = evaluate(loaded, build_dataset("folder", data_dir, "val"), progress=False)
    images = result.iteration * config.train.batch_size * config.train.iter_size
    return {"metrics": metrics, "updates": result.iteration, "images_per_second": images / max(result.train_seconds, 1e-9)}


def object_mean_iu(per_class_iu: list) -> float:
    """Mean IU over the classes other than background (class 0), those that occur; NaN when none does."""
    values = [v for v in per_class_iu[1:] if v is not None and v == v]
    return float(np.mean(values)) if values else float("nan")


def real_row(style: str, variant: str, args, threads: int, minutes: float) -> dict:
    """One row on a real set: the plain baseline or the preset with ``variant``'s settings, ``minutes`` of training."""
    data_dir = write_set(style, args.data / "real")
    seconds = minutes * 60
    # --clock cpu: the budget counts this process's CPU time, one thread, the data read in the same process
    # (num_workers 0), so that other people's load on a shared machine takes nothing from a row's budget.
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    if variant.startswith("plain"):
        run = train_plain(data_dir, seconds, args.seed, clock=clock, skips=variant == "plain 8s")
    else:
        out = args.out / f"{style}-{variant.replace(' ', '_')}-{minutes:g}min{f'-seed{args.seed}' if args.seed else ''}"
        extra = {section: dict(values) for section, values in VARIANTS[variant].items()}
        if args.clock == "cpu":
            extra.setdefault("data", {})["num_workers"] = 0
        run = train_preset(data_dir, out, seconds, args.seed, args.precision, extra, clock=clock)
    m = run["metrics"]
    per_class = " / ".join("-" if v is None or v != v else f"{100 * v:.1f}" for v in m["per_class_iu"])
    return {"data": style, "settings": variant, "minutes": minutes, "seed": args.seed, "updates": run["updates"],
            "images/s": run["images_per_second"], "images/s/core": run["images_per_second"] / threads,
            "mean IU": 100 * m["mean_iu"], "object mean IU": 100 * object_mean_iu(m["per_class_iu"]),
            "pixel acc.": 100 * m["pixel_accuracy"], "per-class IU": per_class}


def load() -> str:
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


def write_results(rows: list[dict], out: Path) -> None:
    """``rows`` as ``out/results.json``, replaced whole (a run stopped part-way keeps the rows it finished)."""
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps(rows, indent=2) + "\n")
    os.replace(tmp, out / "results.json")


def budget_curves(folders: list[Path], picture: Path | None) -> None:
    """Merge the real-data rows of ``folders`` (each a run's ``results.json``), print per data set and budget the
    mean IU of every setting (averaged over seeds, with the spread) and each setting's ratio to each plain baseline
    (paper's mean IU, and the mean IU of the object classes, background left out); draw mean IU against the budget."""
    rows = [row for folder in folders for row in json.loads((folder / "results.json").read_text())
            if "minutes" in row and "object mean IU" in row]
    if not rows:
        raise SystemExit(f"no real-data rows with a budget in {', '.join(str(f / 'results.json') for f in folders)}")
    groups: dict[tuple[str, str, float], list[dict]] = {}
    for row in rows:
        groups.setdefault((row["data"], row["settings"], row["minutes"]), []).append(row)

    def mean(key, data, settings, minutes) -> tuple[float, float, int]:
        values = [r[key] for r in groups.get((data, settings, minutes), [])]
        return (float(np.mean(values)), float(np.std(values)), len(values)) if values else (float("nan"), 0.0, 0)

    def ratio(value: float, baseline: float) -> str:
        if baseline != baseline:
            return "no plain row"
        return f"{value / baseline:.2f}x" if baseline > 0 else "plain at 0"

    baselines = sorted({settings for _, settings, _ in groups if settings.startswith("plain")})
    table = []
    for data, settings, minutes in sorted(groups):
        m, spread, seeds = mean("mean IU", data, settings, minutes)
        objects = mean("object mean IU", data, settings, minutes)[0]
        updates = mean("updates", data, settings, minutes)[0]
        row = {"data": data, "budget (min)": f"{minutes:g}", "settings": settings, "seeds": seeds,
               "updates": f"{updates:.0f}", "mean IU": f"{m:.1f} +/- {spread:.1f}", "object mean IU": f"{objects:.1f}"}
        for baseline in baselines:
            base, base_objects = (mean(k, data, baseline, minutes)[0] for k in ("mean IU", "object mean IU"))
            plain_row = settings.startswith("plain")
            row[f"x {baseline}"] = "-" if plain_row else ratio(m, base)
            row[f"x {baseline} (objects)"] = "-" if plain_row else ratio(objects, base_objects)
        table.append(row)
    print(markdown_table(table))
    if picture is None:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sets = sorted({data for data, _, _ in groups})
    figure, axes = plt.subplots(1, len(sets), figsize=(5 * len(sets), 3.8), squeeze=False)
    for axis, data in zip(axes[0], sets):
        for settings in sorted({s for d, s, _ in groups if d == data}):
            budgets = sorted(mn for d, s, mn in groups if d == data and s == settings)
            stats = [mean("mean IU", data, settings, mn) for mn in budgets]
            axis.errorbar([60 * b for b in budgets], [v for v, _, _ in stats], yerr=[e for _, e, _ in stats],
                          marker="o", capsize=3, label=LEGEND.get(settings, settings))
        axis.set_xscale("log")
        ticks = sorted({60 * mn for d, _, mn in groups if d == data})
        axis.set_xticks(ticks, [f"{t:g}" for t in ticks])
        axis.minorticks_off()
        axis.set_xlabel("training budget (CPU-seconds, one thread)")
        axis.set_ylabel("mean IU on held-out images (%)")
        axis.set_title(f"{data} ({ROLES[data]})" if data in ROLES else data)
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle(cpu_flags(), fontsize=9)
    figure.tight_layout()
    picture.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(picture, dpi=100)
    print(f"wrote {picture}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, nargs="+", default=[5.0],
                   help="training time of every row (default 5); several values train every row at each")
    p.add_argument("--rows", nargs="+", default=DEFAULT_ROWS, metavar="STYLE:SETTINGS",
                   help=f"rows to train, style ({', '.join((*STYLES, *REAL_SETS))}) and settings ({', '.join(VARIANTS)}; "
                        f"plain: real sets only)")
    p.add_argument("--precision", default="auto", help="auto: bf16 where the CPU has it natively, else fp32")
    p.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                   help="what a real-data row's budget counts: wall time, or (cpu) this process's CPU time on one "
                   "thread with the data read in-process, for a shared machine (rows may then run side by side)")
    p.add_argument("--seed", type=int, default=0, help="train.seed of every row (the data stay the same): run-to-run spread")
    p.add_argument("--out", type=Path, default=Path("runs/training-budget"))
    p.add_argument("--data", type=Path, default=Path("data"),
                   help="synthetic sets are written to DATA/synthetic-STYLE, real ones to DATA/real/NAME")
    p.add_argument("--curve", type=Path, nargs="+", metavar="DIR",
                   help="train nothing: merge the results.json of these runs' --out folders, print mean IU and the "
                   "ratio to plain per budget")
    p.add_argument("--curve-out", type=Path, help="with --curve: draw mean IU against the budget into this PNG")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.curve:
        budget_curves(args.curve, args.curve_out)
        return

    precision = describe(autocast_dtype(args.precision, select_device("cpu")))
    plan = []
    for row in args.rows:
        style, _, variant = row.partition(":")
        if style not in (*STYLES, *REAL_SETS) or variant not in VARIANTS or (variant.startswith("plain") and style in STYLES):
            p.error(f"row {row!r}: expected STYLE:SETTINGS with a style of {', '.join((*STYLES, *REAL_SETS))} and "
                    f"settings of {', '.join(VARIANTS)} (plain: on {', '.join(REAL_SETS)} only)")
        plan += [(style, variant, minutes) for minutes in args.minutes]
    if args.clock == "cpu":
        torch.set_num_threads(1)
    threads = torch.get_num_threads()
    print(f"{cpu_flags()}; {kernels()}; precision {precision}; {threads} threads; train.seed {args.seed}; "
          f"{'/'.join(f'{m:g}' for m in args.minutes)} min of training per row; load average (1/5/15 min) at the "
          f"start {load()}", flush=True)
    rows = []
    for style, variant, minutes in plan:
        before = load()
        started = time.perf_counter()
        if style in REAL_SETS:
            rows.append({**real_row(style, variant, args, threads, minutes),
                         "minutes (all)": (time.perf_counter() - started) / 60, "load before/after": f"{before} / {load()}"})
            print(markdown_table(rows[-1:], header=True), flush=True)
            write_results(rows, args.out)
            continue
        data_dir = args.data / f"synthetic-{style}"
        extra = {section: dict(values) for section, values in VARIANTS[variant].items()}
        if args.seed:
            extra.setdefault("train", {})["seed"] = args.seed
        result = run_demo(
            out_dir=args.out / f"{style}-{variant.split()[0]}-{minutes:g}min{f'-seed{args.seed}' if args.seed else ''}",
            data_dir=data_dir, style=style, num_train=DEMO_TRAIN_IMAGES, num_val=DEMO_VAL_IMAGES,
            precision=args.precision, progress=False, extra=extra, time_budget=f"{minutes * 60:g}s",
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
        write_results(rows, args.out)
    print()
    for kind in ({tuple(r) for r in rows}):  # real and synthetic rows have different columns
        print(markdown_table([r for r in rows if tuple(r) == kind]))
        print()


if __name__ == "__main__":
    main()
