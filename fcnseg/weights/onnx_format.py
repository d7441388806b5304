"""fcnseg's ONNX files (an fp32 export or an int8 quantization): the graph's input and output names, the
``fcnseg.*`` metadata keys written and read, and the ONNX Runtime session that runs such a file.

The file records what a checkpoint records (architecture, classes, normalisation, precision, palette if
any), so ``predict``, ``eval`` and ``serve`` take it like a checkpoint; :func:`read_info` checks every key
and the class list against the graph, and names the file and the key when one is missing or broken.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from fcnseg.config import ModelConfig, from_dict
from fcnseg.data.normalization import Normalization
from fcnseg.errors import CheckpointError, ConfigError, FcnsegError
from fcnseg.weights.torch_files import check_onnx_file

log = logging.getLogger(__name__)

INPUT_NAME = "image"  # float32 [N, 3, H, W], RGB, 0..255
OUTPUT_NAME = "logits"  # float32 [N, C, H, W]

# What a data set yields for an ONNX model: RGB float32 pixels in 0..255, the graph normalises them itself.
RAW_PIXELS = Normalization(name="rgb_0_255", mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), bgr=False, value_scale=1.0)
PREFIX = "fcnseg."
REQUIRED_KEYS = ("fcnseg.arch", "fcnseg.num_classes", "fcnseg.class_names", "fcnseg.normalization")
ONNX_PRECISIONS = ("fp32", "int8")
QUANTIZE_OPS = ("QuantizeLinear", "DequantizeLinear")
TEMPERATURE_KEY = "fcnseg.temperature"  # the calibration temperature, a decimal number (absent: 1)


def is_onnx_file(path: str | Path) -> bool:
    """True for a path whose suffix says ONNX (``.onnx``, any case)."""
    return Path(path).suffix.lower() == ".onnx"


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. under taskset or a container's cpuset)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no sched_getaffinity (macOS, Windows)
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class OnnxModelInfo:
    """What an fcnseg ONNX file says about itself.

    Attributes:
        precision: "fp32" (an export) or "int8" (a static QDQ quantization).
        palette: uint8 ``[C, 3]`` class colours when the file records them, else None.
        metadata: every ``fcnseg.*`` key as stored (strings), for copying into a derived file.
        weight_bytes: bytes of the graph's initialisers (its weights as stored: int8 ones take 1 byte).
    """

    path: Path
    arch: str
    backbone: str
    num_classes: int
    class_names: list[str]
    normalization: Normalization
    precision: str
    palette: np.ndarray | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    weight_bytes: int = 0
    config: ModelConfig | None = None  # the whole architecture (files written before it recorded arch and backbone only)
    temperature: float = 1.0  # the calibration temperature (fcnseg.temperature; absent = 1, uncalibrated)

    def model_config(self) -> ModelConfig:
        """The architecture: the recorded one, else what arch, backbone and class count give."""
        return self.config or ModelConfig(arch=self.arch, backbone=self.backbone, num_classes=self.num_classes)


def metadata(config: ModelConfig, normalization: Normalization, class_names: list[str],
             palette: np.ndarray | None = None, temperature: float = 1.0) -> dict[str, str]:
    """The ``fcnseg.*`` keys an exported file records (``metadata_props``): what :func:`parse_metadata` reads back."""
    meta = {
        "fcnseg.arch": config.arch,
        "fcnseg.backbone": config.backbone,
        "fcnseg.model_config": json.dumps(asdict(config)),
        "fcnseg.num_classes": str(config.num_classes),
        "fcnseg.class_names": json.dumps(list(class_names)),
        "fcnseg.input": f"{INPUT_NAME}: float32 [N, 3, H, W], RGB, 0..255 (normalisation is inside the graph)",
        "fcnseg.normalization": json.dumps(normalization.to_dict()),
    }
    if palette is not None:
        meta["fcnseg.palette"] = json.dumps(np.asarray(palette)[: config.num_classes].astype(int).tolist())
    if temperature != 1.0:
        meta[TEMPERATURE_KEY] = repr(float(temperature))
    return meta


def _bad(path, key: str, expected: str, found: str) -> CheckpointError:
    shown = found if len(found) <= 80 else found[:77] + "..."
    return CheckpointError(f"{path}: metadata key '{key}' is broken: expected {expected}, found {shown!r}")


def parse_metadata(
    meta: dict[str, str], path: str | Path, quantized_graph: bool | None = None, weight_bytes: int = 0,
    graph_classes: int | None = None,
) -> OnnxModelInfo:
    """Check and decode the ``fcnseg.*`` metadata of the ONNX file ``path``.

    Args:
        meta: the file's ``metadata_props`` as a dict of strings.
        quantized_graph: whether the graph holds QuantizeLinear/DequantizeLinear nodes (None: unknown).
            A missing ``fcnseg.precision`` is taken from it; one that contradicts it is an error.
        graph_classes: the class axis of the graph's output, where the graph states it (None: unknown).
    Raises:
        CheckpointError: naming the file and the key that is missing or does not decode.
    """
    missing = [key for key in REQUIRED_KEYS if key not in meta]
    if missing:
        kind = "quantized " if quantized_graph else ""
        raise CheckpointError(
            f"{path}: metadata key '{missing[0]}' is missing from this {kind}ONNX file"
            f"{f' (also missing: {missing[1:]})' if missing[1:] else ''}; fcnseg needs "
            f"{', '.join(REQUIRED_KEYS)} to run it: write the file with 'fcnseg export' or 'fcnseg quantize'"
        )
    arch = meta["fcnseg.arch"]
    try:
        num_classes = int(meta["fcnseg.num_classes"])
        if num_classes < 1:
            raise ValueError
    except ValueError:
        raise _bad(path, "fcnseg.num_classes", "a positive integer", meta["fcnseg.num_classes"]) from None
    try:
        names = json.loads(meta["fcnseg.class_names"])
    except json.JSONDecodeError:
        names = None
    if not (isinstance(names, list) and all(isinstance(n, str) for n in names)):
        raise _bad(path, "fcnseg.class_names", "a JSON list of class names", meta["fcnseg.class_names"])
    if len(names) != num_classes:
        raise _bad(path, "fcnseg.class_names", f"{num_classes} names (fcnseg.num_classes)", f"{len(names)} names")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise _bad(path, "fcnseg.class_names", "one distinct name per class", f"{repeated} more than once")
    if graph_classes is not None and graph_classes != num_classes:
        raise _bad(path, "fcnseg.num_classes", f"the {graph_classes} classes of the graph's output '{OUTPUT_NAME}'",
                   str(num_classes))
    config = None
    if "fcnseg.model_config" in meta:
        try:
            config = from_dict(ModelConfig, json.loads(meta["fcnseg.model_config"]), f"{path}: fcnseg.model_config")
        except (json.JSONDecodeError, TypeError, AttributeError, FcnsegError):
            raise _bad(path, "fcnseg.model_config", "a JSON object of model settings", meta["fcnseg.model_config"]) from None
        if config.num_classes != num_classes or config.arch != arch:
            raise _bad(path, "fcnseg.model_config", f"arch {arch} of {num_classes} classes",
                       f"arch {config.arch} of {config.num_classes} classes")
    try:
        normalization = Normalization.from_dict(json.loads(meta["fcnseg.normalization"]))
    except (json.JSONDecodeError, ConfigError, TypeError, AttributeError):
        raise _bad(path, "fcnseg.normalization", "a JSON object with name, mean, std, bgr, value_scale",
                   meta["fcnseg.normalization"]) from None
    precision = meta.get("fcnseg.precision")
    if precision is None:
        precision = "int8" if quantized_graph else "fp32"
    elif precision not in ONNX_PRECISIONS:
        raise _bad(path, "fcnseg.precision", " or ".join(ONNX_PRECISIONS), precision)
    if quantized_graph is not None and (precision == "int8") != quantized_graph:
        found = "a graph with QuantizeLinear/DequantizeLinear nodes" if quantized_graph else "a float graph"
        raise _bad(path, "fcnseg.precision", f"the precision of its graph ({found})", precision)
    palette = None
    if "fcnseg.palette" in meta:
        try:
            palette = np.asarray(json.loads(meta["fcnseg.palette"]))
        except json.JSONDecodeError:
            palette = None
        ok = palette is not None and palette.ndim == 2 and palette.shape[1] == 3 and len(palette) >= num_classes
        if not ok or not np.issubdtype(palette.dtype, np.integer) or palette.min() < 0 or palette.max() > 255:
            raise _bad(path, "fcnseg.palette", f"a JSON list of at least {num_classes} [r, g, b] colours in 0..255",
                       meta["fcnseg.palette"])
        palette = palette.astype(np.uint8)
    temperature = 1.0
    if TEMPERATURE_KEY in meta:
        try:
            temperature = float(meta[TEMPERATURE_KEY])
        except ValueError:
            temperature = float("nan")
        if not (temperature > 0 and np.isfinite(temperature)):
            raise _bad(path, TEMPERATURE_KEY, "a positive number", meta[TEMPERATURE_KEY])
    return OnnxModelInfo(
        path=Path(path),
        arch=arch,
        backbone=meta.get("fcnseg.backbone", "unknown"),
        num_classes=num_classes,
        class_names=list(names),
        normalization=normalization,
        precision=precision,
        palette=palette,
        metadata={k: v for k, v in meta.items() if k.startswith(PREFIX)},
        weight_bytes=weight_bytes,
        config=config,
        temperature=temperature,
    )


def write_temperature(path: str | Path, out_path: str | Path, temperature: float) -> None:
    """Copy the ONNX file ``path`` to ``out_path`` (atomically; the same path replaces it) with ``fcnseg.temperature``
    set (removed at 1): the graph is untouched, only its metadata changes."""
    from fcnseg.files import atomic_write

    onnx = _onnx()
    proto = onnx.load(str(path))
    entries = {e.key: e.value for e in proto.metadata_props if e.key != TEMPERATURE_KEY}
    if temperature != 1.0:
        entries[TEMPERATURE_KEY] = repr(float(temperature))
    del proto.metadata_props[:]
    for key, value in entries.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    atomic_write(out_path, lambda tmp: onnx.save(proto, str(tmp)))


def _onnx():
    try:
        import onnx
    except ImportError as e:
        raise FcnsegError("ONNX models need the onnx extra: pip install 'fcnseg[onnx]'") from e
    return onnx


def _ort():
    try:
        import onnxruntime
    except ImportError as e:
        raise FcnsegError("running ONNX models needs onnxruntime: pip install 'fcnseg[onnx]'") from e
    # Errors only, for the process-wide logger too (the session's option covers its own): fcnseg logs one line
    # of what runs (Predictor.describe), ORT's warnings about initializers and providers say nothing a user can act on.
    onnxruntime.set_default_logger_severity(3)
    return onnxruntime


def load_proto(path: str | Path):
    """The ``onnx.ModelProto`` of ``path``; a missing or unparsable file is a CheckpointError naming it."""
    onnx = _onnx()
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: ONNX file not found")
    check_onnx_file(path)  # empty, text or truncated: said so, rather than protobuf's bare DecodeError
    try:
        return onnx.load(str(path))
    except Exception as e:  # noqa: BLE001 - protobuf's DecodeError and onnx's own errors alike
        raise CheckpointError(f"{path}: not a readable ONNX file ({type(e).__name__}: {e})") from e


def is_quantized(proto) -> bool:
    """True when the graph holds QuantizeLinear/DequantizeLinear nodes (a QDQ quantization)."""
    return any(node.op_type in QUANTIZE_OPS for node in proto.graph.node)


def initializer_bytes(proto) -> int:
    """Bytes of the graph's initialisers as stored (from their shapes and element types)."""
    from onnx.helper import tensor_dtype_to_np_dtype

    return sum(int(np.prod(t.dims, dtype=np.int64)) * tensor_dtype_to_np_dtype(t.data_type).itemsize
               for t in proto.graph.initializer)


