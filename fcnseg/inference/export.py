"""Ship a model to other runtimes: ONNX with dynamic batch, height and width, checked against PyTorch with ONNX Runtime.

The exported graph takes RGB pixels as float32 ``[N, 3, H, W]`` in 0..255 and applies the checkpoint's
normalisation itself, so a runtime needs nothing but the file: no mean/std or BGR order to copy by hand.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from fcnseg.data.normalization import Normalization
from fcnseg.errors import ConfigError, FcnsegError
from fcnseg.files import atomic_write
from fcnseg.models.batchnorm import fold_batch_norm
from fcnseg.models.fcn import FCN
from fcnseg.weights.handle import LoadedModel
from fcnseg.weights.onnx_format import INPUT_NAME, OUTPUT_NAME, metadata

log = logging.getLogger(__name__)

OPSET = 18
# What the export needs (the torch.export-based exporter builds its graph with onnxscript) and what its check needs.
EXPORT_MODULES = ("onnx", "onnxscript")
CHECK_MODULES = ("onnxruntime",)
INSTALL_HINT = "pip install 'fcnseg[onnx]'"
# Input sizes the export is checked on: odd and even, batch 1 and 2, smaller and larger than the trace input.
CHECK_SHAPES = ((1, 3, 64, 96), (2, 3, 97, 130), (1, 3, 224, 225), (1, 3, 33, 47))


def require_modules(names: tuple[str, ...], purpose: str) -> None:
    """Raise one FcnsegError naming every module of ``names`` that cannot be imported, and how to install them."""
    missing = []
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise FcnsegError(
            f"{purpose} needs {', '.join(names)}; missing: {', '.join(missing)}. Install them with: {INSTALL_HINT}"
        )


class NormalizedFCN(nn.Module):
    """An FCN preceded by its input normalisation: RGB float ``[N, 3, H, W]`` in 0..255 -> logits ``[N, C, H, W]``."""

    def __init__(self, model: FCN, normalization: Normalization):
        super().__init__()
        self.model = model
        self.flip = normalization.bgr
        multiplier, offset = normalization.coefficients((1, 3, 1, 1))  # the data sets' and the predictor's formula
        self.register_buffer("multiplier", multiplier)
        self.register_buffer("offset", offset)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if self.flip:
            image = image[:, [2, 1, 0]]  # RGB -> BGR, as the reference nets were trained
        return self.model(image * self.multiplier + self.offset)


@contextlib.contextmanager
def _quiet_loggers(*names: str):
    """The exporter's passes log every step at INFO; keep only their warnings during an export."""
    # The registry also warns, once per op, that torchvision's ops are unavailable: we never use them.
    names = names + ("torch.onnx._internal.exporter._registration",)
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR if lg.name.endswith("_registration") else logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


@dataclass(frozen=True)
class CheckRow:
    """One size the exported model was compared with PyTorch on."""

    shape: tuple[int, ...]
    max_abs_diff: float
    argmax_agreement: float  # fraction of pixels whose argmax class matches


def export_onnx(model: LoadedModel, path: str | Path, *, example_size: tuple[int, int] = (64, 96)) -> Path:
    """Write a model handle (:func:`fcnseg.load_model`'s result) as ONNX with dynamic batch, height and width.

    The graph takes RGB float32 pixels ``image [N, 3, H, W]`` in 0..255, applies the model's normalisation
    itself and gives float32 ``logits [N, C, H, W]``; the file records the model's architecture, class names,
    normalisation and palette (``fcnseg.*`` metadata), so ``fcnseg.load_model(path)`` reads it back as a
    handle. Uses the ``torch.export``-based exporter (``dynamo=True``); the crops, whose sizes come from the
    input, stay symbolic. The file is written atomically.

    Args:
        model: the handle of a torch model (a checkpoint), reading one RGB image and giving one label map.
        path: the ``.onnx`` file to write.
        example_size: height and width of the example input the graph is traced on.
    Returns:
        the path written.
    Raises:
        FcnsegError: onnx or onnxscript is not installed. ConfigError: the model is an ONNX file already, or
            reads more than one RGB image, or has several heads.
    """
    from fcnseg.inference.runtime import check_predictable

    if model.model is None:
        raise ConfigError(f"{model.path}: already an ONNX file; export takes a checkpoint")
    check_predictable(model)  # the exported graph takes one RGB image and gives one score map
    require_modules(EXPORT_MODULES, "ONNX export")
    path = Path(path)
    net = model.model
    wrapped = NormalizedFCN(fold_batch_norm(net.eval()).float(), model.normalization).eval()  # BatchNorm merged into the convs
    example = torch.rand(1, 3, *example_size) * 255
    batch, height, width = torch.export.Dim("batch"), torch.export.Dim("height"), torch.export.Dim("width")
    with warnings.catch_warnings(), _quiet_loggers("onnx_ir", "onnxscript", "torch.onnx", "torch.export", "torch._dynamo"):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            wrapped,
            (example,),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes={"image": {0: batch, 2: height, 3: width}},
            opset_version=OPSET,
            verbose=False,
        )
    program.model.metadata_props.update(metadata(model.config, model.normalization, model.class_names, model.palette,
                                                   model.temperature))
    # Models under 2 GB (all here: VGG16 is 0.5 GB) are one file, so the temp file can be renamed whole.
    atomic_write(path, lambda tmp: program.save(tmp))
    return path


def check_onnx(
    model: LoadedModel,
    path: str | Path,
    shapes: tuple[tuple[int, ...], ...] = CHECK_SHAPES,
    seed: int = 0,
) -> list[CheckRow]:
    """Run the ONNX file with ONNX Runtime and the model with PyTorch on random images of ``shapes``; compare.

    Raises:
        FcnsegError: onnxruntime is not installed.
    """
    require_modules(CHECK_MODULES, "checking an ONNX export")
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    wrapped = NormalizedFCN(model.model.eval().float(), model.normalization).eval()
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for shape in shapes:
        image = torch.rand(*shape, generator=generator) * 255
        with torch.inference_mode():
            expected = wrapped(image).numpy()
        found = session.run([OUTPUT_NAME], {INPUT_NAME: image.numpy()})[0]
        if found.shape != expected.shape:
            raise FcnsegError(f"{path}: output shape {found.shape} for input {shape}, expected {expected.shape}")
        rows.append(
            CheckRow(
                tuple(shape),
                float(np.abs(found - expected).max()),
                float((found.argmax(1) == expected.argmax(1)).mean()),
            )
        )
    return rows


def export(model: LoadedModel, path: str | Path) -> Path:
    """Export by suffix; only ``.onnx`` for now.

    A strict ``torch.export`` program (``.pt2``) is not offered: the ceil-mode pools make its shape
    guards specialise height and width (e.g. ``(H + 197) // 32 != 6``), so one program would not
    serve every input size. The ONNX exporter tolerates them and its graph is checked on odd and
    even sizes.
    """
    suffix = Path(path).suffix.lower()
    if suffix == ".onnx":
        return export_onnx(model, path)
    raise ConfigError(f"{path}: unknown export format {suffix!r}; expected .onnx")
