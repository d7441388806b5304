"""`fcnseg export-annotations LABELS_DIR --images DIR --format F -o OUT`: label PNGs as a labelling tool's annotations."""

from __future__ import annotations

import argparse
from pathlib import Path

from fcnseg.errors import ConfigError

# The keys of fcnseg.annotations.export.WRITERS (kept here so that the command line imports nothing heavy).
FORMAT_NAMES = ("coco", "labelme", "cvat", "cvat-xml", "cvat-mask", "label-studio", "geojson")
DEFAULT_TOLERANCE, DEFAULT_MIN_AREA = 0.5, 4  # fcnseg.annotations.contours' defaults


def add_shape_flags(p, prefix: str = "") -> None:
    """The flags that shape the annotations, shared by this command and ``fcnseg predict --save-annotations``."""
    p.add_argument(f"--{prefix}shapes", dest="annotation_shapes", choices=("polygon", "mask"),
                   help="polygon (traced outlines with holes, editable in every tool) or mask (the format's RLE or "
                        "bitmap, every pixel exactly); default: mask for label-studio (its brush), polygon for the others")
    p.add_argument(f"--{prefix}tolerance", dest="annotation_tolerance", type=float, default=DEFAULT_TOLERANCE, metavar="PIXELS",
                   help="polygon simplification: the farthest a dropped vertex lies from the outline "
                        "(default %(default)s; 0 = the exact pixel outline)")
    p.add_argument(f"--{prefix}min-area", dest="annotation_min_area", type=int, default=DEFAULT_MIN_AREA, metavar="PIXELS",
                   help="polygons: regions and holes of fewer pixels are left out (default %(default)s; masks keep every pixel)")
    p.add_argument(f"--{prefix}image-prefix", dest="annotation_image_prefix", metavar="TEXT",
                   help="put before each image's relative path where the format names it (default: nothing; "
                        "label-studio: /data/local-files/?d=)")


def options_from(args: argparse.Namespace, model_version: str = "fcnseg"):
    from fcnseg.annotations.writing import ExportOptions

    return ExportOptions(shapes=args.annotation_shapes, tolerance=args.annotation_tolerance,
                         min_area=args.annotation_min_area, image_prefix=args.annotation_image_prefix,
                         model_version=model_version)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export-annotations",
        help="write label PNGs (fcnseg predict's, or masks) as COCO, labelme, CVAT, Label Studio or GeoJSON annotations",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""\
Turn label maps into a labelling tool's files, to correct predictions there instead of drawing from
scratch. LABELS_DIR holds a PNG of class indices per image of --images (NAME.png or fcnseg predict's
NAME_labels.png, same relative path); the classes come from --classes or a checkpoint (--model).

  coco          OUT/annotations.json (instances: polygons, or RLE with --shapes mask)
  labelme       OUT/NAME.json per image (polygons, or mask shapes) and OUT/labels.txt
  cvat-xml      OUT/annotations.xml, CVAT for images 1.1 (polygons, or masks); 'cvat' names it too
  cvat-mask     CVAT Segmentation mask 1.1: OUT/labelmap.txt, OUT/SegmentationClass/NAME.png
  label-studio  OUT/tasks.json (tasks with predictions: brush RLE, or polygons) and OUT/label_config.xml
  geojson       OUT/NAME.geojson per image: a Polygon with holes per region, in map coordinates for a
                georeferenced GeoTIFF (needs rasterio), else in pixels

Polygons follow the regions' pixel edges, holes included (formats without holes get a 'background'
polygon over the hole), simplified by --tolerance pixels; regions smaller than --min-area pixels are
left out. Every format also gets OUT/classes.txt: 'fcnseg import FORMAT ... --classes OUT/classes.txt'
reads the files back with the same labels.""",
    )
    p.add_argument("labels", type=Path, help="folder of label PNGs (class indices; 255 = unlabelled, left out)")
    p.add_argument("--images", type=Path, required=True, help="the folder of the images the label maps belong to")
    p.add_argument("--format", required=True, choices=FORMAT_NAMES, help="the tool's format")
    p.add_argument("-o", "--out", type=Path, required=True, help="output folder (new or empty, unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="write into OUT although it holds files (the format's files are replaced)")
    classes = p.add_mutually_exclusive_group(required=True)
    classes.add_argument("--classes", type=Path, metavar="FILE", help="class file: one class a line in label order, background first")
    classes.add_argument("--model", type=Path, metavar="CHECKPOINT", help="take the class names from this model")
    add_shape_flags(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from fcnseg.annotations.export import export_label_folder
    from fcnseg.files import check_output_path

    check_output_path(args.out, "folder", "-o")
    if not args.overwrite and args.out.is_dir() and any(args.out.iterdir()):
        raise ConfigError(f"-o {args.out}: holds files already; name a new or empty folder, or add --overwrite to replace "
                          "the files this format writes there")
    if not args.labels.is_dir():
        raise ConfigError(f"{args.labels}: not a folder; expected the folder of label PNGs")
    if args.classes is not None:
        from fcnseg.data.classes import read_class_file

        names = list(read_class_file(args.classes).names)
    else:
        from fcnseg.weights.checkpoint import load_model

        names = list(load_model(args.model).class_names)
    report = export_label_folder(args.format, args.labels, args.images, names, args.out, options_from(args))
    print(report.summary())
    return 1 if report.skipped else 0
