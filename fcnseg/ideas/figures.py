"""The report's PNG figures (matplotlib, Agg backend): cost scaling, score-map differences, upsampling, shift-and-stitch."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from fcnseg.data.palette import voc_palette  # noqa: E402
from fcnseg.ideas.patchwise import PatchwiseComparison, ScalingPoint  # noqa: E402
from fcnseg.ideas.shift_stitch import StitchComparison  # noqa: E402
from fcnseg.ideas.upsampling import UpsamplingView  # noqa: E402

DENSE_COLOUR, PATCH_COLOUR = "tab:blue", "tab:red"


def _save(fig, path: Path) -> str:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path.name


def cost_scaling(points: list[ScalingPoint], window: int, stride: int, name: str, path: Path) -> str:
    """FLOPs, peak memory and wall time of dense and patch-wise computation against the image side."""
    sizes = np.array([p.size for p in points], dtype=float)
    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    panels = [
        ("FLOPs", lambda c: c.flops, "FLOPs"),
        ("peak tensor memory", lambda c: c.peak_bytes / 2**20, "MiB"),
        ("wall time (measured sizes)", lambda c: c.seconds, "seconds"),
    ]
    for ax, (title, value, unit) in zip(axes, panels):
        pts = [p for p in points if value(p.dense) is not None]
        if not pts:
            ax.set_visible(False)
            continue
        x = np.array([p.size for p in pts], dtype=float)
        ax.plot(x, [value(p.dense) for p in pts], "o-", color=DENSE_COLOUR, label="convolutionalized (one pass)")
        ax.plot(x, [value(p.patchwise) for p in pts], "s-", color=PATCH_COLOUR, label="patch-wise (every window)")
        if title == "FLOPs":
            # Reference slopes through the largest point: dense ~ area, patch-wise ~ area x window^2 / stride^2.
            area = (sizes / sizes[-1]) ** 2
            ax.plot(sizes, points[-1].dense.flops * area, ":", color=DENSE_COLOUR, alpha=0.6, label="~ image area")
            windows = np.array([p.windows for p in points], dtype=float)
            ax.plot(sizes, points[-1].patchwise.flops * windows / windows[-1], ":", color=PATCH_COLOUR, alpha=0.6,
                    label="~ number of windows x window cost")
        if title != "wall time (measured sizes)":
            ax.set_xscale("log")
            ax.set_yscale("log")
        else:
            ax.set_ylim(bottom=0)
        ax.set_xlabel("image side (pixels)")
        ax.set_ylabel(unit)
        ax.set_title(title)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{name}: {window}x{window} window, stride {stride}", fontsize=11)
    return _save(fig, path)


def score_difference(comparisons: list[PatchwiseComparison], path: Path) -> str:
    """Per-cell max |dense - patch-wise| of each comparison, relative to the largest score."""
    fig, axes = plt.subplots(1, len(comparisons), figsize=(5.2 * len(comparisons), 4.2), squeeze=False)
    for ax, c in zip(axes[0], comparisons):
        rel = (c.diff_map / max(c.max_abs_score, 1e-30)).numpy()
        im = ax.imshow(rel, cmap="magma", vmin=0, vmax=max(rel.max(), 1e-6))
        ax.set_title(f"{c.classifier}: max {rel.max():.1e}", fontsize=10)
        ax.set_xlabel("output column (window)")
        ax.set_ylabel("output row")
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle("Where the score maps differ: max over classes of |dense - patch-wise| / max |score|", fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def _label_image(labels: np.ndarray, num_classes: int) -> np.ndarray:
    palette = voc_palette(max(num_classes, 2))
    out = np.zeros(labels.shape + (3,), dtype=np.uint8)
    valid = labels < num_classes
    out[valid] = palette[labels[valid]]
    out[labels == 255] = 255
    return out


def upsampling(view: UpsamplingView, path: Path, caption: str) -> str:
    """Top: input, ground truth and each output's labels; bottom: the focus class's probability at each stage."""
    c = view.focus_class
    num_classes = len(view.class_names)
    columns = [("coarse score_fr (1/32)", view.coarse), ("bilinear x32 of score_fr", view.bilinear)]
    columns += [(arch.upper().replace("FCN", "FCN-"), out) for arch, out in view.outputs.items()]
    n = 1 + len(columns)
    fig, axes = plt.subplots(2, n, figsize=(2.6 * n, 5.6))
    axes[0, 0].imshow(view.image)
    axes[0, 0].set_title("image", fontsize=9)
    if view.mask is not None:
        axes[1, 0].imshow(_label_image(view.mask, num_classes))
        axes[1, 0].set_title("ground truth", fontsize=9)
    for i, (title, scores) in enumerate(columns, start=1):
        labels = scores.argmax(0).numpy()
        prob = torch.softmax(scores.float(), 0)[c].numpy()
        low, high = float(prob.min()), float(prob.max())
        extent = (0, view.image.shape[1], view.image.shape[0], 0)  # draw the coarse map over the image's area
        axes[0, i].imshow(_label_image(labels, num_classes), extent=extent, interpolation="nearest")
        axes[0, i].set_title(title, fontsize=9)
        # Each panel spans its own range, so that the shape of the map shows even when it is flat.
        axes[1, i].imshow(prob, cmap="viridis", vmin=low, vmax=max(high, low + 1e-6), extent=extent, interpolation="nearest")
        axes[1, i].set_title(f"P({view.class_names[c]}) {low:.2f}..{high:.2f}", fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(caption, fontsize=10)
    return _save(fig, path)


def shift_stitch(comparisons: list[StitchComparison], path: Path) -> str:
    """For each net: coarse map, shift-and-stitch output, rarefied-net output, and their difference (class 0)."""
    fig, axes = plt.subplots(len(comparisons), 4, figsize=(14, 3.4 * len(comparisons)), squeeze=False)
    for row, c in zip(axes, comparisons):
        vmin, vmax = float(c.rarefied[0].min()), float(c.rarefied[0].max())
        row[0].imshow(c.coarse[0].numpy(), cmap="viridis", vmin=vmin, vmax=vmax, interpolation="nearest")
        row[0].set_title(f"{c.net}: coarse, stride {c.input_stride * c.factor}", fontsize=9)
        row[1].imshow(c.stitched[0].numpy(), cmap="viridis", vmin=vmin, vmax=vmax, interpolation="nearest")
        row[1].set_title(f"shift-and-stitch, {c.factor}x{c.factor} shifts", fontsize=9)
        row[2].imshow(c.rarefied[0].numpy(), cmap="viridis", vmin=vmin, vmax=vmax, interpolation="nearest")
        row[2].set_title("rarefied net (strides removed, dilated)", fontsize=9)
        diff = (c.stitched - c.rarefied).abs().amax(0).numpy() / max(c.max_abs_score, 1e-30)
        im = row[3].imshow(diff, cmap="magma", vmin=0, vmax=max(float(diff.max()), 1e-6), interpolation="nearest")
        if not bool(c.valid.all()):
            ys, xs = np.nonzero(c.valid.numpy())
            row[3].add_patch(plt.Rectangle((xs.min() - 0.5, ys.min() - 0.5), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1,
                                           fill=False, edgecolor="cyan", linewidth=1.5))
            row[3].set_title("|difference|; interior boxed", fontsize=9)
        else:
            row[3].set_title("|difference| (all positions compared)", fontsize=9)
        fig.colorbar(im, ax=row[3], fraction=0.046)
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
    return _save(fig, path)
