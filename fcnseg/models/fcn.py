"""FCN-32s, FCN-16s, FCN-8s and FCN-8s at-once on a trunk: layers, crop offsets and forward from the head table.

One net may read several input streams (late fusion: a trunk each, their scores averaged) and give
several outputs (heads sharing one trunk); :func:`fcnseg.models.heads.net_heads` names their layers.
"""

from __future__ import annotations

import torch
from torch import nn

from fcnseg.config import ModelConfig
from fcnseg.errors import ConfigError
from fcnseg.models.backbones import Backbone, build_backbone, init_from_scratch
from fcnseg.models.geometry import CoordMap, crop_offset
from fcnseg.models.heads import DATA, Head, net_heads
from fcnseg.models.resnet import ResNetFCN
from fcnseg.models.upsample import upsampling_layer

# The reference name of the first convolution of a single trunk reading a stream other than 3 channels
# of colour: nyud-fcn32s-color-d/net.py calls its 4-channel conv1_1 "conv1_1_bgrd".
FIRST_LAYER_NAMES = {"color+depth": "conv1_1_bgrd"}


def _crop(x: torch.Tensor, offset: int, like: torch.Tensor) -> torch.Tensor:
    """``x[:, :, o:o+h, o:o+w]`` with ``h, w`` the size of ``like``."""
    h, w = like.shape[-2:]
    return x[:, :, offset : offset + h, offset : offset + w]


def _fuse(up: torch.Tensor, skip: torch.Tensor, offset: int) -> torch.Tensor:
    """``up`` plus the ``skip`` scores aligned to it: the skip cut at ``offset`` (the reference Crop), or for a
    negative offset ``up`` cut at ``-offset`` to the skip (the "same"-padded trunks, whose skips are the smaller)."""
    if offset >= 0:
        return up + _crop(skip, offset, up)
    return _crop(up, -offset, skip) + skip


