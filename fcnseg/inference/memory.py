"""Memory model of an FCN forward pass: tensor sizes derived from the layers, peak bytes, bytes per input pixel.

The estimate replays ``FCN.forward`` on shapes only: every layer's output size comes from its kernel,
stride, padding and ceil mode (as the crop geometry in :mod:`fcnseg.models.geometry` does), and the
tensors the forward keeps alive (the pool3/pool4/fc7 taps, the head's locals) are tracked, so the peak
of live activation bytes is known for any input size without running the net. The tile planner in
:mod:`fcnseg.inference.predictor` uses it to pick the largest tile that fits a memory budget.
``docs/inference.md`` explains the accounting and compares it with measured peak RSS.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from fcnseg.models.fcn import FCN

# Bytes of one activation element per precision (autocast computes convolutions in the low precision).
ACTIVATION_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}

# Backend workspace on top of the tensors the forward itself holds: oneDNN reorders a convolution's
# input and output between PyTorch's layout and its blocked one, and the CPU transposed convolution
# unfolds its input (im2col). Calibrated against measured peak RSS (benchmarks/large_image.py and
# benchmarks/inference.py print both); the tile planner multiplies the tensor estimate by it.
# Measured/estimated ratios on this CPU (torch 2.13, oneDNN): fp32 1.15-1.9, bf16 + channels_last 0.65-1.2
# at 500-2000 px, and up to 1.45 for the small net on a whole 6000x4000 image.
WORKSPACE_FACTOR = {"fp32": 2.0, "bf16": 1.5, "fp16": 1.5}


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes one forward of ``model`` on a ``[batch, 3, height, width]`` input needs.

    Attributes:
        weights: parameters as stored (float32).
        weight_casts: low-precision copies autocast makes of the weights (0 in fp32).
        activations: peak of live bytes during the forward and the cast of its output to float32: the
            float32 input, the activations kept alive, and transients (weight reorders, input casts).
        peak_layer: the layer at which that peak occurs.
        logits: the float32 copy of low-precision logits (0 in fp32, where the output is the logits).
        workspace_factor: backend overhead multiplier applied to ``activations`` in :attr:`total`.
    """

    height: int
    width: int
    batch: int
    precision: str
    weights: int
    weight_casts: int
    activations: int
    peak_layer: str
    logits: int
    workspace_factor: float

    @property
    def total(self) -> int:
        """What the planner budgets: weights, their casts, and the activation peak times the workspace factor."""
        return int(self.weights + self.weight_casts + self.activations * self.workspace_factor)


def conv_output_side(n: int, kernel: int, stride: int, pad: int, dilation: int = 1, ceil_mode: bool = False) -> int:
    """Output length of a convolution or pooling along one axis (PyTorch's rule, ceil mode included)."""
    extent = dilation * (kernel - 1) + 1
    span = n + 2 * pad - extent
    if span < 0:
        return 0
    if not ceil_mode:
        return span // stride + 1
    out = math.ceil(span / stride) + 1
    if (out - 1) * stride >= n + pad:  # the last window must start inside the input or its left padding
        out -= 1
    return out


def _first(v) -> int:
    return int(v[0] if isinstance(v, (tuple, list)) else v)


def layer_output_shape(module: nn.Module, channels: int, height: int, width: int) -> tuple[int, int, int]:
    """``(channels, height, width)`` a layer produces from ``(channels, height, width)``."""
    if isinstance(module, nn.ConvTranspose2d):
        k, s, p = _first(module.kernel_size), _first(module.stride), _first(module.padding)
        d = _first(module.dilation)
        side = lambda n: (n - 1) * s - 2 * p + d * (k - 1) + 1  # noqa: E731
        return module.out_channels, side(height), side(width)
    if isinstance(module, nn.Conv2d):
        k, s, p, d = (_first(module.kernel_size), _first(module.stride), _first(module.padding), _first(module.dilation))
        return module.out_channels, conv_output_side(height, k, s, p, d), conv_output_side(width, k, s, p, d)
    if isinstance(module, nn.MaxPool2d):
        k = _first(module.kernel_size)
        s = _first(module.stride if module.stride is not None else k)
        p, d = _first(module.padding), _first(module.dilation)
        c = module.ceil_mode
        return channels, conv_output_side(height, k, s, p, d, c), conv_output_side(width, k, s, p, d, c)
    return channels, height, width  # ReLU, dropout, LRN keep the shape


class _Ledger:
    """Live bytes of named tensors and their running peak."""

    def __init__(self) -> None:
        self.live: dict[str, int] = {}
        self.peak = 0
        self.peak_at = ""

    def alloc(self, name: str, nbytes: int, transient: int = 0) -> None:
        self.live[name] = nbytes
        now = sum(self.live.values()) + transient
        if now > self.peak:
            self.peak, self.peak_at = now, name

    def free(self, name: str) -> None:
        self.live.pop(name, None)


