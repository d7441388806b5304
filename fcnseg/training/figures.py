"""The pictures of a training run: loss and mean IU curves, and image | ground truth | prediction panels."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

from fcnseg.data.palette import colorize
from fcnseg.files import atomic_write_bytes


def finite_or_low(value) -> float:
    """``value`` if it is a finite float, else minus infinity (a NaN mean IU never counts as the best)."""
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
    points = [(r["iteration"], r["mean_iu"]) for r in history if finite_or_low(r.get("mean_iu")) > -math.inf]
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
