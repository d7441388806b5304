"""Memory model of inference: one forward run on shape-only tensors under a ledger of live tensor storages.

The estimate does not describe the net: it runs the predictor's own steps (:mod:`fcnseg.inference.forward`:
normalisation, ``model.forward`` under autocast, the float32 logits, the argmax) on fake tensors,
which carry shapes, dtypes and a device but no data, and counts the bytes of every tensor storage
from the operator that creates it until it is freed. So it follows ``FCN.forward`` (its taps, its
head's locals, its crops) and autocast (low-precision activations, weight casts) for any input
size without running the net. The tile planner in :mod:`fcnseg.inference.predictor` uses it to
pick the largest tile that fits a memory budget; ``docs/inference.md`` compares it with measurements.
"""

from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

from fcnseg.data.normalization import Normalization
from fcnseg.inference.forward import class_indices, forward_logits, normalize_pixels

AUTOCAST_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}

# Process memory on top of the model's peak (kernel workspace included): allocator slack, pages kept
# after a free. The tile planner multiplies the activation peak by it. Calibrated against the peak-RSS
# rise of one whole-image forward (benchmarks/inference.py's measurement, docs/inference.md): over the
# small and VGG16 FCN-8s, VGG16 FCN-32s and AlexNet FCN-32s at 224-2000 px the largest RSS/estimate
# ratio was 1.19 in fp32 and 1.28 in bf16 (VGG16 at 500 px, where fc6's weight cast is most of it).
WORKSPACE_FACTOR = {"fp32": 1.25, "bf16": 1.3, "fp16": 1.3}

_aten = torch.ops.aten
_CONVOLUTIONS = {_aten.conv2d, _aten.conv_transpose2d, _aten.convolution, _aten.mkldnn_convolution}
_POOLS = {_aten.max_pool2d, _aten.max_pool2d_with_indices, _aten.mkldnn_max_pool2d}


def _nbytes(t) -> int:
    return t.numel() * t.element_size() if isinstance(t, torch.Tensor) else 0


class TensorMemoryTracker(TorchDispatchMode):
    """Tracks live bytes of the tensor storages created by operators inside the ``with`` block.

    A storage counts from the operator that creates it until it is freed, so in-place ops and views
    add nothing; ``peak`` is the largest total seen, like tracemalloc for tensors. Works on real,
    meta and fake tensors alike (on the latter two it costs nothing for any size).

    Args:
        workspace: ``workspace(func, args, out) -> bytes`` a kernel holds while it runs beyond its
            inputs and outputs; counted in ``peak`` during that operator only. None: no workspace.
        exclude: ``exclude(func, args) -> bool`` for operators whose outputs are tallied apart, in
            ``excluded`` and ``excluded_peak``, instead of in ``live``.
    Attributes:
        where: a label the caller may set (the running layer); ``peak_where`` is its value at the peak.
    """

    def __init__(
        self,
        workspace: Callable[..., int] | None = None,
        exclude: Callable[..., bool] | None = None,
    ) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self.excluded = 0
        self.excluded_peak = 0
        self.where = ""
        self.peak_where = ""
        self._workspace = workspace
        self._exclude = exclude
        self._finalizers: dict[int, weakref.finalize] = {}

    def _release(self, key: int, nbytes: int, excluded: bool) -> None:
        if excluded:
            self.excluded -= nbytes
        else:
            self.live -= nbytes
        self._finalizers.pop(key, None)

    def _register(self, t, excluded: bool = False):
        if isinstance(t, torch.Tensor):
            storage = t.untyped_storage()
            key = id(storage)
            if key not in self._finalizers:
                nbytes = storage.nbytes()
                if excluded:
                    self.excluded += nbytes
                    self.excluded_peak = max(self.excluded_peak, self.excluded)
                else:
                    self.live += nbytes
                    self._note(self.live)
                self._finalizers[key] = weakref.finalize(storage, self._release, key, nbytes, excluded)
        return t

    def _note(self, total: int) -> None:
        if total > self.peak:
            self.peak, self.peak_where = total, self.where

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        excluded = self._exclude is not None and self._exclude(func, args)
        tree_map(lambda t: self._register(t, excluded), out)
        if self._workspace is not None:
            self._note(self.live + self._workspace(func, args, out))
        return out


def onednn_workspace(func, args, out) -> int:
    """Bytes a CPU kernel holds beyond its operands while it runs, for the operators where oneDNN holds any.

    Measured with the allocator (``torch.profiler`` memory events; ``tests/test_memory.py``): a
    convolution (transposed too) reorders its weight into oneDNN's blocked layout on every eager call
    (102M values for VGG16's fc6) and, on NCHW tensors, stages its input or output in that layout
    (a transposed one twice); max pooling holds int64 indices or a reordered copy as large as its
    input. Bounded here by the weight, plus the larger of input and output for NCHW convolutions
    and for pooling.
    """
    packet = getattr(func, "overloadpacket", None)
    if not args or not isinstance(args[0], torch.Tensor):
        return 0
    outputs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
    largest = max([_nbytes(args[0])] + [_nbytes(t) for t in outputs])
    if packet in _CONVOLUTIONS:
        if args[0].is_contiguous(memory_format=torch.channels_last):
            return _nbytes(args[1])  # NHWC is oneDNN's own activation layout: nothing to stage
        transposed = packet is _aten.conv_transpose2d or (packet is _aten.convolution and bool(args[6]))
        return _nbytes(args[1]) + (2 if transposed else 1) * largest
    if packet in _POOLS:
        return largest
    return 0


