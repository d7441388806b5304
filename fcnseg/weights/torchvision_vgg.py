"""The torchvision-style ImageNet VGG16 layout (``features.N``, ``classifier.0/3/6``) renamed to fcnseg's trunk keys."""

from __future__ import annotations

import torch

from fcnseg.models.backbones import VGG16_CONV_NAMES, VGG16_STAGES
from fcnseg.models.surgery import linear_to_conv_weight


def _feature_indices() -> list[int]:
    """Indices of the convs in torchvision's ``vgg16().features`` (ReLU after each conv, a pool after each stage)."""
    indices, i = [], 0
    for widths in VGG16_STAGES:
        for _ in widths:
            indices.append(i)
            i += 2
        i += 1
    return indices  # [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]


def is_torchvision_vgg16(keys) -> bool:
    """Whether state-dict ``keys`` are a torchvision-style VGG16 classifier's."""
    keys = set(keys)
    return "features.0.weight" in keys and "classifier.0.weight" in keys


def torchvision_vgg16_to_fcnseg(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a torchvision-style VGG16 classifier (``features.N``, ``classifier.0/3/6``) to our trunk keys.

    ``classifier.0`` (Linear 25088 -> 4096) becomes ``backbone.fc6`` as a 7x7 conv ``[4096, 512, 7, 7]``,
    ``classifier.3`` becomes ``backbone.fc7`` (1x1); the ImageNet scorer ``classifier.6`` is kept as
    ``classifier.fc8.*`` (a 1x1 conv) for whoever wants the convolutionalized classifier.

    Raises:
        KeyError: naming the first key of the layout that ``state_dict`` lacks.
    """
    out = {}
    for name, idx in zip(VGG16_CONV_NAMES, _feature_indices(), strict=True):
        for p in ("weight", "bias"):
            out[f"backbone.{name}.{p}"] = state_dict[f"features.{idx}.{p}"]
    out["backbone.fc6.weight"] = linear_to_conv_weight(state_dict["classifier.0.weight"], (512, 7, 7))
    out["backbone.fc6.bias"] = state_dict["classifier.0.bias"]
    out["backbone.fc7.weight"] = linear_to_conv_weight(state_dict["classifier.3.weight"], (4096, 1, 1))
    out["backbone.fc7.bias"] = state_dict["classifier.3.bias"]
    if "classifier.6.weight" in state_dict:
        w = state_dict["classifier.6.weight"]
        out["classifier.fc8.weight"] = linear_to_conv_weight(w, (w.shape[1], 1, 1))
        out["classifier.fc8.bias"] = state_dict["classifier.6.bias"]
    return out
