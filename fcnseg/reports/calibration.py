"""The reliability diagram: accuracy against confidence per bin, before and after the model's temperature, with each ECE."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fcnseg.reports.figures import pyplot, save_png


def plot_reliability(calibration: dict, path: str | Path) -> tuple[int, int]:
    """Draw ``result["calibration"]`` of :func:`fcnseg.evaluation.evaluate` to ``path`` (PNG); returns its size.

    Bars: the accuracy of each confidence bin; the diagonal: perfect calibration; the pixel count of each bin
    as a thin grey histogram below. One panel at temperature 1, one at the model's temperature.
    """
    plt = pyplot()
    temperature = calibration["temperature"]
    panels = [("uncalibrated (T = 1)", calibration["reliability_uncalibrated"], calibration["ece_uncalibrated"]),
              (f"calibrated (T = {temperature:.2f})", calibration["reliability_calibrated"],
               calibration["ece_calibrated"])]
    fig, axes = plt.subplots(2, 2, figsize=(9, 5.2), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    for column, (title, rows, ece) in enumerate(panels):
        top, bottom = axes[0, column], axes[1, column]
        lows = np.array([r["low"] for r in rows])
        width = rows[0]["high"] - rows[0]["low"]
        accuracy = np.array([r["accuracy"] for r in rows], dtype=float)
        confidence = np.array([r["confidence"] for r in rows], dtype=float)
        counts = np.array([r["pixels"] for r in rows], dtype=float)
        filled = counts > 0
        top.bar(lows[filled], accuracy[filled], width=width, align="edge", color="#3b528b", edgecolor="white",
                label="accuracy")
        top.bar(lows[filled], (confidence - accuracy)[filled], bottom=accuracy[filled], width=width, align="edge",
                color="#e8a0a0", alpha=0.7, edgecolor="white", label="gap to confidence")
        top.plot([0, 1], [0, 1], color="black", linewidth=1, linestyle="--", label="perfectly calibrated")
        top.set_ylim(0, 1)
        top.set_title(f"{title}: ECE {100 * ece:.2f}%", fontsize=10)
        top.set_ylabel("accuracy")
        top.legend(fontsize=7, loc="upper left")
        bottom.bar(lows, counts / max(counts.sum(), 1), width=width, align="edge", color="#999999")
        bottom.set_xlim(0, 1)
        bottom.set_xlabel("confidence (largest probability)")
        bottom.set_ylabel("share of pixels", fontsize=8)
    fig.tight_layout()
    return save_png(fig, path)


__all__ = ["plot_reliability"]
