"""``per_image.csv``: one line per scored image with its pixel accuracy, mean IU and most-confused class pair."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from fcnseg.files import atomic_write_text

COLUMNS = (
    "name", "pixels", "pixel_accuracy", "mean_accuracy", "mean_iu",
    "confused_truth", "confused_prediction", "confused_pixels",
)


def _number(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return f"{value:.6f}" if isinstance(value, float) else str(value)


def per_image_lines(rows: list[dict], class_names: list[str]) -> list[dict]:
    """The CSV's records as dicts of strings, in the order of ``rows``.

    Scores are fractions (0..1, six decimals; empty where undefined: an image whose pixels are all
    ignored). The most-confused pair is given by class name (ground truth, prediction) with its
    pixel count; all three are empty when the image has no wrong pixel.
    """
    lines = []
    for row in rows:
        pair = row.get("most_confused")
        lines.append({
            "name": str(row["name"]),
            "pixels": _number(row.get("pixels")),
            "pixel_accuracy": _number(row.get("pixel_accuracy")),
            "mean_accuracy": _number(row.get("mean_accuracy")),
            "mean_iu": _number(row.get("mean_iu")),
            "confused_truth": class_names[pair["truth"]] if pair else "",
            "confused_prediction": class_names[pair["prediction"]] if pair else "",
            "confused_pixels": str(pair["pixels"]) if pair else "",
        })
    return lines


def write_per_image_csv(rows: list[dict], class_names: list[str], path: str | Path) -> None:
    """Write :func:`per_image_lines` to ``path`` (header :data:`COLUMNS`), atomically.

    Args:
        rows: the ``per_image`` rows of :func:`fcnseg.evaluation.evaluate` or ``score_folders``.
        class_names: names indexed by class, for the confused pair.
    """
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(per_image_lines(rows, class_names))
    atomic_write_text(buffer.getvalue(), path)
