"""Patch-wise classification equals the convolutionalized net exactly without padding (paper section 3.1)."""

import torch
from torch import nn

from fcnseg.ideas.classifiers import build_classifier, small_classifier
from fcnseg.ideas.costs import TensorMemoryTracker, count, on_meta
from fcnseg.ideas.patchwise import compare, convolutionalized, extract_windows, fc_to_conv, window_grid


def _tiny_classifier(padding: int) -> tuple[nn.Sequential, int]:
    """conv-pool-conv-pool + fc6/fc7: a window of 10 (unpadded) or 8 (padded), output stride 4."""
    torch.manual_seed(0)
    window = 8 if padding else 10
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=padding), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 6, 3, padding=padding), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(1), nn.Linear(6 * 2 * 2 if padding else 6 * 1 * 1, 5), nn.ReLU(), nn.Linear(5, 3),
    )
    return net.eval(), window  # float32: convolutionalize traces with a float32 input; compare() casts


def test_dense_equals_patchwise_on_every_window_of_an_unpadded_net():
    from fcnseg.ideas.classifiers import PatchClassifier

    net, window = _tiny_classifier(padding=0)
    classifier = PatchClassifier("tiny", net, window, 3, False, "small", "tiny")
    result = compare(classifier, 37, dtype=torch.float64, time_it=False, batch_size=5)
    assert (result.grid.rows, result.grid.cols) == ((37 - 10) // 4 + 1,) * 2
    assert result.max_abs_diff < 1e-12 * max(result.max_abs_score, 1.0)
    assert result.argmax_agreement == 1.0


def test_window_grid_matches_an_independent_loop_over_windows():
    net, window = _tiny_classifier(padding=0)
    from fcnseg.models.surgery import convolutionalize

    dense = convolutionalize(net, (window, window)).double()
    net = net.double()
    image = torch.randn(1, 3, 23, 29, dtype=torch.float64)
    grid = window_grid(dense, window, 23, 29)
    with torch.no_grad():
        scores = dense(image)[0]
        for i in range(grid.rows):
            for j in range(grid.cols):
                y, x = grid.offset + i * grid.stride, grid.offset + j * grid.stride
                logits = net(image[:, :, y : y + window, x : x + window])[0]
                torch.testing.assert_close(scores[:, i, j], logits, rtol=0, atol=1e-12)


def test_small_classifier_is_exact_and_padded_twin_is_not():
    exact = compare(build_classifier("small"), 246, dtype=torch.float64, time_it=False)
    assert exact.grid.window == exact.grid.receptive_field == 214
    assert exact.grid.count == 4
    assert exact.max_abs_diff < 1e-12
    padded = compare(build_classifier("small-padded"), 160, dtype=torch.float64, time_it=False)
    assert padded.grid.receptive_field > padded.grid.window  # the dense net sees past the window
    assert padded.max_abs_diff > 1e-6  # zero padding at each window border differs from the true neighbours


def test_fc_to_conv_keeps_the_function_and_reshapes_weights():
    result = fc_to_conv(small_classifier(padded=True))
    assert result["layers"][0]["linear"] == [256, 128 * 3 * 3]
    assert result["layers"][0]["conv"] == [256, 128, 3, 3]
    assert result["layers"][1]["conv"] == [256, 256, 1, 1]
    assert result["scores_shape"][-2:] == [1, 1]
    assert result["max_abs_diff"] < 1e-5 * max(result["max_abs_score"], 1.0)


def test_extract_windows_zero_pads_where_ceil_mode_reaches_past_the_image():
    dense = convolutionalized(build_classifier("alexnet"))
    grid = window_grid(dense, 227, 500, 500)
    assert (grid.rows, grid.cols, grid.stride, grid.offset) == (10, 10, 32, 0)  # the paper's 10x10 grid
    assert grid.extent() == (515, 515)
    windows = extract_windows(torch.ones(1, 3, 500, 500, device="meta"), grid)
    assert tuple(windows.shape) == (100, 3, 227, 227)


def test_memory_tracker_counts_live_storages_and_flops_on_meta():
    conv = on_meta(nn.Conv2d(3, 8, 3, bias=False))
    flops, peak = count(lambda: conv(torch.zeros(1, 3, 10, 10, device="meta")))
    assert flops == 2 * 8 * 3 * 9 * 8 * 8
    assert peak == 8 * 8 * 8 * 4 + 3 * 10 * 10 * 4  # input made inside + output
    with TensorMemoryTracker() as tracker:
        a = torch.zeros(1000)
        b = a.view(10, 100)  # a view adds nothing
        del a, b
    assert tracker.peak == 4000 and tracker.live == 0


def test_patchwise_costs_more_flops_and_memory_than_dense():
    result = compare(build_classifier("small"), 278, time_it=False)
    assert result.grid.count == 9
    assert result.patchwise.flops > 4 * result.dense.flops
    assert result.patchwise.peak_bytes > result.dense.peak_bytes
