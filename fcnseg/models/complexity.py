"""Parameter counts and FLOPs of the architectures, computed on the meta device (no weights, no compute)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from fcnseg.config import RESNET_BACKBONES, ModelConfig
from fcnseg.models.fcn import build_model

# Every (backbone, arch) pair that exists: AlexNet has no pool3/pool4 skips; a ResNet has torchvision's FCN only.
ARCHITECTURES = [
    ("vgg16", "fcn32s"),
    ("vgg16", "fcn16s"),
    ("vgg16", "fcn8s"),
    ("vgg16", "fcn8s-atonce"),
    ("alexnet", "fcn32s"),
    ("small", "fcn32s"),
    ("small", "fcn16s"),
    ("small", "fcn8s"),
    ("small", "fcn8s-atonce"),
    ("resnet50", "fcn"),
    ("resnet101", "fcn"),
]


@dataclass
class Complexity:
    backbone: str
    arch: str
    parameters: int
    trainable: int
    gflops: float  # one forward pass at the given size; a multiply-add counts as 2 FLOPs
    input_size: tuple[int, int]
    offsets: dict[str, int]


def complexity(config: ModelConfig, input_size: tuple[int, int] = (500, 500)) -> Complexity:
    """Parameters and forward GFLOPs of ``config`` on one ``input_size`` image (conv1 pad included)."""
    with torch.device("meta"):
        model = build_model(config).eval()
        x = torch.empty(1, 3, *input_size)
        with FlopCounterMode(display=False) as counter:
            model(x)
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return Complexity(config.backbone, config.arch, params, trainable, counter.get_total_flops() / 1e9,
                      tuple(input_size), dict(model.offsets))


def complexity_table(
    input_size: tuple[int, int] = (500, 500), num_classes: int = 21, padding: str = "paper"
) -> list[Complexity]:
    # padding chooses the VGG-family geometry; the ResNets pad every convolution whatever it says
    return [complexity(ModelConfig(arch=a, backbone=b, num_classes=num_classes,
                                   padding="paper" if b in RESNET_BACKBONES else padding), input_size)
            for b, a in ARCHITECTURES]


def format_complexity_table(rows: list[Complexity]) -> str:
    h, w = rows[0].input_size
    lines = [
        f"{'backbone':<9} {'arch':<13} {'params (M)':>10} {'trainable (M)':>13} {f'GFLOPs @ {h}x{w}':>16}  crop offsets",
        "-" * 84,
    ]
    for r in rows:
        offsets = ", ".join(f"{k}={v}" for k, v in r.offsets.items())
        lines.append(
            f"{r.backbone:<9} {r.arch:<13} {r.parameters / 1e6:>10.2f} {r.trainable / 1e6:>13.2f} {r.gflops:>16.1f}  {offsets}"
        )
    return "\n".join(lines)