def estimate_forward(model: FCN, height: int, width: int, precision: str = "fp32", batch: int = 1) -> MemoryEstimate:
    """Estimate the memory of ``model(x)`` for ``x`` of shape ``[batch, 3, height, width]``.

    Args:
        precision: "fp32", or "bf16"/"fp16" for autocast (convolution outputs in 2 bytes; the first
            convolution's input is cast, a transient copy).
    Returns:
        MemoryEstimate; ``.total`` is what the tile planner budgets.
    """
    if precision not in ACTIVATION_BYTES:
        raise ValueError(f"precision must be one of {sorted(ACTIVATION_BYTES)}, got {precision!r}")
    act = ACTIVATION_BYTES[precision] * batch
    fp32 = 4 * batch
    num_classes = model.config.num_classes
    ledger = _Ledger()
    # Normalising the tile takes one float32 copy of the pixels and, for BGR models, one flipped copy.
    ledger.alloc("input", 3 * height * width * fp32, transient=3 * height * width * fp32)
    taps = model.backbone.taps
    shapes: dict[str, tuple[int, int, int]] = {}
    c, h, w = 3, height, width
    current, current_bytes = "input", fp32
    for name, layer in model.backbone.named_children():
        if isinstance(layer, (nn.ReLU, nn.Dropout)):
            # In place (ReLU) or the identity in eval mode (dropout): the same tensor, renamed.
            if current != "input":
                ledger.live[name] = ledger.live.pop(current)
                current = name
            shapes[name] = (c, h, w)
            continue
        transient = 0
        if isinstance(layer, nn.Conv2d):
            # oneDNN reorders the weights into its blocked layout on every eager call.
            transient = layer.weight.numel() * act // batch
            if current_bytes != act:
                transient += c * h * w * act  # autocast's low-precision copy of the float32 input
        if isinstance(layer, nn.LocalResponseNorm):
            transient = 3 * c * h * w * current_bytes  # square, padded square, pooled sum
        c, h, w = layer_output_shape(layer, c, h, w)
        out_bytes = act if isinstance(layer, nn.Conv2d) else current_bytes
        ledger.alloc(name, c * h * w * out_bytes, transient)
        if current != "input" and current not in taps:
            ledger.free(current)
        current, current_bytes = name, out_bytes
        shapes[name] = (c, h, w)
    _head(model, ledger, shapes, act, num_classes, height, width)
    # After the forward only the input and the output remain; under autocast the caller's float32
    # copy of the low-precision logits is one more output-sized tensor.
    ledger.live = {"input": ledger.live["input"], "score": ledger.live["score"]}
    if act != fp32:
        ledger.alloc("logits", num_classes * height * width * fp32)
    ledger.alloc("argmax", height * width * 8 * batch)  # the caller's int64 argmax of the logits
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    casts = 0 if precision == "fp32" else sum(
        m.weight.numel() * ACTIVATION_BYTES[precision] for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))
    )
    return MemoryEstimate(
        height=height,
        width=width,
        batch=batch,
        precision=precision,
        weights=weights,
        weight_casts=casts,
        activations=ledger.peak,
        peak_layer=ledger.peak_at,
        logits=0 if act == fp32 else num_classes * height * width * fp32,
        workspace_factor=WORKSPACE_FACTOR[precision],
    )


def _head(model: FCN, ledger: _Ledger, shapes, act: int, num_classes: int, height: int, width: int) -> None:
    """Replay the head of ``FCN.forward``: its locals stay alive until it returns."""

    def conv(name: str, layer: nn.Module, source: tuple[int, int, int]) -> tuple[int, int, int]:
        shape = layer_output_shape(layer, *source)
        ledger.alloc(name, shape[0] * shape[1] * shape[2] * act)
        return shape

    def scaled_skip(tap: str, layer: nn.Module, name: str) -> tuple[int, int, int]:
        c, h, w = shapes[tap]
        ledger.alloc(f"{tap}*scale", c * h * w * act)  # ``features[tap] * scale`` is a new tensor
        shape = conv(name, layer, shapes[tap])
        ledger.free(f"{tap}*scale")
        return shape

    def fuse(name: str, like: tuple[int, int, int]) -> tuple[int, int, int]:
        ledger.alloc(name, like[0] * like[1] * like[2] * act)
        return like

    score = conv("score_fr", model.score_fr, shapes["drop7"])
    arch = model.config.arch
    if arch == "fcn32s":
        conv("upscore", model.upscore, score)
    else:
        up2 = conv("upscore2", model.upscore2, score)
        scaled_skip("pool4", model.score_pool4, "score_pool4")
        fused4 = fuse("fuse_pool4", up2)
        if arch == "fcn16s":
            conv("upscore16", model.upscore16, fused4)
        else:
            up4 = conv("upscore_pool4", model.upscore_pool4, fused4)
            scaled_skip("pool3", model.score_pool3, "score_pool3")
            fused3 = fuse("fuse_pool3", up4)
            conv("upscore8", model.upscore8, fused3)
    ledger.alloc("score", num_classes * height * width * act)  # the cropped, contiguous output


def bytes_per_pixel(model: FCN, precision: str = "fp32") -> float:
    """Activation bytes per input pixel for large inputs (slope of the estimate between 1024^2 and 2048^2).

    Multiply by the pixel count and add the weights (and their casts) for a whole-image forward.
    """
    small = estimate_forward(model, 1024, 1024, precision)
    large = estimate_forward(model, 2048, 2048, precision)
    return (large.activations - small.activations) / (2048**2 - 1024**2)
