"""Map a decoded reference caffemodel onto fcnseg's state-dict keys and the ModelConfig it fills.

The reference nets are fcn.berkeleyvision.org's ``voc-fcn*``, ``nyud-fcn32s-*``, ``siftflow-fcn*``,
``pascalcontext-fcn*`` ``net.py`` and ``VGG_ILSVRC_16_layers``; their head layers are read from
:data:`fcnseg.models.heads.ARCH_HEADS`, the decoding is :mod:`fcnseg.weights.caffe_protobuf`'s.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fcnseg.config import ModelConfig
from fcnseg.data.normalization import PAPER_BGR
from fcnseg.errors import CheckpointError, ConfigError
from fcnseg.models.backbones import VGG16_CONV_NAMES
from fcnseg.models.fcn import build_model
from fcnseg.models.heads import head_name, match_arch
from fcnseg.weights.caffe_protobuf import CaffeLayer, CaffeNet
from fcnseg.weights.imported import ImportedWeights

ALEXNET_CONVS = ("conv1", "conv2", "conv3", "conv4", "conv5")


@dataclass
class _Layout:
    """What a caffemodel's layer names say: its trunk, input streams and heads (arch None: a classifier)."""

    backbone: str
    arch: str | None
    streams: list[list] = field(default_factory=list)  # [name, channels]; [] = one RGB trunk
    heads: list[tuple[str, str]] = field(default_factory=list)  # (head name, layer suffix), file order


def _first_convs(by_name: dict[str, CaffeLayer], path: str) -> tuple[str, list[tuple[str, str]]]:
    """(backbone, [(stream, reference name of its first convolution)]) from the trunk's first layers."""
    names = list(by_name)
    if "conv1_1" in by_name:
        return "vgg16", [("", "conv1_1")]
    if "conv1_1_bgrd" in by_name:  # nyud-fcn32s-color-d: colour and depth early-fused
        return "vgg16", [("color+depth", "conv1_1_bgrd")]
    streams = [(n.removeprefix("conv1_1"), n) for n in names if n.startswith("conv1_1") and n[7:].isidentifier()]
    if streams:  # nyud-fcn32s-color-hha: one trunk per stream, its layers named after it (conv1_1color)
        return "vgg16", streams
    if "conv1" in by_name:
        return "alexnet", [("", "conv1")]
    raise CheckpointError(f"{path}: neither 'conv1_1' (VGG16) nor 'conv1' (AlexNet) is a layer of this "
                          "net; only the FCN reference nets and their ImageNet classifiers are supported")


def _detect(by_name: dict[str, CaffeLayer], path: str) -> _Layout:
    """The layout of a reference net from its layer names (blob shapes give the input channels)."""
    backbone, firsts = _first_convs(by_name, path)
    streams = []
    for stream, layer in firsts:
        blobs = by_name[layer].blobs
        channels = int(blobs[0].shape[1]) if blobs and blobs[0].ndim == 4 else 3
        if stream or channels != 3:
            streams.append([stream or ("depth" if channels == 1 else "input"), channels])
    fused = [name for name, _ in streams] if len(streams) > 1 else []
    suffixes = []
    for name in by_name:
        if not name.startswith("score_fr"):
            continue
        suffix = name.removeprefix("score_fr")
        if fused:
            suffix = next((suffix.removesuffix(s) for s in fused if suffix.endswith(s)), None)
        if suffix is not None and suffix not in suffixes:
            suffixes.append(suffix)
    arches = {suffix: match_arch(by_name, suffix, fused) for suffix in suffixes}
    if not arches or None in arches.values():
        if "fc8" in by_name:
            return _Layout(backbone, None)
        raise CheckpointError(f"{path}: neither 'score_fr' (an FCN) nor 'fc8' (an ImageNet classifier) is a "
                              "layer of this net")
    if len(set(arches.values())) > 1:
        found = ", ".join(f"{head_name(s)} {a}" for s, a in arches.items())
        raise CheckpointError(f"{path}: the heads of this net are of different architectures ({found}); "
                              "fcnseg builds heads of one architecture")
    return _Layout(backbone, next(iter(arches.values())), streams, [(head_name(s), s) for s in suffixes])


