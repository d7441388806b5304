"""Bilinear kernels and the class-to-class transposed convolutions of the reference FCN nets."""

from __future__ import annotations

import torch
from torch import nn


def bilinear_kernel(size: int) -> torch.Tensor:
    """2-D bilinear interpolation kernel ``[size, size]`` (the reference ``upsample_filt``).

    For ``size = 2 * factor`` and stride ``factor`` a transposed convolution with this kernel is
    bilinear interpolation by ``factor`` (away from the border).
    """
    factor = (size + 1) // 2
    center = factor - 1 if size % 2 == 1 else factor - 0.5
    og = torch.arange(size, dtype=torch.float64)
    filt = 1 - (og - center).abs() / factor
    return (filt[:, None] * filt[None, :]).float()


def bilinear_weight(channels: int, size: int) -> torch.Tensor:
    """Weight ``[channels, channels, size, size]`` that upsamples each channel on its own (diagonal)."""
    weight = torch.zeros(channels, channels, size, size)
    kernel = bilinear_kernel(size)
    for c in range(channels):
        weight[c, c] = kernel
    return weight


def upsampling_layer(channels: int, stride: int, kernel_size: int | None = None, learnable: bool = False) -> nn.ConvTranspose2d:
    """A ``ConvTranspose2d`` (no bias, no padding) initialised to bilinear interpolation.

    The weight is a full ``[C, C, k, k]`` tensor, so weights trained away from the diagonal load
    without loss; ``learnable=False`` freezes it as the reference nets do (``lr_mult: 0``).
    """
    kernel_size = kernel_size or 2 * stride
    layer = nn.ConvTranspose2d(channels, channels, kernel_size, stride=stride, bias=False)
    with torch.no_grad():
        layer.weight.copy_(bilinear_weight(channels, kernel_size))
    layer.weight.requires_grad_(learnable)
    return layer
