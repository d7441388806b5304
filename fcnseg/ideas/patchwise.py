"""Patch-wise classification versus the convolutionalized net (paper sections 3.1 and 4.1).

The classifier is run on every window at the dense net's output stride (the windows the dense
output grid implies, found from the receptive-field geometry), batched; the convolutionalized net
runs once on the whole image. Both give a ``[C, rows, cols]`` score map; we compare values and costs.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from fcnseg.ideas.classifiers import PatchClassifier
from fcnseg.ideas.costs import Cost, count, on_meta, time_calls
from fcnseg.models.geometry import receptive_fields
from fcnseg.models.surgery import convolutionalize


@dataclass
class WindowGrid:
    """The windows whose classification the dense output grid holds: window ``(i, j)`` has its
    top-left corner at ``(offset + i * stride, offset + j * stride)`` in image pixels."""

    rows: int
    cols: int
    window: int  # pixels
    stride: int  # pixels, the dense net's output stride
    offset: int  # pixels, top-left corner of window (0, 0)
    receptive_field: int  # pixels, of one dense output (> window when convolutions pad)

    @property
    def count(self) -> int:
        return self.rows * self.cols

    def extent(self) -> tuple[int, int]:
        """Image height and width the windows cover (more than the image where ceil-mode pools round up)."""
        return (
            self.offset + (self.rows - 1) * self.stride + self.window,
            self.offset + (self.cols - 1) * self.stride + self.window,
        )


def convolutionalized(classifier: PatchClassifier) -> nn.Sequential:
    """The classifier with its Linear layers turned into convolutions (``fcnseg.models.surgery.convolutionalize``)."""
    return convolutionalize(classifier.net, (classifier.window, classifier.window)).eval()


def window_grid(dense_net: nn.Sequential, window: int, height: int, width: int) -> WindowGrid:
    """The window grid of ``dense_net`` on a ``height x width`` image, from its layers' geometry.

    The output grid size is the dense net's output size; the stride and the centre of output
    ``(0, 0)`` come from :func:`fcnseg.models.geometry.receptive_fields`.
    """
    with torch.no_grad():
        dtype = next(dense_net.parameters()).dtype
        rows, cols = on_meta(dense_net)(torch.zeros(1, 3, height, width, device="meta", dtype=dtype)).shape[-2:]
    last = receptive_fields(dense_net.named_children())[-1][1]
    offset = last.start - (window - 1) / 2  # window centred on the output's receptive field
    assert offset == int(offset) and offset >= 0, f"window offset {offset} is not a pixel"
    return WindowGrid(int(rows), int(cols), window, last.stride, int(offset), last.size)


def extract_windows(image: torch.Tensor, grid: WindowGrid) -> torch.Tensor:
    """Every window of ``image [1,3,H,W]`` as one batch ``[rows*cols, 3, window, window]`` (row-major).

    Where the grid reaches past the image (ceil-mode pooling), the image is zero-padded on the
    right and bottom first. This copy is the storage that grows with the number of windows.
    """
    need_h, need_w = grid.extent()
    h, w = image.shape[-2:]
    if need_h > h or need_w > w:
        image = F.pad(image, (0, max(0, need_w - w), 0, max(0, need_h - h)))
    image = image[:, :, grid.offset :, grid.offset :]
    patches = image.unfold(2, grid.window, grid.stride).unfold(3, grid.window, grid.stride)  # [1,3,r',c',W,W]
    patches = patches[:, :, : grid.rows, : grid.cols]
    return patches[0].permute(1, 2, 0, 3, 4).reshape(grid.count, image.shape[1], grid.window, grid.window)


def patchwise_scores(classifier_net: nn.Module, image: torch.Tensor, grid: WindowGrid, batch_size: int = 16) -> torch.Tensor:
    """Run the classifier on every window of the grid, ``batch_size`` windows at a time.

    Returns:
        scores ``[1, num_classes, rows, cols]``, laid out as the dense net's output.
    """
    windows = extract_windows(image, grid)
    logits = torch.cat([classifier_net(windows[i : i + batch_size]) for i in range(0, grid.count, batch_size)])
    return logits.T.reshape(1, -1, grid.rows, grid.cols)  # [1, C, rows, cols]


@dataclass
class PatchwiseComparison:
    """Dense versus patch-wise on one image: values and costs."""

    classifier: str
    image_size: int
    grid: WindowGrid
    batch_size: int
    max_abs_diff: float
    max_abs_score: float
    argmax_agreement: float  # fraction of grid cells with the same top class
    dense: Cost
    patchwise: Cost
    diff_map: torch.Tensor = field(repr=False)  # [rows, cols] max over classes of |dense - patchwise|

    @property
    def relative_diff(self) -> float:
        return self.max_abs_diff / max(self.max_abs_score, 1e-30)

    @property
    def speedup(self) -> float | None:
        if self.dense.seconds is None or self.patchwise.seconds is None:
            return None
        return self.patchwise.seconds / self.dense.seconds


def measure_costs(classifier: PatchClassifier, dense_net: nn.Sequential, size: int, batch_size: int) -> tuple[Cost, Cost, WindowGrid]:
    """FLOPs and peak tensor memory of the dense and patch-wise computations on a ``size x size`` image (meta device)."""
    grid = window_grid(dense_net, classifier.window, size, size)
    meta_dense, meta_classifier = on_meta(dense_net), on_meta(classifier.net)
    dense_flops, dense_bytes = count(lambda: meta_dense(torch.zeros(1, 3, size, size, device="meta")))
    patch_flops, patch_bytes = count(
        lambda: patchwise_scores(meta_classifier, torch.zeros(1, 3, size, size, device="meta"), grid, batch_size)
    )
    return Cost(None, dense_flops, dense_bytes), Cost(None, patch_flops, patch_bytes), grid


def compare(
    classifier: PatchClassifier,
    size: int,
    *,
    batch_size: int = 16,
    repeats: int = 3,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    time_it: bool = True,
) -> PatchwiseComparison:
    """Run the classifier patch-wise and its convolutionalized net densely on one random ``size x size`` image.

    Args:
        dtype: float64 makes the equality check of an unpadded net exact to rounding (tests use it).
        time_it: measure wall time (median of ``repeats``, the two methods interleaved).
    """
    dense_net = convolutionalized(classifier)
    dense_cost, patch_cost, grid = measure_costs(classifier, dense_net, size, batch_size)
    dense_net, classifier_net = dense_net.to(dtype), copy.deepcopy(classifier.net).to(dtype)
    image = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(seed), dtype=dtype)
    with torch.no_grad():
        dense = dense_net(image)
        patchwise = patchwise_scores(classifier_net, image, grid, batch_size)
    assert dense.shape == patchwise.shape, (dense.shape, patchwise.shape)
    diff = (dense - patchwise).abs()
    if time_it:
        times = time_calls(
            {
                "dense": lambda: dense_net(image),
                "patchwise": lambda: patchwise_scores(classifier_net, image, grid, batch_size),
            },
            repeats=repeats,
        )
        dense_cost.seconds, patch_cost.seconds = times["dense"], times["patchwise"]
    return PatchwiseComparison(
        classifier=classifier.name,
        image_size=size,
        grid=grid,
        batch_size=batch_size,
        max_abs_diff=float(diff.max()),
        max_abs_score=float(dense.abs().max()),
        argmax_agreement=float((dense.argmax(1) == patchwise.argmax(1)).float().mean()),
        dense=dense_cost,
        patchwise=patch_cost,
        diff_map=diff.amax(1)[0].float(),
    )


@dataclass
class ScalingPoint:
    size: int
    windows: int
    dense: Cost
    patchwise: Cost


def cost_scaling(
    classifier: PatchClassifier,
    sizes: list[int],
    *,
    timed_sizes: list[int] = (),
    batch_size: int = 16,
    repeats: int = 1,
) -> list[ScalingPoint]:
    """FLOPs and peak memory of both methods for each image side in ``sizes``; wall time for ``timed_sizes``."""
    dense_net = convolutionalized(classifier)
    points = []
    for size in sizes:
        dense_cost, patch_cost, grid = measure_costs(classifier, dense_net, size, batch_size)
        if size in timed_sizes:
            image = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(size))
            times = time_calls(
                {
                    "dense": lambda: dense_net(image),
                    "patchwise": lambda: patchwise_scores(classifier.net, image, grid, batch_size),
                },
                repeats=repeats,
            )
            dense_cost.seconds, patch_cost.seconds = times["dense"], times["patchwise"]
        points.append(ScalingPoint(size, grid.count, dense_cost, patch_cost))
    return points


def fc_to_conv(classifier: PatchClassifier, seed: int = 0) -> dict:
    """Weight shapes of every Linear layer before and after convolutionalization, and output equality on one window.

    Returns:
        dict with ``layers`` (list of ``{name, linear, conv}`` shapes) and ``max_abs_diff`` between the
        classifier's logits ``[N, C]`` and the dense net's ``[N, C, 1, 1]`` on a batch of windows.
    """
    dense_net = convolutionalized(classifier)
    linears = [m for m in classifier.net if isinstance(m, nn.Linear)]
    convs = [m for m in dense_net if isinstance(m, nn.Conv2d)][-len(linears) :]
    names = [f"fc{6 + i}" for i in range(len(linears))]
    layers = [
        {"name": n, "linear": list(lin.weight.shape), "conv": list(conv.weight.shape)}
        for n, lin, conv in zip(names, linears, convs)
    ]
    window = torch.randn(2, 3, classifier.window, classifier.window, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        logits = classifier.net(window)
        scores = dense_net(window)
    return {
        "layers": layers,
        "logits_shape": list(logits.shape),
        "scores_shape": list(scores.shape),
        "max_abs_diff": float((logits - scores.flatten(1)).abs().max()),
        "max_abs_score": float(logits.abs().max()),
    }
