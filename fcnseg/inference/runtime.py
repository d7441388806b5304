"""The runtimes a tile can run on: PyTorch (any precision, layout and device) or ONNX Runtime (an fp32 or int8 .onnx file).

Each is a *net*: ``net(pixels uint8 [N, H, W, 3] RGB) -> float32 logits [N, C, H, W]``, with the
memory estimate of one forward (``net.estimate``), its context margin and a description. The
:class:`~fcnseg.inference.predictor.Predictor` tiles, reduces and writes; which runtime runs a tile
does not matter to it. :func:`select_runtime` resolves ``--runtime auto`` from measurements
(``docs/inference.md``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from fcnseg.config import ModelConfig
from fcnseg.data.normalization import Normalization
from fcnseg.errors import ConfigError
from fcnseg.inference.forward import forward_logits, normalize_pixels
from fcnseg.inference.memory import MemoryEstimate, estimate_forward, estimate_onnx
from fcnseg.inference.onnx_model import OnnxModel, is_onnx_file, load_onnx_model
from fcnseg.inference.tiling import context_margin
from fcnseg.models.batchnorm import fold_batch_norm
from fcnseg.models.fcn import FCN, build_model
# select_layout: the layout rule of the one resolver, re-exported for the callers of the layout alone
from fcnseg.precision import LAYOUTS, ExecutionPlan, resolve_execution, select_device, select_layout

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "torch", "onnxruntime")


def _as_tensor(pixels) -> torch.Tensor:
    return torch.from_numpy(np.asarray(pixels)) if not isinstance(pixels, torch.Tensor) else pixels


def check_predictable(model: FCN) -> None:
    """Raise unless ``model`` reads one 3-channel image and gives one label map: what prediction on image
    files draws. A NYUD net on HHA alone passes (an HHA PNG is a 3-channel image, normalised as trained).

    Raises:
        ConfigError: a net of other inputs (NYUD depth, colour + depth, colour + HHA) or of several heads
            (SIFT Flow), naming what scores or runs it instead.
    """
    cfg = model.config
    if cfg.in_channels != 3 or len(cfg.input_streams()) != 1:
        streams = ", ".join(f"{name} ({channels} channels)" for name, channels in cfg.input_streams())
        raise ConfigError(
            f"this {cfg.arch} reads {streams}, not one RGB image; prediction reads image files. Run it on a NYUD "
            "tree with 'fcnseg eval CHECKPOINT --data NYUD --save-predictions DIR' (label PNGs of every image), "
            "or from Python: fcnseg.weights.checkpoint.load_model(CHECKPOINT).model(x) on the data set's items"
        )
    if len(model.heads) > 1:
        names = ", ".join(h.name for h in model.heads)
        raise ConfigError(
            f"this {cfg.arch} has the heads {names}; prediction writes one label map per image. Use "
            "'fcnseg eval CHECKPOINT --data ROOT --save-predictions DIR' (a folder of label PNGs per head), or "
            "from Python: fcnseg.weights.checkpoint.load_model(CHECKPOINT).model(x) -> {head: logits}"
        )


class TorchNet:
    """An FCN run by PyTorch: ``net(pixels uint8 [N, H, W, 3]) -> float32 logits [N, C, H, W]`` (on the CPU).

    BatchNorm (the small net's) is merged into the convolutions; device, precision and layout come from
    :func:`fcnseg.precision.resolve_execution` (``self.plan``): the model is moved to the device and, where
    the plan says so, to channels_last; the forward runs under inference mode and, for bf16/fp16, autocast.
    """

    runtime = "torch"

    def __init__(
        self,
        model: FCN,
        normalization: Normalization,
        *,
        device: str = "auto",
        precision: str = "auto",
        layout: str = "auto",
        compile: bool = False,
    ):
        check_predictable(model)
        self.plan: ExecutionPlan = resolve_execution(device, precision, layout, purpose="inference")
        self.device = self.plan.device
        self.precision = self.plan.precision
        self.model = fold_batch_norm(model.eval()).to(self.device)
        self.config: ModelConfig = model.config
        self.num_classes = model.config.num_classes
        self.normalization = normalization
        self.autocast_dtype = self.plan.autocast_dtype
        self.channels_last = self.plan.channels_last
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.net = torch.compile(self.model, dynamic=True) if compile else self.model
        self.margin = context_margin(self.model)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised float32 ``[N, 3, H, W]`` -> float32 logits ``[N, C, H, W]``."""
        with torch.inference_mode():
            x = x.to(self.device, non_blocking=True)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            return forward_logits(self.net, x, self.autocast_dtype)

    def __call__(self, pixels) -> torch.Tensor:
        with torch.inference_mode():
            x = normalize_pixels(_as_tensor(pixels).to(self.device), self.normalization, self.channels_last)
            return forward_logits(self.net, x, self.autocast_dtype)

    def estimate(self, height: int, width: int, probabilities: bool = False) -> MemoryEstimate:
        """The memory model of one forward (:func:`fcnseg.inference.memory.estimate_forward`)."""
        return estimate_forward(self.model, height, width, self.precision, normalization=self.normalization,
                                channels_last=self.channels_last, probabilities=probabilities)

    def describe(self) -> str:
        cfg = self.config
        return (
            f"{cfg.arch} ({cfg.backbone}, {self.num_classes} classes) on {self.device}, precision {self.precision}"
            f"{', channels_last' if self.channels_last else ''}{', compiled' if self.net is not self.model else ''} (PyTorch)"
        )


class OrtNet:
    """An fcnseg ``.onnx`` file run by ONNX Runtime: ``net(pixels uint8 [N, H, W, 3]) -> float32 logits [N, C, H, W]``.

    The normalisation is inside the graph. The geometry (context margin) and the memory model come
    from the architecture the file records, built on the meta device (no weights allocated).
    """

    runtime = "onnxruntime"

    def __init__(self, model: OnnxModel):
        self.onnx = model
        info = model.info
        self.device = torch.device("cpu")
        self.precision = info.precision
        self.num_classes = info.num_classes
        self.normalization = info.normalization
        self.channels_last = False
        self.autocast_dtype = None
        self.config = ModelConfig(arch=info.arch, backbone=info.backbone, num_classes=info.num_classes)
        with torch.device("meta"):
            self.skeleton = build_model(self.config).eval()  # shapes only: for the margin and the memory model
        self.margin = context_margin(self.skeleton)
        self.weight_bytes = info.weight_bytes

    @classmethod
    def from_file(cls, path: str | Path, threads: int | None = None, memory_arena: bool = True) -> "OrtNet":
        return cls(load_onnx_model(path, threads, memory_arena))

    def __call__(self, pixels) -> torch.Tensor:
        x = np.asarray(pixels.numpy() if isinstance(pixels, torch.Tensor) else pixels)
        return self.onnx.net(np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32))

    def estimate(self, height: int, width: int, probabilities: bool = False) -> MemoryEstimate:
        """The memory model of one ONNX Runtime forward (:func:`fcnseg.inference.memory.estimate_onnx`)."""
        return estimate_onnx(self.skeleton, height, width, self.precision, self.weight_bytes, probabilities=probabilities)

    def describe(self) -> str:
        return self.onnx.describe()


