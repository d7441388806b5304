"""`fcnseg predict`: segment images, folders and videos with a checkpoint: label PNGs, overlays, probabilities, class areas."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from fcnseg.commands.export_annotations import FORMAT_NAMES as ANNOTATION_FORMATS, add_shape_flags, options_from
from fcnseg.errors import ConfigError
from fcnseg.images import DEFAULT_MAX_PIXELS
from fcnseg.inference.confidence import CONFIDENCE_KINDS, DEFAULT_THRESHOLD
from fcnseg.files import check_output_path, format_bytes, parse_bytes
from fcnseg.inference.predictor import DEFAULT_MAX_MEMORY, LAYOUTS
from fcnseg.inference.runtime import RUNTIME_HELP, RUNTIMES
from fcnseg.precision import PRECISIONS

log = logging.getLogger("fcnseg.inference.predictor")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "predict",
        help="segment images, folders of images or videos with a checkpoint",
        description="Writes OUT/<name>_labels.png (palette label map) per image, and on request an overlay, "
        "float16 probabilities and per-class area tables. A video (.mp4 .mov .avi .mkv .webm, named as an input; "
        "folders are searched for images only) gives OUT/<name>_overlay.mp4 and OUT/<name>_labels/000000.png ... "
        "(or --label-video), frame by frame; it needs PyAV: pip install 'fcnseg[video]'. "
        "Picks the fastest precision for the machine "
        "(bf16 + channels_last on CPUs with native bf16, fp16 on CUDA) and tiles images too large for "
        "--max-memory. Images whose label map exists are skipped, so an interrupted run resumes.",
    )
    p.add_argument("checkpoint", type=Path,
                   help="model: a checkpoint (fcnseg, pytorch-fcn .pth or .caffemodel) or an fcnseg .onnx (fp32 or int8)")
    p.add_argument("inputs", nargs="+", type=Path,
                   help="image files, folders (searched recursively for images) and/or video files")
    p.add_argument("-o", "--out", type=Path,
                   help="output folder, outside every input folder (default: <first input's stem or folder name>_fcnseg "
                   "beside it)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="forward precision of a checkpoint (default: auto); an .onnx file runs in its own (fp32 or int8)")
    p.add_argument("--runtime", choices=RUNTIMES, default=None,
                   help=RUNTIME_HELP)
    p.add_argument("--tta", metavar="SPEC",
                   help="test-time augmentation, softmax averaged at input size: flip, scales=0.75,1,1.25 or "
                   "scales=0.75,1,1.25,flip (costs one forward per variant)")
    p.add_argument("--layout", choices=LAYOUTS, default="auto",
                   help="activation memory layout (default auto: channels_last where it is faster on this machine)")
    p.add_argument("--device", default="auto", help="torch device: auto, cpu, cuda, cuda:1 ... (default: auto)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (rarely pays on CPU)")
    p.add_argument(
        "--max-memory",
        default=format_bytes(DEFAULT_MAX_MEMORY).replace(" ", ""),
        help="memory for weights + one forward; larger images are tiled (e.g. 4GiB, 512MiB; default %(default)s)",
    )
    p.add_argument("--tile", type=int, help="force tiles of this many pixels (multiple of 32) instead of choosing from --max-memory")
    p.add_argument("--overlay", action="store_true",
                   help="also write <name>_overlay.jpg (class colours over the image, a legend of the classes present "
                   "and their shares to its right)")
    p.add_argument("--no-legend", action="store_true", help="overlays without the legend (the picture alone)")
    p.add_argument("--probabilities", action="store_true", help="also write <name>_prob.npy, float16 [C, H, W]")
    p.add_argument("--confidence", nargs="?", const="max", choices=CONFIDENCE_KINDS, metavar="KIND",
                   help="also write <name>_confidence.png (the map with its scale: dark = unsure) and "
                   "<name>_confidence.npy (float16 [H, W], 0..1) per image and confidence.csv (mean confidence, share "
                   "below --confidence-threshold); KIND: max (the largest probability, the default), margin or entropy; "
                   "at the model's calibration temperature (fcnseg calibrate). Without KIND, put it after the inputs")
    p.add_argument("--confidence-threshold", type=float, default=DEFAULT_THRESHOLD, metavar="P",
                   help="confidence.csv counts the share of pixels below this (default %(default)s)")
    p.add_argument("--stats", action="store_true", help="write areas.csv and areas.json: per-class pixels and fractions")
    p.add_argument("--label-video", action="store_true",
                   help="a video's label maps as one lossless video, OUT/<name>_labels.mkv (FFV1, grey pixel = class id), "
                   "instead of a folder of PNGs")
    p.add_argument("--overwrite", action="store_true", help="redo images and videos whose outputs exist")
    p.add_argument("--workers", type=int, default=2, help="image-decoding processes (default: 2; 0 = none)")
    p.add_argument(
        "--max-pixels",
        type=int,
        default=DEFAULT_MAX_PIXELS,
        help=f"refuse images with more pixels than this (default {DEFAULT_MAX_PIXELS:,}; 0 = no limit)",
    )
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--save-annotations", metavar="FORMAT", choices=ANNOTATION_FORMATS,
                   help="also write the label maps as a labelling tool's annotations in OUT/FORMAT/: "
                   + ", ".join(ANNOTATION_FORMATS) + " (see fcnseg export-annotations --help)")
    add_shape_flags(p, prefix="annotation-")
    _register_cluster_flags(p)
    p.set_defaults(func=run)


def _register_cluster_flags(p: argparse.ArgumentParser) -> None:
    """--engine ray and its sizing flags (docs/cluster.md); under torchrun the plain engine splits the images by rank."""
    g = p.add_argument_group("many images on many machines (docs/cluster.md)")
    g.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="local: this process (under torchrun: the images split between the processes); "
                   "ray: a Ray Data pipeline on a Ray cluster, reading folders, list files (.txt, one path or URI "
                   "a line) or URIs (s3://, gs://), writing OUT/manifest.parquet; needs pip install 'fcnseg[ray]'")
    g.add_argument("--address", help="--engine ray: the cluster, auto (the one this machine belongs to) or "
                   "ray://HEAD:10001 (default: a Ray started on this machine)")
    g.add_argument("--actors", type=int, help="--engine ray: model actors (default: from the cluster's CPUs and GPUs)")
    g.add_argument("--batch-size", type=int, help="--engine ray: images per actor call (default: 4 on CPUs, 8 on GPUs)")
    g.add_argument("--cpus-per-actor", type=float, help="--engine ray: CPUs each actor reserves and runs threads on "
                   "(default: up to 4)")
    g.add_argument("--gpus-per-actor", type=float, help="--engine ray: GPUs per actor (default: 1 where the cluster "
                   "has GPUs, else 0)")


def run(args: argparse.Namespace) -> int:
    from fcnseg.inference.predictor import Predictor
    from fcnseg.inference.folder import check_output_folder, default_output_folder, first_image, predict_folder
    from fcnseg.inference.tta import parse_tta
    from fcnseg.inference.video import is_video_file

    try:
        max_memory = parse_bytes(args.max_memory)
    except ValueError as e:
        raise ConfigError(f"--max-memory: {e}") from e
    if not 0 <= args.confidence_threshold <= 1:
        raise ConfigError(f"--confidence-threshold must be between 0 and 1, got {args.confidence_threshold}")
    if args.tile is not None and args.tile < 32:
        raise ConfigError(f"--tile must be at least 32 pixels, got {args.tile}")
    # Videos are named as inputs (by suffix); folders are searched for images only.
    videos = [p for p in args.inputs if not p.is_dir() and is_video_file(p)]
    images = [p for p in args.inputs if p not in videos]
    # Before the model loads: where the outputs go, and that they can neither be written over an input
    # nor be listed as inputs on the next run.
    if args.out is None:
        args.out = default_output_folder(args.inputs[0])
        print(f"writing to {args.out} (choose another folder with -o)")
    check_output_path(args.out, "folder", "-o")
    check_output_folder(args.inputs, args.out)
    from fcnseg.inference.ray_engine import check_engine_flags, predict_with_ray

    check_engine_flags(args)
    if args.engine == "ray":
        _refuse_under_ray(args)
        return predict_with_ray(args, max_memory)
    from fcnseg.inference.torchrun import predict_with_torchrun, under_torchrun

    if under_torchrun():  # rank 0 writes the annotations once every rank's label maps are on disk
        return predict_with_torchrun(args, max_memory, on_done=lambda predictor: _save_annotations(args, images, predictor))
    if videos:
        _check_videos(args, videos)
    tta = parse_tta(args.tta)
    predictor = Predictor.from_checkpoint(
        args.checkpoint,
        runtime=args.runtime,
        image=first_image(images, args.max_pixels or None),
        tta=tta,
        device=args.device,
        precision=args.precision,
        layout=args.layout,
        compile=args.compile,
        max_memory=max_memory,
        tile=args.tile,
    )
    log.info("%s: %s", args.checkpoint, predictor.describe())
    failed = False
    if images:
        report = predict_folder(
            predictor,
            images,
            args.out,
            overlay_images=args.overlay,
            legend=not args.no_legend,
            probabilities=args.probabilities,
            stats=args.stats,
            overwrite=args.overwrite,
            workers=args.workers,
            max_pixels=args.max_pixels or None,
            palette=predictor.palette,
            progress=not args.no_progress,
            confidence=args.confidence,
            confidence_threshold=args.confidence_threshold,
        )
        print(report.summary())
        if args.confidence:
            print(f"confidence ({args.confidence}): {args.out / 'confidence.csv'}")
        if args.stats:
            print(f"class areas: {args.out / 'areas.csv'}  {args.out / 'areas.json'}")
        found = [name for name in report.not_images if is_video_file(name)]
        if found:
            print(f"{len(found)} of the files skipped are videos, which folders are not searched for; "
                  f"name each as an input to segment it, e.g. fcnseg predict {args.checkpoint} {found[0]}")
        failed = bool(report.failed)
        _save_annotations(args, images, predictor)
    for video in videos:
        print(_predict_one_video(args, predictor, video).summary())
    return 1 if failed else 0


def _save_annotations(args: argparse.Namespace, images: list[Path], predictor) -> None:
    """--save-annotations: the run's label maps as a labelling tool's files in OUT/FORMAT/."""
    if not args.save_annotations:
        return
    from fcnseg.annotations.export import save_predictions

    print(save_predictions(images, args.out, args.save_annotations, list(predictor.class_names),
                           options_from(args, model_version=args.checkpoint.name)).summary())


def _refuse_under_ray(args: argparse.Namespace) -> None:
    """The Ray engine writes label maps, overlays, probabilities and areas; say so for the outputs it does not write."""
    if args.confidence:
        raise ConfigError("--confidence is not written by --engine ray; run fcnseg predict without --engine ray "
                          "(or under torchrun) for confidence maps")
    if args.save_annotations:
        raise ConfigError(f"--save-annotations is not written by --engine ray; once the run is done, write them from its "
                          f"label maps: fcnseg export-annotations {args.out} --images IMAGES --model {args.checkpoint} "
                          f"--format {args.save_annotations} -o ANNOTATIONS")


def _check_videos(args: argparse.Namespace, videos: list[Path]) -> None:
    """Refuse, before the model loads: no PyAV, an unreadable video, outputs that would replace an input."""
    from fcnseg.inference.video import check_video_outputs, import_av, probe_video

    import_av(videos[0])
    for video in videos:
        probe_video(video, args.max_pixels or None)
    check_video_outputs(videos, args.inputs, args.out, args.label_video)
    ignored = [flag for flag, given in (("--overlay", args.overlay), ("--probabilities", args.probabilities),
                                        ("--stats", args.stats)) if given]
    if ignored:
        log.info("%s apply to images only: a video always gets its overlay video and label maps", " ".join(ignored))


def _predict_one_video(args: argparse.Namespace, predictor, video: Path):
    from fcnseg.inference.video import predict_video

    return predict_video(
        predictor,
        video,
        args.out,
        label_video=args.label_video,
        overwrite=args.overwrite,
        max_pixels=args.max_pixels or None,
        palette=predictor.palette,
        progress=not args.no_progress,
    )
