"""Batching images of different sizes: pad to the largest (image with 0 = mean pixel, mask with ignore)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from fcnseg.data.classes import IGNORE_INDEX


class PadCollate:
    """DataLoader ``collate_fn`` for ``(image [C, H_i, W_i], mask [H_i, W_i] or [K, H_i, W_i])`` items of any sizes.

    Pads each item at the bottom/right to the batch's largest height and width (rounded up to a
    multiple of ``size_divisor``): images with 0, which is the mean pixel after normalisation,
    masks with ``ignore_index`` so padding is never trained on or scored. With batch size 1 (the
    paper's setting, section 4.3) nothing is padded unless ``size_divisor`` asks for it.

    Returns:
        ``(images float32 [N, C, H, W], masks int64 [N, H, W])``, or masks ``[N, K, H, W]`` for K heads.
    """

    def __init__(self, ignore_index: int = IGNORE_INDEX, size_divisor: int = 1) -> None:
        self.ignore_index = ignore_index
        self.size_divisor = max(1, size_divisor)

    def __call__(self, batch: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
        d = self.size_divisor
        height = max(mask.shape[-2] for _, mask in batch)
        width = max(mask.shape[-1] for _, mask in batch)
        height, width = -(-height // d) * d, -(-width // d) * d
        images, masks = [], []
        for image, mask in batch:
            pad = (0, width - mask.shape[-1], 0, height - mask.shape[-2])
            images.append(F.pad(image, pad, value=0.0) if any(pad) else image)
            masks.append(F.pad(mask, pad, value=self.ignore_index) if any(pad) else mask)
        return torch.stack(images), torch.stack(masks)

