"""The item contract every data set shares: the image's input streams (channel groups) and the mask's heads (label maps).

A data set serves ``(image float32 [C, H, W], mask int64 [H, W] or [K, H, W])``. ``dataset.streams`` says how
the C channels split into the inputs of separate trunks (one stream for a single or early-fused input,
two for NYUD's late-fused colour + HHA); ``dataset.heads`` names the K label maps (one head: the mask is
``[H, W]``; SIFT Flow's two heads: ``[2, H, W]``, semantic then geometric). A training or scoring loop
reads both lists and needs no case per data set: :func:`split_streams` and :func:`split_targets`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

SEMANTIC = "semantic"  # the name of a data set's single (or first) head: class labels


@dataclass(frozen=True)
class Head:
    """One output labelling of a data set: its name and its class names in label order (255 = ignore)."""

    name: str
    class_names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@dataclass(frozen=True)
class InputStream:
    """A group of consecutive image channels that one trunk reads: its name and channel count."""

    name: str
    channels: int


def single_head(class_names: Sequence[str]) -> list[Head]:
    """The heads of a single-target data set: one ``semantic`` head."""
    return [Head(SEMANTIC, tuple(class_names))]


def split_targets(masks: torch.Tensor, num_heads: int) -> list[torch.Tensor]:
    """One int64 label map per head.

    Args:
        masks: ``[H, W]`` or ``[N, H, W]`` for one head; ``[K, H, W]`` or ``[N, K, H, W]`` for ``K = num_heads > 1``.
        num_heads: ``len(dataset.heads)``.
    Returns:
        ``num_heads`` tensors of shape ``[H, W]`` (single item) or ``[N, H, W]`` (batch), in head order.
    """
    if num_heads == 1:
        return [masks]
    if masks.dim() not in (3, 4) or masks.shape[-3] != num_heads:
        raise ValueError(f"masks of shape {tuple(masks.shape)} do not hold {num_heads} label maps in dimension -3")
    return list(masks.unbind(-3))


def split_streams(images: torch.Tensor, streams: Sequence[InputStream]) -> list[torch.Tensor]:
    """The image channels of each stream: ``[C, H, W]`` or ``[N, C, H, W]`` -> one tensor per stream (views).

    ``C`` must equal the sum of ``stream.channels``; stream ``i`` takes the next ``streams[i].channels`` channels.
    """
    sizes = [s.channels for s in streams]
    dim = images.dim() - 3
    if images.shape[dim] != sum(sizes):
        raise ValueError(f"image has {images.shape[dim]} channels but the streams {[s.name for s in streams]} take {sum(sizes)}")
    return list(images.split(sizes, dim=dim))
