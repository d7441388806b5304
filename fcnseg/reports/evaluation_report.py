"""The report folder of ``fcnseg eval --report DIR``: every picture and file of this package, and the page linking them.

``DIR/index.html`` (open it in a browser, offline), ``confusion.png``, ``class_iu.png``,
``gallery_worst.png``, ``gallery_best.png``, ``per_image.csv``, ``metrics.json`` and ``metrics.txt``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import numpy as np

from fcnseg.data.palette import read_mask_png
from fcnseg.errors import DataError
from fcnseg.files import atomic_write_text, plural, write_json
from fcnseg.images import images_by_stem, read_image
from fcnseg.metrics import format_table
from fcnseg.reports.classes import plot_class_iu
from fcnseg.reports.confusion import plot_confusion
from fcnseg.reports.gallery import pick_extremes, plot_gallery
from fcnseg.reports.html import Figure, Page, write_index
from fcnseg.reports.per_image import write_per_image_csv

log = logging.getLogger(__name__)

DEFAULT_GALLERY_IMAGES = 8

# rows -> one item per row, in order: name, mask, prediction (int [H, W]) and, when known, image (RGB uint8)
ItemLoader = Callable[[list[dict]], list[dict]]


def write_report(
    out_dir: str | Path,
    result: dict,
    rows: list[dict],
    *,
    load_items: ItemLoader,
    palette: np.ndarray,
    num_images: int = DEFAULT_GALLERY_IMAGES,
    title: str = "Evaluation report",
    source: str = "",
) -> dict:
    """Write the report folder.

    Args:
        out_dir: the folder (created).
        result: the dict of :func:`fcnseg.evaluation.evaluate` or ``score_folders`` (``per_image`` popped
            or not; it is left out of ``metrics.json``).
        rows: the ``per_image`` rows.
        load_items: called once with the picked rows (worst then best, ``2 * num_images`` at most),
            e.g. re-predicting them with :func:`fcnseg.evaluation.predict_items`, or :func:`folder_items`.
        palette: uint8 ``[256, 3]`` class colours.
        num_images: images in each gallery (0: no galleries).
        source: what was scored, for the page's subtitle.
    Returns:
        dict with ``index`` (path of index.html), ``files`` (names written) and ``worst`` / ``best``
        (the picked rows).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = list(result["class_names"])
    metrics = {k: v for k, v in result.items() if k != "per_image"}
    pixel_counts = np.asarray(result["confusion"], dtype=np.int64).sum(1).tolist()
    skipped = list(result.get("skipped", []))
    count_text = (f"{plural(result.get('num_images', len(rows)), 'image')} "
                  f"({result.get('pixels', sum(pixel_counts)):,} pixels) scored")
    if skipped:
        count_text += f", {plural(len(skipped), 'item')} skipped (listed below)"

    write_json(metrics, out_dir / "metrics.json")
    atomic_write_text(format_table(result, names) + "\n", out_dir / "metrics.txt")
    plot_confusion(result["confusion"], names, out_dir / "confusion.png", title="confusion (rows sum to 100%)")
    plot_class_iu(result["per_class_iu"], names, out_dir / "class_iu.png", pixel_counts=pixel_counts,
                  mean_iu=result.get("mean_iu"))
    write_per_image_csv(rows, names, out_dir / "per_image.csv")

    figures = [
        Figure("Confusion", "confusion.png", "Rows are the ground truth, columns the prediction; each row shows where "
               "that class's pixels went, in percent." + (" Grey rows: classes absent from the ground truth."
                                                          if 0 in pixel_counts else ""), "confusion"),
        Figure("Per-class IU", "class_iu.png", "IU per class, lowest first, beside each class's share of the "
               "ground-truth pixels: a rare class with a low IU is where mean IU is lost.", "class-iu"),
    ]
    calibration_files = []
    if result.get("calibration"):
        from fcnseg.reports.calibration import plot_reliability

        c = result["calibration"]
        plot_reliability(c, out_dir / "reliability.png")
        if c["temperature"] == 1.0:
            note = (" The model is not calibrated (temperature 1): fit a temperature on the validation split with "
                    "'fcnseg calibrate MODEL --data ROOT'.")
        else:
            note = f" The model's temperature {c['temperature']:.3f} divides the logits before the softmax."
        figures.append(Figure(
            "Calibration", "reliability.png",
            f"How sure the model is against how often it is right, per confidence bin: expected calibration error "
            f"{100 * c['ece_uncalibrated']:.2f}% before and {100 * c['ece_calibrated']:.2f}% after its temperature "
            f"(bars below the diagonal: over-confident).{note}", "calibration"))
        calibration_files.append(("reliability.png", "the reliability diagram, before and after calibration"))
    picked = pick_extremes(rows, max(0, num_images))
    chosen = picked["worst"] + picked["best"]
    items = load_items(chosen) if chosen else []
    galleries = (("worst", "lowest", picked["worst"], items[: len(picked["worst"])]),
                 ("best", "highest", picked["best"], items[len(picked["worst"]):]))
    gallery_files = []
    for kind, word, picked_rows, picked_items in galleries:
        if not picked_rows:
            continue
        shown = [{**row, **item} for row, item in zip(picked_rows, picked_items)]
        file = f"gallery_{kind}.png"
        title = f"The {plural(len(shown), 'image')} with the {word} mean IU"
        plot_gallery(shown, palette, names, out_dir / file, title=title)
        figures.append(Figure(f"{kind.capitalize()} images", file, f"{title}, per image. Errors: wrong pixels "
                              "red, ignored pixels dark grey.", f"gallery-{kind}"))
        gallery_files.append((file, f"the {word}-scoring images"))

    files = [
        ("metrics.json", "all metrics and the confusion counts"),
        ("metrics.txt", "the metrics table"),
        ("per_image.csv", "pixel accuracy, mean IU and most-confused pair of every image"),
        ("confusion.png", "the confusion heatmap"),
        ("class_iu.png", "the per-class IU bars"),
        *calibration_files,
        *gallery_files,
    ]
    unscored = sum(1 for r in rows if r.get("pixels") == 0)
    notes = [f"{plural(unscored, 'image has', 'images have')} only ignored pixels and no per-image score."] \
        if unscored else []
    notes += [f"{item['name']}: the gallery shows no image ({item['image_note']})."
              for item in items if item.get("image_note")]
    page = Page(title=title, source=f"{source}: {count_text}" if source else count_text, result=result,
                pixel_counts=pixel_counts, figures=figures, files=files, notes=notes, skipped=skipped)
    write_index(page, out_dir / "index.html")
    return {"index": out_dir / "index.html", "files": ["index.html", *(f for f, _ in files)],
            "worst": picked["worst"], "best": picked["best"]}


