"""``--runtime auto``: time the runtimes that can run a model file on the first input, keep the fastest that agrees.

The candidates are PyTorch in the formats this CPU runs natively (fp32, and bf16 where the CPU has it in
hardware: :func:`fcnseg.precision.cpu_kind`), in both layouts; ONNX Runtime fp32 and, when installed,
OpenVINO fp32, on the checkpoint's ONNX export (written once into the cache). Each runs the first input
(its centre, at most :data:`MAX_SIDE` pixels a side) a few times; the fastest whose labels agree with
PyTorch fp32's on at least :data:`MIN_AGREEMENT` of the pixels wins. The choice and the exported graph are
kept in the user's cache folder (:func:`cache_dir`) per model file, CPU (model name, flags, threads) and
library versions, so later runs pay nothing; a corrupt cache entry is ignored and rewritten.

An ``.onnx`` file (fp32, or ``fcnseg quantize``'s int8) is measured the same way between ONNX Runtime and,
when installed, OpenVINO, held against ONNX Runtime's labels (:data:`MIN_AGREEMENT`, or
:data:`MIN_AGREEMENT_INT8` for int8, which two engines round differently).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from fcnseg.errors import ConfigError, FcnsegError
from fcnseg.files import atomic_write_text
from fcnseg.inference.runtime import RUNTIMES
from fcnseg.weights.handle import ENGINE_NAMES, LoadedModel

log = logging.getLogger(__name__)

MIN_AGREEMENT = 0.999  # fraction of pixels whose label must match the reference's (PyTorch fp32, or ONNX Runtime for an .onnx)
MIN_AGREEMENT_INT8 = 0.995  # the same for an int8 .onnx file: two int8 engines round near-ties differently
MAX_SIDE = 512  # the timed input: the first image's centre, at most this many pixels a side
DEFAULT_SAMPLE = (500, 500)  # the timed size where no input is known in advance (serve)
REPEATS = 3  # timed runs per candidate after one warm-up; the median counts
CACHE_VERSION = 1


# --- the candidates -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """One way to run a model: ``runtime`` (torch, onnxruntime, openvino), ``precision`` and (PyTorch) ``layout``."""

    runtime: str
    precision: str = "fp32"
    layout: str = ""

    @property
    def label(self) -> str:
        """``torch bf16 channels_last``, ``onnxruntime fp32``: the words of the log line and the cache."""
        return " ".join(part for part in (self.runtime, self.precision, self.layout) if part)


REFERENCE = Candidate("torch", "fp32", "contiguous")  # what every candidate's labels are held against


def candidates(kind, *, openvino: bool, precision: str = "auto", layout: str = "auto") -> list[Candidate]:
    """The ways to run a checkpoint on a CPU of ``kind`` (:class:`~fcnseg.precision.CpuKind`), reference first.

    ``precision``/``layout`` other than "auto" narrow PyTorch's formats to the one asked for; a precision
    other than fp32, or a layout, leaves PyTorch alone (the ONNX runtimes run fp32 in their own layouts).
    """
    if precision == "auto":
        precisions = ["fp32"] + (["bf16"] if kind.native_bf16 else [])
    else:
        precisions = [precision]
    layouts = ["contiguous", "channels_last"] if layout == "auto" else [layout]
    found = [Candidate("torch", p, l) for p in precisions for l in layouts]
    if precision in ("auto", "fp32") and layout == "auto":
        found.append(Candidate("onnxruntime"))
        if openvino:
            found.append(Candidate("openvino"))
    return found


def onnx_candidates(precision: str, *, openvino: bool) -> list[Candidate]:
    """The runtimes of an ``.onnx`` file written in ``precision`` (fp32, int8): ONNX Runtime (the reference) and,
    when installed, OpenVINO."""
    return [Candidate("onnxruntime", precision)] + ([Candidate("openvino", precision)] if openvino else [])


def min_agreement(precision: str) -> float:
    """The fraction of labels a candidate must share with the reference: :data:`MIN_AGREEMENT_INT8` for int8."""
    return MIN_AGREEMENT_INT8 if precision == "int8" else MIN_AGREEMENT


# --- the cache ------------------------------------------------------------------------------------


def default_runtime() -> str:
    """``--runtime``'s default: ``$FCNSEG_RUNTIME`` where set (e.g. ``torch`` to skip the measurement everywhere), else "auto".

    Raises:
        ConfigError: ``$FCNSEG_RUNTIME`` is not one of :data:`RUNTIMES`.
    """
    value = os.environ.get("FCNSEG_RUNTIME", "").strip() or "auto"
    if value not in RUNTIMES:
        raise ConfigError(f"FCNSEG_RUNTIME={value!r} is not one of {', '.join(RUNTIMES)}")
    return value


def cache_dir() -> Path:
    """The user's cache folder for fcnseg: ``$FCNSEG_CACHE_DIR``, else ``$XDG_CACHE_HOME/fcnseg``, else ``~/.cache/fcnseg``."""
    if os.environ.get("FCNSEG_CACHE_DIR"):
        return Path(os.environ["FCNSEG_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "fcnseg"


def library_versions() -> dict[str, str | None]:
    """The versions a choice depends on: fcnseg, torch, onnx, onnxruntime, openvino (None where absent)."""
    import importlib.metadata

    import fcnseg

    found: dict[str, str | None] = {"fcnseg": fcnseg.__version__, "torch": torch.__version__}
    for name in ("onnx", "onnxruntime", "openvino"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def file_identity(path: str | Path) -> dict:
    """What names one version of a model file without reading it: its absolute path, size and modification time."""
    path = Path(path).resolve()
    stat = path.stat()
    return {"path": str(path), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def cpu_identity(kind) -> dict:
    """The CPU a timing stands for: model name, kind, relevant flags, ISA cap and the threads the runtimes use."""
    from fcnseg.weights.onnx_format import available_cores

    return {"model": kind.model, "kind": kind.name, "flags": sorted(kind.flags), "cap": kind.cap,
            "torch_threads": torch.get_num_threads(), "cores": available_cores()}


def _digest(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:32]


def _read_entry(path: Path, key: dict) -> dict | None:
    """The cached entry at ``path`` if it is whole and made for ``key``; None otherwise (a corrupt one is logged)."""
    if not path.is_file():
        return None
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
        if entry["key"] != key:
            return None
        Candidate(**entry["chosen"])
        return entry
    except (OSError, ValueError, KeyError, TypeError) as e:
        log.info("ignoring the unreadable runtime choice %s (%s: %s); measuring again", path, type(e).__name__, e)
        return None


# --- measuring ------------------------------------------------------------------------------------


def median_time(run: Callable[[], torch.Tensor], repeats: int = REPEATS) -> tuple[float, torch.Tensor]:
    """One warm-up call of ``run`` (its first-call costs: compiling, packing weights), then the median of
    ``repeats`` timed calls; returns ``(seconds, logits of the last call)``."""
    logits = run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        logits = run()
        times.append(time.perf_counter() - start)
    return statistics.median(times), logits


Measure = Callable[[Candidate, Callable[[], torch.Tensor]], tuple[float, torch.Tensor]]


def _measure_default(candidate: Candidate, run: Callable[[], torch.Tensor]) -> tuple[float, torch.Tensor]:
    return median_time(run)


def sample_image(image: np.ndarray | None, max_side: int = MAX_SIDE) -> np.ndarray:
    """The input the candidates are timed on: ``image``'s centre, at most ``max_side`` pixels a side
    (uint8 ``[H, W, 3]``); a fixed random picture of :data:`DEFAULT_SAMPLE` where no input is known."""
    if image is None:
        return np.random.default_rng(0).integers(0, 256, (*DEFAULT_SAMPLE, 3), dtype=np.uint8)
    h, w = image.shape[:2]
    top, left = max(0, (h - max_side) // 2), max(0, (w - max_side) // 2)
    return np.ascontiguousarray(image[top : top + max_side, left : left + max_side, :3])


@dataclass
class RuntimeChoice:
    """What :func:`choose_runtime` decided.

    Attributes:
        handle: the model handle to run: the checkpoint's (prepared in the chosen precision and layout) or its
            cached ONNX export's (its :attr:`~fcnseg.weights.handle.LoadedModel.engine` set).
        chosen: the :class:`Candidate` chosen.
        why: one line: how it was chosen, with the times.
        times: candidate label -> median seconds of one forward (empty where nothing was measured).
        agreement: candidate label -> fraction of pixels whose label matched PyTorch fp32's.
        refused: labels of candidates left out (disagreeing, or failing to run) -> the reason.
        shape: height and width timed on.
        cached: True when the choice came from the cache.
        reference: what the labels were held against (PyTorch fp32; ONNX Runtime for an .onnx file).
        threshold: the agreement a candidate needed (:func:`min_agreement`).
    """

    handle: LoadedModel
    chosen: Candidate
    why: str
    times: dict[str, float] = field(default_factory=dict)
    agreement: dict[str, float] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    shape: tuple[int, int] | None = None
    cached: bool = False
    reference: str = "PyTorch fp32"
    threshold: float = MIN_AGREEMENT

    @property
    def log_level(self) -> int:
        """INFO where runtimes were timed (now or from the cache), DEBUG where nothing was to choose."""
        return logging.INFO if self.times else logging.DEBUG


# --- the graph ------------------------------------------------------------------------------------


def exported_graph(handle: LoadedModel, folder: Path | None = None) -> Path:
    """The checkpoint's fp32 ONNX export in the cache (written on first use, atomically; an unreadable one rewritten).

    Raises:
        FcnsegError: the export needs onnx and onnxscript, and they are missing.
    """
    from fcnseg.inference.export import OPSET, export_onnx
    from fcnseg.weights.checkpoint import load_model

    folder = Path(folder) if folder is not None else cache_dir()
    versions = library_versions()
    key = {"model": file_identity(handle.path), "torch": versions["torch"], "onnx": versions["onnx"],
           "fcnseg": versions["fcnseg"], "opset": OPSET}
    path = folder / "graphs" / f"{_digest(key)}.onnx"
    if path.is_file():
        try:
            load_model(path)
            return path
        except FcnsegError as e:
            log.info("rewriting the unreadable cached graph %s (%s)", path, e)
    path.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    export_onnx(handle, path)
    log.info("%s: exported to %s for ONNX runtimes in %.1f s (done once per model file)", handle.path, path,
             time.perf_counter() - start)
    return path


def onnx_handle(graph: Path, engine: str, source: LoadedModel) -> LoadedModel:
    """The handle of the cached export ``graph`` run by ``engine``, naming the checkpoint it came from."""
    from fcnseg.weights.checkpoint import load_model

    handle = load_model(graph)
    handle.engine = engine
    handle.extra["exported_from"] = str(source.path)
    return handle


def _torch_plan(candidate: Candidate, kind):
    from fcnseg.precision import ExecutionPlan, dtype_of

    return ExecutionPlan(device=torch.device("cpu"), precision=candidate.precision,
                         autocast_dtype=dtype_of(candidate.precision), layout=candidate.layout, cpu=kind.name,
                         why=f"{candidate.precision}, {candidate.layout}: chosen by --runtime auto (timed)",
                         cpu_model=kind.model)


def _place(handle: LoadedModel, candidate: Candidate, kind) -> LoadedModel:
    """``handle`` set to run ``candidate`` (PyTorch): its plan and its weights' layout."""
    handle.plan = _torch_plan(candidate, kind)
    if handle.model is not None:
        handle.model.to(torch.device("cpu"))
        fmt = torch.channels_last if candidate.layout == "channels_last" else torch.contiguous_format
        handle.model.to(memory_format=fmt)
    return handle


# --- the choice -----------------------------------------------------------------------------------


def forced(handle: LoadedModel, runtime: str, *, folder: Path | None = None) -> RuntimeChoice:
    """``--runtime onnxruntime|openvino`` for a checkpoint: its cached fp32 export run by that runtime."""
    graph = exported_graph(handle, folder)
    return RuntimeChoice(onnx_handle(graph, runtime, handle), Candidate(runtime), f"{runtime} as asked (fp32, the cached export)")


def choose_runtime(
    handle: LoadedModel,
    image: np.ndarray | None = None,
    *,
    runtime: str | None = None,
    device: str = "auto",
    precision: str = "auto",
    layout: str = "auto",
    compile: bool = False,
    folder: str | Path | None = None,
    measure: Measure | None = None,
) -> RuntimeChoice:
    """Decide what runs ``handle`` (a model loaded from a file) and give the handle to run.

    Args:
        handle: :func:`fcnseg.weights.checkpoint.load_model`'s result.
        image: the first input, uint8 RGB ``[H, W, 3]`` (None: a fixed random one of :data:`DEFAULT_SAMPLE`).
        runtime: one of :data:`RUNTIMES` (None: :func:`default_runtime`); "auto" measures where there is a choice
            (a checkpoint of one RGB input and one head, on the CPU, not compiled; an .onnx file where OpenVINO
            is installed); the others force one.
        device, precision, layout: as for :meth:`~fcnseg.weights.handle.LoadedModel.prepare`; other than "auto"
            they narrow the candidates (:func:`candidates`).
        folder: the cache folder (default :func:`cache_dir`).
        measure: ``measure(candidate, run) -> (seconds, logits)`` where ``run()`` gives one forward's logits;
            default :func:`median_time`. Tests pass fake timings.
    Returns:
        :class:`RuntimeChoice`; its ``why`` is logged by the caller.
    Raises:
        ConfigError: a runtime that cannot run the model (PyTorch and an .onnx file, an ONNX runtime on CUDA
            or with a torch precision), or OpenVINO asked for where it is not installed.
    """
    from fcnseg.inference.runtime import check_predictable, select_runtime
    from fcnseg.precision import check_layout, check_precision, cpu_kind, select_device
    from fcnseg.weights.openvino_net import openvino_available

    onnx_file = handle.onnx_info is not None
    if runtime is None:
        runtime = default_runtime()
        if runtime == "torch" and onnx_file:  # $FCNSEG_RUNTIME=torch means "measure nothing": ONNX Runtime here
            runtime = "onnxruntime"
    precision, layout = check_precision(precision), check_layout(layout)
    dev = select_device(device)
    name, why = select_runtime(runtime, handle.path if handle.path is not None else "model.pt", dev, precision)
    try:
        check_predictable(handle)
        predictable = True
    except ConfigError:
        predictable = False
    if onnx_file:
        found = onnx_candidates(handle.precision, openvino=openvino_available())
        if runtime != "auto" or not predictable or handle.path is None or len(found) < 2:
            handle.engine = name
            if runtime == "auto":  # nothing timed: say why
                why = "ONNX Runtime: " + ("OpenVINO is not installed" if len(found) < 2 else "a model not loaded from a file"
                                         if handle.path is None else "a net of several inputs or heads is not timed")
            return RuntimeChoice(handle, Candidate(name, handle.precision), why)
        kind = cpu_kind()

        def measured():
            return _measure_onnx(handle, found, sample_image(image), measure or _measure_default)

        return _cached_or_measured(handle, found, kind, Path(folder) if folder is not None else cache_dir(),
                                   measured, lambda chosen: _engine(handle, chosen))
    if name != "auto":
        if name == "torch":
            handle.prepare(device, precision, layout)
            return RuntimeChoice(handle, Candidate("torch", handle.plan.precision, handle.plan.layout), why)
        return forced(handle, name, folder=Path(folder) if folder is not None else None)
    kind = cpu_kind()
    found = candidates(kind, openvino=openvino_available(), precision=precision, layout=layout)
    if not predictable or compile or handle.path is None or len(found) < 2:
        handle.prepare(device, precision, layout)
        reason = ("compiled (--compile)" if compile else "a model not loaded from a file" if handle.path is None
                  else "only PyTorch runs a net of several inputs or heads" if not predictable
                  else "the only candidate the flags leave")
        return RuntimeChoice(handle, Candidate("torch", handle.plan.precision, handle.plan.layout),
                             f"PyTorch: {reason}")
    folder = Path(folder) if folder is not None else cache_dir()

    def measured():
        return _measure(handle, found, sample_image(image), kind, folder, measure or _measure_default)

    return _cached_or_measured(handle, found, kind, folder, measured,
                               lambda chosen: _handle_for(handle, chosen, kind, folder))


def _cached_or_measured(handle: LoadedModel, found: list[Candidate], kind, folder: Path,
                        measured: Callable[[], RuntimeChoice], handle_for: Callable[[Candidate], LoadedModel]) -> RuntimeChoice:
    """The choice among ``found`` for ``handle``'s file on this CPU: cached (``handle_for(chosen)`` gives its handle),
    else ``measured()`` and cached, per model file, CPU, library versions and candidates."""
    key = {"cache": CACHE_VERSION, "model": file_identity(handle.path), "cpu": cpu_identity(kind),
           "versions": library_versions(), "candidates": [c.label for c in found]}
    entry_path = folder / "runtime" / f"{_digest(key)}.json"
    entry = _read_entry(entry_path, key)
    if entry is not None:
        chosen = Candidate(**entry["chosen"])
        choice = RuntimeChoice(handle_for(chosen), chosen, "", entry["times"], entry["agreement"], entry["refused"],
                               tuple(entry["shape"]), cached=True, **_reference(handle))
        choice.why = _explain(choice, f"cached in {entry_path}")
        return choice
    choice = measured()
    entry_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(json.dumps({"key": key, "chosen": asdict(choice.chosen), "times": choice.times,
                                  "agreement": choice.agreement, "refused": choice.refused,
                                  "shape": list(choice.shape)}, indent=1), entry_path)
    choice.why = _explain(choice, f"measured now, cached in {entry_path}")
    return choice


def _reference(handle: LoadedModel) -> dict:
    """What ``handle``'s candidates are held against, and how closely (:class:`RuntimeChoice`'s last two fields)."""
    if handle.onnx_info is not None:
        return {"reference": f"ONNX Runtime {handle.precision}", "threshold": min_agreement(handle.precision)}
    return {"reference": "PyTorch fp32", "threshold": MIN_AGREEMENT}


def _engine(handle: LoadedModel, chosen: Candidate) -> LoadedModel:
    """``handle`` (an .onnx file's) set to be run by ``chosen``'s runtime."""
    handle.engine = chosen.runtime
    return handle


def _handle_for(handle: LoadedModel, chosen: Candidate, kind, folder: Path) -> LoadedModel:
    if chosen.runtime == "torch":
        return _place(handle, chosen, kind)
    return onnx_handle(exported_graph(handle, folder), chosen.runtime, handle)


def _time_candidates(found: list[Candidate], pixels: np.ndarray, net_for: Callable[[Candidate], Callable],
                     measure: Measure, threshold: float, refused: dict[str, str]) -> tuple[dict, dict]:
    """Time every candidate of ``found`` not already in ``refused`` on ``pixels`` (uint8 ``[H, W, 3]``), each
    run by ``net_for(candidate)``; the first one timed is the reference the others' labels are held against.
    Adds to ``refused`` those that fail to run or agree on less than ``threshold`` of the labels; returns
    ``(times, agreement)`` by candidate label."""
    batch = torch.from_numpy(pixels)[None]
    times: dict[str, float] = {}
    agreement: dict[str, float] = {}
    reference = None
    for candidate in found:
        if candidate.label in refused:
            continue
        net = None
        try:
            net = net_for(candidate)
            seconds, logits = measure(candidate, lambda net=net: net(batch))
        except (FcnsegError, RuntimeError, ValueError) as e:  # a runtime that cannot run this net here is left out
            refused[candidate.label] = f"failed: {type(e).__name__}: {str(e)[:200]}"
            log.info("--runtime auto: %s left out (%s)", candidate.label, refused[candidate.label])
            continue
        finally:
            del net
        labels = logits[0].float().max(0).indices
        if reference is None:
            reference = labels
        agree = float((labels == reference).float().mean())
        times[candidate.label], agreement[candidate.label] = float(seconds), agree
        if agree < threshold:
            refused[candidate.label] = f"agreement {agree:.2%} < {threshold:.1%}"
    return times, agreement


def _chosen(handle: LoadedModel, found: list[Candidate], pixels: np.ndarray, times: dict, agreement: dict,
            refused: dict, handle_for: Callable[[Candidate], LoadedModel]) -> RuntimeChoice:
    """The fastest agreeing candidate's :class:`RuntimeChoice` (``why`` left for :func:`_explain`).

    Raises:
        FcnsegError: no candidate ran and agreed.
    """
    eligible = [c for c in found if c.label in times and c.label not in refused]
    if not eligible:
        raise FcnsegError(f"{handle.path}: no runtime ran this model on a {pixels.shape[0]}x{pixels.shape[1]} image "
                          f"({'; '.join(f'{k}: {v}' for k, v in refused.items())})")
    chosen = min(eligible, key=lambda c: times[c.label])
    return RuntimeChoice(handle_for(chosen), chosen, "", times, agreement, refused,
                         (int(pixels.shape[0]), int(pixels.shape[1])), **_reference(handle))


def _measure(handle: LoadedModel, found: list[Candidate], pixels: np.ndarray, kind, folder: Path,
             measure: Measure) -> RuntimeChoice:
    """A checkpoint's candidates timed on ``pixels`` (uint8 ``[H, W, 3]``); the fastest agreeing with PyTorch fp32 wins."""
    from fcnseg.inference.runtime import OrtNet, TorchNet

    refused: dict[str, str] = {}
    graph: Path | None = None
    if any(c.runtime != "torch" for c in found):
        # Before PyTorch's candidates: the export traces the module as loaded (a channels_last one specialises the shapes).
        try:
            graph = exported_graph(handle, folder)
        except (FcnsegError, RuntimeError, ValueError) as e:
            reason = f"no ONNX export: {type(e).__name__}: {str(e)[:200]}"
            refused.update({c.label: reason for c in found if c.runtime != "torch"})
            log.info("--runtime auto: ONNX runtimes left out (%s)", reason)

    def net_for(candidate: Candidate):
        if candidate.runtime == "torch":  # the first is PyTorch fp32, the reference (candidates() puts it first)
            return TorchNet(_place(handle, candidate, kind))
        return OrtNet(onnx_handle(graph, candidate.runtime, handle))

    times, agreement = _time_candidates(found, pixels, net_for, measure, MIN_AGREEMENT, refused)
    return _chosen(handle, found, pixels, times, agreement, refused,
                   lambda chosen: _handle_for(handle, chosen, kind, folder))


def _measure_onnx(handle: LoadedModel, found: list[Candidate], pixels: np.ndarray, measure: Measure) -> RuntimeChoice:
    """An .onnx file's runtimes timed on ``pixels``; the fastest agreeing with ONNX Runtime (the first) wins."""
    from fcnseg.inference.runtime import OrtNet
    from fcnseg.weights.checkpoint import load_model

    def net_for(candidate: Candidate):  # a handle of its own per engine: the chosen one is built afresh for the run
        return OrtNet(_engine(load_model(handle.path), candidate))

    refused: dict[str, str] = {}
    times, agreement = _time_candidates(found, pixels, net_for, measure, min_agreement(handle.precision), refused)
    return _chosen(handle, found, pixels, times, agreement, refused, lambda chosen: _engine(handle, chosen))


def _explain(choice: RuntimeChoice, where: str) -> str:
    """``onnxruntime fp32: the fastest of 5 agreeing with PyTorch fp32 at 500x500 (onnxruntime fp32 1.21 s, ...)``."""
    times = ", ".join(f"{label} {seconds:.3g} s" for label, seconds in sorted(choice.times.items(), key=lambda kv: kv[1]))
    refused = "; ".join(f"{label} refused ({reason})" for label, reason in choice.refused.items())
    shape = f"{choice.shape[0]}x{choice.shape[1]}" if choice.shape else "?"
    agreeing = len([k for k in choice.times if k not in choice.refused])
    text = (f"{choice.chosen.label} ({ENGINE_NAMES[choice.chosen.runtime]}): the fastest of {agreeing} agreeing with "
            f"{choice.reference} on >= {choice.threshold:.1%} of the labels at {shape} ({times})")
    return text + (f"; {refused}" if refused else "") + f"; {where}"


__all__ = ["Candidate", "default_runtime", "MIN_AGREEMENT", "MIN_AGREEMENT_INT8", "RUNTIMES", "RuntimeChoice", "cache_dir", "candidates", "choose_runtime",
           "exported_graph", "library_versions", "median_time", "min_agreement", "onnx_candidates", "sample_image"]
