"""Which device, number format and memory layout to compute in: one vocabulary and one resolver for training,
evaluation, prediction and the demo, decided from what the CPU has (its feature flags), never from what a
library says it "supports".

Precision is one of :data:`PRECISIONS`:

- ``auto``: the fastest format that keeps the results: float16 autocast on CUDA; bfloat16 autocast
  on a CPU that runs bf16 natively (AMX or AVX-512 BF16); float32 elsewhere (AVX2-only CPUs, where
  bf16 is emulated and hundreds of times slower, and AVX-512 CPUs without BF16, where it ran at half
  of float32's speed).
- ``fp32``: plain float32 everywhere.
- ``bf16`` / ``fp16``: that autocast dtype, forced (a warning where the CPU only emulates it).

Layout is one of :data:`LAYOUTS` (``auto``, ``channels_last``, ``contiguous``), the same words for
training (``train.layout``) and inference (``--layout``). :func:`resolve_execution` turns the three
choices into one :class:`ExecutionPlan`, each rule backed by a measurement (docs/inference.md, "How the
precision and layout are chosen"; docs/training.md). The choice is made on the machine that runs, at run
time, never fixed per machine a file was made on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
from typing import TYPE_CHECKING, Any, Mapping

from fcnseg.errors import ConfigError

if TYPE_CHECKING:
    import torch

# torch is imported inside the functions: the command line reads PRECISIONS to build its parser
# without paying torch's import time.

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
LAYOUTS = ("auto", "channels_last", "contiguous")
PURPOSES = ("inference", "training")

# Words earlier versions wrote into configs and checkpoints (train.amp), read as today's vocabulary.
LEGACY_PRECISIONS = {"off": "fp32", "fast": "auto"}
# train.channels_last (true | false | "auto") of earlier versions, read as train.layout.
LEGACY_LAYOUTS = {True: "channels_last", False: "contiguous", "auto": "auto"}


# --- what the CPU has -----------------------------------------------------------------------------

# From slowest to fastest bf16/fp32 kernels; the order is what an ISA cap lowers a kind along.
CPU_KINDS = ("other", "avx2", "avx512", "avx512_bf16", "amx")
RELEVANT_FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "avx_vnni")
NATIVE_BF16_KINDS = ("amx", "avx512_bf16")


@dataclasses.dataclass(frozen=True)
class CpuKind:
    """What the CPU's kernels can run, from its feature flags.

    Attributes:
        name: one of :data:`CPU_KINDS`: ``amx`` (flag ``amx_bf16``), ``avx512_bf16``, ``avx512`` (AVX-512
            without BF16, VNNI or not), ``avx2``, ``other``; lowered to ``avx2`` where an environment cap
            keeps torch's kernels below AVX-512.
        model: the CPU's model name (``AMD EPYC 7B13``), or ``"unknown CPU"``.
        flags: the flags among :data:`RELEVANT_FLAGS` the CPU has.
        cap: the environment setting that lowered the kind (``"ONEDNN_MAX_CPU_ISA=AVX2"``), or "".
    """

    name: str
    model: str = "unknown CPU"
    flags: frozenset = frozenset()
    cap: str = ""

    @property
    def native_bf16(self) -> bool:
        """True where bf16 runs in hardware (AMX, AVX-512 BF16): the only CPUs where bf16 beats float32."""
        return self.name in NATIVE_BF16_KINDS

    @property
    def avx512(self) -> bool:
        """True where torch's kernels run AVX-512 (with or without BF16)."""
        return self.name in ("avx512", "avx512_bf16", "amx")

    def describe(self) -> str:
        """``avx2: AMD EPYC 7B13`` (plus the cap that lowered it, if any)."""
        capped = f", capped by {self.cap}" if self.cap else ""
        return f"{self.name}: {self.model}{capped}"


