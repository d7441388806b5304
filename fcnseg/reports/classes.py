"""Per-class IU pictures: sorted bars with each class's pixel frequency, and per-class IU over training.

Both are for the evaluation report and for the training run folder (``per_class_iu.png`` after
each validation); they take plain lists, so any caller with a metrics dict can draw them.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from fcnseg.reports.figures import label_font_size, pyplot, save_png

LINES_MAX_CLASSES = 12  # more classes than this are drawn as a heatmap over time, not as lines


def _value(v) -> float:
    return math.nan if v is None else float(v)


def class_order(per_class_iu: list) -> list[int]:
    """Class indices from the lowest IU to the highest, classes without an IU (None or NaN) last."""
    values = [_value(v) for v in per_class_iu]
    return sorted(range(len(values)), key=lambda i: (math.isnan(values[i]), values[i] if not math.isnan(values[i]) else 0, i))


def plot_class_iu(
    per_class_iu: list,
    class_names: list[str],
    path: str | Path,
    *,
    pixel_counts=None,
    mean_iu: float | None = None,
    title: str = "",
) -> dict:
    """Horizontal bars of each class's IU, lowest at the top, beside the share of pixels each class holds.

    Args:
        per_class_iu: ``n`` floats in 0..1, None (or NaN) where undefined (class absent from ground
            truth and prediction), e.g. ``result["per_class_iu"]``.
        class_names: ``n`` names.
        path: the PNG to write.
        pixel_counts: ground-truth pixels per class (``n`` ints, e.g. the row sums of
            ``result["confusion"]``); adds the frequency panel.
        mean_iu: drawn as a dashed line (default: the NaN-aware mean of ``per_class_iu``).
    Returns:
        dict with ``order`` (class indices top to bottom), ``width`` and ``height`` (pixels).
    """
    n = len(per_class_iu)
    if len(class_names) != n:
        raise ValueError(f"{len(class_names)} class names for {n} per-class IUs")
    order = class_order(per_class_iu)
    values = np.array([_value(per_class_iu[i]) for i in order]) * 100
    names = [str(class_names[i]) for i in order]
    if mean_iu is None:
        finite = values[np.isfinite(values)]
        mean_iu = float(finite.mean()) / 100 if finite.size else math.nan
    font = label_font_size(n)
    plt = pyplot()
    height = 1.2 + max(n, 3) * (0.24 if n > 20 else 0.32)
    with_freq = pixel_counts is not None
    fig, axes = plt.subplots(
        1, 2 if with_freq else 1, figsize=(10 if with_freq else 7.5, height), sharey=True, squeeze=False,
        gridspec_kw={"width_ratios": [3, 1.2]} if with_freq else None,
    )
    ax = axes[0, 0]
    y = np.arange(n)
    colours = plt.get_cmap("RdYlGn")(np.nan_to_num(values, nan=0.0) / 100 * 0.85 + 0.075)
    ax.barh(y, np.nan_to_num(values, nan=0.0), color=colours, edgecolor="#555555", linewidth=0.4, height=0.75)
    for yi, v in zip(y, values):
        ax.text(v + 1 if np.isfinite(v) else 1, yi, f"{v:.1f}" if np.isfinite(v) else "n/a (absent)",
                va="center", fontsize=font, color="#222222" if np.isfinite(v) else "#888888")
    if mean_iu is not None and math.isfinite(mean_iu):
        ax.axvline(100 * mean_iu, color="#333333", linestyle="--", linewidth=1)
        ax.text(100 * mean_iu, -0.75, f" mean IU {100 * mean_iu:.1f}", fontsize=8.5, va="bottom", ha="left")
    ax.set_yticks(y, names, fontsize=font)
    ax.set_ylim(n - 0.5, -1.4)  # lowest IU on top; room above for the mean label
    ax.set_xlim(0, 112)
    ax.set_xlabel("IU (%)")
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    if with_freq:
        counts = np.asarray(pixel_counts, dtype=np.float64)
        share = 100 * counts / counts.sum() if counts.sum() > 0 else np.zeros(n)
        share = share[order]
        fx = axes[0, 1]
        fx.barh(y, share, color="#9ecae1", edgecolor="#4a6f8a", linewidth=0.4, height=0.75)
        top = max(float(share.max()), 1e-9)
        for yi, s in zip(y, share):
            fx.text(s + top * 0.03, yi, f"{s:.1f}%" if s >= 0.1 or s == 0 else "<0.1%", va="center", fontsize=font)
        fx.set_xlim(0, top * 1.45)
        fx.set_xlabel("ground-truth pixels (%)")
        fx.grid(axis="x", alpha=0.3)
        fx.set_axisbelow(True)
        fx.tick_params(axis="y", length=0)
    fig.suptitle(title or "per-class IU, lowest first", fontsize=11)
    fig.tight_layout()
    width, height_px = save_png(fig, path)
    return {"order": order, "width": width, "height": height_px}


def plot_class_iu_history(history: list[dict], class_names: list[str], path: str | Path, title: str = "") -> dict:
    """Per-class validation IU against the iteration, for a training run.

    Up to :data:`LINES_MAX_CLASSES` classes as one line each beside the mean IU; more as a heatmap
    (a row per class, lowest final IU on top, a column per validation), which stays readable at 60.

    Args:
        history: the validation records in order, each a dict with ``iteration`` (int) and
            ``per_class_iu`` (``n`` floats or None), e.g. the trainer's history.
        class_names: ``n`` names.
        path: the PNG to write.
    Returns:
        dict with ``kind`` (``"lines"`` or ``"heatmap"``), ``width`` and ``height`` (pixels).
    """
    n = len(class_names)
    records = [r for r in history if r.get("per_class_iu") is not None]
    iterations = [int(r["iteration"]) for r in records]
    table = np.array([[_value(v) for v in r["per_class_iu"]] for r in records], dtype=np.float64).reshape(-1, n) * 100
    plt = pyplot()
    if n <= LINES_MAX_CLASSES:
        kind = "lines"
        fig, ax = plt.subplots(figsize=(9, 4.8))
        cmap = plt.get_cmap("tab20" if n > 10 else "tab10")
        for c in range(n):
            ax.plot(iterations, table[:, c], marker="o", markersize=3, linewidth=1.3, color=cmap(c), label=class_names[c])
        if len(records):
            with np.errstate(all="ignore"):
                mean = np.array([np.nanmean(row) if np.isfinite(row).any() else np.nan for row in table])
            ax.plot(iterations, mean, color="black", linewidth=2.4, label="mean IU")
        ax.set_xlabel("iteration")
        ax.set_ylabel("validation IU (%)")
        ax.set_ylim(0, 100)
        ax.set_xlim(left=0)
        ax.grid(alpha=0.3)
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, frameon=False)
    else:
        kind = "heatmap"
        final = table[-1] if len(records) else np.full(n, np.nan)
        order = class_order(list(final))
        fig, ax = plt.subplots(figsize=(max(6.0, 2.8 + 0.35 * len(records)), 1.4 + 0.2 * n))
        cmap = plt.get_cmap("RdYlGn").with_extremes(bad="#d9d9d9")
        image = ax.imshow(np.ma.masked_invalid(table[:, order].T), cmap=cmap, vmin=0, vmax=100, aspect="auto",
                          interpolation="nearest")
        ax.set_yticks(np.arange(n), [class_names[i] for i in order], fontsize=label_font_size(n))
        step = max(1, len(records) // 12)
        ax.set_xticks(np.arange(0, len(records), step), [str(iterations[i]) for i in range(0, len(records), step)],
                      fontsize=8, rotation=45)
        ax.set_xlabel("iteration")
        fig.colorbar(image, ax=ax, fraction=0.04, pad=0.02).set_label("validation IU (%)")
    ax.set_title(title or "per-class validation IU over training", fontsize=11)
    fig.tight_layout()
    width, height = save_png(fig, path)
    return {"kind": kind, "width": width, "height": height}
