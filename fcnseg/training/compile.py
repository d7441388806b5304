"""Whether to ``torch.compile`` the training step (``train.compile``: auto | on | off), weighed against the run's length.

``torch.compile`` pays its compile once, on the first update, and saves a fraction of every later one where it
is faster at all. ``auto`` compiles only where a measurement on this kind of CPU (and this precision) found it
faster, and only when the run is long enough to earn its compile back: the break-even length is the compile
seconds over the fraction of an update saved. Measurements: ``benchmarks/train_paths.py``, docs/training.md.
"""

from __future__ import annotations

import dataclasses
import math
import os
import shutil

from fcnseg.errors import ConfigError
from fcnseg.config import COMPILE_SETTINGS, LEGACY_COMPILE, check_compile_setting  # the setting's vocabulary


@dataclasses.dataclass(frozen=True)
class CompileCost:
    """What ``torch.compile`` of the training step did on one kind of CPU, in one precision.

    Attributes:
        speedup: eager seconds per update over compiled seconds per update, steady state (> 1: faster).
        compile_seconds: the first compiled update's seconds less a steady one's (the compile).
        source: where the figure comes from (benchmark, CPU), for the log.
    """

    speedup: float
    compile_seconds: float
    source: str

    def break_even_seconds(self) -> float:
        """Seconds of eager training after which the compiled run has caught up (inf where it never does)."""
        if self.speedup <= 1:
            return math.inf
        return self.compile_seconds / (1 - 1 / self.speedup)


# (CPU kind, precision) -> what benchmarks/train_paths.py measured there, on the nets' fastest eager layout.
# A pair not here has not been measured: ``auto`` trains eagerly on it.
# The small net's update, benchmarks/train_paths.py on a Sapphire Rapids Xeon (AMX), 2 cores, a heavily loaded
# machine (load average ~27): fp32 contiguous compiled 1.04x its eager step after a 339-s compile; bf16 +
# channels_last compiled 1.38x its eager step (0.52 vs 0.37 img/s) after 652 s, no faster than eager fp32
# channels_last, the AMX default (docs/training.md). On the AVX2 EPYC: 0.95x; VGG16 on AVX-512 BF16: 0.84x.
MEASURED: dict[tuple[str, str], CompileCost] = {
    ("amx", "fp32"): CompileCost(speedup=1.04, compile_seconds=339.0, source="small net, AMX Xeon"),
    ("amx", "bf16"): CompileCost(speedup=1.38, compile_seconds=652.0, source="small net, AMX Xeon"),
    ("avx2", "fp32"): CompileCost(speedup=0.95, compile_seconds=29.0, source="small net, AVX2 EPYC"),
    ("avx512_bf16", "bf16"): CompileCost(speedup=0.84, compile_seconds=31.0, source="VGG16 FCN-8s, AVX-512 BF16 EPYC"),
}


@dataclasses.dataclass(frozen=True)
class CompileDecision:
    """Whether to compile, and the one line the log prints about it."""

    compile: bool
    why: str
    waits: bool = False  # True: auto could not decide without the run's length; ask again once it is known


def compile_available() -> str:
    """"" where ``torch.compile`` can build CPU code here, else why not (its inductor backend needs a C++ compiler)."""
    import torch

    if not hasattr(torch, "compile"):
        return f"torch {torch.__version__} has no torch.compile"
    compiler = os.environ.get("CXX", "c++")
    if shutil.which(compiler) is None and shutil.which("g++") is None and shutil.which("clang++") is None:
        return f"no C++ compiler ({compiler}, g++ or clang++) on the PATH for torch.compile's inductor"
    return ""


def decide_compile(setting: str, cpu: str, precision: str, expected_seconds: float | None,
                   unavailable: str = "", measured: dict[tuple[str, str], CompileCost] | None = None) -> CompileDecision:
    """Whether to ``torch.compile`` the training step.

    Args:
        setting: ``train.compile``: "on" (compile), "off" (eager), "auto" (compile where it pays).
        cpu: the plan's CPU kind (``fcnseg.precision.ExecutionPlan.cpu``: amx, avx2, ..., or cuda).
        precision: the plan's concrete precision (fp32, bf16, fp16).
        expected_seconds: how long the run is expected to train (its time budget, or its updates times the
            first update's seconds); None where not known yet.
        unavailable: why torch.compile cannot run here ("" where it can: :func:`compile_available`).
        measured: (kind, precision) -> :class:`CompileCost` (default :data:`MEASURED`).
    Returns:
        :class:`CompileDecision`.
    Raises:
        ConfigError: "on" where torch.compile cannot run.
    """
    setting = check_compile_setting(setting)
    if setting == "off":
        return CompileDecision(False, "torch.compile off (train.compile: off)")
    if setting == "on":
        if unavailable:
            raise ConfigError(f"train.compile: on was asked for, but {unavailable}; set train.compile: auto or off")
        return CompileDecision(True, "torch.compile on (train.compile: on)")
    if unavailable:
        return CompileDecision(False, f"eager: {unavailable}")
    cost = (MEASURED if measured is None else measured).get((cpu, precision))
    if cost is None:
        return CompileDecision(False, f"eager: torch.compile was not measured on this kind of CPU ({cpu}, {precision})")
    if cost.speedup <= 1:
        return CompileDecision(False, f"eager: torch.compile measured {cost.speedup:.2f}x eager on {cpu} in {precision} "
                                      f"({cost.source}), so it never pays")
    even = cost.break_even_seconds()
    if expected_seconds is None:
        return CompileDecision(False, "eager until the run's length is known", waits=True)
    if expected_seconds < even:
        return CompileDecision(False, f"eager: torch.compile ({cost.speedup:.2f}x after a {cost.compile_seconds:.0f}-s "
                                      f"compile, {cost.source}) pays after {even / 60:.1f} min; this run is "
                                      f"{expected_seconds / 60:.1f} min")
    return CompileDecision(True, f"torch.compile: {cost.speedup:.2f}x after a {cost.compile_seconds:.0f}-s compile "
                                 f"({cost.source}) pays after {even / 60:.1f} min; this run is {expected_seconds / 60:.1f} min")


__all__ = ["COMPILE_SETTINGS", "MEASURED", "CompileCost", "CompileDecision", "check_compile_setting",
           "compile_available", "decide_compile"]
