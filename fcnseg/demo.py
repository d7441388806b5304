"""The built-in demo: synthetic data -> a small FCN-8s trained for four minutes on the CPU -> metrics, curves, panels."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from fcnseg.weights.checkpoint import load_model
from fcnseg.config import RunConfig, resolve_run_config
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


@dataclass
class DemoResult:
    out_dir: Path
    data_dir: Path
    metrics: dict  # the evaluation of the best checkpoint on the validation split
    table: str
    train: TrainResult


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
    extra: dict | None = None, time_budget: str = DEMO_TIME_BUDGET,
) -> RunConfig:
    """The small-cpu preset on the synthetic set for ``time_budget`` of training, or ``max_iter`` updates when
    given, in ``precision`` (auto: bf16 only where the CPU has it natively)."""
    if max_iter is not None:
        schedule = {"max_iter": max_iter, "time_budget": "", "val_every": max(1, max_iter // 5),
                    "checkpoint_every": max(1, max_iter // 5), "log_every": max(1, min(25, max_iter // 10))}
    else:
        schedule = {"time_budget": time_budget, "val_every": DEMO_VAL_EVERY, "checkpoint_every": DEMO_VAL_EVERY,
                    "log_every": 100}
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
) -> DemoResult:
    """Generate the synthetic set, train the small FCN-8s for ``time_budget`` (or ``max_iter`` updates when
    given), evaluate its best checkpoint, write the reports.

    Leaves in ``out_dir``: ``metrics.txt`` (the four metrics and per-class IU of the best
    checkpoint), ``eval.json``, ``curves.png``, ``panels.png``, ``metrics.csv``, ``train.log``,
    ``config.yaml`` and ``checkpoints/``.
    """
    out_dir = Path(out_dir)
    data_dir = Path(data_dir) if data_dir is not None else Path(DEMO_DATA.format(style=style))
    ensure_synthetic(data_dir, style, num_train, num_val)
    config = demo_config(data_dir, out_dir, style, max_iter, precision, extra, time_budget)
    result = train(config, progress=progress)
    checkpoint = result.best_checkpoint or result.last_checkpoint
    loaded = load_model(checkpoint).prepare(config.train.device, config.train.precision)
    val_set = build_dataset("synthetic", data_dir, config.data.val_split)
    metrics = evaluate(loaded, val_set, progress=progress)  # normalised as the model expects
    metrics["checkpoint"] = str(checkpoint)
    table = format_table(metrics, loaded.class_names)
    atomic_write_text(f"{checkpoint} on {data_dir} ({config.data.val_split}, {plural(len(val_set), 'image')})\n\n{table}\n",
                      out_dir / "metrics.txt")
    write_json(metrics, out_dir / "eval.json")
    return DemoResult(out_dir=out_dir, data_dir=data_dir, metrics=metrics, table=table, train=result)
