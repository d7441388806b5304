"""Map a decoded reference caffemodel onto fcnseg's state-dict keys and the ModelConfig it fills.

The reference nets are fcn.berkeleyvision.org's ``voc-fcn*/net.py`` and ``VGG_ILSVRC_16_layers``; their
head layers are read from :data:`fcnseg.models.heads.ARCH_HEADS`, the decoding is
:mod:`fcnseg.weights.caffe_protobuf`'s.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch

from fcnseg.config import ModelConfig
from fcnseg.data.normalization import PAPER_BGR
from fcnseg.errors import CheckpointError, ConfigError
from fcnseg.models.backbones import VGG16_CONV_NAMES
from fcnseg.models.heads import ARCH_HEADS, match_arch
from fcnseg.weights.caffe_protobuf import CaffeLayer, CaffeNet
from fcnseg.weights.imported import ImportedWeights

ALEXNET_CONVS = ("conv1", "conv2", "conv3", "conv4", "conv5")


def _detect(names: set[str], path: str) -> tuple[str | None, str]:
    """(arch or None for an ImageNet classifier, backbone) from the layer names."""
    if "conv1_1" in names:
        backbone = "vgg16"
    elif "conv1" in names:
        backbone = "alexnet"
    else:
        raise CheckpointError(f"{path}: neither 'conv1_1' (VGG16) nor 'conv1' (AlexNet) is a layer of this "
                              "net; only the FCN reference nets and their ImageNet classifiers are supported")
    arch = match_arch(names)
    if arch is not None:
        try:
            ModelConfig(arch=arch, backbone=backbone).validate()
        except ConfigError as e:
            raise CheckpointError(f"{path}: an {backbone} {arch}: {e}") from None
        return arch, backbone
    if "fc8" in names:
        return None, backbone
    raise CheckpointError(f"{path}: neither 'score_fr' (an FCN) nor 'fc8' (an ImageNet classifier) is a "
                          "layer of this net")
def _squeeze_legacy(blob: np.ndarray, ndim: int) -> np.ndarray:
    """Drop the leading 1s that legacy 4-D blobs carry (``[1, 1, out, in]`` -> ``[out, in]``)."""
    while blob.ndim > ndim and blob.shape[0] == 1:
        blob = blob.reshape(blob.shape[1:])
    return blob


def _conv_params(layer: CaffeLayer, in_channels: int | None, path: str) -> tuple[np.ndarray, np.ndarray]:
    """Weight ``[out, in/groups, k, k]`` and bias ``[out]`` of a convolution or convolutionalized InnerProduct.

    An InnerProduct weight ``[out, C*H*W]`` is reshaped to ``[out, C, H, W]``: Caffe flattens its input
    blob in C, H, W order, so this is a plain row-major reshape with ``C = in_channels``, ``H = W``.
    """
    if len(layer.blobs) != 2:
        raise CheckpointError(f"{path}: layer '{layer.name}' has {len(layer.blobs)} blobs, expected 2 "
                              "(weight and bias)")
    weight, bias = layer.blobs
    if layer.type == "InnerProduct" or weight.ndim < 4:
        weight = _squeeze_legacy(weight, 2)
        if weight.ndim != 2 or in_channels is None:
            raise CheckpointError(f"{path}: layer '{layer.name}' ({layer.type}) has weight shape "
                                  f"{tuple(layer.blobs[0].shape)}, expected [out, in] or a 4-D convolution")
        out, features = weight.shape
        k = math.isqrt(features // in_channels) if features % in_channels == 0 else 0
        if k == 0 or in_channels * k * k != features:
            raise CheckpointError(f"{path}: layer '{layer.name}' has {features} inputs, which is not "
                                  f"{in_channels} channels times a square window")
        weight = weight.reshape(out, in_channels, k, k)  # [out, C, k, k]
    if weight.ndim != 4:
        raise CheckpointError(f"{path}: layer '{layer.name}' has weight shape {tuple(weight.shape)}, "
                              "expected 4-D [out, in, kh, kw]")
    if bias.size != weight.shape[0]:
        raise CheckpointError(f"{path}: layer '{layer.name}' has {bias.size} biases for "
                              f"{weight.shape[0]} outputs")
    return weight, bias.reshape(-1)


def _check_scale(layer: CaffeLayer, value: float, path: str) -> None:
    """voc-fcn8s-atonce/net.py scales a skip by a fixed Scale layer (constant filler, lr_mult 0); fcnseg
    applies the constant of the head table, so the file's must equal it."""
    if not layer.blobs:
        return
    if len(layer.blobs) != 1:
        raise CheckpointError(f"{path}: layer '{layer.name}' has {len(layer.blobs)} blobs, expected 1 "
                              f"(the constant {value}); fcnseg's fcn8s-atonce has no scale bias")
    found = layer.blobs[0].reshape(-1)
    off = ~np.isclose(found, np.float32(value), rtol=1e-5, atol=0.0)
    if off.any():
        bad = found[np.argmax(off)]
        raise CheckpointError(f"{path}: layer '{layer.name}' scales by {float(bad):g}, but fcnseg's "
                              f"fcn8s-atonce uses the fixed {value:g} of voc-fcn8s-atonce/net.py")


