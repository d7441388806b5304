"""FCN-32s, FCN-16s, FCN-8s and FCN-8s at-once on a trunk: layers, crop offsets and forward from the head table."""

from __future__ import annotations

import torch
from torch import nn

from fcnseg.config import ModelConfig
from fcnseg.errors import ConfigError
from fcnseg.models.backbones import Backbone, build_backbone, init_from_scratch
from fcnseg.models.geometry import CoordMap, crop_offset
from fcnseg.models.heads import ARCH_HEADS, DATA, Head
from fcnseg.models.upsample import upsampling_layer


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
    """A fully convolutional network: ``forward(x float [N,3,H,W]) -> logits [N,num_classes,H,W]``.

    The heads (``self.heads``, from :data:`fcnseg.models.heads.ARCH_HEADS`) say which trunk stages are
    fused; layer names follow the reference nets (``score_fr``, ``score_pool4``, ``upscore2``...). The crop
    offsets (``self.offsets``) are computed from the layer geometry as Caffe's ``coord_map`` does; for
    VGG16 with pad 100 they are 19 (32s), 5/27 (16s) and 5/9/31 (8s). With ``padding: same`` a skip's
    map is the smaller one: its offset is negative (-1), and the upsampled map is cut to the skip instead;
    the final crops are 16 (32s), 8 (16s) and 4 (8s).
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.backbone: Backbone = build_backbone(
            config.backbone, pad=config.pad, dropout=config.dropout, batch_norm=config.batch_norm,
            padding=config.padding,
        )
        self.heads: tuple[Head, ...] = ARCH_HEADS[config.arch]
        for head in self.heads:
            self._add_head_layers(head)
        self.offsets = self._derive_offsets()
        init_from_scratch(self.backbone)
        self.zero_init_scores()

    def _add_head_layers(self, head: Head) -> None:
        c, taps, learn = self.config.num_classes, self.backbone.taps, self.config.learn_upsampling
        # Score layers first, then upsamplings, coarse to fine: the state-dict and parameter order of the
        # reference nets, which optimiser states saved in checkpoints rely on.
        self.add_module(head.score_fr, nn.Conv2d(taps[head.source], c, 1))
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
        whose crop cuts the skip), or the skip where that is the smaller ("same" padding).
        """
        trunk = self.backbone
        maps = {}
        for head in self.heads:
            running = maps[head.score_fr] = CoordMap.of_layers(
                trunk.layers_until(head.source) + [getattr(self, head.score_fr)]
            )
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone(x)
        (head,) = self.heads  # every architecture has one head; a net with several will return one map each
        return self._head_scores(head, features, x)

    def _head_scores(self, head: Head, features: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        score = getattr(self, head.score_fr)(features[head.source])  # 1/32
        for f in head.fusions:
            up = getattr(self, f.upscore)(score)  # 1/16, then 1/8
            skip = features[f.skip.tap]
            if f.skip.scale is not None:
                skip = skip * f.skip.scale
            score = _fuse(up, getattr(self, f.score)(skip), self.offsets[f.crop])
        return _crop(getattr(self, head.upscore)(score), self.offsets[head.crop], x).contiguous()

    def coarse_scores(self, x: torch.Tensor) -> torch.Tensor:
        """The 1/32 class score map ``score_fr`` before any upsampling ``[N, C, h, w]``."""
        (head,) = self.heads
        return getattr(self, head.score_fr)(self.backbone(x)[head.source])


def build_model(config: ModelConfig) -> FCN:
    """Build the network a config describes (score layers zero-initialised, trunk He-initialised)."""
    return FCN(config)
