"""Which device and number format to compute in: CUDA when present, bf16 on CPUs that have it natively."""

from __future__ import annotations

import torch

from fcnseg.errors import ConfigError


def cpu_has_native_bf16() -> bool:
    """True when oneDNN runs bf16 natively on this CPU (AVX-512 BF16 or AMX), where bf16 beats float32."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def select_device(device: str = "auto") -> torch.device:
    """``"auto"`` -> CUDA when present, else CPU; otherwise the named device (an error if unavailable)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} was asked for but CUDA is not available on this machine")
    return dev