def caffe_to_state_dict(net: CaffeNet, path: str | os.PathLike) -> ImportedWeights:
    """Map a decoded reference caffemodel onto fcnseg's state-dict keys (see docs/CONTRACT.md).

    Detection from layer names: ``conv1_1`` -> vgg16, ``conv1`` -> alexnet; the head is the architecture
    whose layers of :data:`~fcnseg.models.heads.ARCH_HEADS` the file holds most of (``upscore`` -> fcn32s,
    ``score_pool4`` + ``upscore16`` -> fcn16s, ``score_pool3`` + ``upscore8`` -> fcn8s, and ``fcn8s-atonce``
    with its Scale layers ``scale_pool4``/``scale_pool3``, whose constants must be the table's
    0.01/0.0001); ``fc8`` without head layers -> an ImageNet classifier (``config`` None): the trunk plus
    ``classifier.fc8.weight [1000, 4096, 1, 1]`` and ``classifier.fc8.bias``. InnerProduct fc6/fc7/fc8 are
    reshaped to convolutions; transposed convolution weights are kept as stored, Caffe's
    ``[C_in, C_out, k, k]`` being PyTorch's ConvTranspose2d layout.

    Args:
        net: from :func:`fcnseg.weights.caffe_protobuf.read_caffemodel`.
        path: the file it came from, for error messages.

    Returns:
        :class:`ImportedWeights` with float32 tensors, ``normalization`` PAPER_BGR, and the ModelConfig of
        the FCN (pad 100, as the reference nets) or None for a classifier.

    Raises:
        CheckpointError: unknown layout, missing or unexpected parameterised layers, inconsistent shapes,
            at-once scale constants that differ from the reference.
    """
    path = os.fspath(path)
    by_name: dict[str, CaffeLayer] = {}
    for layer in net.layers:
        if layer.name in by_name and (layer.blobs or by_name[layer.name].blobs):
            raise CheckpointError(f"{path}: two layers are named '{layer.name}'")
        by_name.setdefault(layer.name, layer)
    arch, backbone = _detect(set(by_name), path)

    convs = VGG16_CONV_NAMES if backbone == "vgg16" else ALEXNET_CONVS
    heads = ARCH_HEADS[arch] if arch else ()
    scores = [name for head in heads for name in head.score_layers]
    upscores = [name for head in heads for name in head.upsampling_layers]
    scales = {f.scale_layer: f.skip.scale for head in heads for f in head.fusions if f.skip.scale is not None}
    classifier = ("fc8",) if arch is None else ()
    wanted = (*convs, "fc6", "fc7", *classifier, *scores, *upscores)

    missing = [n for n in wanted if n not in by_name or not by_name[n].blobs]
    if missing:
        raise CheckpointError(f"{path}: a {backbone} {arch or 'classifier'} needs weights for layers "
                              f"{', '.join(missing)}, which the file lacks")
    unexpected = [layer.name for layer in net.layers
                  if layer.blobs and layer.name not in wanted and layer.name not in scales]
    if unexpected:
        raise CheckpointError(f"{path}: layers {', '.join(unexpected)} carry weights that a {backbone} "
                              f"{arch or 'classifier'} has no place for; refusing to drop them silently")
    for name, value in scales.items():
        if name in by_name:
            _check_scale(by_name[name], value, path)

    state: dict[str, torch.Tensor] = {}

    def put(key: str, array: np.ndarray) -> None:
        state[key] = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))

    channels = None  # output channels of the previous layer: the C of a convolutionalized InnerProduct
    for name in (*convs, "fc6", "fc7", *classifier):
        weight, bias = _conv_params(by_name[name], channels, path)
        prefix = "classifier" if name == "fc8" else "backbone"
        put(f"{prefix}.{name}.weight", weight)
        put(f"{prefix}.{name}.bias", bias)
        channels = weight.shape[0]

    num_classes = channels if arch is None else None
    for name in scores:
        weight, bias = _conv_params(by_name[name], None, path)
        if weight.shape[2:] != (1, 1):
            raise CheckpointError(f"{path}: layer '{name}' has a {weight.shape[2]}x{weight.shape[3]} kernel, "
                                  "expected the reference 1x1 score convolution")
        num_classes = num_classes or weight.shape[0]
        if weight.shape[0] != num_classes:
            raise CheckpointError(f"{path}: layer '{name}' scores {weight.shape[0]} classes but "
                                  f"'{scores[0]}' scores {num_classes}")
        put(f"{name}.weight", weight)
        put(f"{name}.bias", bias)
    for name in upscores:
        layer = by_name[name]
        if len(layer.blobs) != 1:
            raise CheckpointError(f"{path}: layer '{name}' has {len(layer.blobs)} blobs, expected 1 "
                                  "(the reference upsampling has bias_term: false)")
        weight = layer.blobs[0]
        if weight.ndim != 4 or weight.shape[:2] != (num_classes, num_classes):
            raise CheckpointError(f"{path}: layer '{name}' has weight shape {tuple(weight.shape)}, expected "
                                  f"[{num_classes}, {num_classes}, k, k]")
        put(f"{name}.weight", weight)  # Caffe Deconvolution [C_in, C_out, k, k] == ConvTranspose2d layout

    config = ModelConfig(arch=arch, backbone=backbone, num_classes=int(num_classes)) if arch else None
    return ImportedWeights(state, backbone, int(num_classes), config, PAPER_BGR)
