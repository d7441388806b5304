"""An independent torchvision FCN-ResNet for the tests: its state-dict layout and a functional forward over it.

Written from torchvision's published definition (``models/resnet.py``: Bottleneck, ``_make_layer`` with
``replace_stride_with_dilation=[False, True, True]``; ``models/segmentation/fcn.py``: FCNHead, bilinear resize),
with ``torch.nn.functional`` calls over the raw state dict; it shares no code with ``fcnseg.models.resnet``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

BLOCKS = {"resnet50": [3, 4, 6, 3], "resnet101": [3, 4, 23, 3]}
PLANES = [64, 128, 256, 512]


def block_geometry(blocks: list[int]) -> list[list[tuple[int, int]]]:
    """(stride, dilation) of every block's 3x3 conv, stage by stage, as torchvision's dilated ResNet sets them.

    layer1: stride 1, dilation 1. layer2: its first block strides by 2. layer3 (dilated): no stride; the first block
    keeps the dilation before (1), the rest 2. layer4 (dilated): the first block 2, the rest 4.
    """
    return [
        [(1, 1)] * blocks[0],
        [(2, 1)] + [(1, 1)] * (blocks[1] - 1),
        [(1, 1)] + [(1, 2)] * (blocks[2] - 1),
        [(1, 2)] + [(1, 4)] * (blocks[3] - 1),
    ]


def _bn(sd: dict, prefix: str, channels: int, g: torch.Generator) -> None:
    sd[f"{prefix}.weight"] = 1 + 0.1 * torch.randn(channels, generator=g)
    sd[f"{prefix}.bias"] = 0.1 * torch.randn(channels, generator=g)
    sd[f"{prefix}.running_mean"] = 0.1 * torch.randn(channels, generator=g)
    sd[f"{prefix}.running_var"] = 0.5 + torch.rand(channels, generator=g)
    sd[f"{prefix}.num_batches_tracked"] = torch.tensor(7)


def _conv(sd: dict, key: str, out: int, inp: int, k: int, g: torch.Generator, scale: float = 1.0) -> None:
    sd[key] = torch.randn(out, inp, k, k, generator=g) * scale * (2.0 / (inp * k * k)) ** 0.5


def random_fcn_state_dict(depth: str = "resnet50", num_classes: int = 21, aux: bool = True, seed: int = 0,
                          batch_counts: bool = True) -> dict[str, torch.Tensor]:
    """Random weights under torchvision's ``fcn_resnet50/101`` keys (``backbone.*``, ``classifier.*``, ``aux_classifier.*``)."""
    g = torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    _conv(sd, "backbone.conv1.weight", 64, 3, 7, g)
    _bn(sd, "backbone.bn1", 64, g)
    inplanes = 64
    for stage, (planes, n) in enumerate(zip(PLANES, BLOCKS[depth])):
        for b in range(n):
            p = f"backbone.layer{stage + 1}.{b}"
            _conv(sd, f"{p}.conv1.weight", planes, inplanes, 1, g)
            _bn(sd, f"{p}.bn1", planes, g)
            _conv(sd, f"{p}.conv2.weight", planes, planes, 3, g)
            _bn(sd, f"{p}.bn2", planes, g)
            _conv(sd, f"{p}.conv3.weight", planes * 4, planes, 1, g, scale=0.3)  # keeps the residual sums tame
            _bn(sd, f"{p}.bn3", planes * 4, g)
            if b == 0:
                _conv(sd, f"{p}.downsample.0.weight", planes * 4, inplanes, 1, g)
                _bn(sd, f"{p}.downsample.1", planes * 4, g)
            inplanes = planes * 4
    for head, channels in (("classifier", 2048),) + ((("aux_classifier", 1024),) if aux else ()):
        inter = channels // 4
        _conv(sd, f"{head}.0.weight", inter, channels, 3, g)
        _bn(sd, f"{head}.1", inter, g)
        _conv(sd, f"{head}.4.weight", num_classes, inter, 1, g)
        sd[f"{head}.4.bias"] = 0.1 * torch.randn(num_classes, generator=g)
    if not batch_counts:
        sd = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    return sd


def random_classifier_state_dict(depth: str = "resnet50", seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights under torchvision's ImageNet ``resnet50/101`` keys (``conv1``, ``layer1..4``, ``fc``)."""
    fcn = random_fcn_state_dict(depth, aux=False, seed=seed)
    sd = {k[len("backbone."):]: v for k, v in fcn.items() if k.startswith("backbone.")}
    g = torch.Generator().manual_seed(seed + 1)
    sd["fc.weight"] = torch.randn(1000, 2048, generator=g) * 0.01
    sd["fc.bias"] = torch.zeros(1000)
    return sd


def _batch_norm(x: torch.Tensor, sd: dict, prefix: str) -> torch.Tensor:
    return F.batch_norm(x, sd[f"{prefix}.running_mean"], sd[f"{prefix}.running_var"], sd[f"{prefix}.weight"],
                        sd[f"{prefix}.bias"], training=False, eps=1e-5)


def _head(x: torch.Tensor, sd: dict, prefix: str) -> torch.Tensor:
    x = F.relu(_batch_norm(F.conv2d(x, sd[f"{prefix}.0.weight"], padding=1), sd, f"{prefix}.1"))
    return F.conv2d(x, sd[f"{prefix}.4.weight"], sd[f"{prefix}.4.bias"])  # dropout is the identity in eval


def functional_forward(sd: dict, x: torch.Tensor, depth: str = "resnet50") -> dict[str, torch.Tensor]:
    """torchvision's FCN in eval mode: ``{"out": logits [N, C, H, W], "aux": ... (when the weights have it)}``."""
    size = x.shape[-2:]
    y = F.relu(_batch_norm(F.conv2d(x, sd["backbone.conv1.weight"], stride=2, padding=3), sd, "backbone.bn1"))
    y = F.max_pool2d(y, 3, stride=2, padding=1)
    features = {}
    for stage, geometry in enumerate(block_geometry(BLOCKS[depth])):
        for b, (stride, dilation) in enumerate(geometry):
            p = f"backbone.layer{stage + 1}.{b}"
            out = F.relu(_batch_norm(F.conv2d(y, sd[f"{p}.conv1.weight"]), sd, f"{p}.bn1"))
            out = F.conv2d(out, sd[f"{p}.conv2.weight"], stride=stride, padding=dilation, dilation=dilation)
            out = F.relu(_batch_norm(out, sd, f"{p}.bn2"))
            out = _batch_norm(F.conv2d(out, sd[f"{p}.conv3.weight"]), sd, f"{p}.bn3")
            if f"{p}.downsample.0.weight" in sd:
                # the shortcut strides as the block does (layer2 only; the dilated stages keep stride 1)
                identity = _batch_norm(F.conv2d(y, sd[f"{p}.downsample.0.weight"], stride=stride), sd, f"{p}.downsample.1")
            else:
                identity = y
            y = F.relu(out + identity)
        features[f"layer{stage + 1}"] = y
    result = {"out": F.interpolate(_head(features["layer4"], sd, "classifier"), size=size, mode="bilinear",
                                   align_corners=False)}
    if "aux_classifier.0.weight" in sd:
        result["aux"] = F.interpolate(_head(features["layer3"], sd, "aux_classifier"), size=size, mode="bilinear",
                                      align_corners=False)
    return result
