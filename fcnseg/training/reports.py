"""What a person reads after (and during) training: CSV/JSON metrics, the curves plot, prediction panels, TensorBoard."""

from __future__ import annotations

import csv
import io
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from fcnseg.files import atomic_write_bytes, atomic_write_text, write_json
from fcnseg.data.palette import colorize

log = logging.getLogger(__name__)

METRIC_KEYS = ("pixel_accuracy", "mean_accuracy", "mean_iu", "frequency_weighted_iu")


def write_validation_history(history: list[dict], out_dir: str | Path, class_names: list[str]) -> None:
    """``metrics.csv`` (one row per validation: iteration, train loss, lr, the four metrics, per-class IU)
    and ``metrics.json`` (the same records in full, plus the best one)."""
    out_dir = Path(out_dir)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["iteration", "epoch", "train_loss", "lr", *METRIC_KEYS, *(f"iu_{name}" for name in class_names)])
    for record in history:
        per_class = record.get("per_class_iu") or [None] * len(class_names)
        writer.writerow(
            [
                record["iteration"],
                f"{record.get('epoch', 0):.3f}",
                _fmt(record.get("train_loss")),
                _fmt(record.get("lr")),
                *(_fmt(record.get(k)) for k in METRIC_KEYS),
                *(_fmt(v) for v in per_class),
            ]
        )
    atomic_write_text(buffer.getvalue(), out_dir / "metrics.csv")
    best = max(history, key=lambda r: _nan_low(r.get("mean_iu")), default=None)
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


def _nan_low(value: Any) -> float:
    return value if isinstance(value, float) and math.isfinite(value) else -math.inf


def smooth(values: list[float], window: int) -> np.ndarray:
    """Running mean over the last ``window`` values (shorter at the start)."""
    x = np.asarray(values, dtype=np.float64)
    if len(x) == 0 or window <= 1:
        return x
    c = np.cumsum(np.insert(x, 0, 0.0))
    idx = np.arange(1, len(x) + 1)
    lo = np.maximum(0, idx - window)
    return (c[idx] - c[lo]) / (idx - lo)


def plot_curves(losses: list[float], history: list[dict], path: str | Path, title: str = "") -> None:
    """PNG with two panels: training loss per update (raw and smoothed), and validation mean IU."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_iu) = plt.subplots(1, 2, figsize=(11, 4))
    iterations = np.arange(1, len(losses) + 1)
    if len(losses):
        ax_loss.plot(iterations, losses, color="tab:blue", alpha=0.25, linewidth=0.8, label="per update")
        ax_loss.plot(iterations, smooth(losses, max(1, len(losses) // 50)), color="tab:blue", label="smoothed")
        finite = [v for v in losses if math.isfinite(v)]
        if finite and min(finite) > 0 and max(finite) / min(finite) > 50:
            ax_loss.set_yscale("log")
        ax_loss.legend()
    ax_loss.set_xlabel("iteration")
    ax_loss.set_ylabel("training loss")
    ax_loss.grid(alpha=0.3)
    points = [(r["iteration"], r["mean_iu"]) for r in history if _nan_low(r.get("mean_iu")) > -math.inf]
    if points:
        xs, ys = zip(*points)
        ax_iu.plot(xs, [100 * y for y in ys], marker="o", color="tab:green")
        best = max(points, key=lambda p: p[1])
        ax_iu.annotate(f"best {100 * best[1]:.1f}", best[0:1] + (100 * best[1],), textcoords="offset points", xytext=(0, 8), ha="center")
    ax_iu.set_xlabel("iteration")
    ax_iu.set_ylabel("validation mean IU (%)")
    ax_iu.set_xlim(left=0)
    ax_iu.margins(y=0.15)  # room for the "best" label
    ax_iu.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    atomic_write_bytes(buffer.getvalue(), path)


def draw_panels(
    items: list[dict], palette: np.ndarray, path: str | Path, class_names: list[str] | None = None
) -> None:
    """PNG with one row per item: image | ground truth | prediction, and a colour legend of the classes.

    Args:
        items: dicts with ``name``, ``image`` (RGB uint8 ``[H, W, 3]``), ``mask`` and ``prediction``
            (int ``[H, W]``; 255 in the mask is drawn in the ignore colour).
        palette: uint8 ``[256, 3]`` colours.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    rows = max(1, len(items))
    fig, axes = plt.subplots(rows, 3, figsize=(9, 3 * rows), squeeze=False)
    for row, item in zip(axes, items):
        panels = (item["image"], colorize(item["mask"], palette), colorize(item["prediction"], palette))
        for ax, picture, label in zip(row, panels, ("image", "ground truth", "prediction")):
            ax.imshow(picture)
            ax.set_title(f"{item['name']}: {label}" if label == "image" else label, fontsize=9)
            ax.axis("off")
    if class_names:
        handles = [Patch(color=np.asarray(palette[i]) / 255.0, label=name) for i, name in enumerate(class_names)]
        fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 7), fontsize=8, frameon=False)
        fig.tight_layout(rect=(0, 0.06 if rows < 3 else 0.03, 1, 1))
    else:
        fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    atomic_write_bytes(buffer.getvalue(), path)


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
