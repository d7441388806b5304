"""The FCN heads as data: the trunk stages each architecture fuses, and the reference layer names that follow.

FCN-32s scores the trunk's last features and upsamples them 32x; FCN-16s first fuses pool4, FCN-8s pool4
and then pool3 (paper section 4.2, figure 3). :data:`ARCH_HEADS` says so once; the network, the weight
importers and the explanations read it instead of branching per architecture.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Iterable

DATA = "data"  # the input, as the reference nets name it: what the last crop aligns with


@dataclass(frozen=True)
class Skip:
    """A trunk stage whose scores are added to the running score map (a skip of the paper's figure 3)."""

    tap: str  # the trunk layer whose output is scored: "pool4"
    # Its output stride. The reference names upsamplings by their factor (upscore16), so the names need it;
    # the crop geometry, derived from the layers, fails if the trunk disagrees.
    stride: int
    scale: float | None = None  # a fixed factor applied before scoring (voc-fcn8s-atonce); None: none


@dataclass(frozen=True)
class Fusion:
    """One skip fused: upsample the running score map by ``factor``, then add the skip's scores cropped to it."""

    skip: Skip
    upscore: str  # the transposed convolution before the sum: "upscore2", "upscore_pool4"
    factor: int  # its stride
    score: str  # the skip's 1x1 score convolution: "score_pool4"
    crop: str  # the reference Crop layer whose offset aligns the skip: "score_pool4c" ("score_pool4_semc")
    scale_layer: str  # the reference Scale layer when the skip is scaled: "scale_pool4"


@dataclass(frozen=True)
class Crop:
    """A Crop layer of the reference nets: cut map ``bigger`` to align it with ``reference``."""

    name: str  # "score_pool4c", "score"
    bigger: str  # the map cropped: "score_pool4", "upscore8"
    reference: str  # the map it is aligned with: "upscore2", or DATA for the input


@dataclass(frozen=True)
class Head:
    """One output of a net: ``score_fr`` on the trunk's last features, the skips fused coarse to fine, then
    one upsampling back to the input.

    Every layer name carries ``suffix``, so that several heads can share a trunk (SIFT Flow's semantic and
    geometric scores: ``score_fr_sem``, ``score_fr_geo``); the reference single-output nets use none.
    """

    skips: tuple[Skip, ...] = ()
    source: str = "drop7"  # the trunk output score_fr scores
    source_stride: int = 32  # its output stride
    suffix: str = ""

    @property
    def score_fr(self) -> str:
        return f"score_fr{self.suffix}"

    @cached_property
    def fusions(self) -> tuple[Fusion, ...]:
        fusions, stride = [], self.source_stride
        for i, skip in enumerate(self.skips):
            assert stride % skip.stride == 0, f"{skip.tap}: stride {skip.stride} does not divide {stride}"
            factor = stride // skip.stride
            # The reference names the first upsampling by its factor and later ones by the map they fuse
            # into ("upscore2", "upscore_pool4"): a second "upscore2" would clash.
            name = f"upscore{factor}" if i == 0 else f"upscore_{self.skips[i - 1].tap}"
            s = self.suffix
            score = f"score_{skip.tap}{s}"
            fusions.append(Fusion(skip, f"{name}{s}", factor, score, f"{score}c", f"scale_{skip.tap}{s}"))
            stride = skip.stride
        return tuple(fusions)

    @property
    def factor(self) -> int:
        """Stride of the last upsampling, back to the input: 32 (fcn32s), 16 (fcn16s), 8 (fcn8s)."""
        return self.skips[-1].stride if self.skips else self.source_stride

    @property
    def upscore(self) -> str:
        """The last upsampling: "upscore" when nothing is fused (voc-fcn32s), else by its factor ("upscore8")."""
        return f"upscore{self.factor if self.skips else ''}{self.suffix}"

    @property
    def crop(self) -> str:
        """The last Crop layer, whose output is the head's score map at input size."""
        return f"score{self.suffix}"

    @property
    def score_layers(self) -> tuple[str, ...]:
        """The 1x1 score convolutions (zero-initialised, with bias): score_fr, then one per skip."""
        return (self.score_fr, *(f.score for f in self.fusions))

    @property
    def upsampling_layers(self) -> tuple[str, ...]:
        """The transposed convolutions (no bias), coarse to fine."""
        return (*(f.upscore for f in self.fusions), self.upscore)

    @property
    def scale_layers(self) -> tuple[str, ...]:
        """The reference Scale layers of scaled skips (constants, not parameters of ours)."""
        return tuple(f.scale_layer for f in self.fusions if f.skip.scale is not None)

    @property
    def crops(self) -> tuple[Crop, ...]:
        """The Crop layers in forward order; the last aligns the output with the input."""
        return (*(Crop(f.crop, f.score, f.upscore) for f in self.fusions), Crop(self.crop, self.upscore, DATA))


POOL4, POOL3 = Skip("pool4", stride=16), Skip("pool3", stride=8)

# Architecture -> its heads (one for every net of the paper). voc-fcn8s-atonce scales the skips before
# scoring them ("for compatibility"), so that the three streams start at comparable magnitudes when all
# are trained at once.
ARCH_HEADS: dict[str, tuple[Head, ...]] = {
    "fcn32s": (Head(),),
    "fcn16s": (Head(skips=(POOL4,)),),
    "fcn8s": (Head(skips=(POOL4, POOL3)),),
    "fcn8s-atonce": (Head(skips=(Skip("pool4", 16, scale=0.01), Skip("pool3", 8, scale=0.0001))),),
}


def head_layer_names(arch: str) -> tuple[str, ...]:
    """Every learned head layer of ``arch`` in state-dict order: per head, its score convolutions, then upsamplings."""
    return tuple(n for h in ARCH_HEADS[arch] for n in (*h.score_layers, *h.upsampling_layers))


def match_arch(layer_names: Iterable[str]) -> str | None:
    """The architecture whose head layers best match ``layer_names`` (a weights file's layers), or None.

    Counts each architecture's head layers (score, upsampling and reference Scale layers) among the names;
    the most wins, the first of :data:`ARCH_HEADS` on a tie. So learned weights alone read as ``fcn8s``:
    ``fcn8s-atonce`` has the same learned layers and differs only by its Scale constants.
    """
    names = set(layer_names)
    best, best_count = None, 0
    for arch, heads in ARCH_HEADS.items():
        count = len(names & set(head_layer_names(arch)).union(*(h.scale_layers for h in heads)))
        if count > best_count:
            best, best_count = arch, count
    return best
