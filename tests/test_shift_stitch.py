"""Shift-and-stitch equals filter rarefaction (paper section 3.2): exactly without padding, on the interior with it."""

import torch
from torch import nn

from fcnseg.ideas.shift_stitch import compare, rarefy, shift_and_stitch, stride_split


def _net(padding: int) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=padding), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 5, 3, stride=2, padding=padding), nn.ReLU(),
        nn.Conv2d(5, 3, 3, padding=padding),
    ).double().eval()


def test_full_shift_and_stitch_equals_rarefied_net_exactly_without_padding():
    net = _net(0)
    assert stride_split(net, 0) == (1, 4)
    result = compare(net, 41, start=0, padded=False, dtype=torch.float64, time_it=False)
    assert result.dense_shape[-1] == 41 - 16 + 1  # receptive field 16, an output at every pixel
    assert result.compared_positions == 26 * 26
    assert result.max_abs_diff < 1e-12


def test_partial_shift_and_stitch_over_the_last_stride_only():
    net = _net(0)
    start = 3  # the strided conv: the first pool keeps its stride, u = 2, f = 2
    assert stride_split(net, start) == (2, 2)
    result = compare(net, 40, start=start, padded=False, dtype=torch.float64, time_it=False)
    assert result.max_abs_diff < 1e-12
    assert result.compared_positions > 0


def test_padded_net_agrees_on_the_interior_and_differs_near_the_border():
    net = _net(1)
    result = compare(net, 40, start=0, padded=True, dtype=torch.float64, time_it=False)
    assert 0 < result.compared_positions < result.valid.numel()
    assert result.max_abs_diff < 1e-12
    outside = (result.stitched - result.rarefied).abs().amax(0)[~result.valid]
    assert outside.max() > 1e-6  # the interior mask is needed, not merely cautious


def test_rarefy_dilates_layers_after_a_removed_stride_and_keeps_the_original():
    net = _net(1)
    rare = rarefy(net, 0)
    assert rare[2].stride == 1 and rare[2].dilation == 1  # the pool keeps its kernel
    assert rare[3].stride == (1, 1) and rare[3].dilation == (2, 2) and rare[3].padding == (2, 2)
    assert rare[5].dilation == (4, 4)
    assert net[3].stride == (2, 2)  # untouched


def test_interlacing_puts_each_shift_at_its_phase():
    class Subsample(nn.Module):  # a net that just keeps every 4th pixel: output (i, j) = input (4i, 4j)
        def forward(self, x):
            return x[:, :1, ::4, ::4]

    net = nn.Sequential(nn.Conv2d(3, 3, 1, stride=4, bias=False))
    with torch.no_grad():
        net[0].weight.zero_()
        net[0].weight[0, 0] = 1
    image = torch.arange(16 * 16, dtype=torch.float64).reshape(1, 1, 16, 16).expand(1, 3, 16, 16).contiguous()
    out = shift_and_stitch(net.double(), image, 0)
    torch.testing.assert_close(out[0, 0], image[0, 0])
