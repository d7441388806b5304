"""The memory model: the forward's own tensors counted on fake tensors, checked against the allocator and hand counts."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import torch
from torch import nn
from torch._C._profiler import _EventType

from fcnseg.config import ModelConfig
from fcnseg.data.normalization import PAPER_BGR
from fcnseg.inference.memory import TensorMemoryTracker, bytes_per_pixel, estimate_forward
from fcnseg.inference.predictor import Predictor
from fcnseg.models import build_model


def _nodes(nodes):
    for node in nodes:
        yield node
        yield from _nodes(node.children)


def measured_peak(fn) -> int:
    """Peak bytes ``fn()`` allocates: the CPU allocator's high-water mark plus that of tracemalloc (numpy's arrays).

    The allocator's comes from ``torch.profiler``'s memory events (every allocation and free of
    the c10 CPU allocator, oneDNN's scratch buffers included), replayed in time order.
    """
    tracemalloc.start()
    try:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
            fn()
        _, numpy_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    events = sorted(
        (node.start_time_ns, node.extra_fields.alloc_size)
        for node in _nodes(prof.profiler.kineto_results.experimental_event_tree())
        if node.tag == _EventType.Allocation
    )
    live = peak = 0
    for _, size in events:
        live += size
        peak = max(peak, live)
    return peak + numpy_peak


def scoring_model(arch: str = "fcn8s", backbone: str = "small", num_classes: int = 6):
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch=arch, backbone=backbone, num_classes=num_classes))
    for name in ("score_fr", "score_pool4", "score_pool3"):
        layer = getattr(model, name, None)
        if layer is not None:
            nn.init.normal_(layer.weight, std=0.05)
    return model.eval()


def test_tracker_peak_is_the_hand_count_of_a_tiny_conv_net():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(8, 4, 3, padding=1))
    net = net.to("meta")
    with torch.no_grad(), TensorMemoryTracker() as tracker:
        x = torch.empty(1, 3, 50, 70, device="meta")
        y = net(x)  # the in-place ReLU adds nothing; conv2 runs while conv1's output is alive
        del x, y
    pixels = 50 * 70
    assert tracker.peak == (3 + 8 + 4) * pixels * 4
    assert tracker.live == 0


@pytest.mark.parametrize(
    "arch,backbone,precision,layout,size",
    [
        ("fcn8s", "small", "fp32", "contiguous", (300, 410)),
        ("fcn8s", "small", "fp32", "channels_last", (97, 130)),
        ("fcn8s", "small", "bf16", "channels_last", (300, 410)),
        ("fcn32s", "small", "bf16", "contiguous", (225, 160)),
        ("fcn8s", "vgg16", "fp32", "contiguous", (64, 96)),
        ("fcn8s", "vgg16", "bf16", "channels_last", (64, 96)),
    ],
)
def test_estimate_covers_what_the_real_forward_allocates(arch, backbone, precision, layout, size):
    """The budgeted bytes (weights apart) are at least the allocator's measured peak, and not wildly more."""
    predictor = Predictor(scoring_model(arch, backbone), PAPER_BGR, precision=precision, layout=layout, max_memory=None)
    image = np.random.default_rng(0).integers(0, 256, (*size, 3), dtype=np.uint8)
    predictor.predict(image)  # oneDNN builds its primitives on the first call
    measured = measured_peak(lambda: predictor.predict(image))
    estimate = predictor.estimate(*size)
    budgeted = estimate.total - estimate.weights
    assert measured <= budgeted, (measured, budgeted)
    assert measured >= 0.4 * budgeted, (measured, budgeted)


def test_bf16_counts_the_low_precision_copy_of_the_largest_layer_autocast_holds():
    """Under inference mode autocast caches no weight casts: a layer's copies live while it runs."""
    model = scoring_model()
    layers = [m for m in model.modules() if list(m.parameters(recurse=False))]
    assert all(isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) for m in layers)
    largest = max(sum(p.numel() for p in m.parameters(recurse=False)) for m in layers)
    assert estimate_forward(model, 128, 160, "bf16").weight_casts == 2 * largest  # fc6's weight and bias
    assert estimate_forward(model, 128, 160, "fp32").weight_casts == 0


@pytest.mark.parametrize("size", [(97, 130), (224, 225), (301, 160)])
def test_estimated_logits_are_those_of_the_real_forward(size):
    model = scoring_model()
    with torch.no_grad():
        real = model(torch.zeros(1, 3, *size))
    assert estimate_forward(model, *size).logits == real.numel() * 4
    assert estimate_forward(model, *size, "bf16").logits == real.numel() * 4  # cast back to float32


def test_estimate_grows_with_pixels_and_about_halves_in_bf16():
    model = scoring_model()
    small, large = estimate_forward(model, 512, 512), estimate_forward(model, 1024, 1024)
    assert 3.0 < large.activations / small.activations < 5.0
    fp32, bf16 = bytes_per_pixel(model, "fp32"), bytes_per_pixel(model, "bf16")
    assert 0.4 < bf16 / fp32 < 0.8  # activations in 2 bytes, float32 input and logits kept


def test_vgg16_peaks_at_its_widest_full_resolution_layers_or_fc6():
    vgg = build_model(ModelConfig(arch="fcn8s", backbone="vgg16", num_classes=21))
    layer = estimate_forward(vgg, 500, 500).peak_layer
    assert layer.split(".")[-1] in ("conv1_2", "pool1", "fc6"), layer
