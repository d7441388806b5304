"""Per-pixel confidence from class probabilities: the three measures, the per-image summary, the picture with its scale.

Every measure is in ``[0, 1]`` and higher means surer: ``max`` is the largest softmax probability,
``margin`` the largest minus the second largest, ``entropy`` one minus the entropy over its largest
possible value (``1 - H(p) / log C``). The probabilities are those of the model's temperature
(:mod:`fcnseg.calibration`); the label map never depends on it.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

CONFIDENCE_KINDS = ("max", "margin", "entropy")
DEFAULT_CONFIDENCE = "max"
DEFAULT_THRESHOLD = 0.5  # a pixel below this confidence counts as unsure in the summary
PICTURE_SUFFIX = "_confidence.png"  # NAME_confidence.png: the map on a colour ramp, with its scale
ARRAY_SUFFIX = "_confidence.npy"  # NAME_confidence.npy: float16 [H, W], the numbers
TABLE_NAME = "confidence.csv"  # one row per image of a folder run

# viridis at 0, 1/4, 1/2, 3/4, 1: dark (unsure) to bright (sure), readable in grey and by colour-blind eyes
_RAMP_STOPS = np.array([(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)], dtype=np.float64)


def check_kind(kind: str) -> str:
    """``kind`` if it is one of :data:`CONFIDENCE_KINDS`, else ValueError naming them."""
    if kind not in CONFIDENCE_KINDS:
        raise ValueError(f"confidence kind must be one of {', '.join(CONFIDENCE_KINDS)}, got {kind!r}")
    return kind


def confidence_from_probabilities(probabilities: torch.Tensor, kind: str = DEFAULT_CONFIDENCE, dim: int = 0) -> torch.Tensor:
    """Softmax probabilities ``[..., C, ...]`` (classes along ``dim``) -> float32 confidence in ``[0, 1]``, ``dim`` removed.

    Args:
        probabilities: float probabilities that sum to 1 along ``dim``.
        kind: "max", "margin" or "entropy" (see the module's docstring).
    """
    check_kind(kind)
    p = probabilities.float()
    classes = p.shape[dim]
    if kind == "max":
        return p.amax(dim)
    if classes < 2:
        return torch.ones_like(p.select(dim, 0))
    if kind == "margin":
        top = p.topk(2, dim=dim).values
        return (top.select(dim, 0) - top.select(dim, 1)).clamp_(0, 1)
    entropy = -(p * p.clamp_min(1e-12).log()).sum(dim)
    return (1 - entropy / math.log(classes)).clamp_(0, 1)


def confidence_from_logits(logits: torch.Tensor, kind: str = DEFAULT_CONFIDENCE, temperature: float = 1.0,
                           dim: int = 0) -> torch.Tensor:
    """Logits ``[..., C, ...]`` -> confidence of ``softmax(logits / temperature)`` (see :func:`confidence_from_probabilities`)."""
    return confidence_from_probabilities((logits.float() / temperature).softmax(dim), kind, dim)


@dataclass(frozen=True)
class ConfidenceSummary:
    """One image's confidence in two numbers.

    Attributes:
        mean: mean confidence over the pixels.
        below: share of pixels whose confidence is below ``threshold`` (0..1).
        threshold: the threshold ``below`` counts under.
    """

    mean: float
    below: float
    threshold: float


def summarize(confidence: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> ConfidenceSummary:
    """:class:`ConfidenceSummary` of a confidence map ``[H, W]`` (any float dtype), accumulated in float64."""
    values = np.asarray(confidence, dtype=np.float64)
    if values.size == 0:
        return ConfidenceSummary(float("nan"), float("nan"), threshold)
    return ConfidenceSummary(float(values.mean()), float((values < threshold).mean()), threshold)


def colour_ramp(values: np.ndarray) -> np.ndarray:
    """Values in ``[0, 1]`` ``[...]`` -> RGB uint8 ``[..., 3]`` on the viridis ramp (NaN drawn black)."""
    v = np.nan_to_num(np.clip(np.asarray(values, dtype=np.float64), 0, 1), nan=0.0) * (len(_RAMP_STOPS) - 1)
    low = np.minimum(v.astype(np.int64), len(_RAMP_STOPS) - 2)
    frac = (v - low)[..., None]
    rgb = _RAMP_STOPS[low] * (1 - frac) + _RAMP_STOPS[low + 1] * frac
    rgb = np.rint(rgb).astype(np.uint8)
    rgb[np.isnan(np.asarray(values, dtype=np.float64))] = 0
    return rgb


def confidence_picture(confidence: np.ndarray, kind: str = DEFAULT_CONFIDENCE) -> np.ndarray:
    """A confidence map ``[H, W]`` as a picture a person reads: RGB uint8 ``[max(H, h), W + w, 3]``.

    The map on the viridis ramp (dark = unsure, bright = sure) at ``[:H, :W]``, and to its right a scale:
    the ramp from 0 at the bottom to 1 at the top, with ticks at 0, 0.5 and 1 and the measure's name.
    """
    from fcnseg.reports.legend import font_size_for, legend_font

    height, width = confidence.shape
    font_size = font_size_for(height, width)
    font = legend_font(font_size)
    pad = font_size
    bar_width = max(8, font_size)
    label = f"confidence ({kind})"
    text_width = max(round(font.getlength(t)) for t in ("0.5", "1.0", label))
    band_width = pad + bar_width + pad // 2 + text_width + pad
    bar_height = max(height - 4 * pad, 3 * font_size)
    band_height = bar_height + 4 * pad
    out = np.full((max(height, band_height), width + band_width, 3), 255, dtype=np.uint8)
    out[:height, :width] = colour_ramp(confidence)
    band = Image.fromarray(out[:, width:].copy())
    draw = ImageDraw.Draw(band)
    top = 2 * pad
    ramp = colour_ramp(np.linspace(1, 0, bar_height))  # the top row is 1
    band_array = np.asarray(band).copy()
    band_array[top : top + bar_height, pad : pad + bar_width] = ramp[:, None, :]
    band = Image.fromarray(band_array)
    draw = ImageDraw.Draw(band)
    draw.rectangle((pad - 1, top - 1, pad + bar_width, top + bar_height), outline=(0, 0, 0))
    draw.text((pad, pad // 2), label, fill=(0, 0, 0), font=font)
    for value in (0.0, 0.5, 1.0):
        y = top + round((1 - value) * (bar_height - 1))
        draw.line((pad + bar_width, y, pad + bar_width + pad // 3, y), fill=(0, 0, 0))
        draw.text((pad + bar_width + pad // 2, y - font_size // 2), f"{value:.1f}", fill=(0, 0, 0), font=font)
    out[:, width:] = np.asarray(band)
    return out


def write_confidence(confidence: np.ndarray, stem: str | Path, kind: str = DEFAULT_CONFIDENCE) -> None:
    """Write ``<stem>_confidence.npy`` (float16 ``[H, W]``) and ``<stem>_confidence.png`` (:func:`confidence_picture`),
    each atomically."""
    from fcnseg.files import atomic_open
    from fcnseg.images import save_rgb

    with atomic_open(f"{stem}{ARRAY_SUFFIX}", "wb") as file:
        np.save(file, np.asarray(confidence, dtype=np.float16))
    save_rgb(confidence_picture(confidence, kind), f"{stem}{PICTURE_SUFFIX}")


def write_confidence_table(summaries: dict[str, ConfidenceSummary], path: str | Path, kind: str) -> None:
    """``confidence.csv``: ``image, mean_confidence, share_below_<threshold>`` per image, sorted by name (atomic)."""
    from fcnseg.files import atomic_write_text

    threshold = next(iter(summaries.values())).threshold if summaries else DEFAULT_THRESHOLD
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["image", f"mean_confidence_{kind}", f"share_below_{threshold:g}"])
    for name in sorted(summaries):
        summary = summaries[name]
        writer.writerow([name, f"{summary.mean:.6f}", f"{summary.below:.6f}"])
    atomic_write_text(buffer.getvalue(), path)


__all__ = [
    "ARRAY_SUFFIX",
    "CONFIDENCE_KINDS",
    "ConfidenceSummary",
    "DEFAULT_CONFIDENCE",
    "DEFAULT_THRESHOLD",
    "check_kind",
    "colour_ramp",
    "confidence_from_logits",
    "confidence_from_probabilities",
    "confidence_picture",
    "summarize",
    "write_confidence",
    "write_confidence_table",
]
