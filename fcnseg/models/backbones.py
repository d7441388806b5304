"""Trunks that turn an image into fc7 features: VGG16 (the paper's net), FCN-AlexNet, and a small CPU net.

Each trunk is a chain of named layers with the reference names (``conv1_1`` ... ``fc7``); its fully
connected layers are already convolutions (fc6 a 7x7 conv for VGG16), as after the paper's surgery.
``padding`` picks the geometry: ``"paper"`` (conv1_1 padded by ``pad``, fc6 unpadded, as the reference
nets) or ``"same"`` (every convolution padded to keep sizes; see :data:`PADDINGS`).
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

# VGG16 "D" configuration: output channels of each conv, stage by stage (Simonyan & Zisserman, table 1).
VGG16_STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
# The reference names of VGG16's convolutions: conv1_1 ... conv5_3.
VGG16_FC_CHANNELS = 4096  # fc6 and fc7
VGG16_CONV_NAMES = tuple(f"conv{s}_{i}" for s, widths in enumerate(VGG16_STAGES, 1) for i in range(1, len(widths) + 1))
# The small trunk keeps VGG's five stride-2 stages (output stride 32) with few, narrow convolutions,
# so that it trains in minutes on two CPU cores.
SMALL_STAGES = ((16,), (32,), (64, 64), (96, 96), (128, 128))
SMALL_FC_CHANNELS = 256
SMALL_FC6_KERNEL = 7  # as VGG16: keeps the reference crop geometry valid for every input size
# "paper": the reference nets' geometry, conv1_1 padded by ``pad`` (100) so that the unpadded fc6 and
# the crops fit any input. Deviation, "same": every convolution padded by half its kernel and no large pad, so a
# 128-pixel input is a 128-pixel forward instead of a 328-pixel one (the crops still follow from the layers).
PADDINGS = ("paper", "same")


class Backbone(nn.Module):
    """A chain of named layers that returns the feature maps the FCN heads tap.

    ``forward(x [N,C,H,W]) -> {"pool3": ..., "pool4": ..., "fc7": ...}`` (pool3/pool4 only where the
    trunk has them). Layers are attributes named as in the reference nets, so state-dict keys read
    ``backbone.conv1_1.weight``.
    """

    def __init__(self, layers: "OrderedDict[str, nn.Module]", taps: dict[str, int]):
        super().__init__()
        for name, layer in layers.items():
            self.add_module(name, layer)
        self.taps = dict(taps)  # tapped layer name -> its output channels; "fc7" always present
        missing = set(self.taps) - set(layers)
        assert not missing, f"taps {missing} are not layers"

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        features = {}
        for name, layer in self.named_children():
            x = layer(x)
            if name in self.taps:
                features[name] = x
        return features

    @property
    def first_conv(self) -> str:
        """The name of the layer that reads the image (``conv1_1``, ``conv1``): the one widened for more channels."""
        return next(name for name, layer in self.named_children() if isinstance(layer, nn.Conv2d))

    def layers_until(self, name: str) -> list[nn.Module]:
        """The layers from the input up to and including ``name`` (for coordinate maps)."""
        chain = []
        for layer_name, layer in self.named_children():
            chain.append(layer)
            if layer_name == name:
                return chain
        raise KeyError(name)


def _conv_stages(
    stages, pad: int, in_channels: int = 3, batch_norm: bool = False, same: bool = False
) -> "OrderedDict[str, nn.Module]":
    layers: "OrderedDict[str, nn.Module]" = OrderedDict()
    channels = in_channels
    for stage, widths in enumerate(stages, start=1):
        for i, width in enumerate(widths, start=1):
            # conv1_1 carries the large padding that lets any input size through (paper section 4.1, ref nets).
            padding = pad if (stage, i) == (1, 1) and not same else 1
            layers[f"conv{stage}_{i}"] = nn.Conv2d(channels, width, 3, padding=padding, bias=not batch_norm)
            if batch_norm:
                layers[f"bn{stage}_{i}"] = nn.BatchNorm2d(width)
            layers[f"relu{stage}_{i}"] = nn.ReLU(inplace=True)
            channels = width
        # Caffe pools round up (ceil mode); the crop offsets assume it.
        layers[f"pool{stage}"] = nn.MaxPool2d(2, stride=2, ceil_mode=True)
    return layers


def _fully_conv(layers, in_channels: int, fc_channels: int, fc6_kernel: int, dropout: float, same: bool = False) -> None:
    # Deviation ("same"): fc6 padded by half its kernel (7x7 pad 3), so that it keeps the 1/32 map's size
    # where the reference's unpadded fc6 needs conv1_1's pad 100 to see any input at all.
    layers["fc6"] = nn.Conv2d(in_channels, fc_channels, fc6_kernel, padding=fc6_kernel // 2 if same else 0)
    layers["relu6"] = nn.ReLU(inplace=True)
    layers["drop6"] = nn.Dropout(dropout)
    layers["fc7"] = nn.Conv2d(fc_channels, fc_channels, 1)
    layers["relu7"] = nn.ReLU(inplace=True)
    layers["drop7"] = nn.Dropout(dropout)


def vgg16(pad: int = 100, dropout: float = 0.5, in_channels: int = 3, padding: str = "paper") -> Backbone:
    """VGG16 as in the reference voc-fcn nets: 13 convs, ceil-mode pools, fc6 7x7x4096, fc7 1x1x4096.

    ``in_channels`` other than 3 widens conv1_1 (nyud-fcn32s-color-d's 4-channel ``conv1_1_bgrd``).
    ``padding="same"`` (not the paper's): conv1_1 padded by 1 and fc6 by 3; the weights are the same shapes.
    """
    same = _is_same(padding)
    layers = _conv_stages(VGG16_STAGES, pad, in_channels=in_channels, same=same)
    _fully_conv(layers, VGG16_STAGES[-1][-1], VGG16_FC_CHANNELS, 7, dropout, same=same)
    return Backbone(layers, taps={"pool3": VGG16_STAGES[2][-1], "pool4": VGG16_STAGES[3][-1], "drop7": VGG16_FC_CHANNELS})


def small(pad: int = 100, dropout: float = 0.5, batch_norm: bool = False, in_channels: int = 3,
          padding: str = "paper") -> Backbone:
    """A narrow VGG-style trunk with the same five pooling stages (output stride 32) for CPU training.

    With ``batch_norm`` every convolution is followed by BatchNorm (``bnS_I``; the convolution then has
    no bias). Not in the paper: it lets the net learn from scratch in minutes. In eval mode a BatchNorm
    is a per-channel affine map, so the net stays fully convolutional (tiles, patches and any input
    size give the same scores) and :func:`fcnseg.models.batchnorm.fold_batch_norm` merges it into the convs.
    ``padding="same"`` pads every convolution by half its kernel (the small-cpu preset): nothing is
    computed on the paper's 100 pixels of zero padding.
    """
    same = _is_same(padding)
    layers = _conv_stages(SMALL_STAGES, pad, in_channels=in_channels, batch_norm=batch_norm, same=same)
    _fully_conv(layers, SMALL_STAGES[-1][-1], SMALL_FC_CHANNELS, SMALL_FC6_KERNEL, dropout, same=same)
    return Backbone(layers, taps={"pool3": SMALL_STAGES[2][-1], "pool4": SMALL_STAGES[3][-1], "drop7": SMALL_FC_CHANNELS})


def alexnet(pad: int = 100, dropout: float = 0.5, in_channels: int = 3, padding: str = "paper") -> Backbone:
    """FCN-AlexNet trunk (reference ``voc-fcn-alexnet``): grouped convs, LRN, 3x3/2 pools, fc6 6x6x4096.

    ``padding="same"`` (not the paper's): conv1 padded by 5, the 3x3 pools by 1 and fc6 by 3, so that
    every input size passes without the large pad; the weights are the same shapes.
    """
    same = _is_same(padding)
    # Deviation ("same"): the reference pools are unpadded, and without conv1's pad 100 they would
    # reject inputs under 29 pixels; padded by 1 they halve any size (rounding up).
    pool_pad = 1 if same else 0
    layers: "OrderedDict[str, nn.Module]" = OrderedDict()
    layers["conv1"] = nn.Conv2d(in_channels, 96, 11, stride=4, padding=5 if same else pad)
    layers["relu1"] = nn.ReLU(inplace=True)
    layers["pool1"] = nn.MaxPool2d(3, stride=2, padding=pool_pad, ceil_mode=True)
    layers["norm1"] = nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)
    layers["conv2"] = nn.Conv2d(96, 256, 5, padding=2, groups=2)
    layers["relu2"] = nn.ReLU(inplace=True)
    layers["pool2"] = nn.MaxPool2d(3, stride=2, padding=pool_pad, ceil_mode=True)
    layers["norm2"] = nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)
    layers["conv3"] = nn.Conv2d(256, 384, 3, padding=1)
    layers["relu3"] = nn.ReLU(inplace=True)
    layers["conv4"] = nn.Conv2d(384, 384, 3, padding=1, groups=2)
    layers["relu4"] = nn.ReLU(inplace=True)
    layers["conv5"] = nn.Conv2d(384, 256, 3, padding=1, groups=2)
    layers["relu5"] = nn.ReLU(inplace=True)
    layers["pool5"] = nn.MaxPool2d(3, stride=2, padding=pool_pad, ceil_mode=True)
    # fc6 is 6x6: pad 3 (not 2) so that a 1/32 map of one pixel still gives one (its scores shift by half
    # a 1/32 pixel, which the derived crop of 47 undoes).
    _fully_conv(layers, 256, 4096, 6, dropout, same=same)
    return Backbone(layers, taps={"drop7": 4096})


BUILDERS = {"vgg16": vgg16, "alexnet": alexnet, "small": small}


def _is_same(padding: str) -> bool:
    assert padding in PADDINGS, padding
    return padding == "same"


def build_backbone(name: str, pad: int = 100, dropout: float = 0.5, batch_norm: bool = False,
                   in_channels: int = 3, padding: str = "paper") -> Backbone:
    if batch_norm:
        return BUILDERS[name](pad=pad, dropout=dropout, batch_norm=True, in_channels=in_channels, padding=padding)
    return BUILDERS[name](pad=pad, dropout=dropout, in_channels=in_channels, padding=padding)


def init_from_scratch(backbone: Backbone) -> None:
    """He initialisation for a trunk trained without pretrained weights (the small CPU net)."""
    for m in backbone.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class VGG16Classifier(nn.Module):
    """The ImageNet VGG16 classifier in the common torchvision-style layout.

    State-dict keys ``features.N.*`` and ``classifier.0/3/6.*``, so a torchvision-style VGG16 file
    loads with ``strict=True``. ``forward(x [N,3,224,224]) -> logits [N,num_classes]``.
    """

    def __init__(self, num_classes: int = 1000, dropout: float = 0.5):
        super().__init__()
        features = []
        channels = 3
        for widths in VGG16_STAGES:
            for width in widths:
                features += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(inplace=True)]
                channels = width
            features.append(nn.MaxPool2d(2, stride=2))
        self.features = nn.Sequential(*features)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.features(x))
        return self.classifier(torch.flatten(x, 1))

    def as_sequential(self) -> nn.Sequential:
        """The same layers as one chain (for :func:`fcnseg.models.surgery.convolutionalize`)."""
        return nn.Sequential(*self.features, self.avgpool, nn.Flatten(1), *self.classifier)