def parse_cpuinfo(text: str) -> dict[str, Any]:
    """The first processor's ``model name`` and ``flags`` in a Linux ``/proc/cpuinfo`` text.

    Returns:
        ``{"model": str, "flags": set[str]}`` (``"unknown CPU"`` and an empty set where absent).
    """
    model, flags = "unknown CPU", None
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip()
        if key == "model name" and model == "unknown CPU":
            model = value.strip()
        elif key == "flags" and flags is None:
            flags = set(value.split())
    return {"model": model, "flags": flags or set()}


def _kind_of_flags(flags: set[str] | frozenset) -> str:
    if "amx_bf16" in flags:
        return "amx"
    if "avx512_bf16" in flags:
        return "avx512_bf16"
    if "avx512f" in flags:
        return "avx512"
    if "avx2" in flags:
        return "avx2"
    return "other"


def _cap_of_env(env: Mapping[str, str]) -> dict[str, str] | None:
    """The highest kind torch's kernels may run under ``ATEN_CPU_CAPABILITY`` / ``ONEDNN_MAX_CPU_ISA``
    (``DNNL_MAX_CPU_ISA``, its older name), as ``{"kind": ..., "setting": "NAME=value"}``; None uncapped."""
    caps = []
    aten = env.get("ATEN_CPU_CAPABILITY", "").strip().lower()
    if aten and not aten.startswith("avx512"):
        caps.append({"kind": "avx2", "setting": f"ATEN_CPU_CAPABILITY={aten}"})
    for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        isa = env.get(name, "").strip().upper()
        if not isa or isa in ("ALL", "DEFAULT"):
            continue
        if "AMX" in isa:
            kind = "amx"
        elif isa.startswith("AVX512_CORE_BF16") or isa.startswith("AVX512_CORE_FP16"):
            kind = "avx512_bf16"
        elif isa.startswith("AVX512"):
            kind = "avx512"
        else:  # SSE41, AVX, AVX2, AVX2_VNNI...: the convolutions run AVX2 code (or less)
            kind = "avx2"
        caps.append({"kind": kind, "setting": f"{name}={isa}"})
        break
    return min(caps, key=lambda cap: CPU_KINDS.index(cap["kind"])) if caps else None


def kind_from_flags(flags, model: str = "unknown CPU", env: Mapping[str, str] | None = None) -> CpuKind:
    """The :class:`CpuKind` of a CPU with these feature ``flags``, lowered by the ISA caps in ``env``.

    Args:
        flags: the CPU's feature flags (``/proc/cpuinfo`` words: ``avx2``, ``avx512f``, ``avx512_bf16``...).
        model: its model name.
        env: the environment to read the caps from (default ``os.environ``). A cap below AVX-512 makes the
            kind ``avx2`` (what the kernels will run), never higher than the flags say.
    """
    flags = frozenset(flags)
    name = _kind_of_flags(flags)
    cap = _cap_of_env(os.environ if env is None else env)
    setting = ""
    if cap is not None and CPU_KINDS.index(cap["kind"]) < CPU_KINDS.index(name):
        name, setting = cap["kind"], cap["setting"]
    return CpuKind(name=name, model=model, flags=frozenset(f for f in RELEVANT_FLAGS if f in flags), cap=setting)


def kind_from_cpuinfo(text: str, env: Mapping[str, str] | None = None) -> CpuKind:
    """The :class:`CpuKind` described by a ``/proc/cpuinfo`` text (see :func:`kind_from_flags`)."""
    info = parse_cpuinfo(text)
    return kind_from_flags(info["flags"], info["model"], env)


def kind_from_capability(capability: str, env: Mapping[str, str] | None = None) -> CpuKind:
    """The :class:`CpuKind` from ``torch.backends.cpu.get_cpu_capability()`` alone ("AVX512", "AVX2",
    "DEFAULT"...), where no cpuinfo is readable: it cannot tell AVX-512 BF16 apart, so bf16 is never
    taken for native from it."""
    import platform

    capability = capability.upper()
    flags = {"avx512f", "avx2"} if capability.startswith("AVX512") else {"avx2"} if capability == "AVX2" else set()
    return kind_from_flags(flags, platform.processor() or "unknown CPU", env)


