"""The built-in demo: synthetic data -> a small FCN-8s trained for four minutes on the CPU -> metrics, curves, panels.

A machine too slow (or too busy) to reach the target in four minutes trains on, up to a time cap, and the
demo says at the end how its updates compare with the README's and what to do when the model is undertrained.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fcnseg.weights.checkpoint import load_model
from fcnseg.config import RunConfig, parse_duration, resolve_run_config
from fcnseg.data import build_dataset, make_synthetic
from fcnseg.evaluation import evaluate
from fcnseg.files import plural, write_json
from fcnseg.metrics import format_table
from fcnseg.files import atomic_write_text
from fcnseg.training.trainer import TrainResult, train

log = logging.getLogger(__name__)

DEMO_OUT = "runs/demo"
DEMO_DATA = "data/synthetic-{style}"
# The small-cpu preset was tuned on the texture-classed "blobs"; the outline-classed "shapes" (colour
# and texture give nothing away) are its held-out check (benchmarks/preset_transfer.py).
DEMO_STYLE = "blobs"
DEMO_TRAIN_IMAGES = 400
DEMO_VAL_IMAGES = 50
# Minutes of training, not updates: the small-cpu preset's poly schedule runs over the clock, so a faster
# machine takes more updates in the same time and the demo ends on time on a slower one.
DEMO_TIME_BUDGET = "4m"
DEMO_VAL_EVERY = 500  # updates between validations (and checkpoints); and once at the end
# Validations by the clock as well, so that a slow machine's curves.png has points: 5 over each stretch of
# training (every 48 s of the 4-minute budget; every 132 s of the 11 minutes to the cap). Not more often: on a
# busy 2-core machine one validation (50 images, panels, curves) took 60-90 s of wall time, as long as the
# training between them, while a fast machine validates every 500 updates anyway (every ~52 s).
DEMO_VALIDATIONS = 5
# The target and the cap: a run whose best mean IU after the budget is below the target trains on (see run_demo)
# until two validations in a row reach it, or the cap is spent.
DEMO_TARGET_MEAN_IU = 0.90
DEMO_TARGET_VALIDATIONS = 2
DEMO_TIME_CAP = "15m"
# The README's figure for the demo on a quiet 2-core AMD EPYC with AVX2 kernels (float32): 2288 updates in
# 4 minutes, 73 images/s, 96.0% mean IU.
README_UPDATES = 2288
README_MINUTES = 4
README_IMAGES_PER_SECOND = 73


@dataclass
class DemoResult:
    out_dir: Path
    data_dir: Path
    metrics: dict  # the evaluation of the best checkpoint on the validation split
    table: str
    train: TrainResult  # the last training run (the extension's, when there was one)
    updates: int = 0  # parameter updates of the whole demo
    train_minutes: float = 0.0  # wall time of the training loops (validations included)
    images_per_second: float = 0.0  # training images over that time, as the README counts them
    target_mean_iu: float = 0.0  # 0: no target (a --max-iter run)
    extended: bool = False  # trained past the budget because the target was not reached


def validation_interval(seconds: float) -> str:
    """``train.val_every_time`` for a stretch of ``seconds`` of training: ``DEMO_VALIDATIONS`` over it."""
    return f"{seconds / DEMO_VALIDATIONS:g}s"


def ensure_synthetic(root: Path, style: str, num_train: int, num_val: int, seed: int = 0) -> Path:
    """Write the synthetic set to ``root`` unless a set with the same settings is already there."""
    settings_file = root / "synthetic.json"
    if settings_file.is_file():
        found = json.loads(settings_file.read_text())
        wanted = {"style": style, "seed": seed, "num_train": num_train, "num_val": num_val}
        if all(found.get(k) == v for k, v in wanted.items()):
            log.info("using the synthetic data set in %s", root)
            return root
    log.info("writing %d + %d synthetic '%s' images to %s", num_train, num_val, style, root)
    make_synthetic(root, num_train=num_train, num_val=num_val, seed=seed, style=style)
    return root


def demo_config(
    data_dir: Path, out_dir: Path, style: str, max_iter: int | None = None, precision: str = "auto",
    extra: dict | None = None, time_budget: str = DEMO_TIME_BUDGET, val_every_time: str | None = None,
) -> RunConfig:
    """The small-cpu preset on the synthetic set for ``time_budget`` of training, or ``max_iter`` updates when
    given, in ``precision`` (auto: bf16 only where the CPU has it natively); on a budget it also validates
    every ``val_every_time`` of training (default: :func:`validation_interval` of the budget)."""
    if max_iter is not None:
        schedule = {"max_iter": max_iter, "time_budget": "", "val_every": max(1, max_iter // 5),
                    "checkpoint_every": max(1, max_iter // 5), "log_every": max(1, min(25, max_iter // 10))}
    else:
        budget = parse_duration(time_budget, "--time-budget")
        every = val_every_time or (validation_interval(budget) if budget else "")
        schedule = {"time_budget": time_budget, "val_every": DEMO_VAL_EVERY, "checkpoint_every": DEMO_VAL_EVERY,
                    "log_every": 100, "val_every_time": every}
    overrides = {
        "preset": "small-cpu",
        "model": {"arch": "fcn8s", "backbone": "small", "num_classes": 6},
        "data": {"dataset": "synthetic", "root": str(data_dir), "synthetic_style": style},
        "train": {"out_dir": str(out_dir), "precision": precision, **schedule},
    }
    for section, values in (extra or {}).items():
        overrides.setdefault(section, {}).update(values)
    return resolve_run_config(overrides=overrides)


def run_demo(
    out_dir: str | Path = DEMO_OUT,
    data_dir: str | Path | None = None,
    style: str = DEMO_STYLE,
    max_iter: int | None = None,
    num_train: int = DEMO_TRAIN_IMAGES,
    num_val: int = DEMO_VAL_IMAGES,
    precision: str = "auto",
    progress: bool = True,
    extra: dict | None = None,
    time_budget: str = DEMO_TIME_BUDGET,
    time_cap: str = DEMO_TIME_CAP,
    target_mean_iu: float = DEMO_TARGET_MEAN_IU,
    clock: Callable[[], float] = time.perf_counter,
) -> DemoResult:
    """Generate the synthetic set, train the small FCN-8s for ``time_budget`` (or ``max_iter`` updates when
    given), evaluate its best checkpoint, write the reports.

    On a budget, a run whose best validation after ``time_budget`` is below ``target_mean_iu`` trains on from
    its ``last.pt`` with ``time_cap`` as its budget, and stops once ``DEMO_TARGET_VALIDATIONS`` validations in a
    row reach the target, or when the cap is spent. The poly schedule then runs over the cap from the time
    already spent: a warm restart at ``(1 - budget / cap) ** 0.9`` of the base learning rate (0.76 for 4 of
    15 minutes), falling to 0 at the cap. A machine fast enough for the target in ``time_budget`` trains
    exactly as it would without a cap; ``time_cap`` no longer than ``time_budget`` (or a 0 target) turns the
    extension off. ``clock`` measures the training time (tests pass a fake one).

    Leaves in ``out_dir``: ``metrics.txt`` (the four metrics and per-class IU of the best
    checkpoint), ``eval.json``, ``curves.png``, ``panels.png``, ``metrics.csv``, ``train.log``,
    ``config.yaml`` and ``checkpoints/``.
    """
    out_dir = Path(out_dir)
    data_dir = Path(data_dir) if data_dir is not None else Path(DEMO_DATA.format(style=style))
    ensure_synthetic(data_dir, style, num_train, num_val)
    config = demo_config(data_dir, out_dir, style, max_iter, precision, extra, time_budget)
    result = train(config, progress=progress, clock=clock)
    runs = [result]
    best = max((r["mean_iu"] for r in result.history if math.isfinite(r["mean_iu"])), default=0.0)
    cap = parse_duration(time_cap, "--time-cap") if time_cap else None
    budget = config.train.time_budget_seconds
    extend = (max_iter is None and target_mean_iu > 0 and cap is not None and budget is not None and cap > budget
              and best < target_mean_iu)
    if extend:
        log.info("best mean IU %.1f%% after %d updates is below the %.0f%% target: training on for up to %s in all "
                 "(the poly schedule restarts over %s), stopping once %d validations in a row reach %.0f%%",
                 100 * best, result.iteration, 100 * target_mean_iu, time_cap, time_cap, DEMO_TARGET_VALIDATIONS,
                 100 * target_mean_iu)
        target = {"target_mean_iu": target_mean_iu, "target_validations": DEMO_TARGET_VALIDATIONS}
        extended_extra = {**(extra or {}), "train": {**(extra or {}).get("train", {}), **target}}
        config = demo_config(data_dir, out_dir, style, None, precision, extended_extra, time_cap,
                             val_every_time=validation_interval(cap - budget))
        result = train(config, resume=result.last_checkpoint, progress=progress, clock=clock)
        runs.append(result)
    checkpoint = result.best_checkpoint or result.last_checkpoint
    loaded = load_model(checkpoint).prepare(config.train.device, config.train.precision)
    val_set = build_dataset("synthetic", data_dir, config.data.val_split)
    metrics = evaluate(loaded, val_set, progress=progress)  # normalised as the model expects
    metrics["checkpoint"] = str(checkpoint)
    table = format_table(metrics, loaded.class_names)
    atomic_write_text(f"{checkpoint} on {data_dir} ({config.data.val_split}, {plural(len(val_set), 'image')})\n\n{table}\n",
                      out_dir / "metrics.txt")
    write_json(metrics, out_dir / "eval.json")
    seconds = sum(r.seconds for r in runs)
    images = result.iteration * config.train.batch_size * config.train.iter_size
    return DemoResult(out_dir=out_dir, data_dir=data_dir, metrics=metrics, table=table, train=result,
                      updates=result.iteration, train_minutes=seconds / 60,
                      images_per_second=images / max(seconds, 1e-9),
                      target_mean_iu=target_mean_iu if max_iter is None else 0.0, extended=extend)


def summary_lines(result: DemoResult) -> list[str]:
    """What the demo prints at the end: its mean IU and updates against the README's figure, and, below the
    target, that the model is undertrained on this machine, why, and what to do."""
    mean_iu = result.metrics["mean_iu"]
    lines = [
        f"mean IU {100 * mean_iu:.1f}% after {result.updates} updates in {result.train_minutes:.1f} min "
        f"({result.images_per_second:.1f} images/s); the README's quiet 2-core AVX2 machine: {README_UPDATES} "
        f"updates in {README_MINUTES} min ({README_IMAGES_PER_SECOND} images/s)",
    ]
    if not result.target_mean_iu or mean_iu >= result.target_mean_iu:
        return lines
    per_minute = result.updates / max(result.train_minutes, 1e-9)
    minutes = 5 * math.ceil(README_UPDATES / max(per_minute, 1e-9) / 5)
    minutes = max(parse_duration(DEMO_TIME_CAP) / 60, minutes)
    suggestion = f"{minutes:.0f}m" if minutes < 120 else f"{math.ceil(minutes / 60):.0f}h"
    lines.append(
        f"undertrained on this machine: mean IU {100 * mean_iu:.1f}% is below the {100 * result.target_mean_iu:.0f}% "
        f"target because it made {result.updates} updates ({per_minute:.0f} a minute) where the README's figure "
        f"needs ~{README_UPDATES} (a slower or busy CPU: see `uptime`). Train longer, on a quiet machine: "
        f"fcnseg demo --time-budget {suggestion}")
    return lines
