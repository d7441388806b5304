"""The gallery: the images a model does worst and best on, each as image | ground truth | prediction | errors.

:func:`pick_extremes` chooses them from per-image scores; the caller loads (or re-predicts) only
those, so a scoring pass over thousands of images never holds their label maps.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from fcnseg.data.classes import IGNORE_INDEX
from fcnseg.data.palette import colorize
from fcnseg.reports.figures import pyplot, save_png

WRONG_COLOUR = (228, 26, 28)  # a pixel whose prediction differs from its ground truth
IGNORE_GREY = (120, 120, 120)  # a ground-truth ignore (255) pixel: neither right nor wrong
CORRECT_LIGHT = 235  # right pixels: the image's grey levels squeezed into 175..235, or flat without an image
PANEL_INCHES = 2.7  # width of one panel


def _score(row: dict) -> float:
    v = row.get("mean_iu")
    return v if isinstance(v, (int, float)) and v is not None and math.isfinite(v) else math.nan


def pick_extremes(rows: list[dict], count: int) -> dict[str, list[dict]]:
    """The ``count`` rows with the lowest and the ``count`` with the highest per-image mean IU.

    Ties break on pixel accuracy, then on name. Images with no scored pixel (mean IU NaN) are
    never picked. With fewer than ``2 * count`` scored images the set is split in halves (the
    worst half gets the odd one), so no image appears in both.

    Returns:
        ``{"worst": rows from the lowest mean IU up, "best": rows from the highest down}``.
    """
    scored = [r for r in rows if not math.isnan(_score(r))]

    def key(r: dict):
        acc = r.get("pixel_accuracy")
        return (_score(r), acc if isinstance(acc, float) and math.isfinite(acc) else 0.0, str(r.get("name", "")))

    ordered = sorted(scored, key=key)
    num_best = min(count, len(ordered) // 2)
    num_worst = min(count, len(ordered) - num_best)
    return {"worst": ordered[:num_worst], "best": ordered[::-1][:num_best]}


def _blank(shape: tuple[int, int]) -> np.ndarray:
    """A light grey RGB uint8 ``[H, W, 3]`` panel in place of an image that could not be read."""
    return np.full((*shape, 3), 235, dtype=np.uint8)


def error_map(mask: np.ndarray, prediction: np.ndarray, image: np.ndarray | None = None) -> np.ndarray:
    """RGB uint8 ``[H, W, 3]``: wrong pixels in :data:`WRONG_COLOUR`, ignore pixels :data:`IGNORE_GREY`, the rest light.

    Right pixels show the image faded to light greys (so one can see what was missed), or a flat
    light grey without an image.

    Args:
        mask: int ``[H, W]`` ground truth, 255 = ignore.
        prediction: int ``[H, W]`` predicted classes.
        image: optional RGB uint8 ``[H, W, 3]``.
    """
    mask, prediction = np.asarray(mask), np.asarray(prediction)
    if image is not None:
        grey = np.asarray(image, dtype=np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        light = (CORRECT_LIGHT - 60 + grey * (60 / 255)).round().astype(np.uint8)
        out = np.repeat(light[..., None], 3, axis=2)
    else:
        out = np.full(mask.shape + (3,), CORRECT_LIGHT, dtype=np.uint8)
    ignore = mask == IGNORE_INDEX
    out[(prediction != mask) & ~ignore] = WRONG_COLOUR
    out[ignore] = IGNORE_GREY
    return out


def _percent(v) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{100 * v:.1f}%"


def describe_row(row: dict, class_names: list[str]) -> str:
    """``name: mean IU 41.2%, pixel acc. 80.3%; most confused cat -> dog (1,204 px)``."""
    text = f"{row['name']}: mean IU {_percent(row.get('mean_iu'))}, pixel acc. {_percent(row.get('pixel_accuracy'))}"
    pair = row.get("most_confused")
    if pair:
        text += f"; most confused {class_names[pair['truth']]} \u2192 {class_names[pair['prediction']]} ({pair['pixels']:,} px)"
    return text


def plot_gallery(
    items: list[dict],
    palette: np.ndarray,
    class_names: list[str],
    path: str | Path,
    title: str = "",
) -> dict:
    """One row per item: image | ground truth | prediction | errors (no image column where items have none).

    Args:
        items: dicts with ``name``, ``mask`` and ``prediction`` (int ``[H, W]``), optional ``image``
            (RGB uint8 ``[H, W, 3]``, same size; where some items have one, the others show a blank panel
            with their ``image_note``), and the scores of its per-image row (``mean_iu``,
            ``pixel_accuracy``, ``most_confused``) for the row's caption.
        palette: uint8 ``[256, 3]`` class colours.
        class_names: names for the legend (only the classes in the shown rows are listed).
        path: the PNG to write.
    Returns:
        dict with ``columns`` (the panel names), ``rows`` (item names in order), ``width``, ``height``.
    """
    plt = pyplot()
    from matplotlib.patches import Patch

    # One unreadable image costs its own panel (a note in its place), not the image column of every row.
    with_image = any(item.get("image") is not None for item in items)
    columns = (["image"] if with_image else []) + ["ground truth", "prediction", "errors"]
    ncol = len(columns)
    aspects = [min(1.5, max(0.35, item["mask"].shape[0] / item["mask"].shape[1])) for item in items] or [0.75]
    caption, gap, header = 0.32, 0.18, 0.5  # inches: row caption, space between rows, column names on top
    legend = 0.9
    panel_heights = [PANEL_INCHES * a for a in aspects]
    width = ncol * PANEL_INCHES + (ncol - 1) * 0.08 + 0.4
    height = header + (0.35 if title else 0) + sum(h + caption + gap for h in panel_heights) + legend
    fig = plt.figure(figsize=(width, height))
    y = height - header - (0.35 if title else 0)
    if title:
        fig.text(0.5, 1 - 0.15 / height, title, ha="center", va="top", fontsize=12, weight="bold")
    shown: set[int] = set()
    for row_number, (item, panel_h) in enumerate(zip(items, panel_heights)):
        mask, prediction = np.asarray(item["mask"]), np.asarray(item["prediction"])
        shown |= set(np.unique(mask[mask != IGNORE_INDEX]).tolist()) | set(np.unique(prediction).tolist())
        image = item.get("image")
        pictures = ([image if image is not None else _blank(mask.shape)] if with_image else []) + [
            colorize(mask, palette), colorize(prediction, palette), error_map(mask, prediction, item.get("image"))
        ]
        y -= caption
        fig.text(0.2 / width, (y + 0.06) / height, describe_row(item, class_names), fontsize=9, va="bottom")
        y -= panel_h
        for col, (picture, name) in enumerate(zip(pictures, columns)):
            left = 0.2 + col * (PANEL_INCHES + 0.08)
            ax = fig.add_axes((left / width, y / height, PANEL_INCHES / width, panel_h / height))
            ax.imshow(picture, interpolation="nearest")
            ax.set_axis_off()
            if name == "image" and image is None:
                ax.text(0.5, 0.5, item.get("image_note") or "no image", ha="center", va="center", fontsize=8,
                        wrap=True, transform=ax.transAxes)
            if row_number == 0:
                fig.text((left + PANEL_INCHES / 2) / width, (y + panel_h + caption + 0.12) / height, name,
                         ha="center", va="bottom", fontsize=10, weight="bold")
        y -= gap
    handles = [Patch(facecolor=np.asarray(palette[i]) / 255, edgecolor="#666666", label=class_names[i])
               for i in sorted(shown) if 0 <= i < len(class_names)]
    handles += [Patch(facecolor=np.asarray(WRONG_COLOUR) / 255, label="wrong pixel"),
                Patch(facecolor=np.asarray(IGNORE_GREY) / 255, label="ignored (255)")]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 0.05 / height))
    pixels = save_png(fig, path, dpi=90)
    return {"columns": columns, "rows": [item["name"] for item in items], "width": pixels[0], "height": pixels[1]}
