"""`fcnseg train`: a config file and/or flags -> a trained FCN in an output folder (resumable, torchrun-ready)."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

import yaml

from fcnseg.config import (ARCHES, BACKBONES, FREEZE_BATCH_NORM, NORMALIZATIONS, PRESETS, RESNET_ARCH,
                           RESNET_BACKBONES, resolve_run_config)
from fcnseg.data.kinds import AUTO, DATASET_KINDS, NYUD_MODALITIES, SYNTHETIC_STYLES
from fcnseg.errors import ConfigError
from fcnseg.precision import LAYOUTS, PRECISIONS

log = logging.getLogger(__name__)

# What each preset is for; its numbers are read from PRESETS (preset_summary) so the help cannot drift from them.
PRESET_PURPOSES = {
    "paper-cvpr": "the CVPR paper's recipe for FCN-VGG16 (the defaults)",
    "paper-heavy": "the released reference solvers (\"heavy learning\")",
    "small-cpu": "the small CPU net from scratch",
}


def preset_summary(name: str) -> str:
    """One line of a preset's settings for the help, e.g. ``small trunk, BatchNorm, ..., adamw lr 0.004 poly, ...``."""
    preset = PRESETS[name]
    model, data, train = (preset.get(section, {}) for section in ("model", "data", "train"))
    parts = []
    if "backbone" in model:
        parts.append(f"{model['backbone']} trunk" + (", BatchNorm" if model.get("batch_norm") else "")
                     + (f", padding {model['padding']}" if "padding" in model else f", pad {model.get('pad', 100)}"))
    if "optimizer" in train:
        parts.append(f"{train['optimizer'].upper() if train['optimizer'] == 'sgd' else 'AdamW'} lr {train['lr']:g} "
                     f"{train.get('lr_policy', 'fixed')}" + (f", momentum {train['momentum']:g}"
                                                            if train["optimizer"] == "sgd" else ""))
    if "batch_size" in train:
        images = train["batch_size"] * train.get("iter_size", 1)
        parts.append(f"{images} image{'s' if images != 1 else ''} per update")
    if "normalize_loss" in train:
        parts.append("normalised loss" if train["normalize_loss"] else "summed loss")
    if data.get("crop_size"):
        parts.append(f"crops of {data['crop_size']} px")
    return ", ".join(parts)


def _presets_help() -> str:
    width = max(len(name) for name in PRESETS) + 2
    lines = []
    for name in PRESETS:
        lines.append(f"  {name:<{width}} {PRESET_PURPOSES.get(name, '')}:")
        lines.append(f"  {'':<{width}} {preset_summary(name)}")
    return "\n".join(lines)


EPILOG = """\
settings are layered: defaults < --preset < --config FILE < flags (flags win).
every run writes its resolved settings to OUT/config.yaml; `fcnseg train --config OUT/config.yaml`
runs it again.

presets:
""" + _presets_help() + """

examples:
  # no preset, config file or starting weights on a machine without a GPU: the small-cpu preset for
  # 10 minutes of training (said in one log line); --preset paper-cvpr for the paper's recipe
  fcnseg train --dataset folder --data-root data/my-set --out runs/mine

  # the small net on the built-in synthetic shapes (generated in memory), a few minutes on a CPU
  fcnseg train --preset small-cpu --dataset synthetic --num-classes 6 --out runs/shapes

  # FCN-32s from an ImageNet VGG16 classifier on PASCAL VOC, then 16s from 32s, then 8s from 16s
  fcnseg train --config configs/voc-fcn32s.yaml --classifier-weights vgg16.pth --out runs/32s
  fcnseg train --config configs/voc-fcn16s.yaml --init-from runs/32s/checkpoints/last.pt --out runs/16s
  fcnseg train --config configs/voc-fcn8s.yaml --init-from runs/16s/checkpoints/last.pt --out runs/8s

  # the paper's other benchmarks (configs/): NYUDv2 colour + HHA late fusion, SIFT Flow's two heads
  fcnseg train --config configs/nyud-fcn32s-color-hha.yaml --data-root data/nyud --out runs/nyud-color-hha \
      --set 'train.init_streams_from={color: runs/nyud-color/checkpoints/last.pt, hha: runs/nyud-hha/checkpoints/last.pt}'
  fcnseg train --config configs/siftflow-fcn32s.yaml --data-root data/sift-flow --classifier-weights vgg16.caffemodel

  # continue an interrupted run (its own config; flags may change e.g. --max-iter)
  fcnseg train --resume runs/32s

  # the small net for 5 minutes of training, whatever the machine (the lr schedule follows the clock)
  fcnseg train --preset small-cpu --dataset auto --data-root data/my-set --num-classes 4 --time-budget 5m

  # --num-classes left out: the count comes from the data set's classes.txt (logged)
  fcnseg train --preset small-cpu --dataset auto --data-root data/my-set --out runs/mine

  # fine-tune torchvision's fcn_resnet50_coco on your classes (trunk and head kept, class scores new)
  fcnseg train --backbone resnet50 --init-from fcn_resnet50_coco.pth --dataset auto --data-root data/my-set \
      --crop-size 256 --batch-size 4 --iter-size 1 --lr 0.0025 --lr-policy poly --max-iter 1000 --out runs/r50

  # fine-tune a model whose classes are the data set's in another order (or under other names)
  fcnseg train --config my.yaml --init-from runs/a/checkpoints/best.pt --class-map classes.map

  # any setting without its own flag
  fcnseg train --config my.yaml --set train.bias_lr_mult=1 --set data.scale_max=1.5

  # 2 processes on this machine (gloo on CPU, NCCL on GPUs)
  torchrun --nproc_per_node=2 -m fcnseg train --config my.yaml
"""