def _is_weight_cast(func, args) -> bool:
    """Autocast's low-precision copy of a parameter (made for each call: inference mode caches none)."""
    return bool(args) and isinstance(args[0], nn.Parameter) and getattr(func, "overloadpacket", None) in (
        _aten.to, _aten._to_copy
    )


@contextlib.contextmanager
def _layer_labels(model: nn.Module, tracker: TensorMemoryTracker):
    """Set ``tracker.where`` to the name of the layer running (``after NAME`` between layers)."""

    def enter(name):
        return lambda module, inputs: setattr(tracker, "where", name)

    def leave(name):
        return lambda module, inputs, output: setattr(tracker, "where", f"after {name}")

    handles = []
    for name, module in model.named_modules():
        if name and not any(True for _ in module.children()):
            handles.append(module.register_forward_pre_hook(enter(name)))
            handles.append(module.register_forward_hook(leave(name)))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes one forward of ``model`` on a ``[batch, 3, height, width]`` input needs.

    Attributes:
        weights: parameters as stored.
        weight_casts: peak of the low-precision copies autocast makes of the weights (0 in fp32).
            Under inference mode autocast caches none, so this is one layer's: VGG16's fc6.
        activations: peak of live tensor bytes during normalisation, forward, float32 logits and argmax
            (weight casts apart), kernel workspace included: the float32 input, the activations kept
            alive (the skip taps, the head's locals), weight reorders.
        peak_layer: the layer running at that peak (``after NAME`` between layers).
        logits: bytes of the float32 logits the forward returns.
        workspace_factor: process overhead multiplier applied to ``activations`` in :attr:`total`.
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


def estimate_forward(
    model: nn.Module,
    height: int,
    width: int,
    precision: str = "fp32",
    batch: int = 1,
    *,
    normalization: Normalization | None = None,
    channels_last: bool = False,
    probabilities: bool = False,
) -> MemoryEstimate:
    """Estimate the memory of one inference forward of ``model`` on ``batch`` RGB images of ``height x width``.

    Runs ``model.forward`` itself on fake tensors (no data, no real memory; the parameters are only
    read for their shapes), on the parameters' device so that autocast applies as it would.

    Args:
        model: any module mapping float32 ``[N, 3, H, W]`` to scores ``[N, C, H, W]`` (an FCN).
        precision: "fp32", or "bf16"/"fp16" for autocast in that dtype.
        normalization: start from uint8 pixels ``[N, H, W, 3]`` and count their normalisation, as the
            predictor does; None starts from a float32 input.
        channels_last: the input layout the predictor feeds (its model converted to match).
        probabilities: also count the softmax and its float16 copy.
    Returns:
        MemoryEstimate; ``.total`` is what the tile planner budgets.
    """
    if precision not in AUTOCAST_DTYPES:
        raise ValueError(f"precision must be one of {sorted(AUTOCAST_DTYPES)}, got {precision!r}")
    from torch._subclasses.fake_tensor import FakeTensorMode  # meta storage behind a device autocast accepts

    device = next(model.parameters()).device
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    tracker = TensorMemoryTracker(workspace=onednn_workspace if device.type == "cpu" else None, exclude=_is_weight_cast)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    # Plain meta tensors would do for fp32, but autocast refuses the meta device; fake tensors report
    # the parameters' device, so its real policy (which ops run in low precision, what it casts) applies.
    with torch.inference_mode(), FakeTensorMode(allow_non_fake_inputs=True), _layer_labels(model, tracker):
        # The decoded image is the caller's, held whatever the forward does: made outside the ledger.
        pixels = None if normalization is None else torch.empty(batch, height, width, 3, dtype=torch.uint8, device=device)
        with tracker:
            tracker.where = "input"
            if pixels is None:
                x = torch.empty(batch, 3, height, width, device=device, memory_format=layout)
            else:
                x = normalize_pixels(pixels, normalization, channels_last)
            logits = forward_logits(model, x, AUTOCAST_DTYPES[precision])
            tracker.where = "logits"
            del x
            labels = class_indices(logits, 1)
            if probabilities:
                tracker.where = "probabilities"
                probs = logits.softmax(1).half()
                del probs
            logits_bytes = _nbytes(logits)
            del logits, labels
    return MemoryEstimate(
        height=height,
        width=width,
        batch=batch,
        precision=precision,
        weights=weights,
        weight_casts=tracker.excluded_peak,
        activations=tracker.peak,
        peak_layer=tracker.peak_where,
        logits=logits_bytes,
        workspace_factor=WORKSPACE_FACTOR[precision],
    )


def bytes_per_pixel(model: nn.Module, precision: str = "fp32", **kwargs) -> float:
    """Activation bytes per input pixel for large inputs (slope of the estimate between 1024^2 and 2048^2).

    Multiply by the pixel count and add the weights (and their casts) for a whole-image forward.
    ``kwargs`` go to :func:`estimate_forward`.
    """
    small = estimate_forward(model, 1024, 1024, precision, **kwargs)
    large = estimate_forward(model, 2048, 2048, precision, **kwargs)
    return (large.activations - small.activations) / (2048**2 - 1024**2)


# ONNX Runtime, calibrated against peak RSS like torch's factors (benchmarks/cpu_inference.py, docs/inference.md;
# small and VGG16 FCN-8s, 256-1000 px, fp32 and int8). A session costs a fixed ~90 MiB (kernels, thread
# pools, graph) plus 1.18-1.22x its initialiser bytes (prepacked convolution weights): a line through
# the small net's 101/90 MiB and VGG16's 719/238 MiB (fp32/int8). One forward's RSS rise over the
# float32 tensor peak of the same net's forward (the graph ONNX Runtime runs, counted on the meta
# device) was 0.99-1.79 in fp32 and 1.13-1.98 in int8 (its dequantized copies); with the session's CPU arena
# off, as it is under a budget, 1.34-1.41 for the "same"-padded small net at 2000-3072 px. With the arena on,
# tiles of several shapes grow it past these terms (2.3-3.3 GiB under a 2 GiB plan), hence off.
ORT_SESSION_BYTES = 96 * 1024**2
ORT_WEIGHT_FACTOR = {"fp32": 1.25, "int8": 1.25}
ORT_ACTIVATION_FACTOR = {"fp32": 1.9, "int8": 2.0}

# OpenVINO, calibrated the same way (benchmarks/runtimes.py --memory-sizes, docs/inference.md; fresh process per
# size, Sapphire Rapids with AMX): the small net's compiled model held 141-159 MiB at 256-1000 px whatever its 9 MB
# of weights (the CPU plugin and its per-shape compiled graph), and one forward's RSS rise was 2.23-2.28x the
# float32 tensor peak in fp32 and int8 alike. VGG16 FCN-8s's compiled model held 2.02x its fp32 initialisers over that
# fixed part (1184-1196 MiB for 514 MB; the model as read plus its packed copy) and 2.06x its int8 ones (417-426 MiB),
# and one forward 1.01-1.21x (fp32) and 0.65-0.86x (int8) the tensor peak: the small net's ratio bounds them all.
OV_SESSION_BYTES = 160 * 1024**2
OV_WEIGHT_FACTOR = {"fp32": 2.1, "int8": 2.1}
OV_ACTIVATION_FACTOR = {"fp32": 2.4, "int8": 2.4}
ENGINE_TERMS = {
    "onnxruntime": (ORT_SESSION_BYTES, ORT_WEIGHT_FACTOR, ORT_ACTIVATION_FACTOR),
    "openvino": (OV_SESSION_BYTES, OV_WEIGHT_FACTOR, OV_ACTIVATION_FACTOR),
}


def estimate_onnx(
    skeleton: nn.Module,
    height: int,
    width: int,
    precision: str,
    weight_bytes: int,
    batch: int = 1,
    *,
    probabilities: bool = False,
    engine: str = "onnxruntime",
) -> MemoryEstimate:
    """Estimate the memory of one ONNX Runtime (or OpenVINO) forward of an fcnseg ``.onnx`` file on ``batch`` images of ``height x width``.

    Args:
        skeleton: the architecture the file records, built on the meta device (its forward is replayed
            there for the tensor sizes: float32 pixels in, float32 logits out).
        precision: "fp32" or "int8" (the file's).
        weight_bytes: the file's initialiser bytes (:attr:`fcnseg.weights.onnx_format.OnnxModelInfo.weight_bytes`).
        engine: "onnxruntime" or "openvino": whose calibrated terms apply.
    Returns:
        MemoryEstimate whose ``weights`` are the session's (:data:`ORT_SESSION_BYTES` plus the initialisers
        times :data:`ORT_WEIGHT_FACTOR`; OpenVINO's ``OV_*`` terms for it) and whose ``total`` adds the tensor
        peak times :data:`ORT_ACTIVATION_FACTOR` (:data:`OV_ACTIVATION_FACTOR`).
    """
    if engine not in ENGINE_TERMS:
        raise ValueError(f"engine must be one of {sorted(ENGINE_TERMS)}, got {engine!r}")
    session_bytes, weight_factor, activation_factor = ENGINE_TERMS[engine]
    if precision not in activation_factor:
        raise ValueError(f"ONNX precision must be one of {sorted(activation_factor)}, got {precision!r}")
    tensors = estimate_forward(skeleton, height, width, "fp32", batch, probabilities=probabilities)
    return MemoryEstimate(
        height=height,
        width=width,
        batch=batch,
        precision=precision,
        weights=session_bytes + int(weight_bytes * weight_factor[precision]),
        weight_casts=0,
        activations=tensors.activations,
        peak_layer=tensors.peak_layer,
        logits=tensors.logits,
        workspace_factor=activation_factor[precision],
    )
