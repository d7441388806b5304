"""Net surgery as pure functions: Linear -> conv, and renaming foreign weight layouts to ours.

Each importer takes a state dict and returns a new one with our keys (``backbone.conv1_1.weight``,
``score_fr.weight``...); nothing here touches a file. See docs/CONTRACT.md for the key layout.
"""

from __future__ import annotations

import copy
import re

import torch
from torch import nn

from fcnseg.errors import CheckpointError
from fcnseg.models.backbones import VGG16_STAGES

# --- convolutionalization --------------------------------------------------------------------------


def _leaves(module: nn.Module) -> list[nn.Module]:
    if isinstance(module, nn.Sequential):
        return [leaf for child in module for leaf in _leaves(child)]
    return [module]


def convolutionalize(classifier: nn.Module, input_size: tuple[int, int], in_channels: int = 3) -> nn.Sequential:
    """Turn every Linear layer of a sequential classifier into its equivalent convolution.

    A Linear over a flattened ``[C, H, W]`` input becomes an ``HxW`` convolution with the weights
    reshaped to ``[out, C, H, W]``; a Linear over a vector becomes a 1x1 convolution. The result
    accepts any input at least ``input_size`` and returns a score map ``[N, out, h, w]``: on the
    native ``input_size`` it equals the classifier's logits (``h = w = 1``), and each output
    position is the classifier evaluated on one window (exactly so when no convolution pads).

    Args:
        classifier: an ``nn.Sequential`` (nested ones are flattened) of convs, pools, activations,
            ``nn.Flatten`` and ``nn.Linear`` layers, e.g. ``VGG16Classifier().as_sequential()``.
        input_size: the classifier's native ``(H, W)``, e.g. ``(224, 224)`` for VGG16.
        in_channels: channels of the input image.
    Returns:
        a new ``nn.Sequential``; the classifier is not modified.
    """
    layers = _leaves(classifier)
    reference = next(classifier.parameters(), torch.zeros(()))  # trace in the classifier's dtype and device
    x = torch.zeros(1, in_channels, *input_size, dtype=reference.dtype, device=reference.device)
    converted: list[nn.Module] = []
    flattened_shape = None  # [C, H, W] of the map the next Linear sees flattened
    modes = {m: m.training for m in classifier.modules()}  # restored below: children may be shared
    classifier.eval()
    with torch.no_grad():
        for layer in layers:
            in_shape = tuple(x.shape)
            x = layer(x)
            if isinstance(layer, nn.Flatten):
                flattened_shape = in_shape[1:]
                continue
            if isinstance(layer, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
                # Deviation: identity at the native size, where it is dropped; at any other size it
                # would resample the map and break the one-window-per-position equivalence.
                if tuple(x.shape) != in_shape:
                    raise ValueError(
                        f"{layer} changes the map at the native size {input_size}; it has no convolutional equivalent"
                    )
                continue
            if isinstance(layer, nn.Linear):
                if flattened_shape is not None and len(flattened_shape) == 3:
                    c, h, w = flattened_shape
                else:
                    c, h, w = layer.in_features, 1, 1
                if c * h * w != layer.in_features:
                    raise ValueError(f"{layer} expects {layer.in_features} inputs, its input map is {c}x{h}x{w}")
                conv = nn.Conv2d(c, layer.out_features, (h, w), bias=layer.bias is not None,
                                 dtype=layer.weight.dtype, device=layer.weight.device)
                conv.weight.copy_(layer.weight.reshape(layer.out_features, c, h, w))
                if layer.bias is not None:
                    conv.bias.copy_(layer.bias)
                converted.append(conv)
                flattened_shape = None  # later Linears see a vector: 1x1 convs
                continue
            if isinstance(layer, nn.BatchNorm1d):
                bn = nn.BatchNorm2d(layer.num_features, layer.eps, layer.momentum, layer.affine, layer.track_running_stats)
                bn.load_state_dict(layer.state_dict())
                converted.append(bn)
                continue
            converted.append(copy.deepcopy(layer))
    for m, training in modes.items():
        m.training = training
    return nn.Sequential(*converted).train(classifier.training)


def linear_to_conv_weight(weight: torch.Tensor, in_shape: tuple[int, int, int]) -> torch.Tensor:
    """Reshape a Linear weight ``[out, C*H*W]`` (row-major C, H, W) into a conv weight ``[out, C, H, W]``."""
    c, h, w = in_shape
    if weight.dim() == 4 and tuple(weight.shape[1:]) == (c, h, w):
        return weight
    if weight.dim() != 2 or weight.shape[1] != c * h * w:
        raise ValueError(f"expected a Linear weight [out, {c * h * w}], found {list(weight.shape)}")
    return weight.reshape(weight.shape[0], c, h, w)


# --- foreign layouts -------------------------------------------------------------------------------


def _vgg16_conv_names() -> list[str]:
    return [f"conv{s}_{i}" for s, widths in enumerate(VGG16_STAGES, 1) for i in range(1, len(widths) + 1)]


def _torchvision_feature_indices() -> list[int]:
    """Indices of the convs in torchvision's ``vgg16().features`` (ReLU after each conv, a pool after each stage)."""
    indices, i = [], 0
    for widths in VGG16_STAGES:
        for _ in widths:
            indices.append(i)
            i += 2
        i += 1
    return indices  # [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]


def torchvision_vgg16_to_fcnseg(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a torchvision-style VGG16 classifier (``features.N``, ``classifier.0/3/6``) to our trunk keys.

    ``classifier.0`` (Linear 25088 -> 4096) becomes ``backbone.fc6`` as a 7x7 conv, ``classifier.3``
    becomes ``backbone.fc7`` (1x1); the ImageNet scorer ``classifier.6`` is kept as
    ``classifier.fc8.*`` (a 1x1 conv) for whoever wants the convolutionalized classifier.
    """
    out = {}
    for name, idx in zip(_vgg16_conv_names(), _torchvision_feature_indices()):
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


# pytorch-fcn (torchfcn) class names -> our arch names.
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
    """The head an FCN state dict holds, from its layer names (fcn8s and fcn8s-atonce look alike)."""
    keys = set(keys)
    if "upscore8.weight" in keys or "score_pool3.weight" in keys:
        return "fcn8s"
    if "upscore16.weight" in keys:
        return "fcn16s"
    if "upscore.weight" in keys:
        return "fcn32s"
    return None


def infer_backbone(keys) -> str | None:
    keys = set(keys)
    if "backbone.conv1.weight" in keys:
        return "alexnet"
    if "backbone.conv5_3.weight" in keys:
        return "vgg16"
    if "backbone.conv1_1.weight" in keys:
        return "small"
    return None


def transplant_trunk(model: nn.Module, trunk: dict[str, torch.Tensor], source: str) -> None:
    """Copy trunk weights (``backbone.*``) into ``model``, checking every shape (the paper's net surgery)."""
    own = model.state_dict()
    wanted = [k for k in own if k.startswith("backbone.")]
    missing = [k for k in wanted if k not in trunk]
    if missing:
        raise CheckpointError(f"{source}: classifier weights lack {len(missing)} trunk layer(s), e.g. {missing[:3]}")
    for k in wanted:
        if tuple(trunk[k].shape) != tuple(own[k].shape):
            raise CheckpointError(
                f"{source}: {k} has shape {list(trunk[k].shape)} but the model expects {list(own[k].shape)}"
            )
    with torch.no_grad():
        for k in wanted:
            own[k].copy_(trunk[k])


def transplant(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> list[str]:
    """Copy every parameter of ``state_dict`` whose name and shape match into ``model``.

    The paper's staged training: FCN-16s starts from a trained FCN-32s (trunk and ``score_fr``),
    FCN-8s from FCN-16s (plus ``score_pool4``); layers new to the finer net keep their zero or
    bilinear initialisation. Returns the names copied.
    """
    own = model.state_dict()
    copied = []
    with torch.no_grad():
        for k, v in state_dict.items():
            if k in own and tuple(own[k].shape) == tuple(v.shape):
                own[k].copy_(v)
                copied.append(k)
    return copied