def read_cpu_kind() -> CpuKind:
    """This machine's :class:`CpuKind`: ``/proc/cpuinfo``'s flags on Linux, torch's CPU capability elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        text = ""
    if parse_cpuinfo(text)["flags"]:
        return kind_from_cpuinfo(text)
    import torch

    return kind_from_capability(torch.backends.cpu.get_cpu_capability())


@functools.cache
def cpu_kind() -> CpuKind:
    """This machine's :class:`CpuKind`, read once per process (tests: ``cpu_kind.cache_clear()``, or
    monkeypatch ``fcnseg.precision.cpu_kind`` with a fake from :func:`kind_from_cpuinfo`)."""
    return read_cpu_kind()


def cpu_has_native_bf16() -> bool:
    """True when this CPU runs bf16 in hardware (AMX or AVX-512 BF16), where bf16 beats float32."""
    return cpu_kind().native_bf16


# --- devices and precisions -----------------------------------------------------------------------


def select_device(device: "str | torch.device" = "auto", local_rank: int = 0) -> "torch.device":
    """``"auto"`` -> this process's GPU (``cuda:local_rank``) when CUDA is present, else the CPU.

    Any other name is taken as given, and asking for CUDA where there is none is an error.
    """
    import torch

    if isinstance(device, torch.device):
        device = str(device)
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


def check_layout(layout, source: str = "layout") -> str:
    """``layout`` in today's vocabulary (legacy ``channels_last`` true/false translated); a ConfigError otherwise."""
    if isinstance(layout, bool) or layout == "auto":
        layout = LEGACY_LAYOUTS[layout]
    if layout not in LAYOUTS:
        raise ConfigError(f"{source} {layout!r} is not one of {', '.join(LAYOUTS)}")
    return layout


@dataclasses.dataclass(frozen=True)
class _Choice:
    value: str
    why: str


def _choose_precision(precision: str, device: "torch.device", kind: CpuKind | None, purpose: str = "inference") -> _Choice:
    """The concrete precision ``precision`` (checked) means on ``device`` for ``purpose``; ``kind`` None off the CPU."""
    if precision == "auto":
        if device.type == "cuda":
            return _Choice("fp16", "fp16 autocast on CUDA (tensor cores)")
        # AMX training too: benchmarks/train_paths.py on a quiet Sapphire Rapids Xeon, small net bf16 + channels_last
        # 1.43x / 1.50x fp32 contiguous (fp32 channels_last 1.26x / 1.19x), VGG16 FCN-8s bf16 1.46x (docs/training.md)
        if device.type == "cpu" and kind is not None and kind.native_bf16:
            return _Choice("bf16", "bf16 autocast: the CPU runs bf16 natively")
        if device.type == "cpu" and kind is not None and kind.avx512:
            return _Choice("fp32", "fp32: AVX-512 without BF16 only emulates bf16 (half of fp32's speed)")
        return _Choice("fp32", "fp32: no native bf16 on this CPU")
    if device.type == "cpu" and precision == "bf16" and not (kind is not None and kind.native_bf16):
        log.warning("bf16 was asked for but this CPU (%s) has no native bf16: it is emulated and slower than "
                    "float32 (precision 'auto' takes bf16 only where the CPU runs it natively: AMX or AVX-512 BF16)",
                    kind.describe() if kind else "unknown")
    if device.type == "cpu" and precision == "fp16":
        log.warning("fp16 on the CPU is emulated by most builds and rarely faster than fp32")
    return _Choice(precision, f"{precision} as asked")