# flag destination -> (section, key) of the run config
FLAG_KEYS = {
    "arch": ("model", "arch"),
    "backbone": ("model", "backbone"),
    "num_classes": ("model", "num_classes"),
    "pad": ("model", "pad"),
    "padding": ("model", "padding"),
    "dropout": ("model", "dropout"),
    "learn_upsampling": ("model", "learn_upsampling"),
    "batch_norm": ("model", "batch_norm"),
    "dataset": ("data", "dataset"),
    "data_root": ("data", "root"),
    "train_split": ("data", "train_split"),
    "val_split": ("data", "val_split"),
    "sbd_root": ("data", "sbd_root"),
    "voc_root": ("data", "voc_root"),
    "modalities": ("data", "modalities"),
    "normalization": ("data", "normalization"),
    "crop_size": ("data", "crop_size"),
    "workers": ("data", "num_workers"),
    "style": ("data", "synthetic_style"),
    "out": ("train", "out_dir"),
    "optimizer": ("train", "optimizer"),
    "lr": ("train", "lr"),
    "momentum": ("train", "momentum"),
    "weight_decay": ("train", "weight_decay"),
    "batch_size": ("train", "batch_size"),
    "iter_size": ("train", "iter_size"),
    "max_iter": ("train", "max_iter"),
    "time_budget": ("train", "time_budget"),
    "lr_policy": ("train", "lr_policy"),
    "val_every": ("train", "val_every"),
    "checkpoint_every": ("train", "checkpoint_every"),
    "seed": ("train", "seed"),
    "deterministic": ("train", "deterministic"),
    "device": ("train", "device"),
    "precision": ("train", "precision"),
    "layout": ("train", "layout"),
    "channels_last": ("train", "channels_last"),  # the earlier switch, read as train.layout
    "init_from": ("train", "init_from"),
    "classifier_weights": ("train", "classifier_weights"),
    "class_map": ("train", "class_map"),
    "ignore_class_names": ("train", "ignore_class_names"),
    "freeze_batch_norm": ("train", "freeze_batch_norm"),
}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="train an FCN (config file and/or flags; resumable; runs under torchrun)",
        description="Train an FCN-32s/16s/8s. Outputs (checkpoints, log, metrics CSV/JSON, curves and "
        "prediction panels) go to --out.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    g = p.add_argument_group("run")
    g.add_argument("--config", type=Path, help="YAML/JSON settings file (sections: preset, model, data, train)")
    g.add_argument("--preset", choices=sorted(PRESETS), help="named recipe the file and flags refine")
    g.add_argument("--out", help="output folder (default runs/train)")
    g.add_argument("--resume", type=Path, metavar="CKPT_OR_DIR",
                   help="continue from a last.pt, or a run folder (uses its checkpoints/last.pt and its settings); "
                   "the run goes on in that folder")
    g.add_argument("--init-from", metavar="CKPT", help="start from a coarser FCN checkpoint (16s from 32s, 8s from 16s), or a ResNet FCN to fine-tune "
                   "(an fcnseg checkpoint or torchvision's fcn_resnet50/101_coco file; the class scores start fresh "
                   "where its classes differ)")
    g.add_argument("--class-map", metavar="FILE",
                   help="with --init-from: how the checkpoint's classes read in the data set's, one "
                   "'data name -> model name' per line (reorders or renames; 'name ->' starts that class fresh)")
    g.add_argument("--ignore-class-names", action="store_true", default=None,
                   help="with --init-from: copy the score layers by class index even where the checkpoint's class "
                   "names differ from the data set's (at your own risk; logged as a warning)")
    g.add_argument("--classifier-weights", metavar="FILE",
                   help="start from an ImageNet VGG16 classifier (torchvision-style .pth or Caffe .caffemodel), or a "
                   "torchvision ResNet-50/101 classifier with --backbone resnet50/resnet101")
    g.add_argument("--freeze-batch-norm", choices=FREEZE_BATCH_NORM,
                   help="BatchNorm statistics of a net started from trained weights: auto (default) keeps them "
                   "where fewer than 8 images per batch would re-estimate them; on; off")
    g.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="any setting, e.g. train.bias_lr_mult=1 (value read as YAML); repeatable")
    g.add_argument("--no-progress", action="store_true", help="no progress bar (log lines only)")

    g = p.add_argument_group("model")
    g.add_argument("--arch", choices=[*ARCHES, RESNET_ARCH],
                   help="fcn32s/16s/8s/8s-atonce for vgg16, alexnet and small (default fcn8s); fcn, torchvision's "
                   "FCN, for resnet50 and resnet101 (the default there)")
    g.add_argument("--backbone", choices=[*BACKBONES, *RESNET_BACKBONES])
    g.add_argument("--num-classes", type=int, help="classes including background (VOC: 21; synthetic: 6)")
    g.add_argument("--pad", type=int, help="padding of conv1_1, pixels (reference nets: 100; --padding paper only)")
    g.add_argument("--padding", choices=["paper", "same"],
                   help="paper: conv1_1 padded by --pad, fc6 unpadded (the reference nets; default); same: every "
                   "convolution keeps sizes, a crop is computed at its own size (the small-cpu preset)")
    g.add_argument("--dropout", type=float)
    g.add_argument("--learn-upsampling", action=argparse.BooleanOptionalAction, default=None,
                   help="learn the 2x upsampling layers instead of fixing them to bilinear")
    g.add_argument("--batch-norm", action=argparse.BooleanOptionalAction, default=None,
                   help="BatchNorm after every trunk convolution (small backbone; on in the small-cpu preset)")

    g = p.add_argument_group("data")
    g.add_argument("--dataset", choices=[*DATASET_KINDS, AUTO])
    g.add_argument("--data-root", help="data set folder ('' with --dataset synthetic: generated in memory)")
    g.add_argument("--train-split")
    g.add_argument("--val-split")
    g.add_argument("--sbd-root", help="SBD folder, for the VOC split seg11valid")
    g.add_argument("--voc-root", help="PASCAL-Context: the VOC2010 images, when not under --data-root")
    g.add_argument("--modalities", choices=NYUD_MODALITIES,
                   help="NYUD's inputs (color+depth: early fusion, 4 channels; color+hha: two streams, late fusion); "
                   "set model.streams to match")
    g.add_argument("--normalization", choices=list(NORMALIZATIONS))
    g.add_argument("--crop-size", type=int, help="random square training crops, pixels (0 = whole images)")
    g.add_argument("--workers", type=int, help="data loader processes per training process")
    g.add_argument("--style", choices=SYNTHETIC_STYLES, help="synthetic data style")

    g = p.add_argument_group("optimisation")
    g.add_argument("--optimizer", choices=["sgd", "adamw"])
    g.add_argument("--lr", type=float, help="base learning rate")
    g.add_argument("--momentum", type=float)
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--batch-size", type=int, help="images per pass per process")
    g.add_argument("--iter-size", type=int, help="passes accumulated per update")
    g.add_argument("--max-iter", type=int, help="number of updates")
    g.add_argument("--time-budget", metavar="DURATION",
                   help="train for this long instead of --max-iter updates, e.g. 90s, 5m, 1.5h; the poly schedule "
                   "runs over the time (validations and checkpoints not counted); '' turns it off")
    g.add_argument("--lr-policy", choices=["fixed", "poly", "step"])
    g.add_argument("--val-every", type=int, help="validate every N updates (0: only at the end)")
    g.add_argument("--checkpoint-every", type=int, help="write checkpoints/last.pt every N updates")
    g.add_argument("--seed", type=int)
    g.add_argument("--deterministic", action=argparse.BooleanOptionalAction, default=None,
                   help="deterministic algorithms: a resumed run repeats the uninterrupted run's losses")

    g = p.add_argument_group("hardware")
    g.add_argument("--device", help="auto | cpu | cuda | cuda:N (under torchrun: cuda:LOCAL_RANK)")
    g.add_argument("--precision", choices=PRECISIONS,
                   help="auto (default) = fp16 autocast on CUDA, bf16 on CPUs with native bf16 (AMX / AVX512-BF16), "
                   "fp32 elsewhere; fp32; bf16 forces it (emulated and slow on other CPUs); fp16")
    g.add_argument("--layout", choices=LAYOUTS,
                   help="memory layout (default: train.layout, auto = per CPU kind as measured: channels_last "
                   "under autocast and on AVX-512 CPUs, contiguous on AVX2-only ones)")
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="the earlier switch: --channels-last = --layout channels_last, --no-channels-last = contiguous")
    p.set_defaults(func=run)


