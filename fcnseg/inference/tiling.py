"""Tiling on the net's 32-pixel output grid: tile and margin sizes, the tiles of an image, the largest tile a budget allows.

Tiles are ``tile x tile`` centres on a grid from the image origin, each read with a margin of context
of at least half the receptive field, so that the kept centres equal the whole-image prediction
(``docs/inference.md`` gives the geometry).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator

from fcnseg.errors import ConfigError
from fcnseg.models.fcn import FCN
from fcnseg.models.resnet import ResNetFCN
from fcnseg.models.geometry import receptive_fields

# every VGG-family trunk here pools five times by 2 (AlexNet: 4 * 2 * 2 * 2); the ResNet FCNs' stride 8 divides it
OUTPUT_STRIDE = 32


def context_margin(model: FCN | ResNetFCN) -> int:
    """Pixels of context a tile needs on each side so that its kept centre matches the whole-image result.

    Half the receptive field of fc7 (a ResNet's: of its class scores, along the residual branches),
    from the layers (``model.receptive_field_layers()``), plus one of the net's strides for the bilinear
    upsampling that mixes neighbouring score cells and one for the skip fusion, rounded up to a
    multiple of the output grid so that tile origins stay on it. ResNet-50: 256 px, ResNet-101: 512 px.
    """
    rf = receptive_fields(model.receptive_field_layers())[-1][1]
    need = rf.size // 2 + 2 * rf.stride
    return int(math.ceil(need / OUTPUT_STRIDE) * OUTPUT_STRIDE)


@dataclass(frozen=True)
class Tile:
    """One tile: the input window ``[in_y0:in_y1, in_x0:in_x1]`` and the centre ``[y0:y1, x0:x1]`` kept from it."""

    y0: int
    y1: int
    x0: int
    x1: int
    in_y0: int
    in_y1: int
    in_x0: int
    in_x1: int


@dataclass(frozen=True)
class TilePlan:
    """How an image is cut: ``tile`` x ``tile`` centres on a grid from the origin, each read with ``margin`` around it.

    ``tile >= max(height, width)`` means one forward on the whole image.
    """

    height: int
    width: int
    tile: int
    margin: int

    @property
    def whole(self) -> bool:
        return self.tile >= self.height and self.tile >= self.width

    @property
    def num_tiles(self) -> int:
        return math.ceil(self.height / self.tile) * math.ceil(self.width / self.tile)

    def input_size(self) -> tuple[int, int]:
        """``(height, width)`` of the largest input one forward of this plan sees (a full tile with its margins)."""
        if self.whole:
            return self.height, self.width
        side = self.tile + 2 * self.margin
        return min(self.height, side), min(self.width, side)

    def bands(self) -> Iterator[list[Tile]]:
        """Rows of tiles, top to bottom; each row covers image rows ``[y0, y1)`` of its tiles."""
        for y0 in range(0, self.height, self.tile):
            y1 = min(y0 + self.tile, self.height)
            row = []
            for x0 in range(0, self.width, self.tile):
                x1 = min(x0 + self.tile, self.width)
                # Origins are multiples of the output stride: tile and margin both are.
                row.append(
                    Tile(
                        y0, y1, x0, x1,
                        max(0, y0 - self.margin), min(self.height, y1 + self.margin),
                        max(0, x0 - self.margin), min(self.width, x1 + self.margin),
                    )
                )
            yield row


def check_margin(margin: int) -> int:
    """``margin`` if it is a multiple of the output stride, else a ConfigError."""
    if margin % OUTPUT_STRIDE:
        raise ConfigError(f"tile margin must be a multiple of {OUTPUT_STRIDE} pixels, got {margin}")
    return margin


def plan_tiles(height: int, width: int, tile: int, margin: int) -> TilePlan:
    """A plan with ``tile``-pixel centres (rounded down to a multiple of 32, at least 32)."""
    check_margin(margin)
    tile = max(OUTPUT_STRIDE, tile // OUTPUT_STRIDE * OUTPUT_STRIDE)
    return TilePlan(height, width, tile, margin)


def whole_image(height: int, width: int, margin: int) -> TilePlan:
    """The plan of one forward on the whole image (its tile is the longer side, rounded up to the grid)."""
    side = max(height, width)
    return TilePlan(height, width, int(math.ceil(side / OUTPUT_STRIDE) * OUTPUT_STRIDE), check_margin(margin))


def largest_plan(height: int, width: int, margin: int, cost: Callable[[TilePlan], int], budget: int) -> TilePlan | None:
    """The whole image if ``cost`` of it fits ``budget``, else the plan with the largest tile that fits; None if none does.

    ``cost(plan)`` is the bytes one forward of ``plan`` needs; it must not shrink as the tile grows
    (a binary search over tile sizes in multiples of the output stride relies on it).
    """
    whole = whole_image(height, width, margin)
    if cost(whole) <= budget:
        return whole
    lo, hi = 0, whole.tile // OUTPUT_STRIDE  # in units of the stride
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if cost(TilePlan(height, width, mid * OUTPUT_STRIDE, margin)) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return TilePlan(height, width, lo * OUTPUT_STRIDE, margin) if lo else None
