"""Which device and number format to compute in: one vocabulary for training, evaluation, prediction and the demo.

Precision is one of :data:`PRECISIONS`:

- ``auto``: the fastest format that keeps the results: float16 autocast on CUDA; bfloat16 autocast
  on a CPU that runs bf16 natively (AVX-512 BF16 or AMX); float32 elsewhere (AVX2-only CPUs, where
  bf16 is emulated and hundreds of times slower, and AVX-512 CPUs without BF16).
- ``fp32``: plain float32 everywhere.
- ``bf16`` / ``fp16``: that autocast dtype, forced (a warning where the CPU only emulates it).

The choice is made on the machine that runs, at run time, never fixed per machine a file was made on.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
import logging
from typing import TYPE_CHECKING

from fcnseg.errors import ConfigError

if TYPE_CHECKING:
    import torch

# torch is imported inside the functions: the command line reads PRECISIONS to build its parser
# without paying torch's import time.

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")

# Words earlier versions wrote into configs and checkpoints (train.amp), read as today's vocabulary.
LEGACY_PRECISIONS = {"off": "fp32", "fast": "auto"}


def cpu_has_native_bf16() -> bool:
    """True when oneDNN runs bf16 natively on this CPU (AVX-512 BF16 or AMX), where bf16 beats float32."""
    import torch

    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def select_device(device: str = "auto", local_rank: int = 0) -> "torch.device":
    """``"auto"`` -> this process's GPU (``cuda:local_rank``) when CUDA is present, else the CPU.

    Any other name is taken as given, and asking for CUDA where there is none is an error.
    """
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        device = f"cuda:{local_rank}"  # under torchrun, each process its own GPU
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ConfigError(f"device {device!r} is not a device name (auto, cpu, cuda, cuda:N)") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} was asked for but CUDA is not available on this machine")
    return dev


def check_precision(precision: str, source: str = "precision") -> str:
    """``precision`` in today's vocabulary (legacy words translated); a ConfigError for anything else."""
    precision = LEGACY_PRECISIONS.get(precision, precision)
    if precision not in PRECISIONS:
        raise ConfigError(f"{source} {precision!r} is not one of {', '.join(PRECISIONS)}")
    return precision


def resolve_precision(precision: str, device: "torch.device") -> str:
    """The concrete format (``fp32``, ``bf16`` or ``fp16``) that ``precision`` means on ``device``."""
    precision = check_precision(precision)
    if precision == "auto":
        if device.type == "cuda":
            return "fp16"
        return "bf16" if device.type == "cpu" and cpu_has_native_bf16() else "fp32"
    if device.type == "cpu" and precision == "bf16" and not cpu_has_native_bf16():
        log.warning("bf16 was asked for but this CPU has no native bf16: it is emulated and much slower than "
                    "float32 (precision 'auto' takes bf16 only where the CPU runs it natively)")
    if device.type == "cpu" and precision == "fp16":
        log.warning("fp16 on the CPU is emulated by most builds and rarely faster than fp32")
    return precision


def dtype_of(precision: str) -> "torch.dtype | None":
    """The autocast dtype of a concrete precision: ``bf16``/``fp16`` -> that dtype, ``fp32`` -> None."""
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)


def autocast_dtype(precision: str, device: "torch.device") -> "torch.dtype | None":
    """The autocast dtype ``precision`` means on ``device``, or None for plain float32."""
    return dtype_of(resolve_precision(precision, device))


def autocast(device: "torch.device", dtype: "torch.dtype | None"):
    """``torch.autocast`` in ``dtype`` on ``device``, or a no-op context for float32 (``dtype`` None)."""
    import torch

    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def describe(dtype: "torch.dtype | None") -> str:
    """``torch.bfloat16 -> 'bf16'``, ``None -> 'fp32'``: the word the logs and reports use."""
    import torch

    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32")


LAYOUTS = ("auto", "channels_last", "contiguous")


@dataclass(frozen=True)
class ExecutionPlan:
    """How a model runs here: device, concrete precision, autocast dtype and memory layout, and why."""

    device: "torch.device"
    precision: str
    autocast_dtype: "torch.dtype | None"
    layout: str
    cpu: str
    why: str

    @property
    def channels_last(self) -> bool:
        return self.layout == "channels_last"

    def describe(self) -> str:
        return f"{self.device}, {self.precision}, {self.layout}"


def resolve_execution(device="auto", precision: str = "auto", layout: str = "auto", *, purpose: str = "inference",
                      local_rank: int = 0) -> ExecutionPlan:
    """The one plan for ``device``, ``precision`` and ``layout`` on this machine."""
    import torch

    dev = device if isinstance(device, torch.device) else select_device(str(device), local_rank)
    concrete = resolve_precision(precision, dev)
    if layout not in LAYOUTS:
        raise ConfigError(f"layout {layout!r} is not one of {', '.join(LAYOUTS)}")
    if layout == "auto":
        if concrete != "fp32":
            layout = "channels_last"
        elif dev.type != "cpu":
            layout = "contiguous"
        else:
            layout = "contiguous" if torch.backends.cpu.get_cpu_capability().startswith("AVX512") else "channels_last"
    return ExecutionPlan(dev, concrete, dtype_of(concrete), layout, dev.type, "placeholder")
