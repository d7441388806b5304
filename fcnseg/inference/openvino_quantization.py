"""``fcnseg quantize --runtime openvino``: OpenVINO's own post-training int8 (NNCF) of an fcnseg fp32 ONNX graph.

NNCF quantizes the ONNX graph itself and writes QDQ ONNX, so the file keeps fcnseg's contract (its ``fcnseg.*``
metadata) and runs with either runtime; its quantizer places the QDQ pairs where OpenVINO's int8 kernels take
them. The layer groups :data:`~fcnseg.inference.float_layers.DEFAULT_KEEP_FP32` names stay in float, as in
ONNX Runtime's quantization. ``benchmarks/runtimes.py`` measures it beside ONNX Runtime's QDQ file.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from fcnseg.errors import FcnsegError
from fcnseg.files import atomic_write
from fcnseg.inference.float_layers import float_nodes, to_input
from fcnseg.weights.onnx_format import INPUT_NAME

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'fcnseg[openvino]'"


def quantize_nncf(fp32_path: str | Path, out_path: str | Path, images: list[np.ndarray], *,
                  keep_fp32: tuple[str, ...] = (), metadata: dict[str, str] | None = None) -> dict[str, list[str]]:
    """Quantize the fp32 fcnseg ONNX file ``fp32_path`` with NNCF into the QDQ ONNX file ``out_path`` (atomic).

    Args:
        images: calibration images, RGB uint8 ``[H, W, 3]``.
        keep_fp32: layer groups left in float (:func:`~fcnseg.inference.float_layers.float_nodes`).
        metadata: ``fcnseg.*`` keys written into the output (its precision int8).
    Returns:
        group -> node names kept in float.
    Raises:
        FcnsegError: NNCF or onnx is not installed.
    """
    try:
        import nncf
        import onnx
    except ImportError as e:
        raise FcnsegError(f"--runtime openvino quantization needs NNCF and onnx ({e}): {INSTALL_HINT}") from e
    model = onnx.load(str(fp32_path))
    kept = float_nodes(model, keep_fp32)
    names = [name for group in kept.values() for name in group]
    dataset = nncf.Dataset(images, lambda image: {INPUT_NAME: to_input(image)})
    quantized = nncf.quantize(model, dataset, subset_size=len(images), preset=nncf.QuantizationPreset.MIXED,
                              ignored_scope=nncf.IgnoredScope(names=names, validate=False) if names else None)
    if metadata:
        del quantized.metadata_props[:]
        for key, value in metadata.items():
            quantized.metadata_props.add(key=key, value=value)
    atomic_write(out_path, lambda tmp: onnx.save(quantized, str(tmp)))
    return kept


__all__ = ["quantize_nncf"]