def select_runtime(runtime: str, model_path: str | Path, device: torch.device, precision: str) -> tuple[str, str]:
    """Resolve ``runtime`` ("auto", "torch", "onnxruntime") for a model file; returns ``(runtime, why)``.

    auto: ONNX Runtime for an ``.onnx`` file (int8 or fp32: only it runs them); for a checkpoint,
    PyTorch. ONNX Runtime fp32 measured as fast as PyTorch's bf16 path or faster on a CPU
    (docs/inference.md), but running a checkpoint with it would first cost an export (10-90 s), so
    auto keeps PyTorch and ``why`` names the faster way for a CPU.
    Raises:
        ConfigError: a runtime that cannot run the model (PyTorch and an .onnx file, ONNX Runtime and a
            checkpoint, ONNX Runtime on CUDA, or a torch precision for an .onnx file).
    """
    if runtime not in RUNTIMES:
        raise ConfigError(f"--runtime {runtime!r} is not one of {', '.join(RUNTIMES)}")
    onnx_file = is_onnx_file(model_path)
    if onnx_file and precision not in ("auto", "fp32"):
        raise ConfigError(f"{model_path}: an ONNX file runs in the precision it was written in; "
                          f"--precision {precision} is for checkpoints (quantize with 'fcnseg quantize' for int8)")
    if onnx_file and device.type != "cpu":
        raise ConfigError(f"{model_path}: ONNX files run on the CPU here; --device {device} is for checkpoints")
    if runtime == "torch" and onnx_file:
        raise ConfigError(f"{model_path}: an ONNX file runs with --runtime onnxruntime (or auto), not torch")
    if runtime == "onnxruntime" and not onnx_file:
        raise ConfigError(f"{model_path}: --runtime onnxruntime runs .onnx files; write one with "
                          f"'fcnseg export' (fp32) or 'fcnseg quantize' (int8)")
    if onnx_file:
        return "onnxruntime", "an .onnx file runs with ONNX Runtime"
    if runtime == "torch":
        return "torch", "asked for"
    if device.type == "cpu":
        return "torch", ("a checkpoint runs with PyTorch; ONNX Runtime ran fcnseg's nets as fast or faster in fp32 on the "
                         "CPUs measured (docs/inference.md), and int8 2-3x faster again: 'fcnseg export' or "
                         "'fcnseg quantize' the checkpoint once and predict with the .onnx (auto does not export on its "
                         "own: that takes 10-90 s per checkpoint)")
    return "torch", "a checkpoint runs with PyTorch"


def load_net(
    model_path: str | Path,
    *,
    runtime: str = "auto",
    device: str = "auto",
    precision: str = "auto",
    layout: str = "auto",
    compile: bool = False,
    memory_arena: bool = True,
):
    """The net for a model file: a :class:`TorchNet` for a checkpoint, an :class:`OrtNet` for an ``.onnx``
    (``memory_arena``: ONNX Runtime's CPU arena, off where a memory budget must hold; see
    :class:`fcnseg.inference.onnx_model.OnnxNet`).

    Returns ``(net, class_names, palette or None, why)`` where ``why`` says why that runtime was chosen.
    """
    chosen, why = select_runtime(runtime, model_path, select_device(device), precision)
    if chosen == "onnxruntime":
        net = OrtNet.from_file(model_path, memory_arena=memory_arena)
        return net, net.onnx.class_names, net.onnx.info.palette, why
    from fcnseg.weights.checkpoint import load_model

    loaded = load_model(model_path)
    net = TorchNet(loaded.model, loaded.normalization, device=device, precision=precision, layout=layout, compile=compile)
    return net, loaded.class_names, None, why


__all__ = ["LAYOUTS", "RUNTIMES", "OrtNet", "TorchNet", "load_net", "select_layout", "select_runtime"]
