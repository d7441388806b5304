"""Net surgery as pure functions: Linear layers to convolutions, and weights transplanted between nets.

Nothing here touches a file; the importers of other layouts live in :mod:`fcnseg.weights`.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from fcnseg.errors import CheckpointError

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


# --- transplanting ---------------------------------------------------------------------------------


def widen_first_conv(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """An RGB first-layer weight ``[out, 3, k, k]`` for ``in_channels`` input channels, as
    nyud-fcn32s-color-d/solve.py does for its 4-channel ``conv1_1_bgrd``: the three colour filters kept,
    each further channel (depth) the mean of the three. Fewer than 3 channels (depth alone) take the mean.

    Returns ``weight`` itself when it already has ``in_channels`` channels.
    """
    if weight.shape[1] == in_channels:
        return weight
    mean = weight.mean(dim=1, keepdim=True)  # [out, 1, k, k]
    if in_channels < weight.shape[1]:
        return mean.expand(-1, in_channels, -1, -1).clone()
    extra = mean.expand(-1, in_channels - weight.shape[1], -1, -1)
    return torch.cat([weight, extra], dim=1)  # [out, in_channels, k, k]


def transplant_trunk(model: nn.Module, trunk: dict[str, torch.Tensor], source: str) -> None:
    """Copy trunk weights (``backbone.*``) into every trunk of ``model``, checking every shape (the paper's
    net surgery). A trunk reading other than 3 channels gets its first convolution widened by
    :func:`widen_first_conv`; a late-fusion net's trunks (``backbones.<stream>.*``) each get a copy."""
    own = model.state_dict()
    for stream, backbone in model.trunks().items():
        prefix = model.trunk_prefix(stream)
        first = f"{prefix}.{backbone.first_conv}.weight"
        wanted = [k for k in own if k.startswith(f"{prefix}.")]
        renamed = {k: f"backbone.{k.removeprefix(prefix + '.')}" for k in wanted}
        missing = [renamed[k] for k in wanted if renamed[k] not in trunk]
        if missing:
            raise CheckpointError(f"{source}: classifier weights lack {len(missing)} trunk {'layer' if len(missing) == 1 else 'layers'}, e.g. {missing[:3]}")
        weights = {k: trunk[renamed[k]] for k in wanted}
        if weights[first].dim() == 4 and weights[first].shape[1] == 3:
            weights[first] = widen_first_conv(weights[first], own[first].shape[1])
        for k in wanted:
            if tuple(weights[k].shape) != tuple(own[k].shape):
                raise CheckpointError(
                    f"{source}: {renamed[k]} has shape {list(weights[k].shape)} but the model expects {list(own[k].shape)}"
                )
        with torch.no_grad():
            for k in wanted:
                own[k].copy_(weights[k])


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
