"""`fcnseg import FORMAT SRC OUT`: convert a COCO, labelme or CVAT mask export into the folder layout `fcnseg train` reads."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

FORMAT_NAMES = ("coco", "labelme", "cvat-mask", "cvat-xml", "label-studio", "geojson")  # the keys of fcnseg.annotations.FORMATS (kept torch-free here)
MAX_NOTES = 20  # notes printed (problems are all printed); the rest are in OUT/import.json
TRAIN_BUDGET = "10m"  # the training time the printed command asks for: a first model on a CPU


def train_command(out: Path, num_classes: int, has_val: bool) -> str:
    """The ``fcnseg train`` command line that trains on the imported folder ``out`` as printed after an import.

    The CPU recipe (the small net from scratch, no pretrained weights needed) for ``TRAIN_BUDGET``;
    every path shell-quoted, so that the line can be pasted as it is. Without a val split it
    validates on train.
    """
    words = ["fcnseg", "train", "--preset", "small-cpu", "--dataset", "folder", "--data-root", str(out),
             "--num-classes", str(num_classes), "--time-budget", TRAIN_BUDGET,
             "--out", str(Path("runs") / (out.resolve().name or "import"))]
    if not has_val:
        words += ["--val-split", "train"]
    return shlex.join(words)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "import",
        help="convert a COCO, labelme or CVAT mask export into the folder layout fcnseg train reads",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""\
Convert an annotation tool's export into OUT/images, OUT/masks (palette PNGs of class indices,
255 = ignore), OUT/classes.txt and OUT/train.txt + OUT/val.txt, then scan OUT as training will.

  coco       SRC is an instances or panoptic JSON (or a folder holding one). Polygons and RLE
             (compressed or not); iscrowd -> 255; panoptic void (id 0) -> 255.
  labelme    SRC is a folder of labelme JSON files. Polygons, rectangles, circles, masks; lines and
             points are counted and left out.
  cvat-mask  SRC is an unzipped CVAT "Segmentation mask 1.1" export (labelmap.txt, SegmentationClass/,
             JPEGImages/ or --images). Colours map to classes; unknown colours are reported, -> 255.
  cvat-xml   SRC is a CVAT "CVAT for images 1.1" annotations.xml (or the unzipped export holding it,
             images/ or --images). Boxes, polygons, ellipses, masks; polylines and points left out.
  label-studio  SRC is a Label Studio JSON export (a list of tasks): per task its first annotation not
             cancelled, else its first prediction; brushes, polygons, rectangles, ellipses. Images by
             data.image under --images (the local-files document root; default: beside the JSON).
  geojson    SRC is a folder of GeoJSON files, one FeatureCollection per image (fcnseg's, or Polygons
             with a 'class' property and the image beside them); map coordinates need rasterio.

Class order, the same in every format: background is 0, then the category names sorted
alphabetically, case-insensitively (ties by the exact string), whatever the tool, the category ids
or the order of first appearance. --classes FILE imposes its order instead (one class a line,
fcnseg's class file or labelme's labels.txt): every category found must be in it, and its classes
that no annotation uses are kept.

Pixels: coordinates start at the top-left corner of the top-left pixel; a pixel is labelled when its
centre lies inside the shape. Overlaps (--overlap): 'area' paints larger objects first so smaller
ones stay on top; 'order' paints in annotation order, the last on top. Crowd/ignore regions go under both.

Items that cannot be imported (missing or unreadable image, duplicate name, wrong size) and
annotations left out (unknown category, malformed annotation, shape outside the image) are printed
with their file; everything good is still written, and the exit status is then 1. OUT must be new or
empty; it appears only once the import is complete.

It prints the command ("train with: ...") that trains on OUT with the CPU recipe.""",
    )
    p.add_argument("format", choices=FORMAT_NAMES, help="export format")
    p.add_argument("src", type=Path, help="the export: COCO JSON, labelme folder, CVAT folder or CVAT XML")
    p.add_argument("out", type=Path, help="output folder (new or empty)")
    p.add_argument("--overlap", choices=["area", "order"], default="area",
                   help="which of two overlapping objects is on top: 'area' the smaller (default), 'order' the later")
    p.add_argument("--val-fraction", type=float, default=0.2, help="share of images listed in val.txt (default: 0.2; 0: train.txt only)")
    p.add_argument("--seed", type=int, default=0, help="seed of the train/val draw (default: 0)")
    p.add_argument("--classes", type=Path, metavar="FILE",
                   help="class file imposing the class order, any format (labelme's labels.txt works); "
                        "default: background, then the names sorted")
    p.add_argument("--images", type=Path, metavar="DIR", help="coco, cvat-mask, cvat-xml, label-studio, geojson: the image folder (default: guessed from the export)")
    p.add_argument("--masks", type=Path, metavar="DIR", help="coco panoptic: the PNG folder (default: the JSON's path without .json)")
    p.add_argument("--json", type=Path, help="also write the report here (it is always written to OUT/import.json)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fcnseg.annotations import import_dataset
    from fcnseg.files import check_output_path, write_json

    check_output_path(args.out, "folder", "OUT")
    if args.json is not None:
        check_output_path(args.json, "file", "--json")
    report = import_dataset(
        args.format, args.src, args.out, overlap=args.overlap, val_fraction=args.val_fraction, seed=args.seed,
        classes=args.classes, images=args.images, masks=args.masks, progress=True,
    )
    for problem in report.problems:
        print(f"{problem.kind:>21}  {problem}")
    for note in report.notes[:MAX_NOTES]:
        print(f"{'note ' + note.kind:>21}  {note}")
    if len(report.notes) > MAX_NOTES:
        print(f"{'':>21}  ... and {len(report.notes) - MAX_NOTES} more notes in {args.out / 'import.json'}")
    print(report.summary())
    for scan in report.scans:
        for problem in scan.problems:
            print(f"{problem.kind:>21}  {problem}")
        print(scan.summary())
    if args.json:
        write_json(report.to_dict(), args.json)
    if report.written and report.classes is not None:
        print(f"train with: {train_command(args.out, report.classes.num_classes, 'val' in report.splits)}")
    if not report.ok:
        print("problems found: the items and annotations listed above were left out" if report.written
              else "nothing could be imported")
        return 1
    return 0