def _choose_layout(layout: str, device: "torch.device", precision: str, kind: CpuKind | None, purpose: str) -> _Choice:
    """The concrete layout for a concrete ``precision``; every "auto" rule cites its measurement."""
    if layout != "auto":
        return _Choice(layout, f"{layout} as asked")
    if device.type != "cpu":
        if precision != "fp32":
            return _Choice("channels_last", "channels_last: cuDNN's autocast convolutions want NHWC")
        return _Choice("contiguous", "contiguous: fp32 on a GPU")
    if precision != "fp32":
        # oneDNN's bf16 convolutions want NHWC; in NCHW every layer pays a reorder (docs/inference.md,
        # docs/training.md: the small net trains 1.22x faster under bf16 channels_last on AVX-512 BF16)
        return _Choice("channels_last", f"channels_last: oneDNN's {precision} convolutions want NHWC")
    name = kind.name if kind is not None else "other"
    if name in ("avx512", "avx512_bf16", "amx"):
        if purpose == "training":
            # small net fp32: 1.43x (AVX-512 BF16 machine), 109 vs 100 img/s (AVX-512 VNNI, no BF16); AMX Xeon:
            # small net bf16 + channels_last 1.50x against bf16 contiguous 1.24x (benchmarks/train_paths.py)
            return _Choice("channels_last", "channels_last: AVX-512 trains the nets faster in NHWC (docs/training.md)")
        # inference fp32 on AVX-512: the transposed convolutions lose in NHWC (docs/inference.md)
        return _Choice("contiguous", "contiguous: fp32 inference on AVX-512 is no faster in NHWC (docs/inference.md)")
    if name == "avx2":
        if purpose == "training":
            # benchmarks/cpu_paths.py on an AVX2-only EPYC; VGG16's backward at 0.63x (docs/training.md)
            return _Choice("contiguous", "contiguous: AVX2 trains no faster in NHWC and VGG16's backward slows (docs/training.md)")
        return _Choice("channels_last", "channels_last: AVX2 runs fp32 inference faster in NHWC (docs/inference.md)")
    return _Choice("contiguous", "contiguous: no measurement on this kind of CPU, the default layout")


def select_layout(device: "torch.device", precision: str, layout: str = "auto", purpose: str = "inference") -> str:
    """The concrete layout ("channels_last" or "contiguous") of ``layout`` for a concrete ``precision`` on
    ``device``: the rule of :func:`resolve_execution`, without its log line."""
    layout = check_layout(layout)
    return _choose_layout(layout, device, precision, cpu_kind() if device.type == "cpu" else None, purpose).value


def resolve_precision(precision: str, device: "torch.device") -> str:
    """The concrete format (``fp32``, ``bf16`` or ``fp16``) that ``precision`` means on ``device``
    (the rule of :func:`resolve_execution`)."""
    precision = check_precision(precision)
    return _choose_precision(precision, device, cpu_kind() if device.type == "cpu" else None).value


def dtype_of(precision: str) -> "torch.dtype | None":
    """The autocast dtype of a concrete precision: ``bf16``/``fp16`` -> that dtype, ``fp32`` -> None."""
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)


def autocast_dtype(precision: str, device: "torch.device") -> "torch.dtype | None":
    """The autocast dtype ``precision`` means on ``device``, or None for plain float32."""
    return dtype_of(resolve_precision(precision, device))


# --- the plan -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ExecutionPlan:
    """Where and how a process computes: the one answer to precision and layout.

    Attributes:
        device: the torch device.
        precision: the concrete format: ``fp32``, ``bf16`` or ``fp16``.
        autocast_dtype: ``torch.bfloat16`` / ``torch.float16`` for autocast, None for plain float32.
        layout: ``channels_last`` (NHWC activations and weights) or ``contiguous`` (NCHW).
        cpu: the :class:`CpuKind` name (``"cuda"`` on a GPU).
        why: one human line: why this precision and layout.
    """

    device: "torch.device"
    precision: str
    autocast_dtype: "torch.dtype | None"
    layout: str
    cpu: str
    why: str
    cpu_model: str = ""  # the CPU's model name, for describe()

    @property
    def channels_last(self) -> bool:
        return self.layout == "channels_last"

    def describe(self) -> str:
        """``cpu (avx2: AMD EPYC 7B13), fp32, channels_last: <why>``: the line the logs print."""
        where = f"{self.device} ({self.cpu}: {self.cpu_model})" if self.device.type == "cpu" else str(self.device)
        return f"{where}, {self.precision}, {self.layout}: {self.why}"


