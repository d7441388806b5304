"""FCN-32s, FCN-16s, FCN-8s and FCN-8s at-once heads on a trunk, with crop offsets derived from the layers."""

from __future__ import annotations

import torch
from torch import nn

from fcnseg.config import ModelConfig
from fcnseg.models.backbones import Backbone, build_backbone, init_from_scratch
from fcnseg.models.geometry import CoordMap, crop_offset
from fcnseg.models.upsample import upsampling_layer

# voc-fcn8s-atonce scales the pool4 and pool3 skips before scoring them ("for compatibility"),
# so that all three streams start at comparable magnitudes when trained at once.
ATONCE_POOL4_SCALE = 0.01
ATONCE_POOL3_SCALE = 0.0001


def _crop(x: torch.Tensor, offset: int, like: torch.Tensor) -> torch.Tensor:
    """``x[:, :, o:o+h, o:o+w]`` with ``h, w`` the size of ``like``."""
    h, w = like.shape[-2:]
    return x[:, :, offset : offset + h, offset : offset + w]


class FCN(nn.Module):
    """A fully convolutional network: ``forward(x float [N,3,H,W]) -> logits [N,num_classes,H,W]``.

    Layer names follow the reference nets (``score_fr``, ``score_pool4``, ``upscore2``...).
    The crop offsets (``self.offsets``) are computed from the layer geometry as Caffe's
    ``coord_map`` does; for VGG16 with pad 100 they are 19 (32s), 5/27 (16s) and 5/9/31 (8s).
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        config.validate()
        self.config = config
        c = config.num_classes
        self.backbone: Backbone = build_backbone(
            config.backbone, pad=config.pad, dropout=config.dropout, batch_norm=config.batch_norm
        )
        self.score_fr = nn.Conv2d(self.backbone.taps["drop7"], c, 1)
        learn = config.learn_upsampling
        arch = config.arch
        if arch == "fcn32s":
            # fcn-alexnet upsamples with a 63-wide kernel (its stride-4 conv1 changes the centring).
            kernel = 63 if config.backbone == "alexnet" else 64
            self.upscore = upsampling_layer(c, 32, kernel, learnable=learn)
        elif arch == "fcn16s":
            self.score_pool4 = nn.Conv2d(self.backbone.taps["pool4"], c, 1)
            self.upscore2 = upsampling_layer(c, 2, learnable=learn)
            self.upscore16 = upsampling_layer(c, 16, learnable=learn)
        else:  # fcn8s, fcn8s-atonce
            self.score_pool4 = nn.Conv2d(self.backbone.taps["pool4"], c, 1)
            self.score_pool3 = nn.Conv2d(self.backbone.taps["pool3"], c, 1)
            self.upscore2 = upsampling_layer(c, 2, learnable=learn)
            self.upscore_pool4 = upsampling_layer(c, 2, learnable=learn)
            self.upscore8 = upsampling_layer(c, 8, learnable=learn)
        self.skip_scales = (
            {"pool4": ATONCE_POOL4_SCALE, "pool3": ATONCE_POOL3_SCALE} if arch == "fcn8s-atonce" else {"pool4": 1.0, "pool3": 1.0}
        )
        self.offsets = self._derive_offsets()
        init_from_scratch(self.backbone)
        self.zero_init_scores()

    def zero_init_scores(self) -> None:
        """Zero the class-scoring layers, as the paper does for new score layers (section 4.2)."""
        for name in ("score_fr", "score_pool4", "score_pool3"):
            layer = getattr(self, name, None)
            if layer is not None:
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)

    def coord_maps(self) -> dict[str, CoordMap]:
        """Map from input pixels to each fused or upsampled map's pixels (Caffe's coord_map)."""
        bb = self.backbone
        maps = {"score_fr": CoordMap.of_layers(bb.layers_until("drop7") + [self.score_fr])}
        if self.config.arch == "fcn32s":
            maps["upscore"] = CoordMap.of_layers([self.upscore], maps["score_fr"])
            return maps
        maps["upscore2"] = CoordMap.of_layers([self.upscore2], maps["score_fr"])
        maps["score_pool4"] = CoordMap.of_layers(bb.layers_until("pool4") + [self.score_pool4])
        if self.config.arch == "fcn16s":
            maps["upscore16"] = CoordMap.of_layers([self.upscore16], maps["upscore2"])
            return maps
        maps["upscore_pool4"] = CoordMap.of_layers([self.upscore_pool4], maps["upscore2"])
        maps["score_pool3"] = CoordMap.of_layers(bb.layers_until("pool3") + [self.score_pool3])
        maps["upscore8"] = CoordMap.of_layers([self.upscore8], maps["upscore_pool4"])
        return maps

    def _derive_offsets(self) -> dict[str, int]:
        maps = self.coord_maps()
        data = CoordMap()
        arch = self.config.arch
        try:
            if arch == "fcn32s":
                return {"score": crop_offset(maps["upscore"], data, "score")}
            offsets = {"score_pool4c": crop_offset(maps["score_pool4"], maps["upscore2"], "score_pool4c")}
            if arch == "fcn16s":
                offsets["score"] = crop_offset(maps["upscore16"], data, "score")
                return offsets
            offsets["score_pool3c"] = crop_offset(maps["score_pool3"], maps["upscore_pool4"], "score_pool3c")
            offsets["score"] = crop_offset(maps["upscore8"], data, "score")
            return offsets
        except ValueError as e:
            from fcnseg.errors import ConfigError

            raise ConfigError(f"{arch} on {self.config.backbone} with pad {self.config.pad}: {e}") from e

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.backbone(x)
        score = self.score_fr(features["drop7"])  # 1/32
        arch, off = self.config.arch, self.offsets
        if arch == "fcn32s":
            return _crop(self.upscore(score), off["score"], x).contiguous()
        upscore2 = self.upscore2(score)  # 1/16
        score_pool4 = self.score_pool4(features["pool4"] * self.skip_scales["pool4"])
        fuse_pool4 = upscore2 + _crop(score_pool4, off["score_pool4c"], upscore2)
        if arch == "fcn16s":
            return _crop(self.upscore16(fuse_pool4), off["score"], x).contiguous()
        upscore_pool4 = self.upscore_pool4(fuse_pool4)  # 1/8
        score_pool3 = self.score_pool3(features["pool3"] * self.skip_scales["pool3"])
        fuse_pool3 = upscore_pool4 + _crop(score_pool3, off["score_pool3c"], upscore_pool4)
        return _crop(self.upscore8(fuse_pool3), off["score"], x).contiguous()

    def coarse_scores(self, x: torch.Tensor) -> torch.Tensor:
        """The 1/32 class score map ``score_fr`` before any upsampling ``[N, C, h, w]``."""
        return self.score_fr(self.backbone(x)["drop7"])


def build_model(config: ModelConfig) -> FCN:
    """Build the network a config describes (score layers zero-initialised, trunk He-initialised)."""
    return FCN(config)
