"""The recipe a run takes when the user chose none, and the warning for a big net trained from scratch on a CPU.

The defaults reproduce the paper (VGG16 FCN-8s, 20 passes per update, 100000 updates), which needs a GPU and
ImageNet weights. On a CPU, with no preset, no config file and no starting weights, ``fcnseg train`` takes the
small-cpu preset on a time budget instead, and says so in one log line.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from fcnseg.config import RESNET_BACKBONES, RunConfig, parse_duration
from fcnseg.files import plural

log = logging.getLogger(__name__)

CPU_DEFAULT_PRESET = "small-cpu"
CPU_DEFAULT_BUDGET = "10m"
CPU_DEFAULT_VALIDATIONS = 5  # the default recipe validates at least this often over its budget (curves.png)
# The settings that start a run from trained weights: a run with any of them is not "from scratch".
STARTING_WEIGHTS = ("classifier_weights", "init_from", "init_streams_from")
# Backbones a CPU trains in minutes from scratch; an explicit other one is the user's choice, warned about.
CPU_BACKBONES = ("small",)
BACKBONE_NAMES = {"vgg16": "VGG16", "alexnet": "AlexNet"}


@dataclass
class RecipeChoice:
    """The settings layer :func:`cpu_default_recipe` adds, and the log line that says why."""

    overrides: dict[str, Any]  # the user's flags with the preset (and a budget) added
    message: str


def cpu_default_recipe(overrides: dict[str, Any], config_file: Any, resumed: bool, on_gpu: bool) -> RecipeChoice | None:
    """The small-cpu preset on a time budget, when the user gave no recipe and the run has no GPU; else None.

    A recipe counts as given by: ``--preset`` (``overrides["preset"]``), a config file, a resumed run's own
    settings, starting weights (``--classifier-weights``, ``--init-from``, ``train.init_streams_from``), or a
    backbone other than the small one. A run on a GPU keeps the defaults. Every flag the user gave still wins
    over the preset (they are layered above it); the budget is added only where neither ``--time-budget``
    nor ``--max-iter`` was given, and validations every budget / 5 only where ``--val-every`` was not; a
    ``--pad`` without ``--padding`` keeps the paper geometry it belongs to.

    Args:
        overrides: the command line's settings, ``{"preset": ..., "model": {...}, "train": {...}}``.
        config_file: the ``--config`` path or None.
        resumed: whether the run continues a checkpoint (``--resume``).
        on_gpu: whether the run's device is a GPU.
    """
    train, model = overrides.get("train") or {}, overrides.get("model") or {}
    if overrides.get("preset") or config_file is not None or resumed or on_gpu:
        return None
    if any(train.get(key) for key in STARTING_WEIGHTS):
        return None
    if model.get("backbone", CPU_BACKBONES[0]) not in CPU_BACKBONES:
        return None
    chosen = {**overrides, "preset": CPU_DEFAULT_PRESET}
    if "pad" in model and "padding" not in model:  # conv1_1's pad exists under the paper geometry only
        chosen["model"] = {**model, "padding": "paper"}
    added = dict(train)
    if "time_budget" not in train and "max_iter" not in train:
        added["time_budget"] = CPU_DEFAULT_BUDGET
    budget = parse_duration(str(added.get("time_budget") or ""), "--time-budget")
    if budget is not None and "val_every" not in train and "val_every_time" not in train:
        added["val_every_time"] = f"{budget / CPU_DEFAULT_VALIDATIONS:g}s"
    chosen["train"] = added
    length = f"{added['time_budget']} of training" if added.get("time_budget") else plural(int(train['max_iter']), 'update')
    message = (f"no --preset, config file or starting weights, and no GPU: training the {CPU_DEFAULT_PRESET} preset "
               f"(the small FCN from scratch) for {length}, a recipe that finishes on a CPU; for the paper's recipe "
               f"(VGG16 from ImageNet weights, 100000 updates) give --preset paper-cvpr or a config file")
    return RecipeChoice(overrides=chosen, message=message)


def matmul_gflops(size: int = 512, repeats: int = 5) -> float:
    """This machine's float32 matrix-multiply rate in GFLOP/s, from ``repeats`` products of two ``size`` squares."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)  # the first call pays for thread start-up
    began = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    seconds = max(time.perf_counter() - began, 1e-9)
    return 2 * size**3 * repeats / seconds / 1e9


def seconds_per_update(config: RunConfig, input_size: tuple[int, int], gflops_per_second: float) -> float | None:
    """An estimate, from the model's FLOPs, of one update's time: forward and backward (~3x the forward) over
    ``batch_size * iter_size`` images of ``input_size`` at ``gflops_per_second`` (a lower bound: convolutions
    run below the matrix-multiply rate). None for a net that does not read one RGB image."""
    from fcnseg.models.complexity import complexity

    if config.model.in_channels != 3:
        return None
    forward = complexity(config.model, input_size).gflops
    images = config.train.batch_size * config.train.iter_size
    return 3 * forward * images / gflops_per_second


def slow_start_warning(config: RunConfig, device_type: str, input_size: tuple[int, int],
                       gflops_per_second: float | None = None) -> str | None:
    """A warning for a VGG16, AlexNet or ResNet FCN trained from scratch on a CPU, with the expected time per update;
    None for any other run.

    Args:
        config: the resolved run settings.
        device_type: the run's device type ("cpu", "cuda").
        input_size: (height, width) of a training input (the crop, or a typical image).
        gflops_per_second: the CPU's rate; measured with :func:`matmul_gflops` when None.
    """
    t = config.train
    if device_type != "cpu" or config.model.backbone in CPU_BACKBONES or any(getattr(t, k) for k in STARTING_WEIGHTS):
        return None
    rate = gflops_per_second if gflops_per_second is not None else matmul_gflops()
    seconds = seconds_per_update(config, input_size, rate)
    per_update = "" if seconds is None else (
        f"; expect at least {_duration(seconds)} per update ({t.batch_size * t.iter_size} images of "
        f"{input_size[1]}x{input_size[0]}, {rate:.0f} GFLOP/s measured here)")
    if seconds is not None and not t.time_budget:
        per_update += f", {_duration(seconds * t.max_iter)} for the {t.max_iter} updates"
    kind = "ResNet" if config.model.backbone in RESNET_BACKBONES else BACKBONE_NAMES.get(config.model.backbone,
                                                                                          config.model.backbone)
    return (f"training a {kind} FCN from scratch on a CPU{per_update}. The paper starts from ImageNet weights "
            f"(--classifier-weights) on a GPU; on a CPU, --preset small-cpu --time-budget 10m trains a small FCN")


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} days"
