"""Pixel-wise softmax cross-entropy with the ignore label, normalised by labelled pixels or summed."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fcnseg.data.classes import IGNORE_INDEX


def pixel_cross_entropy_sum(
    logits: torch.Tensor, mask: torch.Tensor, ignore_index: int = IGNORE_INDEX
) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed softmax cross-entropy over the labelled pixels, and how many there were.

    Args:
        logits: float ``[N, C, H, W]`` class scores (any dtype; the loss is computed in float32).
        mask: int64 ``[N, H, W]`` class indices; ``ignore_index`` pixels add nothing.
    Returns:
        ``(loss_sum, labelled)``: a float32 scalar with gradient, and an int64 scalar count.
    """
    loss_sum = F.cross_entropy(logits.float(), mask, ignore_index=ignore_index, reduction="sum")
    labelled = (mask != ignore_index).sum()
    return loss_sum, labelled


def segmentation_loss(
    logits: torch.Tensor, mask: torch.Tensor, normalize: bool = True, ignore_index: int = IGNORE_INDEX
) -> torch.Tensor:
    """The paper's per-pixel multinomial logistic loss (section 3) on one batch.

    Args:
        logits: float ``[N, C, H, W]``.
        mask: int64 ``[N, H, W]``; ``ignore_index`` pixels are skipped.
        normalize: divide by the number of labelled pixels (the CVPR recipe); False sums over them
            (the reference "heavy learning" solvers, Caffe ``normalize: false``).
    Returns:
        Scalar float32 loss; 0 (with gradient) when no pixel is labelled.
    """
    loss_sum, labelled = pixel_cross_entropy_sum(logits, mask, ignore_index)
    if not normalize:
        return loss_sum
    return loss_sum / labelled.clamp(min=1).to(loss_sum.dtype)
