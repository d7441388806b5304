"""`fcnseg check-data ROOT`: scan a data set, list every bad item and exit non-zero if any was found."""

from __future__ import annotations

import argparse
from pathlib import Path

from fcnseg.data import build_dataset, detect_kind
from fcnseg.data.kinds import AUTO, DATASET_KINDS
from fcnseg.data.nyud import find_nyud_root
from fcnseg.data.pascal_voc import find_voc_root
from fcnseg.files import plural, write_json


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "check-data",
        help="scan a data set for unreadable, missing, mis-sized or mislabelled files",
        description="Scan a VOC, SBD, image/mask folder, NYUDv2, SIFT Flow or PASCAL-Context data set. "
        "Each problem is printed with its file; "
        "the exit status is 1 when any item would be skipped.",
    )
    p.add_argument("root", type=Path, help="data set folder")
    p.add_argument(
        "--kind",
        default=AUTO,
        choices=[AUTO, *(kind for kind in DATASET_KINDS if kind != "synthetic")],  # a synthetic tree has a layout
        help="layout (default: guess)",
    )
    p.add_argument(
        "--split",
        nargs="+",
        help="splits to scan (default: train and val for VOC/SBD when present, all for a folder)",
    )
    p.add_argument("--sbd-root", type=Path, help="SBD folder, for the VOC split seg11valid")
    p.add_argument("--voc-root", type=Path, help="VOC folder, for the SBD split train_noval (PASCAL-Context: the VOC2010 images)")
    p.add_argument(
        "--modalities", default="color+hha", help="NYUD inputs whose files are checked (default: color+hha; color+depth, ...)"
    )
    p.add_argument("--class-file", type=Path, help="class file (VOC layout or folder)")
    p.add_argument("--workers", type=int, default=4, help="decoding threads (default: 4)")
    p.add_argument("--json", type=Path, help="also write the reports here as JSON")
    p.set_defaults(func=run)


def default_splits(kind: str, root: Path) -> list[str]:
    if kind == "folder":
        return ["all"]
    if kind == "voc":
        split_dir = find_voc_root(root) / "ImageSets" / "Segmentation"
        present = [s for s in ("train", "val") if (split_dir / f"{s}.txt").is_file()]
        return present or sorted(p.stem for p in split_dir.glob("*.txt"))
    if kind == "nyud":
        nyud_root = find_nyud_root(root)
        return [s for s in ("train", "val", "test") if (nyud_root / f"{s}.txt").is_file()] or ["train"]
    return {"siftflow": ["trainval", "test"]}.get(kind, ["train", "val"])


def run(args: argparse.Namespace) -> int:
    kind = detect_kind(args.root) if args.kind == "auto" else args.kind
    splits = args.split or default_splits(kind, args.root)
    extra = {"voc": {"sbd_root": args.sbd_root, "class_file": args.class_file}, "sbd": {"voc_root": args.voc_root}}
    extra["folder"] = {"class_file": args.class_file}
    extra["nyud"] = {"modalities": args.modalities}
    extra["siftflow"] = {}
    extra["pascal_context"] = {"voc_root": args.voc_root}
    reports = []
    for split in splits:
        kwargs = {k: v for k, v in extra[kind].items() if v is not None}
        dataset = build_dataset(kind, args.root, split, scan=False, **kwargs)
        report = dataset.scan(workers=args.workers, progress=True)
        for problem in report.problems:
            print(f"{problem.kind:>16}  {problem}")
        print(report.summary())
        reports.append(report)
    if args.json:
        write_json([r.to_dict() for r in reports], args.json)
    bad = sum(len(r.problems) for r in reports)
    if bad:
        print(f"{plural(bad, 'problem')} found; training and evaluation skip {'this item' if bad == 1 else 'these items'}")
        return 1
    print("no problems found")
    return 0
