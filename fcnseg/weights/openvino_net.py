"""The OpenVINO runtime of an fcnseg ``.onnx`` file (fp32 export or int8 QDQ): compiled per input shape, called like a torch model.

OpenVINO reads the ONNX file itself (its QDQ int8 too). A model compiled for one static shape runs faster
than one compiled for dynamic shapes, and a tiled image has few shapes (the tile and the edge tiles), so
:class:`OpenVinoNet` reshapes the graph and compiles it once per ``[N, 3, H, W]``, keeping the last few.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from fcnseg.errors import CheckpointError, FcnsegError
from fcnseg.weights.onnx_format import INPUT_NAME, available_cores, graph_input

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'fcnseg[openvino]'"
COMPILED_SHAPES = 4  # compiled models kept: a tiled image needs up to four (interior, right, bottom, corner tiles)


def openvino_available() -> bool:
    """True where the ``openvino`` package can be imported (found without importing it)."""
    return importlib.util.find_spec("openvino") is not None


def openvino_version() -> str | None:
    """The installed OpenVINO's version, or None where it is absent."""
    if not openvino_available():
        return None
    import openvino

    return openvino.__version__


def _openvino():
    try:
        import openvino
    except ImportError as e:
        raise FcnsegError(f"--runtime openvino needs OpenVINO, which is not installed: {INSTALL_HINT}") from e
    return openvino


class OpenVinoNet:
    """An fcnseg ``.onnx`` file run by OpenVINO on the CPU, with the call of a torch model.

    ``net(x)``: float32 ``[N, 3, H, W]`` RGB pixels in 0..255 (a torch tensor or numpy array; the graph
    normalises them) -> float32 logits ``[N, C, H, W]`` as a torch tensor.

    Args:
        path: the ``.onnx`` file (fp32 or int8 QDQ), or an OpenVINO IR ``.xml`` (NNCF's int8).
        threads: inference threads; None = the cores this process may use.
        precision: the precision OpenVINO computes a float graph in: "fp32" (its ``f32`` hint: on CPUs
            with native bf16 it would otherwise take bf16 on its own) or "bf16".
    """

    def __init__(self, path: str | Path, threads: int | None = None, precision: str = "fp32"):
        ov = _openvino()
        self.path = Path(path)
        self.threads = threads or available_cores()
        self.precision = precision
        self.core = ov.Core()
        try:
            self.model = self.core.read_model(str(self.path))
        except Exception as e:  # noqa: BLE001 - OpenVINO raises RuntimeError/its own types for a bad file
            raise CheckpointError(f"{self.path}: OpenVINO cannot read it ({type(e).__name__}: {e})") from e
        names = [name for port in self.model.inputs for name in port.get_names()]
        if INPUT_NAME not in names:
            raise CheckpointError(f"{self.path}: expected a graph input '{INPUT_NAME}', found {names}")
        self.config = {
            "INFERENCE_NUM_THREADS": self.threads,
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": {"fp32": "f32", "bf16": "bf16"}[precision],
        }
        self._compiled: OrderedDict[tuple[int, ...], object] = OrderedDict()
        self._lock = threading.Lock()

    def compiled(self, shape: tuple[int, ...]):
        """The model compiled for input ``shape`` (``[N, 3, H, W]``), compiled on first use, the last few kept."""
        with self._lock:
            if shape in self._compiled:
                self._compiled.move_to_end(shape)
                return self._compiled[shape]
            model = self.model.clone()
            model.reshape({INPUT_NAME: list(shape)})
            compiled = self.core.compile_model(model, "CPU", self.config)
            self._compiled[shape] = compiled
            while len(self._compiled) > COMPILED_SHAPES:
                self._compiled.popitem(last=False)
            return compiled

    def __call__(self, x) -> torch.Tensor:
        x = graph_input(x)
        # One infer request per call: a compiled model's own request is not safe to share between serve's workers.
        request = self.compiled(tuple(x.shape)).create_infer_request()
        request.infer({0: x})
        return torch.from_numpy(np.array(request.get_output_tensor(0).data, dtype=np.float32, copy=True))


__all__ = ["OpenVinoNet", "openvino_available", "openvino_version"]
