"""The pytorch-fcn (torchfcn) layout renamed to fcnseg's keys, and the net a state dict in our layout describes."""

from __future__ import annotations

import logging
import re

import torch

from fcnseg.config import ModelConfig
from fcnseg.errors import CheckpointError
from fcnseg.models.heads import ARCH_HEADS, head_layer_names, match_arch

log = logging.getLogger(__name__)

# pytorch-fcn (torchfcn) class names -> our arch names; its trainer stores the class name as 'arch'.
TORCHFCN_ARCHES = {"FCN32s": "fcn32s", "FCN16s": "fcn16s", "FCN8s": "fcn8s", "FCN8sAtOnce": "fcn8s-atonce"}

_TRUNK_KEY = re.compile(r"^(conv\d_\d|conv\d|fc6|fc7)\.(weight|bias)$")


def torchfcn_to_fcnseg(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a pytorch-fcn (torchfcn) FCN state dict to ours: trunk layers move under ``backbone.``.

    pytorch-fcn already uses the reference layer names and conv-shaped fc6/fc7, so the head keys
    (``score_fr``, ``score_pool4``, ``upscore2``...) are kept as they are.
    """
    return {(f"backbone.{k}" if _TRUNK_KEY.match(k) else k): v for k, v in state_dict.items()}


def fcnseg_to_torchfcn(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of :func:`torchfcn_to_fcnseg` (for exporting to pytorch-fcn users)."""
    return {k.removeprefix("backbone."): v for k, v in state_dict.items()}


def infer_arch(keys) -> str | None:
    """The head an FCN state dict in our layout holds, from its layer names; None when it has no head layers.

    FCN-8s and FCN-8s at-once have the same layers: such weights read as ``fcn8s``.
    """
    return match_arch({k.split(".", 1)[0] for k in keys if not k.startswith("backbone.")})


def infer_backbone(keys) -> str | None:
    """The trunk of a state dict in our layout, from its first convolution's name; None when there is none."""
    keys = set(keys)
    if "backbone.conv1.weight" in keys:
        return "alexnet"
    if "backbone.conv5_3.weight" in keys:
        return "vgg16"
    if "backbone.conv1_1.weight" in keys:
        return "small"
    return None


def config_from_state_dict(state_dict: dict[str, torch.Tensor], source: str, arch: str | None = None,
                           pad: int = 100) -> ModelConfig:
    """The ModelConfig of the FCN a state dict in our layout fills.

    Args:
        state_dict: our keys (after :func:`torchfcn_to_fcnseg` for pytorch-fcn weights).
        source: the file, for error messages.
        arch: the architecture asked for; None to infer it. Needed for FCN-8s at-once, whose learned
            layers are FCN-8s's.
        pad: conv1_1's padding (100 in pytorch-fcn and the reference nets; it has no weights to tell).

    Raises:
        CheckpointError: no FCN head or trunk layers, or an ``arch`` other than the one the file holds.
    """
    found = infer_arch(state_dict)
    backbone = infer_backbone(state_dict)
    if found is None or backbone is None:
        raise CheckpointError(f"{source}: not an FCN state dict (no score/upscore or trunk layers); "
                              f"found keys such as {list(state_dict)[:4]}")
    if arch is not None and head_layer_names(arch) != head_layer_names(found):
        raise CheckpointError(f"{source}: holds an {found} but arch {arch!r} was asked for")
    if arch is None:
        twins = [a for a in ARCH_HEADS if a != found and head_layer_names(a) == head_layer_names(found)]
        if twins:
            log.info("%s: weights of an %s; loading as %r (pass arch=%r for the net with the same layers)",
                     source, found, found, twins[0])
    if "score_fr.weight" not in state_dict:
        raise CheckpointError(f"{source}: no score_fr layer")
    num_classes = int(state_dict["score_fr.weight"].shape[0])
    return ModelConfig(arch=arch or found, backbone=backbone, num_classes=num_classes, pad=pad)
