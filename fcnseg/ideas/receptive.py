"""Receptive field and output stride of every layer of a net, and the FCN crop offsets that follow from them.

Everything is computed from the modules by :mod:`fcnseg.models.geometry` (nothing is typed in).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from fcnseg.config import ModelConfig
from fcnseg.models.fcn import build_model
from fcnseg.models.geometry import CoordMap, layer_geometry, receptive_fields
from fcnseg.models.heads import DATA


@dataclass
class LayerRow:
    name: str
    kind: str  # "conv", "pool"
    kernel: int  # effective extent in the layer's input pixels
    stride: int
    pad: int
    receptive_field: int  # pixels of the network input one output pixel sees
    output_stride: int  # input pixels between neighbouring outputs
    centre: float  # input x of the centre of output pixel 0 (negative: in the padding)


def layer_table(named_modules) -> list[LayerRow]:
    """One row per spatial layer of a chain of ``(name, module)`` pairs."""
    named_modules = list(named_modules)
    fields = dict(receptive_fields(named_modules))
    rows = []
    for name, m in named_modules:
        if name not in fields:
            continue
        g = layer_geometry(m)
        rf = fields[name]
        kind = "pool" if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)) else "conv"
        rows.append(LayerRow(name, kind, g.kernel, g.stride, g.pad, rf.size, rf.stride, rf.start))
    return rows


@dataclass
class CropRow:
    arch: str
    crop: str  # the reference net's Crop layer it stands for
    bigger: str  # the map being cropped
    reference: str  # the map it is aligned with ("data" is the input)
    bigger_shift: float  # out = scale * in + shift of the cropped map
    reference_shift: float
    offset: int


def fcn_geometry(backbone: str, pad: int = 100) -> dict:
    """Trunk layer table and crop offsets of the FCN heads available on ``backbone``.

    Returns:
        ``{"backbone", "pad", "layers": [LayerRow], "crops": [CropRow]}``; the offsets are the
        model's own ``FCN.offsets``, shown with the coordinate maps they come from.
    """
    arches = ["fcn32s"] if backbone == "alexnet" else ["fcn32s", "fcn16s", "fcn8s"]
    layers = None
    crops = []
    for arch in arches:
        model = build_model(ModelConfig(arch=arch, backbone=backbone, num_classes=2, pad=pad))
        if layers is None:
            trunk = [(n, m) for n, m in model.backbone.named_children()]
            layers = layer_table(trunk + [("score_fr", model.score_fr)])
        maps = {**model.coord_maps(), DATA: CoordMap()}
        for crop in (c for head in model.heads for c in head.crops):
            crops.append(CropRow(arch, crop.name, crop.bigger, crop.reference, maps[crop.bigger].shift,
                                 maps[crop.reference].shift, int(model.offsets[crop.name])))
    return {"backbone": backbone, "pad": pad, "layers": layers, "crops": crops}
