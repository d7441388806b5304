"""The run folder's outputs: train.log, config.yaml, losses and metrics CSV/JSON, curves, panels, TensorBoard, best.pt.

One :class:`Reporter` per run writes them all, on rank 0; on the other processes it does nothing.
It creates the folder only once the run is set up, so a run that fails on its settings, weights or
data leaves nothing behind.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from fcnseg.config import RunConfig
from fcnseg.files import (
    atomic_write_bytes,
    atomic_write_text,
    plural,
    sweep_temp_files,
    write_json,
)
from fcnseg.metrics import format_table
from fcnseg.training import figures
from fcnseg.reports.classes import plot_class_iu, plot_class_iu_history
from fcnseg.training.state import BEST, CHECKPOINTS, RunState

log = logging.getLogger(__name__)

METRIC_KEYS = ("pixel_accuracy", "mean_accuracy", "mean_iu", "frequency_weighted_iu")
PANELS = "panels"


class Reporter:
    """Writes a run's outputs into ``out_dir`` (when ``enabled``: rank 0).

    From construction on it holds the ``fcnseg`` log records, so that :meth:`start`, which creates
    the folder, can put the log of the setup into ``train.log`` too.
    """

    def __init__(self, out_dir: str | Path, enabled: bool = True) -> None:
        self.out_dir = Path(out_dir)
        self.checkpoints = self.out_dir / CHECKPOINTS
        self.enabled = enabled
        self.config: RunConfig | None = None
        self.class_names: list[str] = []
        self.tensorboard: TensorBoardLog | None = None
        self._file_log: logging.Handler | None = None
        self._held: _HeldRecords | None = None
        self._bar = None
        self._mark = (time.perf_counter(), 0)  # (time, iteration) of the last log line, for the speed
        if enabled:
            logger = logging.getLogger("fcnseg")
            if logger.getEffectiveLevel() > logging.INFO:
                logger.setLevel(logging.INFO)
            self._held = _HeldRecords()
            logger.addHandler(self._held)

    # -- the run folder --

    def start(self, config: RunConfig, class_names: list[str]) -> None:
        """Create the folder, remove temp files a killed run left, open train.log and TensorBoard, write config.yaml."""
        self.config, self.class_names = config, list(class_names)
        if not self.enabled:
            return
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        for folder in (self.out_dir, self.checkpoints, self.out_dir / PANELS):  # our own folders only, not below
            for stale in sweep_temp_files(folder):
                log.info("removed %s, left by a run killed while writing it", stale)
        handler = logging.FileHandler(self.out_dir / "train.log")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S"))
        for record in self._held.records if self._held else []:
            handler.handle(record)
        self._release_held()
        logging.getLogger("fcnseg").addHandler(handler)
        self._file_log = handler
        text = "# Resolved settings of this run; re-run it with: fcnseg train --config <this file>\n"
        text += yaml.safe_dump(config.to_dict(), sort_keys=False)
        atomic_write_text(text, self.out_dir / "config.yaml")
        self.tensorboard = TensorBoardLog(self.out_dir / "tensorboard")

    def close(self) -> None:
        self.close_progress()
        self._release_held()
        if self.tensorboard:
            self.tensorboard.close()
        if self._file_log is not None:
            logging.getLogger("fcnseg").removeHandler(self._file_log)
            self._file_log.close()
            self._file_log = None

    def _release_held(self) -> None:
        if self._held is not None:
            logging.getLogger("fcnseg").removeHandler(self._held)
            self._held = None

    # -- during the run --

    def open_progress(self, total: int | None, initial: int, show: bool = True) -> None:
        """Start timing the updates from ``initial`` on, with a progress bar up to ``total`` (None: a count) if
        ``show`` (rank 0)."""
        self._mark = (time.perf_counter(), initial)
        if self.enabled and show:
            from fcnseg.progress import progress_bar

            self._bar = progress_bar(total=total, initial=initial, desc="train", unit="it", dynamic_ncols=True, smoothing=0.1)

    def close_progress(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def update(self, state: RunState, images_per_update: int, log_now: bool) -> None:
        """After each update: the bar; when ``log_now``, a log line and TensorBoard scalars (mean loss since the last line)."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.set_postfix(loss=f"{state.losses[-1]:.4g}", lr=f"{state.lrs[-1]:.2g}", refresh=False)
            self._bar.update(1)
        if not log_now:
            return
        now = time.perf_counter()
        speed = (state.iteration - self._mark[1]) * images_per_update / max(now - self._mark[0], 1e-9)
        recent = float(np.mean(state.losses[-self.config.train.log_every :]))
        self._mark = (now, state.iteration)
        t = self.config.train
        budget = t.time_budget_seconds
        goal = f"{state.train_seconds / 60:.1f}/{budget / 60:.1f} min" if budget else f"/{t.max_iter}"
        log.info("iteration %d%s  loss %.4g  lr %.3g  %.1f images/s", state.iteration,
                 f" ({goal})" if budget else goal, recent, state.lrs[-1], speed)
        if self.tensorboard:
            self.tensorboard.scalar("train/loss", recent, state.iteration)
            self.tensorboard.scalar("train/lr", state.lrs[-1], state.iteration)
            self.tensorboard.scalar("train/images_per_second", speed, state.iteration)

    def validation(
        self, record: dict, state: RunState, panels: list[dict], palette, save_best: Callable[[Path, dict], None]
    ) -> None:
        """Log a validation, keep it as ``best.pt`` if its mean IU is the best yet, draw its panels, rewrite the reports."""
        if not self.enabled:
            return
        state.history.append(record)
        heads = record.get("head_mean_iu", {})
        per_head = "".join(f", {name} mean IU {100 * miu:.2f}" for name, miu in heads.items())
        log.info(f"validation at iteration {state.iteration}: mean IU {100 * record['mean_iu']:.2f}, pixel acc. "
                 f"{100 * record['pixel_accuracy']:.2f}, mean acc. {100 * record['mean_accuracy']:.2f}, "
                 f"f.w. IU {100 * record['frequency_weighted_iu']:.2f}{per_head}")
        if record.get("warning"):
            log.warning("validation at iteration %d: %s", state.iteration, record["warning"])
        if self.tensorboard:
            for key in METRIC_KEYS:
                self.tensorboard.scalar(f"val/{key}", record[key], state.iteration)
            for name, miu in heads.items():
                self.tensorboard.scalar(f"val/mean_iu_{name}", miu, state.iteration)
        mean_iu = record["mean_iu"] if math.isfinite(record["mean_iu"]) else -math.inf
        if mean_iu > state.best_mean_iu:
            state.best_mean_iu = mean_iu
            save_best(self.checkpoints / BEST, {"metrics": {k: record[k] for k in METRIC_KEYS}})
        plot_class_iu(record["per_class_iu"], self.class_names, self.out_dir / "per_class_iu.png",
                      pixel_counts=record.get("class_pixels") or None, mean_iu=record["mean_iu"],
                      title=f"validation at iteration {state.iteration}")
        if panels:
            path = self.out_dir / PANELS / f"iter_{state.iteration:07d}.png"
            figures.draw_panels(panels, palette, path, self.class_names)
            atomic_write_bytes(path.read_bytes(), self.out_dir / "panels.png")
        self.write_reports(state)

    def write_reports(self, state: RunState) -> None:
        """``losses.csv``, ``metrics.csv``/``.json`` (once there is a validation) and ``curves.png``."""
        if not self.enabled:
            return
        write_loss_csv(state.losses, state.lrs, self.out_dir / "losses.csv")
        if state.history:
            write_validation_history(state.history, self.out_dir, self.class_names)
        c = self.config
        figures.plot_curves(state.losses, state.history, self.out_dir / "curves.png",
                            f"{c.model.arch} ({c.model.backbone}) on {c.data.dataset}")
        if c.train.per_class_curves and state.history:
            plot_class_iu_history(state.history, self.class_names, self.out_dir / "per_class_curves.png",
                                  f"{c.model.arch} ({c.model.backbone}) on {c.data.dataset}")

    def log_start(self, train_images: int, val_images: int, world_size: int, device: torch.device, precision: str,
                  trainable: int) -> None:
        """Two log lines: what is trained on what, and the recipe."""
        if not self.enabled:
            return
        c, t = self.config, self.config.train
        log.info(
            "training %s (%s backbone, %s) on %s %s: %d train / %s, %s on %s, precision %s",
            c.model.arch, c.model.backbone, plural(c.model.num_classes, "class", "classes"), c.data.dataset,
            c.data.root or "(in memory)", train_images, plural(val_images, "val image"),
            plural(world_size, "process", "processes"), device, precision,
        )
        log.info(
            "%s lr %g (%s), momentum %g, weight decay %g, %s per update (%d x %s x %s), "
            "%s %s loss%s, %d trainable parameters, %s; outputs in %s",
            t.optimizer, t.lr, t.lr_policy, t.momentum, t.weight_decay, plural(t.batch_size * t.iter_size * world_size, "image"),
            t.batch_size, plural(t.iter_size, "pass", "passes"), plural(world_size, "process", "processes"), "normalised" if t.normalize_loss else "summed", t.loss,
            "" if t.class_weights == "none" else f" with class weights ({t.class_weights if isinstance(t.class_weights, str) else 'given'})",
            trainable,
            f"{t.time_budget} of training" if t.time_budget else plural(t.max_iter, "update"), self.out_dir,
        )

    def finish(self, state: RunState, final: dict | None, updates: int, seconds: float, speed: float) -> None:
        """The closing outputs: ``metrics.txt`` when the run ended on a validation (else the reports), and a last log line."""
        if not self.enabled:
            return
        if final is None:  # otherwise the last validation has just written them
            self.write_reports(state)
        else:
            table = format_table(final, self.class_names)
            heads = final.get("head_mean_iu", {})
            if heads:  # the table is the first head's; metrics.json has every head's in full
                table += "\n\nmean IU per head: " + ", ".join(f"{name} {100 * miu:.2f}" for name, miu in heads.items())
            if final.get("warning"):
                table += f"\n\nwarning: {final['warning']}"
            atomic_write_text(table + "\n", self.out_dir / "metrics.txt")
            # Into train.log only: the console has had the validation's line, and `fcnseg train` prints metrics.txt.
            self._to_file_log(logging.INFO, "validation at iteration %d:\n%s", state.iteration, table)
        log.info("done: %s in %.0f s (%.1f images/s); outputs in %s", plural(updates, "update"), seconds, speed, self.out_dir)


    def _to_file_log(self, level: int, message: str, *args) -> None:
        """A record for ``train.log`` alone (not the console)."""
        if self._file_log is not None:
            self._file_log.handle(log.makeRecord(log.name, level, __file__, 0, message, args, None))


