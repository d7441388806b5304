"""Shift-and-stitch and filter rarefaction (paper section 3.2), and their cost against learned upsampling.

A net whose layers from ``start`` on subsample by ``f`` in total gives, from ``f^2`` inputs shifted by
multiples of the earlier layers' stride ``u``, outputs that interlace into a map ``f`` times denser.
The same map comes from one run of the *rarefied* net: those layers' strides set to 1 and every
later kernel dilated by the stride removed before it (the paper's ``f'_ij = f_{i/s, j/s}``).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from fcnseg.ideas.costs import count, on_meta, time_calls
from fcnseg.models.geometry import layer_geometry, receptive_fields
from fcnseg.models.upsample import upsampling_layer


def _layers(net: nn.Sequential) -> list[nn.Module]:
    return list(net.children())


def _stride(m: nn.Module) -> int:
    g = layer_geometry(m)
    return 1 if g is None else g.stride


def stride_split(net: nn.Sequential, start: int) -> tuple[int, int]:
    """``(u, f)``: the output stride of layers ``[0, start)`` and the subsampling of layers ``[start, end)``."""
    layers = _layers(net)
    return math.prod(_stride(m) for m in layers[:start]), math.prod(_stride(m) for m in layers[start:])


def rarefy(net: nn.Sequential, start: int = 0) -> nn.Sequential:
    """Filter rarefaction: remove the stride of every layer from index ``start`` on.

    A layer whose stride ``s`` is removed keeps its kernel, dilated by the factor ``d`` accumulated
    from the strides removed before it; every later layer is dilated by ``d * s``. Paddings scale with
    the dilation, so each output stays centred where it was. Returns a new net (``net`` is untouched).
    """
    layers = [copy.deepcopy(m) for m in _layers(net)]
    factor = 1
    for m in layers[start:]:
        if isinstance(m, nn.Conv2d):
            s = m.stride[0]
            m.dilation = tuple(d * factor for d in m.dilation)
            m.padding = tuple(p * factor for p in m.padding)
            m.stride = (1, 1)
            factor *= s
        elif isinstance(m, nn.MaxPool2d):
            s = _stride(m)
            m.dilation = factor * (m.dilation if isinstance(m.dilation, int) else m.dilation[0])
            m.padding = factor * (m.padding if isinstance(m.padding, int) else m.padding[0])
            m.stride = 1
            factor *= s
        elif layer_geometry(m) is not None:
            raise ValueError(f"cannot rarefy {m}: only convolutions and max-pooling can be dilated")
    return nn.Sequential(*layers).eval()


def shift_and_stitch(net: nn.Sequential, image: torch.Tensor, start: int = 0, batch_size: int = 16) -> torch.Tensor:
    """Dense output of ``net`` by shift-and-stitch over the subsampling of layers ``[start, end)``.

    For each shift ``(dy, dx) = u * (ky, kx)``, ``ky, kx in [0, f)``, the image is shifted left/up by
    ``(dx, dy)`` (cropped on the left/top, zero-padded on the right/bottom, as the paper describes),
    the net runs, and output ``[.., i, j]`` goes to ``[.., f*i + ky, f*j + kx]``.

    Args:
        image: ``[1, 3, H, W]``.
    Returns:
        ``[1, C, f*h, f*w]`` with ``h, w`` the coarse output size; stride ``u`` in input pixels.
    """
    u, f = stride_split(net, start)
    shifts = [(ky, kx) for ky in range(f) for kx in range(f)]
    shifted = torch.cat([F.pad(image[:, :, u * ky :, u * kx :], (0, u * kx, 0, u * ky)) for ky, kx in shifts])
    outputs = torch.cat([net(shifted[i : i + batch_size]) for i in range(0, len(shifts), batch_size)])  # [f*f, C, h, w]
    n, c, h, w = outputs.shape
    # [ky, kx, C, h, w] -> [C, h, ky, w, kx] -> [1, C, h*f, w*f]: position (i, ky) -> f*i + ky
    return outputs.reshape(f, f, c, h, w).permute(2, 3, 0, 4, 1).reshape(1, c, h * f, w * f)


def valid_positions(net: nn.Sequential, start: int, size: int, length: int, padded: bool) -> torch.Tensor:
    """Bool ``[length]``: dense positions (along one axis) where stitched and rarefied outputs must agree.

    For an unpadded net every position the rarefied net outputs. For a padded one, only where the
    receptive field lies inside the image both as seen by the rarefied net and by the shifted copy
    the stitched value came from, so that no zero padding reaches it (the interior).
    """
    positions = torch.arange(length)
    if not padded:
        return torch.ones(length, dtype=torch.bool)
    u, f = stride_split(net, start)
    rf = receptive_fields(net.named_children())[-1][1]
    half = (rf.size - 1) / 2
    centre = positions * u + rf.start  # in image pixels
    shift = (positions % f) * u
    inside_image = (centre - half >= 0) & (centre + half <= size - 1)
    inside_shifted = centre - shift - half >= 0  # the shifted copy lost its first `shift` pixels
    return inside_image & inside_shifted


@dataclass
class StitchComparison:
    """Shift-and-stitch versus the rarefied net versus coarse output + bilinear upsampling, on one image."""

    net: str
    image_size: int
    start_layer: int
    input_stride: int  # u: stride of the layers before the rarefied ones
    factor: int  # f: subsampling undone (f^2 shifted runs)
    coarse_shape: list[int]
    dense_shape: list[int]
    compared_positions: int
    max_abs_diff: float
    max_abs_score: float
    seconds: dict[str, float]  # "coarse", "coarse+bilinear", "shift-and-stitch", "rarefied"
    flops: dict[str, int]  # "coarse+bilinear", "shift-and-stitch", "rarefied"
    stitched: torch.Tensor  # [C, H', W'] (the compared window)
    rarefied: torch.Tensor  # [C, H', W']
    coarse: torch.Tensor  # [C, h, w]
    valid: torch.Tensor  # bool [H', W']


def compare(
    net: nn.Sequential,
    size: int,
    *,
    start: int,
    padded: bool,
    name: str = "net",
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    repeats: int = 2,
    time_it: bool = True,
) -> StitchComparison:
    """Shift-and-stitch ``net`` over the strides of layers ``[start, end)`` on a random ``size x size`` image and
    compare with the rarefied net (exactly for an unpadded net, on the interior otherwise); time both
    against one coarse run followed by a bilinear-initialised transposed convolution."""
    net = copy.deepcopy(net).to(dtype).eval()
    rare = rarefy(net, start)
    u, f = stride_split(net, start)
    image = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    with torch.no_grad():
        coarse = net(image)
        stitched = shift_and_stitch(net, image, start)
        dense = rare(image)
    h = min(stitched.shape[-2], dense.shape[-2])
    w = min(stitched.shape[-1], dense.shape[-1])
    stitched_c, dense_c = stitched[0, :, :h, :w], dense[0, :, :h, :w]
    valid = valid_positions(net, start, size, h, padded)[:, None] & valid_positions(net, start, size, w, padded)[None, :]
    diff = (stitched_c - dense_c).abs().amax(0)[valid]
    upsample = upsampling_layer(coarse.shape[1], f).to(dtype)  # learned upsampling, bilinear-initialised
    meta_net, meta_rare, meta_up = (on_meta(m) for m in (net, rare, upsample))
    meta_image = torch.zeros(1, 3, size, size, device="meta", dtype=dtype)
    flops = {
        "coarse+bilinear": count(lambda: meta_up(meta_net(meta_image)))[0],
        "shift-and-stitch": count(lambda: shift_and_stitch(meta_net, meta_image, start))[0],
        "rarefied": count(lambda: meta_rare(meta_image))[0],
    }
    seconds = {}
    if time_it:
        seconds = time_calls(
            {
                "coarse": lambda: net(image),
                "coarse+bilinear": lambda: upsample(net(image)),
                "shift-and-stitch": lambda: shift_and_stitch(net, image, start),
                "rarefied": lambda: rare(image),
            },
            repeats=repeats,
        )
    return StitchComparison(
        net=name,
        image_size=size,
        start_layer=start,
        input_stride=u,
        factor=f,
        coarse_shape=list(coarse.shape),
        dense_shape=list(dense.shape),
        compared_positions=int(valid.sum()),
        max_abs_diff=float(diff.max()) if diff.numel() else float("nan"),
        max_abs_score=float(dense_c.abs().max()),
        seconds=seconds,
        flops=flops,
        stitched=stitched_c.float(),
        rarefied=dense_c.float(),
        coarse=coarse[0].float(),
        valid=valid,
    )