_LOGGED: set[str] = set()


def log_once(message: str, level: int = logging.INFO) -> bool:
    """Log ``message`` on the ``fcnseg.precision`` logger the first time this process sees it; True if it did."""
    if message in _LOGGED:
        return False
    _LOGGED.add(message)
    log.log(level, "%s", message)
    return True


def resolve_execution(device: "str | torch.device" = "auto", precision: str = "auto", layout: str = "auto", *,
                      purpose: str = "inference", local_rank: int = 0) -> ExecutionPlan:
    """The device, precision and layout to run in, from what the hardware has (logged once per distinct plan).

    Args:
        device: "auto" (this process's GPU when CUDA is present, else the CPU), "cpu", "cuda", "cuda:N" or a
            ``torch.device``.
        precision: one of :data:`PRECISIONS` (legacy words translated).
        layout: one of :data:`LAYOUTS` (a legacy true/false translated).
        purpose: "inference" or "training": the fp32 layout rule on the CPU differs between them.
        local_rank: the GPU of this process under torchrun (with "auto"/"cuda").
    Returns:
        :class:`ExecutionPlan`. Rules (measurements in docs/inference.md and docs/training.md): CUDA -> fp16,
        channels_last; AMX / AVX-512 BF16 -> bf16 autocast, channels_last; AVX-512 without BF16 -> fp32,
        contiguous for inference, channels_last for training; AVX2 -> fp32, channels_last for inference,
        contiguous for training; other CPUs -> fp32, contiguous.
    Raises:
        ConfigError: an unknown device, precision, layout or purpose, or CUDA asked for where there is none.
    """
    if purpose not in PURPOSES:
        raise ConfigError(f"purpose {purpose!r} is not one of {', '.join(PURPOSES)}")
    precision = check_precision(precision)
    layout = check_layout(layout)
    dev = select_device(device, local_rank)
    kind = cpu_kind() if dev.type == "cpu" else None
    chosen_precision = _choose_precision(precision, dev, kind, purpose)
    chosen_layout = _choose_layout(layout, dev, chosen_precision.value, kind, purpose)
    plan = ExecutionPlan(
        device=dev,
        precision=chosen_precision.value,
        autocast_dtype=dtype_of(chosen_precision.value),
        layout=chosen_layout.value,
        cpu=kind.name if kind is not None else dev.type,
        why=f"{chosen_precision.why}; {chosen_layout.why}",
        cpu_model=kind.model if kind is not None else "",
    )
    log_once(f"{purpose} on {plan.describe()}")
    return plan


def autocast(device: "torch.device", dtype: "torch.dtype | None"):
    """``torch.autocast`` in ``dtype`` on ``device``, or a no-op context for float32 (``dtype`` None)."""
    import torch

    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def forward_in(module, x: "torch.Tensor", autocast_dtype: "torch.dtype | None" = None):
    """``module(x)`` under autocast in ``autocast_dtype`` (None: plain float32), its logits cast to float32 once
    autocast has ended (its cached weight casts freed by then), so that the argmax and the softmax see the same
    values in any precision: the one forward that evaluation, validation and prediction run. ``{head: logits}``
    of a net of several heads comes back as such."""
    with autocast(x.device, autocast_dtype):
        y = module(x)
    return {k: v.float() for k, v in y.items()} if isinstance(y, dict) else y.float()


def describe(dtype: "torch.dtype | None") -> str:
    """``torch.bfloat16 -> 'bf16'``, ``None -> 'fp32'``: the word the logs and reports use."""
    import torch

    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32")