class _HeldRecords(logging.Handler):
    """Keeps log records until the run folder, and so train.log, exists."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


# --- the file formats ----------------------------------------------------------------------------------


def write_validation_history(history: list[dict], out_dir: str | Path, class_names: list[str]) -> None:
    """``metrics.csv`` (one row per validation: iteration, train loss, lr, the four metrics, per-class IU; a
    net of several heads adds each head's mean IU, ``mean_iu_<head>``) and ``metrics.json`` (the same
    records in full, plus the best one: by the first head's mean IU)."""
    out_dir = Path(out_dir)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    heads = list(history[0].get("head_mean_iu", {})) if history else []
    writer.writerow(["iteration", "epoch", "train_loss", "lr", *METRIC_KEYS, *(f"mean_iu_{h}" for h in heads),
                     *(f"iu_{name}" for name in class_names)])
    for record in history:
        per_class = record.get("per_class_iu") or [None] * len(class_names)
        writer.writerow(
            [
                record["iteration"],
                f"{record.get('epoch', 0):.3f}",
                _fmt(record.get("train_loss")),
                _fmt(record.get("lr")),
                *(_fmt(record.get(k)) for k in METRIC_KEYS),
                *(_fmt(record.get("head_mean_iu", {}).get(h)) for h in heads),
                *(_fmt(v) for v in per_class),
            ]
        )
    atomic_write_text(buffer.getvalue(), out_dir / "metrics.csv")
    best = max(history, key=lambda r: figures.finite_or_low(r.get("mean_iu")), default=None)
    write_json({"class_names": class_names, "validations": history, "best": best}, out_dir / "metrics.json")


def write_loss_csv(losses: list[float], lrs: list[float], path: str | Path) -> None:
    """``losses.csv``: the training loss and base learning rate of every update (1-based iteration)."""
    lines = ["iteration,loss,lr"]
    lines += [f"{i},{_fmt(loss)},{_fmt(lr)}" for i, (loss, lr) in enumerate(zip(losses, lrs), start=1)]
    atomic_write_text("\n".join(lines) + "\n", path)


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


class TensorBoardLog:
    """Scalars to TensorBoard event files when the ``tensorboard`` package is installed; silent otherwise."""

    def __init__(self, log_dir: str | Path) -> None:
        self.writer = None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            log.debug("tensorboard is not installed; no event files written")
            return
        self.writer = SummaryWriter(str(log_dir))

    def scalar(self, tag: str, value: float, step: int) -> None:
        if self.writer is not None and value is not None and math.isfinite(value):
            self.writer.add_scalar(tag, value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
