"""One forward as inference runs it: RGB uint8 pixels -> normalised input -> (autocast) logits in float32 -> labels.

The predictor runs these functions on real tensors and the memory model
(:mod:`fcnseg.inference.memory`) runs the very same ones on shape-only tensors to count what they
hold, so that the estimate follows whatever the forward does.
"""

from __future__ import annotations

import torch
from torch import nn

from fcnseg.data.normalization import Normalization
from fcnseg.precision import forward_in


def normalize_pixels(pixels: torch.Tensor, normalization: Normalization, channels_last: bool = False) -> torch.Tensor:
    """RGB uint8 ``[N, H, W, 3]`` -> normalised float32 ``[N, 3, H, W]``, the same values as ``image_to_tensor``.

    Works in place after one float copy (plus one for the BGR flip): ``image_to_tensor``'s
    out-of-place arithmetic holds three or four float copies at once, which for a whole 24-megapixel
    scan is more than the small net's activations. With ``channels_last`` the result keeps the
    pixels' own HWC layout, which is channels_last already: no further copy before the forward.
    """
    x = pixels.permute(0, 3, 1, 2).to(torch.float32, memory_format=torch.channels_last)  # HWC memory = channels_last
    if normalization.bgr:
        x = x.flip(1)  # keeps the channels_last layout
    if not channels_last:
        x = x.contiguous()
    multiplier, offset = normalization.coefficients((1, 3, 1, 1), x.device)
    return x.mul_(multiplier).add_(offset)


def forward_logits(model: nn.Module, x: torch.Tensor, autocast_dtype: torch.dtype | None = None) -> torch.Tensor:
    """Normalised float32 ``[N, 3, H, W]`` -> float32 logits ``[N, C, H, W]``, the forward under autocast when given a
    dtype: :func:`fcnseg.precision.forward_in`, the same function the model handle runs."""
    return forward_in(model, x, autocast_dtype)


def class_indices(scores: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """int64 index of the largest score along ``dim`` (argmax's first-maximum rule).

    ``max().indices`` runs several times faster than ``argmax`` over the class axis on the CPU.
    """
    return scores.max(dim).indices