def parse_set(items: list[str]) -> dict[str, dict[str, Any]]:
    """``["train.lr=1e-3", ...]`` -> ``{"train": {"lr": 0.001}}`` (values parsed as YAML)."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot or not name:
            raise ConfigError(f"--set {item!r}: expected SECTION.KEY=VALUE, e.g. train.lr=0.001")
        try:
            parsed = yaml.safe_load(value) if value != "" else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {item!r}: value is not valid YAML ({e})") from e
        out.setdefault(section, {})[name] = parsed
    return out


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The flags the user actually gave, as a nested settings dict."""
    overrides: dict[str, Any] = parse_set(args.set)
    for dest, (section, key) in FLAG_KEYS.items():
        value = getattr(args, dest, None)
        if value is not None:
            overrides.setdefault(section, {})[key] = value
    if args.preset:
        overrides["preset"] = args.preset
    return overrides


def with_cpu_default(overrides: dict[str, Any], config_file: Path | None, resumed: bool) -> tuple[dict[str, Any], list[str]]:
    """``overrides`` with the small-cpu preset on a time budget where the user gave no recipe and there is no GPU
    (:func:`fcnseg.training.recipe.cpu_default_recipe`), and the one line that says so (for the console and
    train.log: ``train(..., notes=...)`` logs it); else ``overrides`` as given and no line."""
    from fcnseg.precision import select_device
    from fcnseg.training.recipe import cpu_default_recipe

    on_gpu = select_device((overrides.get("train") or {}).get("device", "auto")).type != "cpu"
    choice = cpu_default_recipe(overrides, config_file, resumed, on_gpu)
    if choice is None:
        return overrides, []
    return choice.overrides, [choice.message]


