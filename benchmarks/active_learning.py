"""Which images to label next, simulated: mean IU against the number of labelled images, per ranking strategy.

A labelled pool stands in for the user's unlabelled images (its labels hidden until an image is picked),
and its validation split is the test set. Each seed starts from the same ``--k`` randomly drawn labels
for every strategy and trains the small-cpu FCN-8s from scratch for ``--first`` seconds; then, each
round, the strategy ranks the rest of the pool with the latest model (``fcnseg.inference.ranking``, the
code ``fcnseg rank`` runs), ``--k`` more images are labelled, and the model is fine-tuned from the previous
round's checkpoint (``train.init_from``, ``fcnseg train --init-from``) for ``--finetune`` seconds of
training. Every strategy gets the same training time per round, so the curves differ by the images picked.
Prints the CPU and its flags, the load average, a table of mean IU (mean and spread over seeds) per
strategy and number labelled, and draws the curves into ``--plot``.

    cd benchmarks
    python active_learning.py                          # the run in docs/labelling.md: ~25 min a seed, 2 loaded cores
    python active_learning.py --first 400 --finetune 100 --seeds 3     # models good enough to rank with
    python active_learning.py --seeds 1 --first-seed 1 > s1.txt        # a seed per process, then:
    python active_learning.py --replot s1.txt          # the table and the plot from printed lines
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

from fcnseg.config import resolve_run_config
from fcnseg.data import build_dataset
from fcnseg.data.synthetic import make_synthetic
from fcnseg.evaluation import evaluate
from fcnseg.images import read_image
from fcnseg.inference.predictor import Predictor
from fcnseg.inference.ranking import diverse_order, image_features
from fcnseg.precision import cpu_kind
from fcnseg.training.trainer import train
from fcnseg.weights.checkpoint import load_model

STRATEGIES = {  # name -> (confidence measure whose complement is the score, spread the picks)
    "random": (None, False),
    "entropy": ("entropy", False),
    "margin": ("margin", False),
    "least-confidence": ("max", False),
    "entropy+diverse": ("entropy", True),
}


def load() -> str:
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


def write_split(root: Path, name: str, names: list[str]) -> str:
    (root / "ImageSets" / "Segmentation" / f"{name}.txt").write_text("".join(f"{n}\n" for n in names))
    return name


def train_round(root: Path, split: str, out: Path, amount: float, unit: str, seed: int, init_from: Path | None,
                crop: int) -> Path:
    """The small-cpu FCN-8s on ``split`` for ``amount`` updates or seconds of training (``unit``), from ``init_from``
    when given; its last checkpoint."""
    if unit == "seconds":
        schedule = {"time_budget": f"{amount:g}s", "val_every": 10**6, "checkpoint_every": 10**6}
    else:
        updates = max(1, int(amount))
        schedule = {"max_iter": updates, "time_budget": "", "val_every": updates, "checkpoint_every": updates,
                    "warmup_iter": min(50, updates // 4)}
    config = resolve_run_config(overrides={
        "preset": "small-cpu",
        "model": {"arch": "fcn8s", "backbone": "small"},
        "data": {"dataset": "voc", "root": str(root), "train_split": split, "val_split": "tiny",
                 "num_workers": 0, "crop_size": crop},
        "train": {"out_dir": str(out), "seed": seed, "init_from": str(init_from) if init_from else "",
                  "log_every": 10**6, **schedule},
    })
    result = train(config, progress=False)
    return Path(result.last_checkpoint)


def mean_iu(checkpoint: Path, root: Path) -> float:
    return float(evaluate(load_model(checkpoint), build_dataset("voc", root, "val"), progress=False)["mean_iu"])


def pick(strategy: str, checkpoint: Path, root: Path, candidates: list[str], k: int, rng) -> list[str]:
    """The ``k`` candidates the strategy labels next."""
    measure, diverse = STRATEGIES[strategy]
    if measure is None:
        return list(rng.choice(candidates, size=k, replace=False))
    predictor = Predictor(load_model(checkpoint), precision="fp32", max_memory=None)
    scores, features = [], []
    for name in candidates:
        image = read_image(root / "JPEGImages" / f"{name}.png")
        result = predictor.predict(image, confidence=measure)
        scores.append(1 - float(result.confidence.astype(np.float64).mean()))
        if diverse:
            features.append(image_features(result.labels, image, predictor.num_classes))
    scores = np.array(scores)
    order = diverse_order(scores, np.stack(features)) if diverse else list(np.lexsort((np.arange(len(scores)), -scores)))
    return [candidates[i] for i in order[:k]]


def plot(table: dict, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    for strategy, points in table.items():
        counts = sorted(points)
        means = np.array([100 * np.mean(points[n]) for n in counts])
        spread = np.array([100 * np.std(points[n]) for n in counts])
        ax.plot(counts, means, marker="o", label=strategy)
        ax.fill_between(counts, means - spread, means + spread, alpha=0.15)
    ax.set_xlabel("labelled images")
    ax.set_ylabel("mean IU on the test split (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def table_from_log(text: str, strategies: list[str]) -> dict[str, dict[int, list[float]]]:
    """The table from the lines a run printed (``--replot``): a run cut short still gives its finished rounds."""
    table: dict[str, dict[int, list[float]]] = {s: {} for s in strategies}
    for seed, strategy, count, score in re.findall(r"^seed (\d+)\s*([\w+-]*): (\d+) labels, mean IU ([\d.]+)%", text, re.M):
        for name in ([strategy] if strategy else strategies):
            if name in table:
                table[name].setdefault(int(count), []).append(float(score) / 100)
    return table


def print_table(table: dict, strategies: list[str]) -> None:
    rows = []
    for n in sorted({n for points in table.values() for n in points}):
        row = {"labelled": n}
        for s in strategies:
            values = 100 * np.array(table[s].get(n, [np.nan]))
            row[s] = f"{values.mean():.1f} ± {values.std():.1f} ({len(table[s].get(n, []))})"
        rows.append(row)
    print(markdown_table(rows))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--style", default="blobs", help="synthetic style of the pool (default blobs)")
    p.add_argument("--pool", type=int, default=40, help="images in the pool (default 40)")
    p.add_argument("--test", type=int, default=12, help="test images (default 12)")
    p.add_argument("--k", type=int, default=4, help="labels at the start and added per round (default 4)")
    p.add_argument("--rounds", type=int, default=3, help="rounds after the first training (default 3)")
    p.add_argument("--seeds", type=int, default=2, help="seeds (default 2)")
    p.add_argument("--first-seed", type=int, default=0,
                   help="the first seed (default 0): seeds run in separate processes combine with --replot")
    p.add_argument("--first", type=float, default=60, help="training from scratch, in --unit (default 60)")
    p.add_argument("--finetune", type=float, default=12, help="fine-tuning per round, in --unit (default 12)")
    p.add_argument("--strategies", default="random,entropy,entropy+diverse",
                   help=f"comma-separated, of {', '.join(STRATEGIES)}")
    p.add_argument("--unit", choices=("updates", "seconds"), default="updates",
                   help="what --first and --finetune count (default updates: on a shared machine a time budget buys "
                   "each strategy a different number of updates as the load moves, which is not a fair race)")
    p.add_argument("--size", type=int, default=64,
                   help="side of the square pool and test images in pixels (default 64: small, so that a loaded "
                   "2-core machine still makes its updates in minutes)")
    p.add_argument("--out", type=Path, default=Path("runs/active-learning"))
    p.add_argument("--plot", type=Path, default=Path("docs/images/active_learning.png"))
    p.add_argument("--replot", type=Path, metavar="LOG",
                   help="no training: rebuild the table and the plot from a run's printed output")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    strategies = args.strategies.split(",")
    for s in strategies:
        if s not in STRATEGIES:
            p.error(f"unknown strategy {s!r}; choose from {', '.join(STRATEGIES)}")
    if args.replot is not None:
        table = table_from_log(args.replot.read_text(), strategies)
        print(f"from {args.replot}: mean IU (%) on the test split, mean ± spread (runs)")
        print_table(table, strategies)
        plot(table, args.plot, f"{args.style}: {args.k} labels + {args.k} per round, {args.finetune:g} {args.unit} "
                               f"of fine-tuning per round")
        print(f"curves: {args.plot}")
        return
    print(f"{cpu_kind().describe()}; {torch.get_num_threads()} threads; load average at the start {load()}; "
          f"pool {args.pool} {args.style} images, test {args.test}, k={args.k}, {args.rounds} rounds, "
          f"{args.seeds} seeds, {args.first:g} {args.unit} from scratch then {args.finetune:g} per round; images "
          f"{args.size}x{args.size}, crops of the same size", flush=True)
    root = args.out / f"data-{args.style}-{args.size}"
    if not (root / "classes.txt").is_file():
        make_synthetic(root, num_train=args.pool, num_val=args.test, seed=0, style=args.style, image_format="png",
                       size=(args.size, args.size))
    pool = (root / "ImageSets" / "Segmentation" / "train.txt").read_text().split()
    val = (root / "ImageSets" / "Segmentation" / "val.txt").read_text().split()
    write_split(root, "tiny", val[:2])  # training's own validation: kept cheap, the test split scores the rounds
    table: dict[str, dict[int, list[float]]] = {s: {} for s in strategies}
    started = time.perf_counter()
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        rng = np.random.default_rng(seed)
        first = sorted(rng.choice(pool, size=args.k, replace=False).tolist())
        run = args.out / f"seed{seed}"
        checkpoint0 = train_round(root, write_split(root, f"al-s{seed}-r0", first), run / "r0", args.first, args.unit, seed, None, args.size)
        score0 = mean_iu(checkpoint0, root)
        print(f"seed {seed}: {args.k} labels, mean IU {100 * score0:.1f}% (load {load()})", flush=True)
        # rounds outer, strategies inner: a change in the machine's load hits every strategy alike
        state = {s: (list(first), checkpoint0, np.random.default_rng(1000 + seed)) for s in strategies}
        for strategy in strategies:
            table[strategy].setdefault(args.k, []).append(score0)
        for r in range(1, args.rounds + 1):
            for strategy in strategies:
                labelled, checkpoint, picker = state[strategy]
                candidates = [n for n in pool if n not in labelled]
                labelled = labelled + pick(strategy, checkpoint, root, candidates, args.k, picker)
                tag = strategy.replace("+", "-")
                split = write_split(root, f"al-s{seed}-{tag}-r{r}", labelled)
                checkpoint = train_round(root, split, run / f"{tag}-r{r}", args.finetune, args.unit, seed, checkpoint, args.size)
                state[strategy] = (labelled, checkpoint, picker)
                score = mean_iu(checkpoint, root)
                table[strategy].setdefault(len(labelled), []).append(score)
                print(f"seed {seed} {strategy:>16}: {len(labelled)} labels, mean IU {100 * score:.1f}% "
                      f"(load {load()})", flush=True)
    minutes = (time.perf_counter() - started) / 60
    print()
    print(f"mean IU (%) on {args.test} test images, mean ± spread over {args.seeds} seeds; {minutes:.1f} minutes; "
          f"load average at the end {load()}")
    print_table(table, strategies)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps({s: {str(n): v for n, v in t.items()} for s, t in table.items()},
                                                      indent=2) + "\n")
    plot(table, args.plot, f"{args.style}: {args.k} labels + {args.k} per round, {args.finetune:g} {args.unit} of fine-tuning per "
                           f"round, {args.seeds} seeds")
    print(f"curves: {args.plot}")


if __name__ == "__main__":
    main()