def _config(layout: _Layout, by_name: dict[str, CaffeLayer], path: str) -> ModelConfig:
    """The ModelConfig of a detected FCN; class counts from the score_fr blobs."""
    stream = layout.streams[0][0] if len(layout.streams) > 1 else ""
    heads = []
    for name, suffix in layout.heads:
        weight, _ = _conv_params(by_name[f"score_fr{suffix}{stream}"], None, path)
        heads.append([name, int(weight.shape[0])])
    config = ModelConfig(arch=layout.arch, backbone=layout.backbone, num_classes=heads[0][1],
                         streams=layout.streams, heads=heads if len(heads) > 1 else [])
    try:
        return config.validate()
    except ConfigError as e:
        raise CheckpointError(f"{path}: an {layout.backbone} {layout.arch}: {e}") from None


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

    Detection from layer names: ``conv1_1`` -> vgg16, ``conv1`` -> alexnet; ``conv1_1_bgrd`` -> one 4-channel
    trunk (nyud-fcn32s-color-d), ``conv1_1<stream>`` -> one trunk per stream (nyud-fcn32s-color-hha:
    ``conv1_1color`` ... ``score_frcolor``, ``conv1_1hha`` ... ``score_frhha``); ``score_fr<suffix>`` layers
    give the heads (``score_fr_sem``, ``score_fr_geo``: siftflow-fcn*), each head's architecture the one whose
    layers of :data:`~fcnseg.models.heads.ARCH_HEADS` the file holds most of (``upscore`` -> fcn32s,
    ``score_pool4`` + ``upscore16`` -> fcn16s, ``score_pool3`` + ``upscore8`` -> fcn8s, and ``fcn8s-atonce``
    with its Scale layers ``scale_pool4``/``scale_pool3``, whose constants must be the table's
    0.01/0.0001); ``fc8`` without head layers -> an ImageNet classifier (``config`` None): the trunk plus
    ``classifier.fc8.weight [1000, 4096, 1, 1]`` and ``classifier.fc8.bias``. The keys are the built net's
    own (:meth:`fcnseg.models.fcn.FCN.reference_names`), so only names decide the mapping, never the widths.
    InnerProduct fc6/fc7/fc8 are reshaped to convolutions; transposed convolution weights are kept as
    stored, Caffe's ``[C_in, C_out, k, k]`` being PyTorch's ConvTranspose2d layout.

    Args:
        net: from :func:`fcnseg.weights.caffe_protobuf.read_caffemodel`.
        path: the file it came from, for error messages (and to tell the HHA net from the colour one).

    Returns:
        :class:`ImportedWeights` with float32 tensors, the ModelConfig of the FCN (pad 100, as the reference
        nets) or None for a classifier, and the input the released nets were trained on: NYUD's mean pixels
        and modalities for its 40 classes, SIFT Flow's for its two heads, else ``paper_bgr``.

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
    layout = _detect(by_name, path)
    if layout.arch is None:
        return _classifier(net, by_name, layout.backbone, path)
    config = _config(layout, by_name, path)
    with torch.device("meta"):  # names and layer kinds only: no weights are made
        model = build_model(config)
    reference = model.reference_names()  # module path -> reference layer name
    scales = {f.scale_layer: f.skip.scale for head in model.heads for f in head.fusions if f.skip.scale is not None}
    what = f"{layout.backbone} {config.arch}"
    _check_layers(net, by_name, list(reference.values()), scales, what, path)
    for name, value in scales.items():
        if name in by_name:
            _check_scale(by_name[name], value, path)

    state: dict[str, torch.Tensor] = {}

    def put(key: str, array: np.ndarray) -> None:
        state[key] = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))

    classes = {name: model.head_classes[h.name] for h in model.heads for name in (*h.score_layers, *h.upsampling_layers)}
    channels: dict[str, int | None] = {}  # per trunk: output channels of its previous layer (an InnerProduct's C)
    for module_path, name in reference.items():
        layer, module = by_name[name], model.get_submodule(module_path)
        if isinstance(module, nn.ConvTranspose2d):
            put(f"{module_path}.weight", _upscore_weight(layer, classes[name], path))
            continue
        trunk = module_path.rpartition(".")[0]
        weight, bias = _conv_params(layer, channels.get(trunk), path)
        if name in classes:
            _check_score(name, weight, classes[name], path)
        put(f"{module_path}.weight", weight)
        put(f"{module_path}.bias", bias)
        channels[trunk] = weight.shape[0]
    normalization, inputs, class_names = _released_inputs(config, path)
    return ImportedWeights(state, layout.backbone, config.num_classes, config, normalization, inputs, class_names)


def _check_layers(net: CaffeNet, by_name: dict[str, CaffeLayer], wanted: list[str], allowed: Iterable[str],
                  what: str, path: str) -> None:
    """Every wanted layer has weights, and no other layer (but ``allowed``) carries any."""
    missing = [n for n in wanted if n not in by_name or not by_name[n].blobs]
    if missing:
        raise CheckpointError(f"{path}: a {what} needs weights for layers {', '.join(missing)}, which the file lacks")
    allowed = set(wanted) | set(allowed)
    unexpected = [layer.name for layer in net.layers if layer.blobs and layer.name not in allowed]
    if unexpected:
        raise CheckpointError(f"{path}: layers {', '.join(unexpected)} carry weights that a {what} has no place "
                              "for; refusing to drop them silently")


