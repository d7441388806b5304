"""The confusion heatmap: rows = ground truth, columns = prediction, each row normalised to sum to 1.

Readable from 2 to 60+ classes: the figure grows with the class count, the tick labels shrink to
fit a cell, and cell values are printed only while the cells are large enough to hold them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fcnseg.reports.figures import label_font_size, pyplot, save_png

ANNOTATE_MAX_CLASSES = 25  # beyond this a cell is too small to print a number in
DPI = 100


def normalised_confusion(counts) -> np.ndarray:
    """float64 ``[n, n]``: ``counts[i, j] / sum_j counts[i, j]``, the fraction of class i's pixels predicted as j.

    A row is NaN where class i has no ground-truth pixel (nothing to normalise; drawn grey).

    Args:
        counts: int ``[n, n]``, ``counts[truth, prediction]`` (e.g. ``result["confusion"]``).
    """
    hist = np.asarray(counts, dtype=np.float64)
    rows = hist.sum(1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(rows > 0, hist / rows, np.nan)


def layout(num_classes: int, longest_name: int) -> dict:
    """Sizes (inches, points) for an ``n``-class heatmap: cell, label font, margins, whether to print values."""
    cell = max(0.22, min(0.6, 7.0 / num_classes))  # inches; 0.22 in = 22 px at 100 dpi holds a 6.5 pt label
    font = label_font_size(num_classes)
    label_inches = 0.25 + min(longest_name, 24) * font * 0.62 / 72  # names longer than 24 characters are cut
    return {
        "cell": cell,
        "font_size": font,
        "label_inches": label_inches,
        "annotate": num_classes <= ANNOTATE_MAX_CLASSES,
        "value_font_size": min(10.0, cell * 72 * 0.36),  # "100" fits in 0.9 of a cell
    }


def _short(name: str, limit: int = 24) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "\u2026"


def plot_confusion(counts, class_names: list[str], path: str | Path, title: str = "") -> dict:
    """Draw the row-normalised confusion matrix of ``counts`` as a PNG heatmap with class names on both axes.

    Cell colour is :func:`normalised_confusion` (0 white .. 1 dark blue); with at most
    :data:`ANNOTATE_MAX_CLASSES` classes each non-zero cell also shows its percentage. Rows of
    classes absent from the ground truth are grey.

    Args:
        counts: int ``[n, n]``, ``counts[truth, prediction]``.
        class_names: ``n`` names.
        path: the PNG to write.
    Returns:
        dict with ``matrix`` (the normalised values drawn), ``width``/``height`` (pixels),
        ``font_size``, ``annotated``, ``cell_pixels`` (side of a cell), ``x_labels`` and ``y_labels``
        (the tick labels as drawn).
    """
    matrix = normalised_confusion(counts)
    n = matrix.shape[0]
    if len(class_names) != n:
        raise ValueError(f"{len(class_names)} class names for a {n}x{n} confusion matrix")
    names = [_short(str(c)) for c in class_names]
    sizes = layout(n, max(len(c) for c in names))
    plt = pyplot()
    from matplotlib.colors import LinearSegmentedColormap

    side = max(n * sizes["cell"], 2.6)  # the matrix, inches
    left = bottom = sizes["label_inches"] + 0.35  # names plus the axis title
    top, bar, right = 0.55 if title else 0.3, 0.22, 0.75
    width, height = left + side + 0.2 + bar + right, bottom + side + top
    fig = plt.figure(figsize=(width, height))
    ax = fig.add_axes((left / width, bottom / height, side / width, side / height))
    cax = fig.add_axes(((left + side + 0.2) / width, bottom / height, bar / width, side / height))

    cmap = LinearSegmentedColormap.from_list("fcnseg_blues", ["#ffffff", "#c6dbef", "#4292c6", "#08306b"])
    cmap = cmap.with_extremes(bad="#d9d9d9")
    image = ax.imshow(np.ma.masked_invalid(matrix), cmap=cmap, vmin=0.0, vmax=1.0, interpolation="nearest")
    fig.colorbar(image, cax=cax).set_label("fraction of the ground-truth class", fontsize=9)
    cax.tick_params(labelsize=8)

    ticks = np.arange(n)
    ax.set_xticks(ticks, names, rotation=90, fontsize=sizes["font_size"])
    ax.set_yticks(ticks, names, fontsize=sizes["font_size"])
    ax.tick_params(length=0)
    ax.set_xlabel("prediction", fontsize=10)
    ax.set_ylabel("ground truth", fontsize=10)
    # thin white lines between cells keep rows and columns apart at 60 classes
    ax.set_xticks(ticks[:-1] + 0.5, minor=True)
    ax.set_yticks(ticks[:-1] + 0.5, minor=True)
    ax.grid(which="minor", color="white", linewidth=0.6 if n > 30 else 1.0)
    ax.tick_params(which="minor", length=0)
    for spine in ax.spines.values():  # a frame, so that never-predicted (white) columns still read as cells
        spine.set_color("#b0b0b0")
        spine.set_linewidth(0.8)

    if sizes["annotate"]:
        hist = np.asarray(counts)
        for i in range(n):
            for j in range(n):
                value = matrix[i, j]
                if not np.isfinite(value) or hist[i, j] == 0:
                    continue
                text = "<1" if value < 0.005 else f"{100 * value:.0f}"
                ax.text(j, i, text, ha="center", va="center", fontsize=sizes["value_font_size"],
                        color="white" if value > 0.55 else "#222222")
    if title:
        fig.suptitle(title, x=(left + side / 2) / width, y=1 - 0.12 / height, va="top", fontsize=11)
    x_labels = [t.get_text() for t in ax.get_xticklabels()]
    y_labels = [t.get_text() for t in ax.get_yticklabels()]
    pixels = save_png(fig, path, dpi=DPI)
    return {
        "matrix": matrix,
        "width": pixels[0],
        "height": pixels[1],
        "font_size": sizes["font_size"],
        "annotated": sizes["annotate"],
        "cell_pixels": side / n * DPI,
        "x_labels": x_labels,
        "y_labels": y_labels,
    }
