"""Patch classifiers (conv trunk + Linear layers on a fixed window) whose convolutionalized form the report studies.

``small`` has unpadded convolutions, so that its dense net equals the patch-wise classifier exactly
(the paper's argument assumes this); ``small-padded`` pads every 3x3 convolution as VGG does;
``alexnet`` is the paper's timing case (227x227 window, 10x10 grid on 500x500); ``vgg16`` is
:class:`fcnseg.models.backbones.VGG16Classifier`. Weights are random: equality and cost do not
depend on them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fcnseg.errors import ConfigError
from fcnseg.models.backbones import SMALL_STAGES, VGG16Classifier
from fcnseg.models.geometry import layer_geometry

CLASSIFIER_NAMES = ("small", "small-padded", "alexnet", "vgg16")
SMALL_FC_CHANNELS = 256
SMALL_FC6_KERNEL = 3  # fc6 sees a 3x3 map of pool5 (VGG16's 7x7 would make the unpadded window 342 px)


@dataclass
class PatchClassifier:
    """A classifier of one ``window x window`` patch: ``net(x [N,3,window,window]) -> logits [N,num_classes]``.

    ``backbone`` names the FCN trunk with the same layer pattern (for receptive fields and crop offsets).
    """

    name: str
    net: nn.Sequential
    window: int  # pixels, the classifier's native input side
    num_classes: int
    padded: bool  # any convolution zero-pads (dense == patch-wise only away from window borders)
    backbone: str
    description: str


def _flatten_features(features: nn.Sequential, window: int) -> tuple[int, int, int]:
    with torch.no_grad():
        shape = features(torch.zeros(1, 3, window, window)).shape
    return int(shape[1]), int(shape[2]), int(shape[3])


def _smallest_window(features: nn.Sequential, target: int) -> int:
    """Smallest input side for which the trunk's output is ``target`` wide (fc6 then sees exactly its kernel),
    from the layers' geometry walked backwards: ``n_in = (n_out - 1) * stride + kernel - 2 * pad``."""
    side = target
    for m in reversed(list(features.children())):
        g = layer_geometry(m)
        if g is not None:
            side = (side - 1) * g.stride + g.kernel - 2 * g.pad
    return side


def small_classifier(padded: bool = False, num_classes: int = 21) -> PatchClassifier:
    """The small CPU trunk's stages (5 pools, output stride 32) as a patch classifier with fc6/fc7/fc8.

    The window is computed from the layers: the smallest patch whose pool5 map is fc6's 3x3 kernel.
    """
    layers: list[nn.Module] = []
    channels = 3
    for widths in SMALL_STAGES:
        for width in widths:
            layers += [nn.Conv2d(channels, width, 3, padding=1 if padded else 0), nn.ReLU(inplace=True)]
            channels = width
        layers.append(nn.MaxPool2d(2, stride=2))
    features = nn.Sequential(*layers)
    window = _smallest_window(features, SMALL_FC6_KERNEL)
    c, h, w = _flatten_features(features, window)
    net = nn.Sequential(
        *features,
        nn.Flatten(1),
        nn.Linear(c * h * w, SMALL_FC_CHANNELS),  # fc6
        nn.ReLU(inplace=True),
        nn.Linear(SMALL_FC_CHANNELS, SMALL_FC_CHANNELS),  # fc7
        nn.ReLU(inplace=True),
        nn.Linear(SMALL_FC_CHANNELS, num_classes),  # fc8
    )
    kind = "padded (3x3, pad 1)" if padded else "unpadded (3x3, pad 0)"
    return PatchClassifier(
        "small-padded" if padded else "small", net.eval(), window, num_classes, padded, "small",
        f"small VGG-style classifier, {kind} convolutions, 5 max-pools, fc6 {SMALL_FC6_KERNEL}x{SMALL_FC6_KERNEL}, "
        f"fc7, fc8 ({num_classes} classes)",
    )


def alexnet_classifier(num_classes: int = 1000) -> PatchClassifier:
    """AlexNet as in Caffe's reference net: 227x227 window, conv1 11x11/4, ceil-mode 3x3/2 pools, fc6 on 6x6x256."""
    net = nn.Sequential(
        nn.Conv2d(3, 96, 11, stride=4),  # conv1
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, stride=2, ceil_mode=True),  # pool1
        nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0),
        nn.Conv2d(96, 256, 5, padding=2, groups=2),  # conv2
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, stride=2, ceil_mode=True),  # pool2
        nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0),
        nn.Conv2d(256, 384, 3, padding=1),  # conv3
        nn.ReLU(inplace=True),
        nn.Conv2d(384, 384, 3, padding=1, groups=2),  # conv4
        nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, 3, padding=1, groups=2),  # conv5
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, stride=2, ceil_mode=True),  # pool5: 6x6x256 on a 227x227 window
        nn.Flatten(1),
        nn.Linear(256 * 6 * 6, 4096),  # fc6
        nn.ReLU(inplace=True),
        nn.Linear(4096, 4096),  # fc7
        nn.ReLU(inplace=True),
        nn.Linear(4096, num_classes),  # fc8
    )
    return PatchClassifier(
        "alexnet", net.eval(), 227, num_classes, True, "alexnet",
        f"AlexNet (Caffe reference layout: conv1 11x11/4, grouped conv2/4/5, LRN, ceil-mode pools, fc6 6x6x256, "
        f"fc7, fc8 {num_classes} classes)",
    )


def vgg16_classifier(num_classes: int = 1000) -> PatchClassifier:
    """:class:`VGG16Classifier` (224x224 window, padded 3x3 convs, fc6 on 7x7x512) as one chain."""
    net = VGG16Classifier(num_classes=num_classes).eval().as_sequential()
    return PatchClassifier(
        "vgg16", net.eval(), 224, num_classes, True, "vgg16",
        f"VGG16 (13 padded 3x3 convs, 5 max-pools, fc6 7x7x512, fc7, fc8 {num_classes} classes)",
    )


def build_classifier(name: str, seed: int = 0) -> PatchClassifier:
    """One of :data:`CLASSIFIER_NAMES`, with seeded random weights."""
    torch.manual_seed(seed)
    if name == "small":
        return small_classifier(padded=False)
    if name == "small-padded":
        return small_classifier(padded=True)
    if name == "alexnet":
        return alexnet_classifier()
    if name == "vgg16":
        return vgg16_classifier()
    raise ConfigError(f"explain: unknown architecture {name!r}; expected one of {', '.join(CLASSIFIER_NAMES)}")