class FCN(nn.Module):
    """A fully convolutional network: ``forward(x float [N,C,H,W]) -> logits [N,num_classes,H,W]``.

    The heads (``self.heads``, from :data:`fcnseg.models.heads.ARCH_HEADS`) say which trunk stages are
    fused; layer names follow the reference nets (``score_fr``, ``score_pool4``, ``upscore2``...). The crop
    offsets (``self.offsets``) are computed from the layer geometry as Caffe's ``coord_map`` does; for
    VGG16 with pad 100 they are 19 (32s), 5/27 (16s) and 5/9/31 (8s). With ``padding: same`` a skip's
    map is the smaller one: its offset is negative (-1), and the upsampled map is cut to the skip instead;
    the final crops are 16 (32s), 8 (16s) and 4 (8s).

    ``C`` is ``config.in_channels`` (3 for RGB). A net of several heads (``config.heads``) returns
    ``{head name: logits [N, classes, H, W]}`` in head order. One stream has the trunk ``backbone``;
    several (late fusion) have ``backbones[stream]``, each reading its own channels of ``x``.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.streams: list[tuple[str, int]] = config.input_streams()
        trunks = {
            name: build_backbone(config.backbone, pad=config.pad, dropout=config.dropout,
                                 batch_norm=config.batch_norm, in_channels=channels, padding=config.padding)
            for name, channels in self.streams
        }
        if len(trunks) == 1:
            self.backbone: Backbone = next(iter(trunks.values()))
        else:
            self.backbones = nn.ModuleDict(trunks)
        self.head_classes: dict[str, int] = dict(config.output_heads())
        self.heads: tuple[Head, ...] = net_heads(config.arch, list(self.head_classes), [n for n, _ in self.streams])
        for head in self.heads:
            self._add_head_layers(head)
        self.offsets = self._derive_offsets()
        for trunk in self.trunks().values():
            init_from_scratch(trunk)
        self.zero_init_scores()

    def trunks(self) -> dict[str, Backbone]:
        """Stream name -> its trunk, in input channel order."""
        if len(self.streams) == 1:
            return {self.streams[0][0]: self.backbone}
        return dict(self.backbones.items())

    def trunk_prefix(self, stream: str) -> str:
        """The state-dict prefix of a stream's trunk: ``backbone``, or ``backbones.<stream>`` under late fusion."""
        return "backbone" if len(self.streams) == 1 else f"backbones.{stream}"

    def _add_head_layers(self, head: Head) -> None:
        c, learn = self.head_classes[head.name], self.config.learn_upsampling
        taps = next(iter(self.trunks().values())).taps
        # Score layers first, then upsamplings, coarse to fine: the state-dict and parameter order of the
        # reference nets, which optimiser states saved in checkpoints rely on.
        for name in head.stream_scores:
            self.add_module(name, nn.Conv2d(taps[head.source], c, 1))
        for f in head.fusions:
            self.add_module(f.score, nn.Conv2d(taps[f.skip.tap], c, 1))
        for f in head.fusions:
            self.add_module(f.upscore, upsampling_layer(c, f.factor, learnable=learn))
        # fcn-alexnet upsamples with a 63-wide kernel (its stride-4 conv1 changes the centring).
        kernel = 63 if self.config.backbone == "alexnet" else None
        self.add_module(head.upscore, upsampling_layer(c, head.factor, kernel, learnable=learn))

    def zero_init_scores(self) -> None:
        """Zero the class-scoring layers, as the paper does for new score layers (section 4.2)."""
        for head in self.heads:
            for name in head.score_layers:
                layer = getattr(self, name)
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)

    def coord_maps(self) -> dict[str, CoordMap]:
        """Map from input pixels to each scored, upsampled or fused map's pixels (Caffe's coord_map).

        A fused map has the coordinates of the map that is not cut: the upsampled one (the reference nets,
        whose crop cuts the skip), or the skip where that is the smaller ("same" padding); the streams'
        averaged ``score_fused`` those of their ``score_fr`` (the trunks are alike).
        """
        trunk = next(iter(self.trunks().values()))
        maps = {}
        for head in self.heads:
            for name in head.stream_scores:
                maps[name] = CoordMap.of_layers(trunk.layers_until(head.source) + [getattr(self, name)])
            running = maps[head.coarse] = maps[head.stream_scores[0]]
            for f in head.fusions:
                up = maps[f.upscore] = CoordMap.of_layers([getattr(self, f.upscore)], running)
                skip = maps[f.score] = CoordMap.of_layers(trunk.layers_until(f.skip.tap) + [getattr(self, f.score)])
                # cutting a map at offset o lowers its shift by o: the sum has the smaller shift of the two
                running = min(up, skip, key=lambda m: m.shift)
            maps[head.upscore] = CoordMap.of_layers([getattr(self, head.upscore)], running)
        return maps

    def _derive_offsets(self) -> dict[str, int]:
        """Crop name -> offset; a skip's may be negative (the upsampled map is then the one cut), the last may not."""
        maps = {**self.coord_maps(), DATA: CoordMap()}
        try:
            return {
                crop.name: crop_offset(maps[crop.bigger], maps[crop.reference], crop.name,
                                       signed=crop.reference != DATA)
                for head in self.heads
                for crop in head.crops
            }
        except ValueError as e:
            geometry = f"pad {self.config.pad}" if self.config.padding == "paper" else "padding 'same'"
            raise ConfigError(f"{self.config.arch} on {self.config.backbone} with {geometry}: {e}") from e

    def receptive_field_layers(self) -> list[tuple[str, nn.Module]]:
        """The trunk's layers up to fc7, in order (its receptive field bounds the context a tile needs)."""
        return list(next(iter(self.trunks().values())).named_children())

    def reference_names(self) -> dict[str, str]:
        """Module path -> the reference net's layer name, for every layer with learned weights, in forward order.

        ``backbone.conv1_1`` -> ``conv1_1`` (``conv1_1_bgrd`` for the 4-channel colour + depth trunk), under late
        fusion ``backbones.color.conv1_1`` -> ``conv1_1color``; head layers have their reference names already.
        """
        names = {}
        for stream, trunk in self.trunks().items():
            prefix = self.trunk_prefix(stream)
            for layer, module in trunk.named_children():
                if not any(True for _ in module.parameters()) or isinstance(module, nn.BatchNorm2d):
                    continue
                if len(self.streams) > 1:
                    names[f"{prefix}.{layer}"] = f"{layer}{stream}"
                elif layer == trunk.first_conv and stream in FIRST_LAYER_NAMES:
                    names[f"{prefix}.{layer}"] = FIRST_LAYER_NAMES[stream]
                else:
                    names[f"{prefix}.{layer}"] = layer
        for head in self.heads:
            for name in (*head.score_layers, *head.upsampling_layers):
                names[name] = name
        return names

    def trunk_features(self, x: torch.Tensor) -> dict[str, dict[str, torch.Tensor]]:
        """Stream name -> its trunk's tapped feature maps, each trunk on its own channels of ``x``."""
        if len(self.streams) == 1:
            return {self.streams[0][0]: self.backbone(x)}
        parts = x.split([c for _, c in self.streams], dim=1)
        return {name: self.backbones[name](part) for (name, _), part in zip(self.streams, parts)}

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        features = self.trunk_features(x)
        scores = {head.name: self._head_scores(head, features, x) for head in self.heads}
        if len(scores) == 1:
            return next(iter(scores.values()))
        return scores

    def _coarse(self, head: Head, features: dict[str, dict[str, torch.Tensor]]) -> torch.Tensor:
        if not head.streams:
            (trunk,) = features.values()
            return getattr(self, head.score_fr)(trunk[head.source])  # 1/32
        # score_fused: Eltwise SUM with coeff 1/K each (0.5, 0.5 in nyud-fcn32s-color-hha/net.py)
        weight = 1.0 / len(head.streams)
        scores = [getattr(self, name)(features[s][head.source]) for name, s in zip(head.stream_scores, head.streams)]
        return sum(weight * score for score in scores)

    def _head_scores(self, head: Head, features: dict[str, dict[str, torch.Tensor]], x: torch.Tensor) -> torch.Tensor:
        score = self._coarse(head, features)  # 1/32
        (trunk, *_) = features.values()
        for f in head.fusions:
            up = getattr(self, f.upscore)(score)  # 1/16, then 1/8
            skip = trunk[f.skip.tap]
            if f.skip.scale is not None:
                skip = skip * f.skip.scale
            score = _fuse(up, getattr(self, f.score)(skip), self.offsets[f.crop])
        return _crop(getattr(self, head.upscore)(score), self.offsets[head.crop], x).contiguous()

    def coarse_scores(self, x: torch.Tensor) -> torch.Tensor:
        """The 1/32 class score map of the first head, before any upsampling ``[N, C, h, w]`` (``score_fr``,
        or the streams' ``score_fused``)."""
        return self._coarse(self.heads[0], self.trunk_features(x))


def build_model(config: ModelConfig) -> "FCN | ResNetFCN":
    """Build the network a config describes: an :class:`FCN` (score layers zero-initialised, trunk He-initialised),
    or for the ResNet backbones torchvision's FCN (:class:`fcnseg.models.resnet.ResNetFCN`)."""
    if config.is_resnet:
        return ResNetFCN(config)
    return FCN(config)
