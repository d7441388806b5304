"""How much of a label map survives being written as polygons and read back by fcnseg's importers.

Label maps: fcnseg's synthetic scenes ("shapes": discs, boxes, triangles, overlapping; "blobs": smooth
irregular regions) at 480 x 640, the ignore rim filled with the nearest label, as a model predicts.
Each is written as every polygon format at several simplification tolerances (minimum area 4 pixels,
the default), imported back with ``--classes``, and scored against the original: mean IU over the set
(one confusion matrix), pixels changed, and polygon vertices per image. Masks (RLE) are exact and not
listed. Quality only, no timing: the numbers are the same on any machine.

    python benchmarks/annotation_round_trip.py [--images 20] [--formats coco,geojson]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.tables import markdown_table  # noqa: E402
from fcnseg.annotations import ExportOptions, LabelledImage, export_annotations, import_dataset  # noqa: E402
from fcnseg.data.palette import read_mask_png  # noqa: E402
from fcnseg.data.synthetic import generate_sample, synthetic_classes  # noqa: E402

SOURCES = {"coco": "annotations.json", "cvat-xml": "annotations.xml", "label-studio": "tasks.json"}


def label_maps(style: str, count: int, size=(480, 640)) -> list[np.ndarray]:
    maps = []
    for index in range(count):
        mask = generate_sample(0, "val", index, style, size).mask
        ignored = mask == 255
        _, (rows, cols) = ndimage.distance_transform_edt(ignored, return_indices=True)
        maps.append(mask[rows, cols].astype(np.uint8))  # the rim takes its nearest label
    return maps


def score(maps: list[np.ndarray], back: list[np.ndarray], num_classes: int) -> float:
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    for a, b in zip(maps, back):
        confusion += np.bincount(a.ravel().astype(np.int64) * num_classes + b.ravel(), minlength=num_classes**2).reshape(num_classes, num_classes)
    union = confusion.sum(0) + confusion.sum(1) - np.diag(confusion)
    present = union > 0
    return float((np.diag(confusion)[present] / union[present]).mean())


def vertices(out: Path, fmt: str) -> int:
    if fmt == "coco":
        return sum(len(a["segmentation"][0]) // 2 for a in json.loads((out / "annotations.json").read_text())["annotations"])
    if fmt == "geojson":
        return sum(len(ring) - 1 for p in out.glob("*.geojson") for f in json.loads(p.read_text())["features"]
                   for ring in f["geometry"]["coordinates"])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20, help="label maps per style (default 20)")
    parser.add_argument("--formats", default="coco,labelme,cvat-xml,label-studio,geojson")
    parser.add_argument("--tolerances", default="0,0.25,0.5,1,2")
    args = parser.parse_args()
    rows = []
    for style in ("shapes", "blobs"):
        names = list(synthetic_classes(style).names)
        maps = label_maps(style, args.images)
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            images = []
            for i, labels in enumerate(maps):
                path = tmp / "images" / f"{i:03d}.png"
                path.parent.mkdir(exist_ok=True)
                Image.fromarray(np.zeros((*labels.shape, 3), dtype=np.uint8)).save(path)
                images.append(LabelledImage(path.name, path, lambda labels=labels: labels))
            for tolerance in (float(t) for t in args.tolerances.split(",")):
                row = {"labels": style, "tolerance (px)": f"{tolerance:g}"}
                for fmt in args.formats.split(","):
                    out = tmp / f"{fmt}-{tolerance}"
                    prefix = "" if fmt == "label-studio" else None
                    export_annotations(fmt, images, names, out, ExportOptions(shapes="polygon", tolerance=tolerance, image_prefix=prefix))
                    src = out / SOURCES[fmt] if fmt in SOURCES else out
                    extra = {} if fmt in ("labelme", "geojson") else {"images": tmp / "images"}
                    back_dir = tmp / f"back-{fmt}-{tolerance}"
                    import_dataset(fmt, src, back_dir, val_fraction=0, classes=out / "classes.txt", **extra)
                    back = [read_mask_png(back_dir / "masks" / f"{i:03d}.png") for i in range(len(maps))]
                    row[f"{fmt} mean IU"] = f"{100 * score(maps, back, len(names)):.2f}%"
                    if fmt == "coco":
                        row["pixels changed"] = f"{100 * np.mean([(a != b).mean() for a, b in zip(maps, back)]):.3f}%"
                        row["vertices / image"] = f"{vertices(out, fmt) / len(maps):.0f}"
                rows.append(row)
    print(f"{args.images} label maps per style, 480 x 640, minimum area 4 pixels\n")
    print(markdown_table(rows))


if __name__ == "__main__":
    main()
