"""The FCN heads as data: the trunk stages each architecture fuses, and the reference layer names that follow.

FCN-32s scores the trunk's last features and upsamples them 32x; FCN-16s first fuses pool4, FCN-8s pool4
and then pool3 (paper section 4.2, figure 3). :data:`ARCH_HEADS` says so once; the network, the weight
importers and the explanations read it instead of branching per architecture.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from functools import cached_property

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
    With ``streams`` (late fusion, nyud-fcn32s-color-hha) each stream's trunk has its own ``score_fr``
    named after it (``score_frcolor``, ``score_frhha``), and their mean, ``score_fused``, is upsampled.
    """

    skips: tuple[Skip, ...] = ()
    source: str = "drop7"  # the trunk output score_fr scores
    source_stride: int = 32  # its output stride
    suffix: str = ""
    name: str = "semantic"  # the output it gives (a data set's head: fcnseg.data.items.Head)
    streams: tuple[str, ...] = ()  # late fusion: the trunks whose scores are averaged; () = one trunk

    def __post_init__(self) -> None:
        assert not (self.streams and self.skips), "late fusion averages score_fr maps; skips would need one trunk"

    @property
    def score_fr(self) -> str:
        return f"score_fr{self.suffix}"

    @property
    def stream_scores(self) -> tuple[str, ...]:
        """The 1x1 score convolutions on the trunks' last features: ``score_fr``, or one per stream."""
        return tuple(f"{self.score_fr}{s}" for s in self.streams) or (self.score_fr,)

    @property
    def coarse(self) -> str:
        """The coarsest score map, that the skips refine: ``score_fr``, or the streams' ``score_fused``."""
        return f"score_fused{self.suffix}" if self.streams else self.score_fr

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
        """The 1x1 score convolutions (zero-initialised, with bias): score_fr (one per stream), then one per skip."""
        return (*self.stream_scores, *(f.score for f in self.fusions))

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


# The layer suffix of each head of a net with several (siftflow-fcn*/net.py: score_fr_sem, upscore_geo...);
# a head not listed here takes "_<name>". A net with one head has no suffix.
HEAD_SUFFIXES = {"semantic": "_sem", "geometric": "_geo"}


def head_suffix(name: str) -> str:
    return HEAD_SUFFIXES.get(name, f"_{name}")


def head_name(suffix: str) -> str:
    """The inverse of :func:`head_suffix`: ``_sem`` -> ``semantic``; ``""`` (one head) -> ``semantic``."""
    names = {v: k for k, v in HEAD_SUFFIXES.items()}
    return names.get(suffix, suffix.removeprefix("_") or "semantic")


def arch_head(arch: str, name: str = "semantic", suffix: str = "", streams: Sequence[str] = ()) -> Head:
    """The head of ``arch`` (its one entry of :data:`ARCH_HEADS`) for output ``name``, layer names ending in
    ``suffix``, on the late-fused ``streams`` (none: one trunk)."""
    (template,) = ARCH_HEADS[arch]
    return replace(template, name=name, suffix=suffix, streams=tuple(streams))


def net_heads(arch: str, head_names: Sequence[str], stream_names: Sequence[str] = ()) -> tuple[Head, ...]:
    """The heads of an ``arch`` net with the outputs ``head_names`` on the input streams ``stream_names``.

    One output keeps the reference single-output names (``score_fr``); several take :func:`head_suffix`
    (``score_fr_sem``, ``score_fr_geo``). Two or more streams are late-fused (``score_frcolor``...).
    """
    streams = tuple(stream_names) if len(stream_names) > 1 else ()
    if len(head_names) == 1:
        return (arch_head(arch, head_names[0], "", streams),)
    return tuple(arch_head(arch, n, head_suffix(n), streams) for n in head_names)


def head_layer_names(arch: str) -> tuple[str, ...]:
    """Every learned head layer of ``arch`` in state-dict order: per head, its score convolutions, then upsamplings."""
    return tuple(n for h in ARCH_HEADS[arch] for n in (*h.score_layers, *h.upsampling_layers))


def match_arch(layer_names: Iterable[str], suffix: str = "", streams: Sequence[str] = ()) -> str | None:
    """The architecture whose head layers best match ``layer_names`` (a weights file's layers), or None.

    Counts each architecture's head layers (score, upsampling and reference Scale layers), named with
    ``suffix`` and on the late-fused ``streams`` (see :func:`arch_head`), among the names; the most wins,
    the first of :data:`ARCH_HEADS` on a tie. So learned weights alone read as ``fcn8s``: ``fcn8s-atonce``
    has the same learned layers and differs only by its Scale constants.
    """
    names = set(layer_names)
    best, best_count = None, 0
    for arch, (template,) in ARCH_HEADS.items():
        if streams and template.skips:
            continue  # late fusion exists for the skip-less head only
        head = arch_head(arch, suffix=suffix, streams=streams)
        count = len(names & {*head.score_layers, *head.upsampling_layers, *head.scale_layers})
        if count > best_count:
            best, best_count = arch, count
    return best