def run(args: argparse.Namespace) -> int:
    from tqdm.contrib.logging import logging_redirect_tqdm

    from fcnseg.training.state import read_resume
    from fcnseg.training.trainer import train

    overrides, notes = with_cpu_default(overrides_from_args(args), args.config, args.resume is not None)
    base = None
    resume = None
    if args.resume is not None:
        resume = read_resume(args.resume)  # the one read of a checkpoint that may be ~500 MB
        if resume.run_config is None:
            raise ConfigError(f"{resume.path}: the checkpoint holds no run settings; it was not written by fcnseg train")
        # The folder pointed at, not the one the checkpoint was written in: a copied or moved run
        # continues where it now is (an explicit --out still wins, as every flag does).
        base = {**resume.run_config, "train": {**resume.run_config.get("train", {}), "out_dir": str(resume.run_dir)}}
    config = resolve_run_config(args.config, overrides, base=base)
    with logging_redirect_tqdm():
        result = train(config, resume=resume, progress=not args.no_progress, notes=notes)
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    if result.final_metrics is not None and result.out_dir.joinpath("metrics.txt").exists():
        print(result.out_dir.joinpath("metrics.txt").read_text(), end="")
    print(f"outputs in {result.out_dir}: checkpoints/last.pt, checkpoints/best.pt, metrics.csv, curves.png, panels.png")
    return 0
