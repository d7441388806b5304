"""Post-training static int8 quantization of an exported FCN with ONNX Runtime, calibrated on a folder of the user's images.

The fp32 graph of :mod:`fcnseg.inference.export` (RGB 0..255 in, normalisation inside) is calibrated
on a few dozen images and rewritten in QDQ form by ``onnxruntime.quantization.quantize_static``:
per-channel int8 weights, uint8 activations. Layers whose precision matters most (the first
convolution, the score layers) can stay in float; ``docs/inference.md`` gives the measured agreement
that chose the default. The output carries the checkpoint's metadata, so it runs like any model.
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fcnseg.errors import ConfigError, DataError, FcnsegError
from fcnseg.files import atomic_write, plural
from fcnseg.images import DEFAULT_MAX_PIXELS, list_images, read_image
from fcnseg.inference.float_layers import DEFAULT_KEEP_FP32, KEEP_GROUPS, float_nodes, parse_keep_fp32, to_input
from fcnseg.weights.handle import LoadedModel
from fcnseg.weights.onnx_format import INPUT_NAME, OnnxNet, is_onnx_file, load_proto, read_info

log = logging.getLogger(__name__)

METHODS = ("minmax", "entropy", "percentile")
FORMATS = ("QDQ", "QOperator")
ACTIVATION_TYPES = ("uint8", "int8")
DEFAULT_NUM_CALIB = 32
# Calibration images larger than this are cropped (centre) to it: activation ranges are local
# statistics, and a whole 24-megapixel scan through VGG16 would need ~26 GB for one forward.
DEFAULT_CALIB_MAX_SIDE = 1024
DEFAULT_CHECK_IMAGES = 4
# Only the layers int8 makes faster. ONNX Runtime would otherwise also put Quantize/Dequantize pairs
# around the skip fusions' Adds and the normalisation, which costs accuracy for no speed, and around
# the output of a head kept in float (quantizing the logits themselves).
QUANTIZED_OPS = ("Conv", "ConvTranspose", "MaxPool", "Relu")


# --- calibration data -----------------------------------------------------------------------------


@dataclass
class CalibrationImages:
    """The images calibration runs on (RGB uint8 ``[H, W, 3]`` each), and the files that could not be read."""

    images: list[np.ndarray]
    paths: list[Path]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)


def centre_crop(image: np.ndarray, max_side: int | None) -> np.ndarray:
    """The central ``min(H, max_side) x min(W, max_side)`` window of an ``[H, W, 3]`` image (itself when it fits)."""
    if not max_side:
        return image
    h, w = image.shape[:2]
    y0, x0 = max(0, (h - max_side) // 2), max(0, (w - max_side) // 2)
    return np.ascontiguousarray(image[y0 : y0 + max_side, x0 : x0 + max_side])


def read_calibration_images(
    folder: str | Path,
    num: int = DEFAULT_NUM_CALIB,
    max_side: int | None = DEFAULT_CALIB_MAX_SIDE,
    max_pixels: int | None = DEFAULT_MAX_PIXELS,
) -> CalibrationImages:
    """Read the first ``num`` readable images of ``folder`` (recursively, sorted by path), sizes as they come.

    An unreadable file is recorded in ``.skipped`` with its reason and logged, not fatal.

    Raises:
        DataError: ``folder`` is missing, or holds no readable image.
    """
    if num < 1:
        raise ConfigError(f"--num-calib must be at least 1, got {num}")
    files = list_images(folder)
    found = CalibrationImages([], [])
    for path in files:
        if len(found.images) >= num:
            break
        try:
            image = read_image(path, max_pixels)
        except DataError as e:
            found.skipped.append((str(path), e.reason))
            log.warning("calibration: skipping %s", e)
            continue
        found.images.append(centre_crop(image, max_side))
        found.paths.append(path)
    if not found.images:
        why = f"none of its {len(files)} image files could be read" if files else "it holds no image files"
        raise DataError(f"no calibration images: {why}", path=folder)
    return found


def _reader_class():
    from onnxruntime.quantization import CalibrationDataReader

    class ImageCalibrationReader(CalibrationDataReader):
        """Feeds the exported graph's input: one image at a time, float32 ``[1, 3, H, W]`` RGB 0..255.

        ``__len__`` and ``set_range`` let ONNX Runtime calibrate in strides of one image, so that the
        histogram methods keep one image's activations at a time instead of all of them.
        """

        def __init__(self, images: list[np.ndarray], input_name: str = INPUT_NAME):
            self.images = images
            self.input_name = input_name
            self.set_range(0, len(images))

        def __len__(self) -> int:
            return len(self.images)

        def set_range(self, start_index: int, end_index: int) -> None:
            self.order = iter(range(start_index, min(end_index, len(self.images))))

        def get_next(self) -> dict | None:
            index = next(self.order, None)
            if index is None:
                return None
            return {self.input_name: to_input(self.images[index])}

    return ImageCalibrationReader


def calibration_reader(images: list[np.ndarray], input_name: str = INPUT_NAME):
    """An ``onnxruntime.quantization.CalibrationDataReader`` over ``images`` (RGB uint8 ``[H, W, 3]``)."""
    return _reader_class()(images, input_name)


# --- graph rewrites -------------------------------------------------------------------------------


def group_diagonal_deconvolutions(proto) -> list[str]:
    """Rewrite, in place, each class-to-class ``ConvTranspose`` of ``proto`` whose weight is diagonal (channel
    ``i`` feeds only channel ``i``: the fixed bilinear upsampling of the reference nets) as a grouped one
    (``group = C``, weight ``[C, 1, k, k]``): the same output, a ``C``-th of the work. A learned upsampling
    with weights off the diagonal is left as it is.

    Returns:
        The rewritten nodes' names.
    """
    from onnx import helper, numpy_helper

    initializers = {t.name: t for t in proto.graph.initializer}
    uses: dict[str, int] = {}
    for node in proto.graph.node:
        for name in node.input:
            uses[name] = uses.get(name, 0) + 1
    rewritten = []
    for node in proto.graph.node:
        if node.op_type != "ConvTranspose" or len(node.input) < 2 or node.input[1] not in initializers:
            continue
        if uses[node.input[1]] != 1 or any(a.name == "group" and a.i != 1 for a in node.attribute):
            continue
        weight = numpy_helper.to_array(initializers[node.input[1]])  # [C_in, C_out, k, k]
        channels = weight.shape[0]
        if weight.ndim != 4 or weight.shape[1] != channels or channels < 2:
            continue
        off_diagonal = weight.copy()
        off_diagonal[np.arange(channels), np.arange(channels)] = 0
        if np.any(off_diagonal):
            continue
        grouped = np.ascontiguousarray(weight[np.arange(channels), np.arange(channels)][:, None])  # [C, 1, k, k]
        initializers[node.input[1]].CopyFrom(numpy_helper.from_array(grouped, node.input[1]))
        kept = [a for a in node.attribute if a.name != "group"]
        del node.attribute[:]
        node.attribute.extend(kept + [helper.make_attribute("group", channels)])
        rewritten.append(node.name)
        # a shape recorded for the old weight (shape inference) would contradict the new one
        stale = [v for v in proto.graph.value_info if v.name == node.input[1]]
        for value in stale:
            proto.graph.value_info.remove(value)
    return rewritten


# --- quantization ---------------------------------------------------------------------------------


@dataclass
class QuantizeReport:
    """What :func:`quantize` did: the file written, its calibration, and its agreement with fp32.

    ``agreement`` is the fraction of pixels whose argmax class the int8 and fp32 graphs agree on over
    ``checked`` calibration images (None when not checked).
    """

    path: Path
    method: str
    keep_fp32: tuple[str, ...]
    float_nodes: dict[str, list[str]]
    calibration: list[str]
    skipped: list[tuple[str, str]]
    reduce_range: bool
    agreement: float | None = None
    checked: int = 0

    def calibration_line(self) -> str:
        """``minmax calibration on 8 images (3 unreadable files skipped)``: how the model was calibrated."""
        skipped = f" ({plural(len(self.skipped), 'unreadable file')} skipped)" if self.skipped else ""
        return f"{self.method} calibration on {plural(len(self.calibration), 'image')}{skipped}"

    def summary(self) -> str:
        kept = ", ".join(f"{g} ({len(n)} node{'s' if len(n) != 1 else ''})" for g, n in self.float_nodes.items()) or "none"
        lines = [
            f"wrote {self.path}: int8 QDQ, per-channel {'7-bit' if self.reduce_range else '8-bit'} weights, "
            f"uint8 activations; {self.method} calibration on {plural(len(self.calibration), 'image')}; "
            f"kept in float: {kept}"
        ]
        if self.agreement is not None:
            # said so: images the model was calibrated on flatter it; held-out ones are eval's to score
            the = "the calibration image" if self.checked == 1 else f"the {self.checked} calibration images"
            lines.append(f"argmax agreement with fp32 on {the}: {self.agreement:.3%} (images it was calibrated on; "
                         "for held-out images run 'fcnseg eval --compare-precisions')")
        if self.skipped:
            lines.append(f"skipped {plural(len(self.skipped), 'unreadable file')}:")
            lines += [f"  {path}: {reason}" for path, reason in self.skipped[:20]]
            if len(self.skipped) > 20:
                lines.append(f"  ... and {len(self.skipped) - 20} more")
        return "\n".join(lines)


def _ort_quantization():
    try:
        from onnxruntime import quantization
    except ImportError as e:
        raise FcnsegError("int8 quantization needs onnxruntime: pip install 'fcnseg[onnx]'") from e
    return quantization


def quantize_onnx(
    fp32_path: str | Path,
    out_path: str | Path,
    images: list[np.ndarray],
    *,
    method: str = "minmax",
    keep_fp32: tuple[str, ...] = DEFAULT_KEEP_FP32,
    reduce_range: bool = True,
    metadata: dict[str, str] | None = None,
    calibration_cache: str | Path | None = None,
    quant_format: str = "QDQ",
    activations: str = "uint8",
    per_channel: bool = True,
    group_upsampling: bool = False,
) -> dict[str, list[str]]:
    """Quantize the fp32 fcnseg ONNX file ``fp32_path`` into ``out_path`` (written atomically).

    Args:
        images: calibration images, RGB uint8 ``[H, W, 3]``, any sizes.
        method: "minmax", "entropy" or "percentile" (ONNX Runtime's calibration methods).
        keep_fp32: layer groups left in float (see :func:`float_nodes`).
        reduce_range: 7-bit weights. ONNX Runtime's u8 x s8 kernels on CPUs without VNNI (most AVX2
            CPUs) sum pairs of products in int16, which 8-bit weights can saturate; 7-bit cannot.
        metadata: ``fcnseg.*`` keys for the output (default: the input's), ``fcnseg.precision`` set to int8.
        calibration_cache: a JSON file of the calibrated activation ranges: read when it exists
            (calibration is skipped; ``images`` may then be empty), else written. The ranges cover every
            layer, so one cache serves any ``keep_fp32``, format and activation type.
        quant_format: "QDQ" (Quantize/Dequantize pairs that ONNX Runtime fuses into int8 kernels when it
            loads the file; other runtimes read them too) or "QOperator" (the int8 operators written out).
        activations: "uint8" or "int8" activations (weights are always int8).
        per_channel: one weight scale per output channel (else one per layer).
        group_upsampling: run the fixed (diagonal) bilinear upsamplings as grouped transposed convolutions
            (:func:`group_diagonal_deconvolutions`): the same output for a class count's fraction of the
            arithmetic, but ONNX Runtime 1.32 runs a grouped ConvTranspose group by group and was no faster
            (docs/inference.md, "Where int8's time goes"), so it is off by default.
    Returns:
        The node names kept in float, per group.
    """
    q = _ort_quantization()
    import onnx

    if method not in METHODS:
        raise ConfigError(f"--method {method!r} is not one of {', '.join(METHODS)}")
    if quant_format not in FORMATS:
        raise ConfigError(f"quantization format {quant_format!r} is not one of {', '.join(FORMATS)}")
    if activations not in ACTIVATION_TYPES:
        raise ConfigError(f"activation type {activations!r} is not one of {', '.join(ACTIVATION_TYPES)}")
    methods = {"minmax": q.CalibrationMethod.MinMax, "entropy": q.CalibrationMethod.Entropy,
               "percentile": q.CalibrationMethod.Percentile}
    source = read_info(fp32_path)
    if source.precision != "fp32":
        raise ConfigError(f"{fp32_path}: already {source.precision}; quantize an fp32 checkpoint or export")
    out_path = Path(out_path)
    with tempfile.TemporaryDirectory(prefix="fcnseg-quantize-") as tmp:
        model = Path(tmp) / "model.onnx"
        try:
            # Shape inference and graph optimisation first, as ONNX Runtime recommends for static quantization.
            q.quant_pre_process(str(fp32_path), str(model), skip_symbolic_shape=True)
        except Exception as e:  # noqa: BLE001 - the optimiser is an aid: quantize the graph as exported without it
            log.info("quantization pre-processing skipped (%s: %s)", type(e).__name__, e)
            model = Path(fp32_path)
        proto = load_proto(model)
        if group_upsampling and group_diagonal_deconvolutions(proto):
            model = Path(tmp) / "grouped.onnx"
            onnx.save(proto, str(model))
        kept = float_nodes(proto, keep_fp32)
        quantized = Path(tmp) / "int8.onnx"
        q.quantize_static(
            str(model),
            str(quantized),
            calibration_reader(images),
            quant_format=q.QuantFormat.QDQ if quant_format == "QDQ" else q.QuantFormat.QOperator,
            per_channel=per_channel,
            reduce_range=reduce_range,
            activation_type=q.QuantType.QUInt8 if activations == "uint8" else q.QuantType.QInt8,
            weight_type=q.QuantType.QInt8,
            calibrate_method=methods[method],
            calibration_cache_path=None if calibration_cache is None else str(calibration_cache),
            op_types_to_quantize=list(QUANTIZED_OPS),
            nodes_to_exclude=[name for names in kept.values() for name in names],
            # One image per calibration pass: the histogram methods then hold one image's activations.
            extra_options={"CalibStridedMinMax": 1},
        )
        proto = onnx.load(str(quantized))
        entries = dict(source.metadata if metadata is None else metadata)
        entries["fcnseg.precision"] = "int8"
        del proto.metadata_props[:]
        for key, value in entries.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        atomic_write(out_path, lambda tmp_file: onnx.save(proto, str(tmp_file)))
    return kept


def agreement(fp32_path: str | Path, int8_path: str | Path, images: list[np.ndarray], runtime: str = "onnxruntime") -> float:
    """Fraction of pixels whose argmax class the two graphs agree on, over ``images`` (RGB uint8); the int8 graph
    run by ``runtime`` ("onnxruntime" or "openvino")."""
    if runtime == "openvino":
        from fcnseg.weights.openvino_net import OpenVinoNet

        a, b = OnnxNet(fp32_path), OpenVinoNet(int8_path)
    else:
        a, b = OnnxNet(fp32_path), OnnxNet(int8_path)
    same = total = 0
    for image in images:
        x = to_input(image)
        la, lb = a(x)[0].argmax(0), b(x)[0].argmax(0)
        same += int((la == lb).sum())
        total += la.numel()
    return same / max(total, 1)


def quantize(
    model: LoadedModel | str | Path,
    out_path: str | Path,
    calib_dir: str | Path,
    *,
    num_calib: int = DEFAULT_NUM_CALIB,
    method: str = "minmax",
    keep_fp32: tuple[str, ...] = DEFAULT_KEEP_FP32,
    reduce_range: bool = True,
    max_side: int | None = DEFAULT_CALIB_MAX_SIDE,
    check_images: int = DEFAULT_CHECK_IMAGES,
    calibration_cache: str | Path | None = None,
    runtime: str = "onnxruntime",
) -> QuantizeReport:
    """Quantize a model handle (or a file :func:`fcnseg.load_model` reads): a checkpoint or an fp32 fcnseg ``.onnx``.

    A checkpoint is exported first (:func:`fcnseg.inference.export.export_onnx`). Calibration reads the
    first ``num_calib`` readable images under ``calib_dir``; unreadable ones are reported in
    ``QuantizeReport.skipped`` and skipped. With ``check_images`` > 0 the int8 file's argmax
    agreement with fp32 is measured on that many calibration images. ``calibration_cache``: see
    :func:`quantize_onnx` (the images are still read, for the report and the check). ``runtime="openvino"``
    quantizes with OpenVINO's NNCF instead (:func:`fcnseg.inference.openvino_quantization.quantize_nncf`; QDQ ONNX
    too, ``method``, ``reduce_range`` and ``calibration_cache`` unused) and checks the agreement through OpenVINO.
    """
    from fcnseg.weights.checkpoint import load_model

    handle = model if isinstance(model, LoadedModel) else load_model(model)
    out_path = Path(out_path)
    if not is_onnx_file(out_path):
        raise ConfigError(f"{out_path}: the quantized model is an ONNX file; name it with the .onnx suffix")
    if method not in METHODS:
        raise ConfigError(f"--method {method!r} is not one of {', '.join(METHODS)}")
    calibration = read_calibration_images(calib_dir, num_calib, max_side)
    log.info("calibrating on %s from %s (%d unreadable skipped)",
             plural(len(calibration.images), "image"), calib_dir, len(calibration.skipped))
    with tempfile.TemporaryDirectory(prefix="fcnseg-export-") as tmp:
        if handle.onnx_info is not None:
            if handle.precision != "fp32":
                raise ConfigError(f"{handle.path}: already {handle.precision}; quantize a checkpoint or an fp32 .onnx")
            fp32_path = handle.path
            metadata = dict(handle.onnx_info.metadata)
        else:
            from fcnseg.inference.export import export_onnx

            fp32_path = export_onnx(handle, Path(tmp) / "fp32.onnx")
            metadata = read_info(fp32_path).metadata
        metadata = _with_quantization(metadata, method, keep_fp32, reduce_range, len(calibration.images))
        if runtime == "openvino":
            from fcnseg.inference.openvino_quantization import quantize_nncf

            kept = quantize_nncf(fp32_path, out_path, calibration.images, keep_fp32=keep_fp32, metadata=metadata)
        else:
            kept = quantize_onnx(fp32_path, out_path, calibration.images, method=method, keep_fp32=keep_fp32,
                                 reduce_range=reduce_range, metadata=metadata, calibration_cache=calibration_cache)
        report = QuantizeReport(out_path, method, tuple(keep_fp32), kept, [str(p) for p in calibration.paths],
                                calibration.skipped, reduce_range)
        if check_images > 0:
            report.checked = min(check_images, len(calibration.images))
            report.agreement = agreement(fp32_path, out_path, calibration.images[: report.checked], runtime)
    return report


def _with_quantization(metadata: dict[str, str], method: str, keep: tuple[str, ...], reduce_range: bool,
                       num_images: int) -> dict[str, str]:
    """``metadata`` plus ``fcnseg.quantization``: how the int8 file was made."""
    out = dict(metadata)
    out["fcnseg.quantization"] = json.dumps({
        "format": "QDQ", "weights": "int8 per-channel" + (" (7-bit range)" if reduce_range else ""),
        "activations": "uint8", "calibration": method, "calibration_images": num_images, "float_layers": list(keep),
    })
    return out


__all__ = [
    "DEFAULT_KEEP_FP32",
    "KEEP_GROUPS",
    "METHODS",
    "CalibrationImages",
    "QuantizeReport",
    "agreement",
    "calibration_reader",
    "float_nodes",
    "group_diagonal_deconvolutions",
    "parse_keep_fp32",
    "quantize",
    "quantize_onnx",
    "read_calibration_images",
]
