"""The record of a prediction run over many images: one row per image (status, size, per-class pixels, time, error), as Parquet.

Written by the engines that spread a folder run over processes or machines (``torchrun``, Ray Data),
read back by a resumed run. Parquet needs pyarrow (Ray installs it); without it the same rows go to
a CSV file beside it.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fcnseg.data.palette import read_mask_png
from fcnseg.files import atomic_write, atomic_write_text
from fcnseg.metrics import class_pixel_counts

MANIFEST_NAME = "manifest.parquet"
MANIFEST_CSV_NAME = "manifest.csv"  # without pyarrow
DONE, FAILED = "done", "failed"


@dataclass
class ManifestRow:
    """One image of a run.

    Attributes:
        image: the image's name in the run (its path relative to the input root; outputs are named after it).
        source: where it was read from (a path or a URI).
        status: ``done`` (its label map exists) or ``failed`` (``error`` says why).
        height, width: the image's size in pixels (0 when it could not be read).
        class_pixels: pixels per class in label order (empty when failed).
        seconds: decode + forward + write time of this image (None when it was done by an earlier run
            that left no record).
        error: why it failed, else "".
    """

    image: str
    source: str
    status: str
    height: int = 0
    width: int = 0
    class_pixels: list[int] = field(default_factory=list)
    seconds: float | None = None
    error: str = ""


def row_from_labels(image: str, source: str, labels: np.ndarray, num_classes: int, seconds: float | None) -> ManifestRow:
    """The ``done`` row of an image from its label map ``[H, W]``."""
    counts = class_pixel_counts(labels, num_classes)
    return ManifestRow(image, source, DONE, int(labels.shape[0]), int(labels.shape[1]),
                       [int(n) for n in counts], seconds)


def row_from_label_file(image: str, source: str, path: str | Path, num_classes: int) -> ManifestRow:
    """The ``done`` row of an image an earlier run finished, from its label map on disk (no time)."""
    return row_from_labels(image, source, read_mask_png(path), num_classes, None)


def have_parquet() -> bool:
    try:
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        return False
    return True


def write_manifest(rows: list[ManifestRow], class_names: list[str], output_dir: str | Path) -> Path:
    """Write ``rows`` (sorted by image) to ``output_dir/manifest.parquet`` (``manifest.csv`` without pyarrow), atomically.

    The Parquet file's metadata holds ``class_names`` (the order of ``class_pixels``). Returns the path.
    """
    output_dir = Path(output_dir)
    rows = sorted(rows, key=lambda r: r.image)
    if have_parquet():
        path = output_dir / MANIFEST_NAME
        atomic_write(path, lambda tmp: write_parquet(rows, class_names, tmp))
        return path
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["image", "source", "status", "height", "width", "seconds", "error",
                     *[f"{c}_pixels" for c in class_names]])
    for r in rows:
        writer.writerow([r.image, r.source, r.status, r.height, r.width, "" if r.seconds is None else f"{r.seconds:.4f}",
                         r.error, *(r.class_pixels or [""] * len(class_names))])
    path = output_dir / MANIFEST_CSV_NAME
    atomic_write_text(buffer.getvalue(), path)
    return path


def write_parquet(rows: list[ManifestRow], class_names: list[str], path: str | Path) -> None:
    """``rows`` as one Parquet file at ``path`` (not atomic: :func:`write_manifest` renames it into place)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("image", pa.string()), ("source", pa.string()), ("status", pa.string()),
                        ("height", pa.int32()), ("width", pa.int32()), ("class_pixels", pa.list_(pa.int64())),
                        ("seconds", pa.float64()), ("error", pa.string())],
                       metadata={b"class_names": json.dumps(list(class_names)).encode()})
    columns = {name: [getattr(r, name) for r in rows] for name in schema.names}
    pq.write_table(pa.table(columns, schema=schema), str(path))


def read_manifest(path: str | Path) -> list[ManifestRow]:
    """The rows of a manifest Parquet file (:func:`write_manifest`)."""
    import pyarrow.parquet as pq

    table = pq.read_table(str(path))
    return [ManifestRow(**{k: v for k, v in row.items() if k in ManifestRow.__dataclass_fields__})
            for row in table.to_pylist()]