def _check_score(name: str, weight: np.ndarray, num_classes: int, path: str) -> None:
    if weight.shape[2:] != (1, 1):
        raise CheckpointError(f"{path}: layer '{name}' has a {weight.shape[2]}x{weight.shape[3]} kernel, "
                              "expected the reference 1x1 score convolution")
    if weight.shape[0] != num_classes:
        raise CheckpointError(f"{path}: layer '{name}' scores {weight.shape[0]} classes but its head's "
                              f"score_fr scores {num_classes}")


def _upscore_weight(layer: CaffeLayer, num_classes: int, path: str) -> np.ndarray:
    if len(layer.blobs) != 1:
        raise CheckpointError(f"{path}: layer '{layer.name}' has {len(layer.blobs)} blobs, expected 1 "
                              "(the reference upsampling has bias_term: false)")
    weight = layer.blobs[0]
    if weight.ndim != 4 or weight.shape[:2] != (num_classes, num_classes):
        raise CheckpointError(f"{path}: layer '{layer.name}' has weight shape {tuple(weight.shape)}, expected "
                              f"[{num_classes}, {num_classes}, k, k]")
    return weight  # Caffe Deconvolution [C_in, C_out, k, k] == ConvTranspose2d layout


def _classifier(net: CaffeNet, by_name: dict[str, CaffeLayer], backbone: str, path: str) -> ImportedWeights:
    """An ImageNet classifier: the trunk and fc8, fully connected layers as convolutions."""
    convs = VGG16_CONV_NAMES if backbone == "vgg16" else ALEXNET_CONVS
    wanted = [*convs, "fc6", "fc7", "fc8"]
    _check_layers(net, by_name, wanted, (), f"{backbone} classifier", path)
    state: dict[str, torch.Tensor] = {}
    channels = None  # output channels of the previous layer: the C of a convolutionalized InnerProduct
    for name in wanted:
        weight, bias = _conv_params(by_name[name], channels, path)
        prefix = "classifier" if name == "fc8" else "backbone"
        state[f"{prefix}.{name}.weight"] = torch.from_numpy(np.ascontiguousarray(weight, dtype=np.float32))
        state[f"{prefix}.{name}.bias"] = torch.from_numpy(np.ascontiguousarray(bias, dtype=np.float32))
        channels = weight.shape[0]
    return ImportedWeights(state, backbone, int(channels), None, PAPER_BGR)


# The data sets of the released reference nets, told apart by their outputs: (head classes) -> data set.
NYUD_CLASS_COUNT, SIFTFLOW_CLASS_COUNTS = 40, (33, 3)


def _released_inputs(config: ModelConfig, path: str):
    """(normalisation, InputSpec or None, head class names) of the data set a reference net was trained on.

    40 classes: NYUDv2, its modality from the inputs (two streams color+hha, 4 channels color+depth, 1 depth;
    3 channels are colour unless the file's name says HHA, as nyud-fcn32s-hha-heavy.caffemodel does, for
    the weights cannot tell); 33 + 3 classes in two heads: SIFT Flow; anything else PASCAL's ``paper_bgr``.
    """
    from fcnseg.data.normalization import NYUD_BGR, NYUD_HHA, NYUD_LOG_DEPTH, SIFTFLOW_BGR, InputSpec

    counts = tuple(c for _, c in config.output_heads())
    if counts == SIFTFLOW_CLASS_COUNTS and config.in_channels == 3:
        from fcnseg.data.siftflow import SIFTFLOW_GEOMETRIC_CLASSES, SIFTFLOW_SEMANTIC_CLASSES

        names = dict(zip([n for n, _ in config.output_heads()], (SIFTFLOW_SEMANTIC_CLASSES, SIFTFLOW_GEOMETRIC_CLASSES)))
        return SIFTFLOW_BGR, None, {k: list(v) for k, v in names.items()}
    if counts == (NYUD_CLASS_COUNT,):
        from fcnseg.data.nyud import NYUD_CLASSES

        streams = config.input_streams()
        stem = Path(path).stem.lower()
        if len(streams) > 1:
            modalities = "+".join(n for n, _ in streams)
        else:
            channels = streams[0][1]
            modalities = {4: "color+depth", 1: "depth"}.get(channels, "hha" if "hha" in stem and "color" not in stem else "color")
        table = {"color": NYUD_BGR, "hha": NYUD_HHA, "depth": NYUD_LOG_DEPTH}
        norms = {m: table[m] for m in modalities.split("+") if m in table}
        if len(norms) == len(modalities.split("+")):  # a modality fcnseg knows for every stream
            spec = None if modalities == "color" else InputSpec(modalities, norms)
            return next(iter(norms.values())), spec, {config.output_heads()[0][0]: list(NYUD_CLASSES)}
    return PAPER_BGR, None, {}
