"""Coordinate maps of layers (as Caffe's coord_map.py): receptive fields, strides and crop offsets, derived from the modules."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from torch import nn


def _pair(v) -> int:
    if isinstance(v, (tuple, list)):
        if len(set(v)) != 1:
            raise ValueError(f"non-square layer parameters {v} are not supported by the crop geometry")
        return int(v[0])
    return int(v)


@dataclass(frozen=True)
class LayerGeometry:
    kernel: int  # effective extent: (k - 1) * dilation + 1
    stride: int
    pad: int
    transposed: bool = False


def layer_geometry(module: nn.Module) -> LayerGeometry | None:
    """Spatial geometry of a layer, or None for a layer that keeps coordinates (ReLU, dropout, LRN...)."""
    if isinstance(module, nn.ConvTranspose2d):
        k, d = _pair(module.kernel_size), _pair(module.dilation)
        return LayerGeometry((k - 1) * d + 1, _pair(module.stride), _pair(module.padding), transposed=True)
    if isinstance(module, (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)):
        k = _pair(module.kernel_size)
        d = _pair(getattr(module, "dilation", 1))
        stride = _pair(module.stride if module.stride is not None else k)
        return LayerGeometry((k - 1) * d + 1, stride, _pair(module.padding))
    return None


@dataclass(frozen=True)
class CoordMap:
    """Affine map from input coordinates to output coordinates: ``out = scale * in + shift``.

    Follows Caffe's ``coord_map``: a convolution or pooling with kernel k, stride s, pad p maps
    ``in -> (in + p - (k - 1) / 2) / s``; a deconvolution is the inverse.
    """

    scale: float = 1.0
    shift: float = 0.0

    def then(self, other: "CoordMap") -> "CoordMap":
        """The map of applying ``self`` and then ``other``."""
        return CoordMap(other.scale * self.scale, other.scale * self.shift + other.shift)

    @staticmethod
    def of_layer(g: LayerGeometry | None) -> "CoordMap":
        if g is None:
            return CoordMap()
        if g.transposed:
            return CoordMap(g.stride, (g.kernel - 1) / 2 - g.pad)
        return CoordMap(1 / g.stride, (g.pad - (g.kernel - 1) / 2) / g.stride)

    @staticmethod
    def of_layers(modules: Iterable[nn.Module], start: "CoordMap | None" = None) -> "CoordMap":
        cmap = start or CoordMap()
        for m in modules:
            cmap = cmap.then(CoordMap.of_layer(layer_geometry(m)))
        return cmap


def crop_offset(bigger: CoordMap, reference: CoordMap, what: str = "crop", signed: bool = False) -> int:
    """Offset at which to crop the map with coordinates ``bigger`` so that it aligns with ``reference``.

    Both maps are from the network input; they must have the same scale (Caffe's crop asserts the same).
    A negative offset ``-o`` means ``reference`` is the one that extends further: it is cut at ``o`` instead;
    only ``signed`` callers, which can cut either map, accept it.
    """
    if abs(bigger.scale - reference.scale) > 1e-9:
        raise ValueError(f"{what}: maps of different scales {bigger.scale} and {reference.scale} cannot be aligned")
    # Reference pixel 0 sits at input x = -reference.shift / scale, i.e. at bigger.shift - reference.shift.
    offset = bigger.shift - reference.shift
    if offset < -1e-9 and not signed:
        raise ValueError(f"{what}: negative offset {offset}; increase the first layer's padding")
    if abs(offset - round(offset)) > 1e-6:
        raise ValueError(f"{what}: the maps are {offset} pixels apart, not a whole number; they cannot be aligned")
    return int(round(offset))


@dataclass(frozen=True)
class ReceptiveField:
    """Receptive field size, jump (stride in input pixels) and start (centre of output pixel 0) of a layer."""

    size: int
    stride: int
    start: float


def receptive_fields(named_modules: Iterable[tuple[str, nn.Module]]) -> list[tuple[str, ReceptiveField]]:
    """Receptive field of every spatial layer in a chain, computed from the layers (not typed in)."""
    size, jump, start = 1, 1, 0.0
    rows = []
    for name, m in named_modules:
        g = layer_geometry(m)
        if g is None or g.transposed:
            continue
        size = size + (g.kernel - 1) * jump
        start = start + ((g.kernel - 1) / 2 - g.pad) * jump
        jump = jump * g.stride
        rows.append((name, ReceptiveField(size, jump, start)))
    return rows