def folder_items(rows: list[dict], colours=None, image_dir: str | Path | None = None) -> list[dict]:
    """Load the label maps (and images) of ``score_folders`` rows for the gallery.

    Args:
        rows: rows with ``name``, ``prediction_path`` and ``truth_path``.
        colours: the class file's colours, for RGB label PNGs (as in ``score_folders``).
        image_dir: folder of the images, matched by stem; without it the gallery has no image column.
    An image that cannot be read, or is not the size of its ground truth, is left out (its row shows a
    blank panel) and noted in ``image_note``.

    Raises:
        DataError: ``image_dir`` holds no images at all.
    """
    images = images_by_stem(image_dir) if image_dir is not None else {}
    if image_dir is not None and not images:
        raise DataError(f"{image_dir} holds no images for the report's gallery")
    items = []
    for row in rows:
        item = {
            "name": row["name"],
            "mask": read_mask_png(row["truth_path"], colours),
            "prediction": read_mask_png(row["prediction_path"], colours),
        }
        path = images.get(row["name"])
        if path is not None:
            # One bad picture costs its own panel, not the report: it is noted on the page and in the log.
            try:
                image = read_image(path)
                if image.shape[:2] != item["mask"].shape:
                    raise DataError(f"{image.shape[1]}x{image.shape[0]} but its ground truth {row['truth_path']} "
                                    f"is {item['mask'].shape[1]}x{item['mask'].shape[0]}", path=path)
                item["image"] = image
            except Exception as e:  # noqa: BLE001 - any decoder failure, as in the folder runs
                reason = e.reason if isinstance(e, DataError) else f"cannot read the image ({type(e).__name__}: {e})"
                item["image_note"] = f"{path.name}: {reason}"
                log.warning("%s: left out of the gallery: %s", path, reason)
        elif image_dir is not None:
            log.warning("%s has no image named %s; the gallery shows no image column", image_dir, row["name"])
        items.append(item)
    return items
