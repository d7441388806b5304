"""Bilinear transposed convolutions against independent bilinear interpolation."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fcnseg.models.upsample import bilinear_kernel, upsampling_layer


def numpy_bilinear_upsample(x: np.ndarray, factor: int) -> np.ndarray:
    """Half-pixel-centre bilinear interpolation of a 2-D array, written out directly."""
    h, w = x.shape
    out = np.zeros((h * factor, w * factor))
    for i in range(h * factor):
        for j in range(w * factor):
            sy, sx = (i + 0.5) / factor - 0.5, (j + 0.5) / factor - 0.5
            y0, x0 = int(np.floor(sy)), int(np.floor(sx))
            fy, fx = sy - y0, sx - x0
            y0c, y1c = np.clip([y0, y0 + 1], 0, h - 1)
            x0c, x1c = np.clip([x0, x0 + 1], 0, w - 1)
            out[i, j] = (
                (1 - fy) * (1 - fx) * x[y0c, x0c]
                + (1 - fy) * fx * x[y0c, x1c]
                + fy * (1 - fx) * x[y1c, x0c]
                + fy * fx * x[y1c, x1c]
            )
    return out


@pytest.mark.parametrize("factor", [2, 4, 8])
def test_transposed_conv_equals_bilinear_interpolation_on_the_interior(factor):
    torch.manual_seed(0)
    layer = upsampling_layer(3, factor)
    x = torch.randn(1, 3, 6, 7)
    with torch.no_grad():
        y = layer(x)  # [(n - 1) f + 2f] = (n + 1) f wide; crop f/2 each side -> n f
    crop = factor // 2
    y = y[:, :, crop : crop + 6 * factor, crop : crop + 7 * factor]
    m = factor  # the border band where the transposed conv sees zeros past the edge
    for c in range(3):
        expected = numpy_bilinear_upsample(x[0, c].double().numpy(), factor)
        np.testing.assert_allclose(y[0, c, m:-m, m:-m].numpy(), expected[m:-m, m:-m], atol=1e-5)
    ref = F.interpolate(x, scale_factor=factor, mode="bilinear", align_corners=False)
    torch.testing.assert_close(y[..., m:-m, m:-m], ref[..., m:-m, m:-m], atol=1e-5, rtol=1e-5)


def test_upsampling_keeps_classes_apart():
    layer = upsampling_layer(4, 2)
    x = torch.zeros(1, 4, 5, 5)
    x[0, 2] = 1.0
    with torch.no_grad():
        y = layer(x)
    assert torch.count_nonzero(y[0, [0, 1, 3]]) == 0
    assert y[0, 2].abs().sum() > 0


def test_kernel_matches_reference_formula_for_odd_size():
    # fcn-alexnet uses a 63-wide kernel: factor 32, centre 31
    k = bilinear_kernel(63)
    assert k.shape == (63, 63)
    assert k[31, 31] == pytest.approx(1.0)
    assert k[31, 30] == pytest.approx(1 - 1 / 32)
    torch.testing.assert_close(k, k.flip(0).flip(1))


def test_frozen_layer_has_no_trainable_weight_but_keeps_a_full_matrix():
    layer = upsampling_layer(5, 8)
    assert not layer.weight.requires_grad
    assert layer.weight.shape == (5, 5, 16, 16) and layer.bias is None
    assert upsampling_layer(5, 8, learnable=True).weight.requires_grad
