"""The runtimes a tile can run on: PyTorch (any precision, layout and device), or ONNX Runtime or OpenVINO (an fp32 or int8 .onnx file).

Each is a *net*: ``net(pixels uint8 [N, H, W, 3] RGB) -> float32 logits [N, C, H, W]``, with the
memory estimate of one forward (``net.estimate``), its context margin and a description. The
:class:`~fcnseg.inference.predictor.Predictor` tiles, reduces and writes; which runtime runs a tile
does not matter to it. :func:`select_runtime` checks ``--runtime`` against the model file;
:mod:`fcnseg.inference.runtime_choice` resolves ``auto`` for a checkpoint by measurement (``docs/inference.md``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from fcnseg.config import ModelConfig
from fcnseg.errors import ConfigError
from fcnseg.inference.forward import forward_logits, normalize_pixels
from fcnseg.inference.memory import MemoryEstimate, estimate_forward, estimate_onnx
from fcnseg.inference.tiling import context_margin
from fcnseg.models.batchnorm import fold_batch_norm
from fcnseg.models.fcn import build_model
# select_layout: the layout rule of the one resolver, re-exported for the callers of the layout alone
from fcnseg.precision import LAYOUTS, select_layout
from fcnseg.weights.handle import ENGINE_NAMES, LoadedModel
from fcnseg.weights.onnx_format import is_onnx_file

log = logging.getLogger(__name__)

RUNTIMES = ("auto", "torch", "onnxruntime", "openvino")
RUNTIME_HELP = ("which runtime runs the model (default auto, or $FCNSEG_RUNTIME): auto times PyTorch, ONNX Runtime and "
                "OpenVINO (where installed) on the first input once per model file and CPU, and keeps the fastest that "
                "agrees with PyTorch fp32 (cached; the log says what and why); an .onnx file (fp32 or int8) is timed "
                "the same way between ONNX Runtime and OpenVINO, held against ONNX Runtime's labels")


def _as_tensor(pixels) -> torch.Tensor:
    return torch.from_numpy(np.asarray(pixels)) if not isinstance(pixels, torch.Tensor) else pixels


def check_predictable(model) -> None:
    """Raise unless ``model`` reads one 3-channel image and gives one label map: what prediction on image
    files draws. A NYUD net on HHA alone passes (an HHA PNG is a 3-channel image, normalised as trained).

    Raises:
        ConfigError: a net of other inputs (NYUD depth, colour + depth, colour + HHA) or of several heads
            (SIFT Flow), naming what scores or runs it instead.
    """
    cfg = model.config
    heads = cfg.output_heads()
    if cfg.in_channels != 3 or len(cfg.input_streams()) != 1:
        streams = ", ".join(f"{name} ({channels} channels)" for name, channels in cfg.input_streams())
        raise ConfigError(
            f"this {cfg.arch} reads {streams}, not one RGB image; prediction reads image files. Run it on a NYUD "
            "tree with 'fcnseg eval CHECKPOINT --data NYUD --save-predictions DIR' (label PNGs of every image), "
            "or from Python: fcnseg.weights.checkpoint.load_model(CHECKPOINT).model(x) on the data set's items"
        )
    if len(heads) > 1:
        names = ", ".join(name for name, _ in heads)
        raise ConfigError(
            f"this {cfg.arch} has the heads {names}; prediction writes one label map per image. Use "
            "'fcnseg eval CHECKPOINT --data ROOT --save-predictions DIR' (a folder of label PNGs per head), or "
            "from Python: fcnseg.weights.checkpoint.load_model(CHECKPOINT).model(x) -> {head: logits}"
        )


class TorchNet:
    """A model handle's torch module run by PyTorch: ``net(pixels uint8 [N, H, W, 3]) -> float32 logits [N, C, H, W]``.

    BatchNorm (the small net's) is merged into the convolutions; the module runs on the device, in the
    precision and the layout of the handle's plan (:meth:`~fcnseg.weights.handle.LoadedModel.prepare`),
    under inference mode.
    """

    runtime = "torch"

    def __init__(self, handle: LoadedModel, *, compile: bool = False):
        check_predictable(handle)
        plan = handle.plan if handle.plan is not None else handle.prepare().plan
        self.handle = handle
        self.plan = plan
        self.device = plan.device
        self.precision = plan.precision
        self.model = fold_batch_norm(handle.model.eval()).to(self.device)
        self.config: ModelConfig = handle.config
        self.num_classes = handle.num_classes
        self.normalization = handle.normalization
        self.autocast_dtype = plan.autocast_dtype
        self.channels_last = plan.channels_last
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
        threads = f", {torch.get_num_threads()} threads" if self.device.type == "cpu" else ""
        return (
            f"{cfg.arch} ({cfg.backbone}, {self.num_classes} classes) on {self.device}, precision {self.precision}"
            f"{', channels_last' if self.channels_last else ''}{', compiled' if self.net is not self.model else ''}{threads} (PyTorch)"
        )


class OrtNet:
    """A model handle of an fcnseg ``.onnx`` file run by ONNX Runtime, or by OpenVINO where the handle's
    :attr:`~fcnseg.weights.handle.LoadedModel.engine` says so: ``net(pixels uint8 [N, H, W, 3]) -> float32
    logits [N, C, H, W]``.

    The normalisation is inside the graph. The geometry (context margin) and the memory model come
    from the architecture the file records, built on the meta device (no weights allocated).
    """

    runtime = "onnxruntime"

    def __init__(self, handle: LoadedModel, memory_arena: bool = True):
        check_predictable(handle)
        self.handle = handle
        self.runtime = handle.runtime
        self.onnx = handle.session(memory_arena)
        info = handle.onnx_info
        self.device = torch.device("cpu")
        self.precision = info.precision
        self.num_classes = info.num_classes
        self.normalization = info.normalization
        self.channels_last = False
        self.autocast_dtype = None
        self.config = handle.config
        with torch.device("meta"):
            self.skeleton = build_model(self.config).eval()  # shapes only: for the margin and the memory model
        self.margin = context_margin(self.skeleton)
        self.weight_bytes = info.weight_bytes

    @classmethod
    def from_file(cls, path: str | Path, threads: int | None = None, memory_arena: bool = True) -> "OrtNet":
        """The runtime of an fcnseg ``.onnx`` file (``threads``: ONNX Runtime's intra-op threads, default all cores)."""
        from fcnseg.weights.checkpoint import load_model
        from fcnseg.weights.onnx_format import OnnxNet

        handle = load_model(path)
        if threads is not None:
            handle._sessions[memory_arena] = OnnxNet(path, threads, memory_arena)
        return cls(handle, memory_arena=memory_arena)

    def __call__(self, pixels) -> torch.Tensor:
        x = np.asarray(pixels.numpy() if isinstance(pixels, torch.Tensor) else pixels)
        return self.onnx(np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32))

    def estimate(self, height: int, width: int, probabilities: bool = False) -> MemoryEstimate:
        """The memory model of one forward in this runtime (:func:`fcnseg.inference.memory.estimate_onnx`)."""
        return estimate_onnx(self.skeleton, height, width, self.precision, self.weight_bytes, probabilities=probabilities,
                             engine=self.runtime)

    def describe(self) -> str:
        info = self.handle.onnx_info
        source = self.handle.extra.get("exported_from")
        exported = f", the fp32 export of {source}" if source else ""
        return (f"{info.arch} ({info.backbone}, {self.num_classes} classes), {ENGINE_NAMES[self.runtime]} {self.precision}"
                f"{exported}, {self.onnx.threads} threads")


def runtime_for(handle: LoadedModel, *, compile: bool = False, memory_arena: bool = True):
    """The runtime that runs ``handle``: :class:`OrtNet` for an ONNX file (ONNX Runtime or OpenVINO, by its
    engine), else :class:`TorchNet`."""
    if handle.onnx_info is not None:
        return OrtNet(handle, memory_arena=memory_arena)
    return TorchNet(handle, compile=compile)


def select_runtime(runtime: str, model_path: str | Path, device: torch.device, precision: str) -> tuple[str, str]:
    """Check ``runtime`` (one of :data:`RUNTIMES`) against a model file; returns ``(runtime, why)``, where runtime
    is "auto" when a measurement decides (:func:`fcnseg.inference.runtime_choice.choose_runtime`).

    An ``.onnx`` file runs with ONNX Runtime or OpenVINO (asked for; under auto, ONNX Runtime unless the measurement
    picks OpenVINO); a checkpoint with PyTorch, or with
    ONNX Runtime or OpenVINO on its fp32 export (asked for, or chosen by auto on a CPU, where they are timed).
    Raises:
        ConfigError: a runtime that cannot run the model (PyTorch and an .onnx file, an ONNX runtime on CUDA or
            with a torch precision, OpenVINO where it is not installed).
    """
    from fcnseg.weights.openvino_net import INSTALL_HINT, openvino_available

    if runtime not in RUNTIMES:
        raise ConfigError(f"--runtime {runtime!r} is not one of {', '.join(RUNTIMES)}")
    onnx_file = is_onnx_file(model_path)
    if onnx_file and precision not in ("auto", "fp32"):
        raise ConfigError(f"{model_path}: an ONNX file runs in the precision it was written in; "
                          f"--precision {precision} is for checkpoints (quantize with 'fcnseg quantize' for int8)")
    if onnx_file and device.type != "cpu":
        raise ConfigError(f"{model_path}: ONNX files run on the CPU here; --device {device} is for checkpoints")
    if runtime == "torch" and onnx_file:
        raise ConfigError(f"{model_path}: an ONNX file runs with --runtime onnxruntime, openvino (or auto), not torch")
    if runtime == "openvino" and not openvino_available():
        raise ConfigError(f"{model_path}: --runtime openvino needs OpenVINO, which is not installed: {INSTALL_HINT}")
    if runtime in ("onnxruntime", "openvino") and not onnx_file:
        if device.type != "cpu":
            raise ConfigError(f"{model_path}: --runtime {runtime} runs on the CPU; --device {device} is for PyTorch")
        if precision not in ("auto", "fp32"):
            raise ConfigError(f"{model_path}: --runtime {runtime} runs a checkpoint's fp32 export; --precision "
                              f"{precision} is for PyTorch (quantize with 'fcnseg quantize' for int8)")
        return runtime, "asked for: the checkpoint's fp32 export, cached"
    if onnx_file:
        if runtime == "openvino":
            return "openvino", "asked for"
        return "onnxruntime", "an .onnx file runs with ONNX Runtime" + (" (--runtime openvino for OpenVINO)" if runtime == "auto" else "")
    if runtime == "torch":
        return "torch", "asked for"
    if device.type == "cpu":
        return "auto", "timed on this CPU: PyTorch, ONNX Runtime and OpenVINO where installed"
    return "torch", "a checkpoint runs with PyTorch"


__all__ = ["LAYOUTS", "RUNTIMES", "RUNTIME_HELP", "OrtNet", "TorchNet", "check_predictable", "runtime_for", "select_layout", "select_runtime"]
