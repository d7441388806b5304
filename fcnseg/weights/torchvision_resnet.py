"""torchvision's ResNet files: the FCNs (``fcn_resnet50/101_coco-*.pth``) and the ImageNet classifiers (``resnet50/101-*.pth``).

Pure functions over state dicts. The FCN files already use :class:`fcnseg.models.resnet.ResNetFCN`'s keys;
what is read from them is the configuration (depth from layer3's blocks, the auxiliary head, the classes).
A classifier's trunk is the same keys under ``backbone.``, its ImageNet ``fc`` dropped.
"""

from __future__ import annotations

import re

import torch

from fcnseg.config import RESNET_ARCH, ModelConfig
from fcnseg.errors import CheckpointError
from fcnseg.models.resnet import RESNET_BLOCKS

_BLOCK = re.compile(r"^(?:backbone\.)?layer([1-4])\.(\d+)\.")


def is_torchvision_resnet_fcn(keys) -> bool:
    """Whether state-dict ``keys`` are a torchvision ResNet FCN's (trunk under ``backbone.``, ``classifier.4`` scores)."""
    keys = set(keys)
    return "backbone.layer1.0.conv1.weight" in keys and "classifier.0.weight" in keys


def is_torchvision_resnet_classifier(keys) -> bool:
    """Whether state-dict ``keys`` are a torchvision ImageNet ResNet classifier's (``conv1``, ``layer1.0...``, ``fc``)."""
    keys = set(keys)
    return "conv1.weight" in keys and "layer1.0.conv1.weight" in keys


def stage_blocks(keys) -> tuple[int, int, int, int]:
    """Blocks in layer1..layer4, counted from the keys (``layer3.22.conv1.weight`` -> layer3 has at least 23)."""
    counts = [0, 0, 0, 0]
    for key in keys:
        m = _BLOCK.match(key)
        if m:
            stage, block = int(m.group(1)) - 1, int(m.group(2))
            counts[stage] = max(counts[stage], block + 1)
    return tuple(counts)


def resnet_depth(keys, source: str) -> str:
    """``"resnet50"`` or ``"resnet101"`` from the blocks per stage in ``keys``; anything else is a CheckpointError."""
    found = stage_blocks(keys)
    for depth, blocks in RESNET_BLOCKS.items():
        if found == blocks:
            return depth
    known = "; ".join(f"{depth} has {list(blocks)}" for depth, blocks in RESNET_BLOCKS.items())
    raise CheckpointError(f"{source}: a ResNet whose layer1..layer4 have {list(found)} blocks (layer3: {found[2]}); "
                          f"torchvision's {known}. The file is another depth, or truncated")


def with_batch_counts(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state_dict`` with a zero ``num_batches_tracked`` for every BatchNorm that lacks one.

    torchvision's older files (saved before PyTorch 0.4.1, e.g. ``resnet50-19c8e357.pth``) have none;
    torch's BatchNorm fills them in the same way for such files. The count only matters to a
    BatchNorm with ``momentum=None``, which none here has.
    """
    out = dict(state_dict)
    for key in state_dict:
        if key.endswith(".running_var"):
            count = key[: -len("running_var")] + "num_batches_tracked"
            out.setdefault(count, torch.tensor(0, dtype=torch.long))
    return out


def fcn_config(state_dict: dict[str, torch.Tensor], source: str) -> ModelConfig:
    """The :class:`ModelConfig` of a torchvision ResNet FCN state dict.

    Depth from the blocks per stage, ``aux`` from the presence of ``aux_classifier.*``, the classes from
    ``classifier.4.weight``'s shape ``[C, 512, 1, 1]``.

    Raises:
        CheckpointError: naming ``source`` and what was found (another depth, a missing score layer).
    """
    depth = resnet_depth(state_dict, source)
    scores = state_dict.get("classifier.4.weight")
    if scores is None or scores.ndim != 4:
        found = "no classifier.4.weight" if scores is None else f"classifier.4.weight of shape {list(scores.shape)}"
        raise CheckpointError(f"{source}: a {depth} FCN without its class scores: expected classifier.4.weight "
                              f"[classes, 512, 1, 1], found {found}. The file is truncated or not torchvision's FCN")
    aux = any(k.startswith("aux_classifier.") for k in state_dict)
    return ModelConfig(arch=RESNET_ARCH, backbone=depth, num_classes=int(scores.shape[0]), aux=aux).validate(source)


def classifier_trunk(state_dict: dict[str, torch.Tensor], source: str) -> tuple[str, dict[str, torch.Tensor]]:
    """``(depth, trunk)`` of a torchvision ImageNet ResNet classifier: its keys under ``backbone.``, ``fc.*`` dropped.

    Raises:
        CheckpointError: the blocks per stage are not ResNet-50's or ResNet-101's.
    """
    depth = resnet_depth(state_dict, source)
    trunk = {f"backbone.{k}": v for k, v in state_dict.items() if not k.startswith("fc.")}
    return depth, with_batch_counts(trunk)