def read_info(path: str | Path, proto=None) -> OnnxModelInfo:
    """Read and check the metadata of an fcnseg ONNX file (see :func:`parse_metadata`)."""
    proto = load_proto(path) if proto is None else proto
    meta = {entry.key: entry.value for entry in proto.metadata_props}
    return parse_metadata(meta, path, quantized_graph=is_quantized(proto), weight_bytes=initializer_bytes(proto),
                          graph_classes=output_classes(proto))


def output_classes(proto) -> int | None:
    """The class axis (dim 1) of the graph's ``logits`` output where the graph fixes it, else None."""
    for output in proto.graph.output:
        if output.name == OUTPUT_NAME:
            dims = output.type.tensor_type.shape.dim
            if len(dims) == 4 and dims[1].HasField("dim_value"):
                return int(dims[1].dim_value)
    return None


def graph_input(x) -> np.ndarray:
    """A batch of pixels (tensor or array) as the exported graph's input: contiguous float32 ``[N, 3, H, W]``.

    Raises:
        ValueError: not four dimensions with three channels."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected float32 [N, 3, H, W] RGB pixels, got {list(x.shape)}")
    return x


class OnnxNet:
    """An ONNX Runtime session with the call of a torch model.

    ``net(x)``: float32 ``[N, 3, H, W]`` RGB pixels in 0..255 (a torch tensor or numpy array; the
    normalisation is inside the graph) -> float32 logits ``[N, C, H, W]`` as a torch tensor.

    Args:
        path: the ``.onnx`` file.
        threads: intra-op threads; None = the cores this process may use (:func:`available_cores`).
        memory_arena: ONNX Runtime's CPU arena, which keeps freed buffers for reuse. Faster (1.2-1.5x on
            a tiled 6000x4000 image), but tiles of several shapes grow it past one forward's peak: under a
            2 GiB budget the int8 small net peaked at 3.3 GiB with it and 1.6 GiB without
            (benchmarks/large_image.py). Turn it off where a memory budget must hold.
    """

    def __init__(self, path: str | Path, threads: int | None = None, memory_arena: bool = True):
        ort = _ort()
        self.path = Path(path)
        self.threads = threads or available_cores()
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.enable_cpu_mem_arena = memory_arena
        self.memory_arena = memory_arena
        options.log_severity_level = 3  # errors only: ORT warns about every initializer it cannot constant-fold
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - ORT raises its own Fail/InvalidGraph/InvalidProtobuf types
            raise CheckpointError(f"{self.path}: ONNX Runtime cannot load it ({type(e).__name__}: {e})") from e
        inputs = [i.name for i in self.session.get_inputs()]
        if INPUT_NAME not in inputs:
            raise CheckpointError(f"{self.path}: expected a graph input '{INPUT_NAME}', found {inputs}")

    def __call__(self, x) -> torch.Tensor:
        x = graph_input(x)
        (logits,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: x})
        return torch.from_numpy(logits)


__all__ = [
    "INPUT_NAME",
    "OUTPUT_NAME",
    "OnnxModelInfo",
    "RAW_PIXELS",
    "OnnxNet",
    "available_cores",
    "is_onnx_file",
    "is_quantized",
    "metadata",
    "parse_metadata",
    "read_info",
]
